"""A driver that delivers STUCK_AFTER frames (default 3) at 20 fps and then blocks in C
for ever (the stdlib's own sleep, never returning, never noticing the close): a webcam
whose read() hangs. Each call of frames() is recorded as "start"."""

import os

from gevent.monkey import get_original
from numbered import numbered, record

from base_camera import BaseCamera

blocking_sleep = get_original("time", "sleep")


class Camera(BaseCamera):
    def frames(self):
        record("start")
        for n in range(1, int(os.environ.get("STUCK_AFTER", "3")) + 1):
            yield numbered(n)
            blocking_sleep(0.05)
        while True:
            blocking_sleep(3600)
