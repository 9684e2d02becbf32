"""Fake encoders: MJPEGEncoder writes numbered JPEGs from its own thread."""

import enum
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "drivers"))
from numbered import numbered  # noqa: E402


class Quality(enum.IntEnum):
    VERY_LOW = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    VERY_HIGH = 4


class MJPEGEncoder:
    def __init__(self, bitrate=None) -> None:
        self._running = False
        self._thread = None

    def start(self, output, fps: float) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, args=(output, fps), daemon=True)
        self._thread.start()

    def _run(self, output, fps: float) -> None:
        n, due = 0, time.monotonic()
        while self._running:
            n += 1
            output.write(numbered(n))
            due += 1.0 / fps
            time.sleep(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(2)
