"""Solid-colour numbered frames, configured per camera: `color` (an option of the cameras
file, "#rrggbb") at the camera's `fps` (default 10), for several cameras in one server.
Each frame carries `camera=<name>;frame=<n>;` in a comment, so a test knows whose frame
it got and which one."""

import time

import cv2
import numpy as np
from numbered import record

from base_camera import BaseCamera


def solid_jpeg(rgb: str, size=(160, 120)) -> bytes:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:] = [int(rgb[i:i + 2], 16) for i in (5, 3, 1)]  # BGR from "#rrggbb"
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def tagged(base: bytes, text: bytes) -> bytes:
    return b"\xff\xd8\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + base[2:]


class Camera(BaseCamera):
    def frames(self):
        base = solid_jpeg(self.settings.options.get("color", "#808080"))
        period = 1.0 / (self.settings.fps or 10.0)
        record(f"start:{self.name}")
        try:
            n, due = 0, time.monotonic()
            while True:
                n += 1
                yield tagged(base, b"camera=%s;frame=%d;" % (self.name.encode(), n))
                due += period
                time.sleep(max(0.0, due - time.monotonic()))
        finally:
            record(f"stop:{self.name}")
