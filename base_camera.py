"""BaseCamera: one camera, its capture runs and the newest frame, shared by every viewer.

    driver frames() -> capture thread (capture/run.py) -> Fanout (capture/fanout.py) -> each Viewer

A driver subclasses BaseCamera and implements `frames()`, a generator yielding JPEG
bytes (a static, class or instance method; drivers written for the classic
flask-video-streaming work unchanged). The first subscriber starts a capture run; it
stops `idle_timeout` seconds after the last one left, by closing the driver's generator
so the driver releases its device. Each camera is an instance with its own settings,
runs and frames: a process may serve several. Its runs reach it only through a private
`_RunOwner` (capture.RunOwner), so no method a driver defines can break the capture.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator

from capture import (
    PLACEHOLDER_JPEG,
    CameraClosed,
    CameraError,
    CaptureRun,
    Fanout,
    Frame,
    Viewer,
    jpeg_size,
    native,
)
from server import config

__all__ = ["BaseCamera", "CameraClosed", "CameraError", "Frame", "Viewer", "PLACEHOLDER_JPEG",
           "jpeg_size"]

log = logging.getLogger(__name__)

STUCK_AFTER = 2.0  # seconds a stopped driver may take to return before it counts as stuck
# The settings a driver applies to its pictures; the server applies the others (idle and
# stall timeouts, recording, size variants) to every camera alike.
DRIVER_SETTINGS = ("source", "resolution", "fps", "jpeg_quality", "rotation", "hflip", "vflip")
_DEFAULTS = config.CameraSettings()

# The settings of the camera being built, for classic drivers whose __init__ takes none.
building: contextvars.ContextVar[config.CameraSettings | None] = contextvars.ContextVar(
    "building", default=None)


def ignored_settings(settings: config.CameraSettings,
                     supports: frozenset[str] | None) -> list[str]:
    """The DRIVER_SETTINGS the user set (to other than their defaults) that a driver
    supporting `supports` would ignore; none for a driver that does not say (None)."""
    if supports is None:
        return []
    return [key for key in DRIVER_SETTINGS
            if key not in supports and getattr(settings, key) != getattr(_DEFAULTS, key)]


class BaseCamera:
    """A camera: its driver's capture run, the newest frame and its subscribers."""

    # The DRIVER_SETTINGS this driver honours, so a setting it would ignore is said at
    # start; None (drivers that do not declare it, such as classic ones): nothing is said.
    supports: frozenset[str] | None = None

    def __init__(self, settings: config.CameraSettings | config.Settings | None = None) -> None:
        if settings is None:
            settings = building.get() or config.load()
        if isinstance(settings, config.Settings):  # a one-camera server's settings
            settings = settings.cameras[0]
        self.settings: config.CameraSettings = settings
        self.name = settings.name
        self.fanout = Fanout()
        # What the capture runs see of this camera. Name-mangled (_BaseCamera__runs):
        # a driver's own attributes cannot replace it.
        self.__runs = _RunOwner(self)
        self._lock = native.allocate_lock()  # guards the runs against racing subscribers
        self._run: CaptureRun | None = None  # the capture run, while there is one
        self._last_run: CaptureRun | None = None
        self._closed = False
        self._local = threading.local()  # get_frame(): last frame per thread/greenlet
        self._started_at = time.time()
        self._frames_captured = 0
        self._last_error: str | None = None
        self._last_live: Frame | None = None

    # -- the driver's side ---------------------------------------------------------------

    def frames(self) -> Iterator[bytes]:
        """Yield JPEG frames forever (or `(jpeg, capture_time)` pairs). Drivers override
        this (static, class or instance method); the generator is closed when the capture
        stops: release the device in a `finally:` block."""
        raise NotImplementedError("a camera driver must implement frames()")

    # -- the subscribers' side -----------------------------------------------------------

    def subscribe(self, counted: bool = True, native_thread: bool = False) -> Viewer:
        """Join, starting the capture if it is not running. `counted`: a stream viewer
        (snapshots and internal consumers are not). `native_thread`: the caller is an
        OS thread even under gevent (recorders, variant makers)."""
        viewer = self.fanout.subscribe(counted, native_thread)
        with self._lock:
            if self._closed:
                viewer.close()
                raise CameraClosed()
            if self._run is None:
                run = self._run = CaptureRun(self.__runs, self._last_run)
                self._last_run = run
                self.fanout.clear()
                run.start()
        return viewer

    def get_frame(self) -> bytes:
        """The newest frame, waiting for one newer than this thread last got (classic API)."""
        with self.subscribe() as viewer:
            viewer.last_seq = max(viewer.last_seq, getattr(self._local, "seq", 0))
            frame = viewer.next_frame()
        self._local.seq = frame.seq
        return frame.data

    def snapshot(self, timeout: float) -> Frame | None:
        """The newest live frame if the camera is delivering, else the next one, waiting
        up to `timeout` seconds for the camera to start or recover; None if none came."""
        deadline = time.monotonic() + timeout
        with self.subscribe(counted=False) as viewer:
            frame = self.fanout.newest
            if frame is not None and frame.live and self.delivering:
                return frame
            while (remaining := deadline - time.monotonic()) > 0:
                frame = viewer.next_frame(remaining)
                if frame is not None and frame.live:
                    return frame
                run = self._run
                if run is not None and run.error:
                    return None  # the driver failed: say why now, not after the timeout
        return None

    @property
    def viewers(self) -> int:
        """Stream viewers now (snapshots and internal consumers are not counted)."""
        return self.fanout.viewers

    @property
    def delivering(self) -> bool:
        """A run is on and its driver gives live frames in time."""
        run = self._run
        return (run is not None and run.error is None and run.waits_for is None
                and not run.stalled(time.monotonic()))

    def status(self) -> dict:
        """Figures for /status: plain JSON-able values."""
        run, now = self._run, time.monotonic()
        live = self._last_live
        fps = None
        if run is not None and len(run.captured) >= 2 and now - run.last_frame_at < 2.0:
            span = run.captured[-1] - run.captured[0]
            fps = round((len(run.captured) - 1) / span, 2) if span > 0 else None
        owner = run.waits_for if run is not None and run.waits_for else self._last_run
        stuck_for = owner.stuck_for(now) if owner is not None else None
        stuck = stuck_for is not None and stuck_for > STUCK_AFTER
        error = self._last_error
        if run is not None and run.error:
            error = run.error
        elif stuck:
            error = (f"the driver is stuck: it has not returned from frames() for "
                     f"{stuck_for:.0f} s since the camera stopped")
        return {
            "driver": type(self).__module__,
            "running": self.delivering,
            "stuck": stuck,
            "viewers": self.viewers,
            "frames_captured": self._frames_captured,
            "fps": fps,
            "frame_size": jpeg_size(live.data) if live else None,
            "frame_bytes": len(live.data) if live else None,
            "frame_age": round(time.time() - live.timestamp, 3) if live else None,
            "error": error,
            "uptime": round(time.time() - self._started_at, 3),
        }

    def close(self, wait: float = 2.0, since: float | None = None) -> bool:
        """Stop the capture, end every stream and wait up to `wait` seconds for the
        driver to release its device; False if it did not. `since`: the monotonic time
        the caller's shutdown began, so the log says how long the server really waited
        (a camera closed after others is left only what remains of the shared wait)."""
        with self._lock:
            self._closed = True
            if self._run is not None:
                self._run.stop()
                self._run = None
            run = self._last_run
            while run is not None and run.waits_for is not None:
                run = run.waits_for  # the run whose thread is still in the driver
        self.fanout.close()
        started = time.monotonic() if since is None else since
        if run is not None and wait > 0 and not run.driver_returned.wait(wait):
            log.warning("%s: the camera driver did not stop within %.1f s", self.name,
                        time.monotonic() - started)
            return False
        return True


