"""A camera-like HD source: numbered JPEGs of noisy, moving content at CAMERA_RESOLUTION
(default 1280x720) and CAMERA_FPS (default 30), encoded once at start, so decoding and
scaling them costs what a real camera's frames cost. Each frame carries `frame=n;` in a
comment segment (tests/drivers/numbered.py's convention)."""

from __future__ import annotations

import functools
import time

import cv2
import numpy as np

from base_camera import BaseCamera

DISTINCT = 8  # different pictures, cycled


@functools.lru_cache(maxsize=4)
def pictures(width: int, height: int, quality: int = 80) -> tuple[bytes, ...]:
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:height, 0:width]
    jpegs = []
    for i in range(DISTINCT):
        base = np.dstack([(x // 3 + 9 * i) % 256, (y // 2 + 5 * i) % 256,
                          ((x + y) // 4) % 256]).astype(np.float32)
        noisy = base + rng.normal(0, 14, base.shape).astype(np.float32)
        image = cv2.GaussianBlur(noisy.clip(0, 255).astype(np.uint8), (3, 3), 0)
        cv2.circle(image, (width // 8 + i * width // 12, height // 2), height // 6,
                   (255, 255, 255), -1)
        cv2.rectangle(image, (width // 2, height // 8), (width // 2 + width // 6, height // 3),
                      (0, 0, 0), -1)
        jpegs.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
                     .tobytes())
    return tuple(jpegs)


def numbered(jpeg: bytes, n: int) -> bytes:
    text = b"frame=%d;" % n
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


class Camera(BaseCamera):
    def frames(self):
        width, height = self.settings.resolution or (1280, 720)
        jpegs = pictures(width, height, self.settings.jpeg_quality)
        period = 1.0 / (self.settings.fps or 30.0)
        n, due = 0, time.monotonic()
        while True:
            n += 1
            yield numbered(jpegs[n % DISTINCT], n)
            due += period
            time.sleep(max(0.0, due - time.monotonic()))
