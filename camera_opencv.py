"""OpenCV driver: a USB webcam, a video file or a network stream (CAMERA=opencv).

OPENCV_CAMERA_SOURCE is a device index (default 0), a device path (/dev/video0), a
video file (played in a loop) or a URL (rtsp://, http://). When the source already
delivers JPEG — a webcam in MJPG mode, an MJPEG file or stream — and no rotation, flip
or resize is asked for, its JPEGs pass through untouched: no decode, no re-encode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import cv2
import numpy as np

from base_camera import DRIVER_SETTINGS, BaseCamera, CameraError

log = logging.getLogger(__name__)

ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
             270: cv2.ROTATE_90_COUNTERCLOCKWISE}
MJPEG_FOURCCS = {"MJPG", "mjpg", "MJPA", "AVRn", "JPEG", "jpeg"}
FILE_FPS_DEFAULT = 10.0


def _fourcc(cap: cv2.VideoCapture) -> str:
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    return code.to_bytes(4, "little").decode("latin-1") if code > 0 else ""


class Camera(BaseCamera):
    """Frames from cv2.VideoCapture, passed through when they are JPEG already."""

    # All of them; but a network stream keeps its own rate (fps), and JPEGs passed
    # through keep their own quality (jpeg_quality).
    supports = frozenset(DRIVER_SETTINGS)

    def frames(self) -> Iterator[bytes]:
        source = self.settings.opencv_source
        is_device = source.isdigit() or source.startswith("/dev/")
        is_file = not is_device and "://" not in source
        cap = self._open(source, is_device)
        try:
            passthrough = self._choose_passthrough(cap, is_device)
            log.info("opencv: %r opened (%s), %s", source, _fourcc(cap) or "unknown format",
                     "passing its JPEGs through" if passthrough else "encoding JPEGs")
            period = 0.0
            if is_file:  # files read as fast as the disk allows: play them at their rate
                period = 1.0 / (self.settings.fps or cap.get(cv2.CAP_PROP_FPS)
                                or FILE_FPS_DEFAULT)
            due = time.monotonic()
            while True:
                ok, frame = cap.read()
                if not ok and is_file and cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
                    ok, frame = cap.read()  # the end of the file: loop
                if not ok or frame is None:
                    raise CameraError(f"camera source {source!r} stopped delivering frames")
                yield self._jpeg(frame)
                if period:
                    due = max(due + period, time.monotonic() - period)
                    time.sleep(max(0.0, due - time.monotonic()))
        finally:
            cap.release()
            log.info("opencv: %r released", source)

    def _open(self, source: str, is_device: bool) -> cv2.VideoCapture:
        if is_device:
            target = int(source) if source.isdigit() else source
            cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open camera source {source!r}")
        if is_device:
            if self.settings.resolution:
                width, height = self.settings.resolution
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if self.settings.fps:
                cap.set(cv2.CAP_PROP_FPS, self.settings.fps)
        return cap

    def _needs_pixels(self, is_device: bool) -> bool:
        s = self.settings
        resize = s.resolution is not None and not is_device  # devices scale themselves
        return bool(s.rotation or s.hflip or s.vflip or resize)

    def _choose_passthrough(self, cap: cv2.VideoCapture, is_device: bool) -> bool:
        """Ask the source for its own JPEGs when nothing needs the pixels."""
        if self._needs_pixels(is_device):
            return False
        if is_device:
            # V4L2: MJPG mode, and hand the JPEG over instead of decoding it to BGR.
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
            return _fourcc(cap) in MJPEG_FOURCCS and cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        # FFmpeg: raw packets, which are whole JPEGs only for MJPEG sources.
        return _fourcc(cap) in MJPEG_FOURCCS and cap.set(cv2.CAP_PROP_FORMAT, -1)

    def _jpeg(self, frame: np.ndarray) -> bytes:
        if frame.ndim == 2 and frame.shape[0] == 1:  # a raw packet: passthrough is on
            data = frame.tobytes()
            if data[:2] != b"\xff\xd8":
                raise CameraError("the source's frames are not JPEG")
            return data
        return self._encode(frame)

    def _encode(self, image: np.ndarray) -> bytes:
        s = self.settings
        if s.resolution and (image.shape[1], image.shape[0]) != s.resolution:
            image = cv2.resize(image, s.resolution, interpolation=cv2.INTER_AREA)
        if s.rotation:
            image = cv2.rotate(image, ROTATIONS[s.rotation])
        if s.hflip or s.vflip:
            image = cv2.flip(image, -1 if s.hflip and s.vflip else (1 if s.hflip else 0))
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])
        if not ok:
            raise CameraError("OpenCV could not encode the frame as JPEG")
        return buffer.tobytes()
