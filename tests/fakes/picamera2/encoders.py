"""Fake encoders, as picamera2/encoders/ at 3e6dff0: each encoded frame is a numbered JPEG.

- Quality is a plain Enum (encoder.py:15-25). Encoder.start(quality=None) sets up from
  the quality, starts the outputs, then the encoder (:299-309); stop() stops it, then the
  outputs (:332-344); encode() runs in picamera2's event loop (picamera2.py:1471-1473).
- MJPEGEncoder is chosen when picamera2.encoders is imported (encoders/__init__.py:13-23):
  - vc4 (Pi 4 and older): the V4L2 hardware encoder (mjpeg_encoder.py). Quality sets a
    bitrate scaled to size and frame rate (:26-42). encode() queues the frame to the
    device; a poll thread made with threading.Thread at start (v4l2_encoder.py:58-60)
    writes each JPEG to the outputs (:267) and stop() joins it (:164).
  - pisp (Pi 5): LibavMjpegEncoder, software libav with 8 frame threads
    (libav_mjpeg_encoder.py:46-47). Quality sets the quantiser qp (:30-36). The event loop
    writes each JPEG itself (:89-97). A frame-threaded libav encoder returns a packet once
    the next frame has gone in (ffmpeg frame_thread_encoder.c, ff_thread_video_encode_frame),
    so frames come out one late and stop() flushes the last from the thread that stops
    it (:82-84).
FAKE_PICAMERA2_PLATFORM picks vc4 (default) or pisp.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from enum import Enum
from pathlib import Path

from .outputs import Output

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "drivers"))
from numbered import numbered


class Quality(Enum):
    VERY_LOW = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    VERY_HIGH = 4


class Encoder:
    def __init__(self) -> None:
        self._output: list[Output] = []
        self._running = False
        self._lock = threading.Lock()
        self._output_lock = threading.Lock()
        self.width = self.height = 0
        self.framerate = None
        self._count = 0

    @property
    def output(self):
        return self._output[0] if len(self._output) == 1 else self._output

    @output.setter
    def output(self, value) -> None:
        value = value if isinstance(value, list) else [value]
        if not all(isinstance(out, Output) for out in value):
            raise RuntimeError("Must pass Output")
        self._output = value

    def start(self, quality=None) -> None:
        with self._lock:
            if self._running:
                raise RuntimeError("Encoder already running")
            self._count = 0
            self._setup(quality)
            self._running = True
            for out in self._output:
                out.start()
            self._start()

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                raise RuntimeError("Encoder already stopped")
            self._running = False
            self._stop()
            for out in self._output:
                out.stop()

    def encode(self, stream, request) -> None:
        with self._lock:
            if self._running:
                self._count += 1
                self._encode(numbered(self._count))

    def outputframe(self, frame, keyframe=True, timestamp=None) -> None:
        with self._output_lock:
            for out in self._output:
                out.outputframe(frame, keyframe, timestamp)

    def _setup(self, quality) -> None:
        pass

    def _start(self) -> None:
        pass

    def _stop(self) -> None:
        pass

    def _encode(self, jpeg: bytes) -> None:
        self.outputframe(jpeg)


class V4L2MJPEGEncoder(Encoder):
    """The Pi 4's hardware encoder: its poll thread writes the JPEGs."""

    def __init__(self, bitrate=None) -> None:
        super().__init__()
        self.bitrate = bitrate

    def _setup(self, quality) -> None:
        if quality is not None or self.bitrate is None:
            mbps = {Quality.VERY_LOW: 16, Quality.LOW: 20, Quality.MEDIUM: 30, Quality.HIGH: 40,
                    Quality.VERY_HIGH: 50}[Quality.MEDIUM if quality is None else quality]
            scale = self.width * self.height * (self.framerate or 30) / (1920 * 1080 * 30)
            self.bitrate = int(mbps * 1_000_000 * scale)

    def _start(self) -> None:
        self._frames = queue.Queue()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while self._running or not self._frames.empty():
            try:
                jpeg = self._frames.get(timeout=0.4)
            except queue.Empty:
                if not self._running:
                    break
                continue
            self.outputframe(jpeg)

    def _encode(self, jpeg: bytes) -> None:
        self._frames.put(jpeg)

    def _stop(self) -> None:
        self._thread.join()


class LibavMjpegEncoder(Encoder):
    """The Pi 5's software encoder: the event loop writes, one frame late."""

    def __init__(self, bitrate=None, repeat=True, iperiod=30, framerate=30, qp=None) -> None:
        super().__init__()
        self.bitrate, self.framerate, self.qp = bitrate, framerate, qp
        self._held = None

    def _setup(self, quality) -> None:
        if quality is not None or (self.bitrate is None and self.qp is None):
            self.qp = {Quality.VERY_LOW: 31, Quality.LOW: 15, Quality.MEDIUM: 10, Quality.HIGH: 5,
                       Quality.VERY_HIGH: 3}[Quality.MEDIUM if quality is None else quality]

    def _encode(self, jpeg: bytes) -> None:
        earlier, self._held = self._held, jpeg
        if earlier is not None:
            self.outputframe(earlier)

    def _stop(self) -> None:
        if self._held is not None:
            self.outputframe(self._held)
            self._held = None


if os.environ.get("FAKE_PICAMERA2_PLATFORM", "vc4") == "pisp":
    MJPEGEncoder = LibavMjpegEncoder
else:
    MJPEGEncoder = V4L2MJPEGEncoder
