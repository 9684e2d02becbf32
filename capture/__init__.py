"""The capture core: a driver's frames -> the capture thread (run.py) -> the newest frame,
fanned out to every viewer (fanout.py); native OS threads and waits under gevent
(native.py) and JPEG helpers (jpeg.py).
"""

from .fanout import CameraClosed, Fanout, Frame, Viewer
from .jpeg import PLACEHOLDER_JPEG, jpeg_size, split_comment, with_comment
from .run import CameraError, CaptureRun

__all__ = ["CameraClosed", "CameraError", "CaptureRun", "Fanout", "Frame", "PLACEHOLDER_JPEG",
           "Viewer", "jpeg_size", "split_comment", "with_comment"]
