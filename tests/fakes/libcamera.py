"""Fake libcamera: only the Transform that picamera2 configurations take."""

from dataclasses import dataclass


@dataclass
class Transform:
    hflip: bool = False
    vflip: bool = False
