"""The emulated camera: cycles three JPEGs (1, 2, 3) at CAMERA_FPS (default 1).

A camera with settings (a name of its own, a resolution, a rotation or flip, a JPEG
quality) gets its pictures made once at start: "emulated camera" wiped off, resized,
turned, its name drawn and re-encoded, so several emulated cameras of a cameras file
look different. Without settings the pictures are served untouched.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from base_camera import BaseCamera
from server import config

IMAGES = Path(__file__).resolve().parent / "static" / "emulated"
DEFAULTS = config.CameraSettings()
ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
             270: cv2.ROTATE_90_COUNTERCLOCKWISE}
LABEL = (14, 437, 220, 466)  # x0, y0, x1, y1 of "emulated camera" in the 640x480 pictures


class Camera(BaseCamera):
    """No hardware needed: the default driver, for trying the server out."""

    supports = frozenset({"resolution", "fps", "jpeg_quality", "rotation", "hflip", "vflip"})

    def frames(self) -> Iterator[bytes]:
        images = [self.picture((IMAGES / f"{n}.jpg").read_bytes()) for n in (1, 2, 3)]
        period = 1.0 / (self.settings.fps or 1.0)
        due = time.monotonic()
        for n in itertools.count():
            yield images[n % 3]
            # Sleep to a fixed schedule so the rate does not drift.
            due += period
            time.sleep(max(0.0, due - time.monotonic()))

    def picture(self, jpeg: bytes) -> bytes:
        """One picture as this camera's settings make it: once, at start (5 ms at 640x480,
        30 ms at 1280x720 on a busy 2-core x86)."""
        s = self.settings
        if (s.name, s.resolution, s.rotation, s.hflip, s.vflip, s.jpeg_quality) == (
                DEFAULTS.name, None, 0, False, False, DEFAULTS.jpeg_quality):
            return jpeg
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        x0, y0, x1, y1 = LABEL
        image[y0:y1, x0:x1] = image[5, 5]  # the plain background over the old label
        if s.resolution:
            image = fit(image, *s.resolution)
        if s.rotation:
            image = cv2.rotate(image, ROTATIONS[s.rotation])
        if s.hflip or s.vflip:
            image = cv2.flip(image, -1 if s.hflip and s.vflip else (1 if s.hflip else 0))
        # The name at the top left: clear of the grid's labels, which are at the bottom.
        scale = max(0.4, image.shape[0] / 480)
        cv2.putText(image, s.name, (round(20 * scale), round(50 * scale)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, round(2 * scale)),
                    cv2.LINE_AA)
        _, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])
        return buffer.tobytes()


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The picture scaled to fit inside width x height, the rest filled with its edges'
    plain colour: another aspect ratio does not stretch the digits."""
    scale = min(width / image.shape[1], height / image.shape[0])
    inner = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    smooth = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, inner, interpolation=smooth)
    left, top = (width - inner[0]) // 2, (height - inner[1]) // 2
    return cv2.copyMakeBorder(image, top, height - inner[1] - top, left,
                              width - inner[0] - left, cv2.BORDER_REPLICATE)
