"""Solid-colour frames, a different colour each frame, at COUNTER_FPS (default 1): a
browser test can tell which frame an <img> shows from one pixel."""

import os
import time

import cv2
import numpy as np

from base_camera import BaseCamera

PALETTE = [(220, 40, 40), (40, 200, 60), (40, 80, 230), (240, 220, 40), (200, 40, 220),
           (40, 220, 220)]  # RGB


def _jpeg(rgb) -> bytes:
    image = np.zeros((240, 320, 3), np.uint8)
    image[:] = rgb[::-1]  # OpenCV is BGR
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


JPEGS = [_jpeg(rgb) for rgb in PALETTE]


class Camera(BaseCamera):
    def frames(self):
        period = 1.0 / float(os.environ.get("COUNTER_FPS", "1"))
        n, due = 0, time.monotonic()
        while True:
            yield JPEGS[n % len(JPEGS)]
            n += 1
            due += period
            time.sleep(max(0.0, due - time.monotonic()))
