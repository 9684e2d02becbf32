"""The emulated camera: cycles three JPEGs (1, 2, 3) at CAMERA_FPS (default 1)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

from base_camera import BaseCamera

IMAGES = Path(__file__).resolve().parent / "static" / "emulated"


class Camera(BaseCamera):
    """No hardware needed: the default driver, for trying the server out."""

    def frames(self) -> Iterator[bytes]:
        images = [(IMAGES / f"{n}.jpg").read_bytes() for n in (1, 2, 3)]
        period = 1.0 / (self.settings.fps or 1.0)
        due = time.monotonic()
        for n in itertools.count():
            yield images[n % 3]
            # Sleep to a fixed schedule so the rate does not drift.
            due += period
            time.sleep(max(0.0, due - time.monotonic()))
