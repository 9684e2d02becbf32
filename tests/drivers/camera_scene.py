"""Camera-like scenes for the motion tests: a fixed scene with sensor noise and JPEG
artefacts, an object that moves on request, light switched on, a slow dusk.

`Scene` makes the frames (the unit tests use it directly); the `Camera` driver serves
one at CAMERA_RESOLUTION (default 640x480) and CAMERA_FPS (default 10): its object
moves across the picture while the file SCENE_MOVE names exists, and stands where it
is otherwise. The first moving frame's capture time is appended to DRIVER_EVENTS as
`moving <time>`, each frame carries `frame=n;` (tests/drivers/numbered.py's
convention)."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np

from base_camera import BaseCamera

NOISE_FIELDS = 16  # sensor noise patterns, cycled


class Scene:
    """A room-like picture: walls in gradients, furniture in flat greys, fine texture.
    `noise`: the sensor's standard deviation in levels, per pixel and frame."""

    def __init__(self, width: int = 320, height: int = 240, noise: float = 6.0,
                 quality: int = 80, seed: int = 7) -> None:
        self.width, self.height, self.quality = width, height, quality
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        wall = 70 + 90 * x / width + 30 * y / height
        base = np.dstack([wall * 0.9, wall, wall * 1.1])
        texture = cv2.GaussianBlur(rng.normal(0, 12, (height, width)).astype(np.float32),
                                   (5, 5), 0)
        base += texture[..., None]
        for i in range(6):  # furniture
            x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(height // 3, height))
            w, h = int(rng.integers(width // 10, width // 4)), int(rng.integers(height // 10,
                                                                                 height // 3))
            colour = rng.integers(30, 220, 3).astype(np.float32)
            base[y0:y0 + h, x0:x0 + w] = colour
        self.base = base
        self.noise = [rng.normal(0, noise, base.shape).astype(np.float32)
                      for _ in range(NOISE_FIELDS)] if noise else None
        self.n = 0
        side = int(round((0.02 * width * height) ** 0.5))
        self.object_size = (side, side)  # 2% of the picture

    def picture(self, brightness: float = 1.0,
                objects: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
        """One frame's pixels (BGR): the scene at `brightness` with the 2% object at each
        (x, y) of `objects` (its top left corner) and this frame's sensor noise."""
        image = self.base.copy()
        w, h = self.object_size
        for x, y in objects:
            image[max(0, y):y + h, max(0, x):x + w] = (30, 40, 200)  # a red coat
        image *= brightness  # the light falls on everything
        if self.noise is not None:
            image = image + self.noise[self.n % NOISE_FIELDS]
        self.n += 1
        return cv2.GaussianBlur(image.clip(0, 255).astype(np.uint8), (3, 3), 0)

    def jpeg(self, brightness: float = 1.0,
             objects: tuple[tuple[int, int], ...] = ()) -> bytes:
        image = self.picture(brightness, objects)
        return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])[1].tobytes()

    def crossing(self, t: float, speed: float = 0.25) -> tuple[int, int]:
        """Where the object is `t` seconds into crossing the picture from left to right
        at `speed` picture widths a second (back and forth), half-way down."""
        w, h = self.object_size
        span = self.width - w
        position = (t * speed * self.width) % (2 * span)
        x = position if position <= span else 2 * span - position
        return int(x), (self.height - h) // 2


def numbered(jpeg: bytes, n: int) -> bytes:
    text = b"frame=%d;" % n
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


class Camera(BaseCamera):
    def frames(self):
        width, height = self.settings.resolution or (640, 480)
        scene = Scene(width, height, quality=self.settings.jpeg_quality)
        period = 1.0 / (self.settings.fps or 10.0)
        move, events = os.environ.get("SCENE_MOVE"), os.environ.get("DRIVER_EVENTS")
        n, due, moving_since = 0, time.monotonic(), None
        travelled, last = 0.0, time.time()  # seconds the object has moved, in all
        while True:
            n += 1
            now = time.time()
            step, last = now - last, now
            if move and os.path.exists(move):
                if moving_since is None:
                    moving_since = now
                    if events:
                        with open(events, "a") as f:
                            f.write(f"moving {now:.6f}\n")
                travelled += step
            else:
                moving_since = None  # it stops where it is
            objects = (scene.crossing(travelled),)
            yield numbered(scene.jpeg(objects=objects), n), now
            due += period
            time.sleep(max(0.0, due - time.monotonic()))
