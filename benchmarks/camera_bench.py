"""Benchmark driver (CAMERA=bench): pre-encoded 640x480 noisy JPEGs of about 58 KB at
CAMERA_FPS (default 30), so the server's cost is measured, not the camera's."""

from __future__ import annotations

import time

import cv2
import numpy as np

from base_camera import BaseCamera


def make_frames(count: int = 30, quality: int = 82) -> list[bytes]:
    """Camera-like content: smooth gradients, shapes and sensor noise."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:480, 0:640]
    frames = []
    for i in range(count):
        base = np.dstack([(x + 8 * i) % 256, (y + 4 * i) % 256, (x + y) % 256]).astype(float)
        noisy = base + rng.normal(0, 22, base.shape)
        image = cv2.GaussianBlur(noisy.clip(0, 255).astype(np.uint8), (3, 3), 0)
        cv2.circle(image, (100 + 15 * i, 240), 60, (255, 255, 255), -1)
        frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
                      .tobytes())
    return frames


class Camera(BaseCamera):
    def frames(self):
        frames = make_frames()
        period = 1.0 / (self.settings.fps or 30.0)
        n, due = 0, time.monotonic()
        while True:
            yield frames[n % len(frames)]
            n += 1
            due += period
            time.sleep(max(0.0, due - time.monotonic()))


if __name__ == "__main__":
    sizes = [len(f) for f in make_frames()]
    print(f"{len(sizes)} frames, {min(sizes)}..{max(sizes)} bytes, "
          f"mean {sum(sizes) / len(sizes):.0f}")
