"""Numbered frames at COUNTER_FPS (default 10) that carry their own capture time:
frame n was "captured" at 1_000_000_000 + n seconds, so a test can tell whether a
server passed the driver's time on (X-Timestamp) or made up its own."""

import os
import time

from numbered import numbered

from base_camera import BaseCamera

EPOCH = 1_000_000_000.0


class Camera(BaseCamera):
    def frames(self):
        period = 1.0 / float(os.environ.get("COUNTER_FPS", "10"))
        n = 0
        while True:
            n += 1
            yield numbered(n), EPOCH + n
            time.sleep(period)
