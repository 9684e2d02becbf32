"""Raspberry Pi camera through picamera2 (CAMERA=pi).

picamera2 comes with Raspberry Pi OS (`sudo apt install python3-picamera2`; make the
venv with --system-site-packages). The MJPEG encoder is the hardware one on Pi 4 and
older, software (libav) on Pi 5. Its threads hand each whole JPEG to `_NewestFrame`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Iterator

from base_camera import BaseCamera, CameraError

log = logging.getLogger(__name__)

INSTALL_HINT = ("picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install "
                "python3-picamera2' and make the venv with --system-site-packages")
DEFAULT_SIZE, DEFAULT_FPS = (1280, 720), 30.0
FIRST_FRAME_TIMEOUT = 5.0  # a camera that never delivers is an error, never a hang


class _NewestFrame(io.BufferedIOBase):
    """picamera2's FileOutput target: its encoder thread writes one whole JPEG per call;
    the capture thread takes the newest one (older ones unread are dropped).

    Under gevent, picamera2's threads are greenlets of the capture thread's own hub, so
    the wait must be gevent's (the patched threading.Condition); otherwise it is a plain
    thread wait. Either way it is the right one.
    """

    def __init__(self) -> None:
        self._frame: bytes | None = None
        self._ready = threading.Condition()

    def writable(self) -> bool:
        return True

    def write(self, buffer) -> int:
        with self._ready:
            self._frame = bytes(buffer)
            self._ready.notify()
        return len(buffer)

    def take(self, timeout: float) -> bytes | None:
        with self._ready:
            self._ready.wait_for(lambda: self._frame is not None, timeout)
            frame, self._frame = self._frame, None
        return frame


def _quality(jpeg_quality: int):
    """picamera2 sets the MJPEG encoder's bitrate from a Quality level, not a 1-100 q."""
    from picamera2.encoders import Quality

    for limit, level in ((40, "VERY_LOW"), (60, "LOW"), (75, "MEDIUM"), (90, "HIGH")):
        if jpeg_quality < limit:
            return getattr(Quality, level)
    return Quality.VERY_HIGH


class Camera(BaseCamera):
    """The Pi camera's hardware MJPEG stream, one capture for every viewer."""

    def frames(self) -> Iterator[bytes]:
        try:
            from libcamera import Transform
            from picamera2 import Picamera2
            from picamera2.encoders import MJPEGEncoder
            from picamera2.outputs import FileOutput
        except ImportError:
            raise CameraError(INSTALL_HINT) from None
        s = self.settings
        if s.rotation in (90, 270):
            raise CameraError(f"CAMERA_ROTATION={s.rotation}: the Pi camera turns only by 180; "
                              "use 0 or 180 (with CAMERA_HFLIP/CAMERA_VFLIP)")
        turn = s.rotation == 180  # 180 degrees is both flips
        try:
            camera = Picamera2()
        except IndexError:
            raise CameraError("no Raspberry Pi camera found: is it connected and enabled?") from None
        except RuntimeError as exc:
            raise CameraError(f"the Raspberry Pi camera is busy (another program?): {exc}") from None
        output = _NewestFrame()
        try:
            size, fps = s.resolution or DEFAULT_SIZE, s.fps or DEFAULT_FPS
            camera.configure(camera.create_video_configuration(
                main={"size": size}, transform=Transform(hflip=s.hflip ^ turn, vflip=s.vflip ^ turn),
                controls={"FrameRate": fps}))
            camera.start_recording(MJPEGEncoder(), FileOutput(output), quality=_quality(s.jpeg_quality))
            log.info("pi: recording %dx%d at %g fps", size[0], size[1], fps)
            timeout = FIRST_FRAME_TIMEOUT
            while True:
                frame = output.take(timeout)
                if frame is None:
                    raise CameraError(f"no frame from the Raspberry Pi camera in {timeout:g} s")
                yield frame
                timeout = max(2.0, 5.0 / fps)
        finally:
            with contextlib.suppress(Exception):
                camera.stop_recording()
            camera.close()
            log.info("pi: camera closed")
