"""Benchmark driver (CAMERA=bench_hd): pre-encoded camera-like 1280x720 JPEGs (noisy
gradients and shapes, about 100 KB at quality 80) at CAMERA_FPS (default 30), so the
server's cost is measured, not the camera's. CAMERA_RESOLUTION picks another size."""

from __future__ import annotations

import time

import cv2
import numpy as np

from base_camera import BaseCamera


def make_frames(width: int = 1280, height: int = 720, count: int = 10,
                quality: int = 80) -> list[bytes]:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        base = np.dstack([(x // 3 + 9 * i) % 256, (y // 2 + 5 * i) % 256,
                          ((x + y) // 4) % 256]).astype(np.float32)
        noisy = base + rng.normal(0, 14, base.shape).astype(np.float32)
        image = cv2.GaussianBlur(noisy.clip(0, 255).astype(np.uint8), (3, 3), 0)
        cv2.circle(image, (width // 8 + i * width // 14, height // 2), height // 6,
                   (255, 255, 255), -1)
        cv2.rectangle(image, (width // 2, height // 8), (width // 2 + width // 6, height // 3),
                      (0, 0, 0), -1)
        frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
                      .tobytes())
    return frames


class Camera(BaseCamera):
    def frames(self):
        frames = make_frames(*(self.settings.resolution or (1280, 720)))
        period = 1.0 / (self.settings.fps or 30.0)
        n, due = 0, time.monotonic()
        while True:
            yield frames[n % len(frames)]
            n += 1
            due += period
            time.sleep(max(0.0, due - time.monotonic()))


if __name__ == "__main__":
    sizes = [len(f) for f in make_frames()]
    print(f"{len(sizes)} frames, {min(sizes)}..{max(sizes)} bytes, mean {sum(sizes) / len(sizes):.0f}")
