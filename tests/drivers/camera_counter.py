"""A driver written exactly as for the classic flask-video-streaming: a static frames()
generator and time.sleep. Numbered frames at COUNTER_FPS (default 10), COUNTER_PAD bytes
of padding each."""

import os
import time

from numbered import numbered, record

from base_camera import BaseCamera


class Camera(BaseCamera):
    @staticmethod
    def frames():
        fps = float(os.environ.get("COUNTER_FPS", "10"))
        pad = int(os.environ.get("COUNTER_PAD", "0"))
        record("start")
        try:
            n, due = 0, time.monotonic()
            while True:
                n += 1
                yield numbered(n, pad)
                due += 1.0 / fps
                time.sleep(max(0.0, due - time.monotonic()))
        finally:
            record("stop")
