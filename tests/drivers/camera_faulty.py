"""A driver that misbehaves as FAULT says, at COUNTER_FPS (default 10):
open: raises before any frame; after:N: raises after N frames (every start);
end:N: returns after N frames; stall:N: blocks forever after N frames;
flaky:N: raises after N frames on its first start only, then works."""

import os
import time

from gevent.monkey import get_original
from numbered import numbered, record

from base_camera import BaseCamera, CameraError

blocking_sleep = get_original("time", "sleep")


class Camera(BaseCamera):
    starts = 0

    def frames(self):
        kind, _, count = os.environ.get("FAULT", "open").partition(":")
        limit = int(count or 0)
        fps = float(os.environ.get("COUNTER_FPS", "10"))
        Camera.starts += 1
        record("start")
        try:
            if kind == "open":
                raise CameraError("no camera at /dev/video9")
            n = 0
            while True:
                if n == limit:
                    if kind == "after" or (kind == "flaky" and Camera.starts == 1):
                        raise OSError("camera unplugged")
                    if kind == "end":
                        return
                    if kind == "stall":
                        while True:
                            blocking_sleep(1)
                n += 1
                yield numbered(Camera.starts * 100000 + n)
                time.sleep(1.0 / fps)
        finally:
            record("stop")