class _RunOwner:
    """What a capture run gets from its camera (capture.RunOwner). An object of its own,
    not the camera's methods: a driver subclass defining a method of the same name
    cannot shadow these."""

    __slots__ = ("camera",)

    def __init__(self, camera: BaseCamera) -> None:
        self.camera = camera

    @property
    def name(self) -> str:
        return self.camera.name

    @property
    def settings(self) -> config.CameraSettings:
        return self.camera.settings

    def frames(self) -> Iterator:
        return self.camera.frames()  # the driver's: static, class or instance method

    def publish(self, run: CaptureRun, data: bytes, live: bool,
                timestamp: float | None) -> None:
        camera = self.camera
        if live:
            camera._last_error = None
            camera._frames_captured += 1
        with camera._lock:  # a stopped run must not publish after the next one started
            if run.stopped.is_set():
                return
            frame = camera.fanout.publish(data, timestamp, live)
        if live:
            camera._last_live = frame

    def error(self, run: CaptureRun, message: str) -> None:
        self.camera._last_error = message

    def idle_for(self, now: float) -> float:
        idle_since = self.camera.fanout.idle_since
        return 0.0 if idle_since is None else now - idle_since

    def end_if_idle(self, run: CaptureRun) -> bool:
        camera = self.camera
        with camera._lock:
            if camera.fanout.subscribers:
                return False
            run.stop()
            if camera._run is run:
                camera._run = None
        return True

    def after_capture(self, run: CaptureRun) -> CaptureRun | None:
        camera = self.camera
        with camera._lock:
            run.driver_returned.set()
            following = camera._run
            if following is not None and following.waits_for is run:
                following.waits_for = None
                return following
        return None
