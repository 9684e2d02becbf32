"""Fake outputs, as picamera2/outputs/ at 3e6dff0.

Output.start()/stop() switch `recording` (output.py:18-24). FileOutput(file=None,
pts=None, split=None) opens a str or Path itself, takes an io.BufferedIOBase as is and
raises RuntimeError("Must pass io.BufferedIOBase") for anything else (fileoutput.py:37-52).
Each frame is write() then flush() on that file, from whichever thread the encoder
writes in (:113-128); connection errors and ValueError mark the output dead (:129-132).
"""

from __future__ import annotations

import io
from pathlib import Path


class Output:
    def __init__(self, pts=None) -> None:
        self.recording = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False) -> None:
        pass


class FileOutput(Output):
    def __init__(self, file=None, pts=None, split=None) -> None:
        super().__init__(pts=pts)
        self.dead = False
        self._needs_close = False
        if file is None or isinstance(file, io.BufferedIOBase):
            self._fileoutput = file
        elif isinstance(file, (str, Path)):
            self._fileoutput = open(file, "wb")  # noqa: SIM115 - closed by stop()
            self._needs_close = True
        else:
            raise RuntimeError("Must pass io.BufferedIOBase")

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False) -> None:
        if self._fileoutput is not None and self.recording:
            try:
                self._fileoutput.write(frame)
                self._fileoutput.flush()
            except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError, ValueError):
                self.dead = True

    def stop(self) -> None:
        super().stop()
        if self._needs_close:
            self._fileoutput.close()
