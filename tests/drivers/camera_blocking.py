"""A driver that blocks in C for 30 ms per frame without yielding to gevent, like an
OpenCV read(): the stdlib's own time.sleep, not gevent's."""

from gevent.monkey import get_original
from numbered import numbered

from base_camera import BaseCamera

blocking_sleep = get_original("time", "sleep")


class Camera(BaseCamera):
    def frames(self):
        n = 0
        while True:
            blocking_sleep(0.03)
            n += 1
            yield numbered(n)
