"""Raspberry Pi cameras through picamera2 (CAMERA=pi; CAMERA_SOURCE is the camera number).

picamera2 comes with Raspberry Pi OS (`sudo apt install python3-picamera2`; make the
venv with --system-site-packages). Its MJPEGEncoder is the V4L2 hardware encoder on a
Pi 4 and older and libav in software on a Pi 5; either writes whole JPEGs to our output.

picamera2 makes threads with `threading`: the listener every camera of the process
shares, an event loop per open camera, the Pi 4 encoder's poll thread. Under gevent's
patch_all those are greenlets on the hub of the native thread that made them. Made in
a capture thread, they would freeze while it sleeps in its restart backoff (the shared
listener with them, so every other camera too) and die when it ends. So picamera2 gets
a home of its own for the whole process (`_Home`): under gevent one native thread with
its own hub, where every open, start, stop and close runs as a greenlet; without gevent
a native thread per call. Frames come back through `_NewestFrame`, guarded by native
locks. Each call is bounded on the caller's side: picamera2's stop() waits for its event
loop with no timeout, so a camera whose loop died would hold its capture thread and the
server's shutdown for ever. A call that overruns marks its camera stuck instead.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
from collections import deque
from collections.abc import Iterator

from base_camera import DRIVER_SETTINGS, BaseCamera, CameraError
from capture import native

log = logging.getLogger(__name__)
home_log = logging.getLogger(f"{__name__}.home")  # what runs on picamera2's home logs here

INSTALL_HINT = ("picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install "
                "python3-picamera2' and make the venv with --system-site-packages")
BUSY_HINT = ("is another program using it? rpicam-hello, rpicam-vid or libcamera-vid, "
             "motion, or another camera server")
DEFAULT_SIZE, DEFAULT_FPS = (1280, 720), 30.0
FIRST_FRAME_TIMEOUT = 5.0  # a camera that never delivers is an error, never a hang
GAP_TIMEOUT = 2.0  # then at most this long between frames (or five frame periods)
OPEN_TIMEOUT = 10.0  # open, configure and start: about a second on a Pi 4
STOP_TIMEOUT = 5.0  # stop and close


_start_thread, _new_lock = native.start_thread, native.allocate_lock


class _NewestFrame(io.BufferedIOBase):
    """picamera2's FileOutput target: its threads write one whole JPEG per call; the
    capture thread takes the newest (older ones unread are dropped). Native locks only:
    writers are greenlets of picamera2's home or native threads, the reader is native.
    """

    def __init__(self) -> None:
        self._lock = _new_lock()
        self._ready = _new_lock()  # held while there is no frame
        self._ready.acquire()
        self._frame: bytes | None = None

    def writable(self) -> bool:
        return True

    def write(self, buffer) -> int:
        with self._lock:
            was_empty, self._frame = self._frame is None, bytes(buffer)
            if was_empty:
                self._ready.release()
        return len(buffer)

    def take(self, timeout: float) -> bytes | None:
        if not self._ready.acquire(timeout=timeout):
            return None
        with self._lock:
            frame, self._frame = self._frame, None
        return frame


class _Home:
    """Where picamera2 runs. Under gevent: one native thread with its own hub for the
    process, each call a greenlet there, so a call that waits for ever holds up nothing
    else. Without gevent, picamera2's threads are native anyway: a thread per call."""

    def __init__(self) -> None:
        self._queue: deque = deque()
        self._wake = None
        try:
            from gevent import monkey
        except ImportError:
            return
        if monkey.is_module_patched("threading"):
            ready = _new_lock()
            ready.acquire()
            _start_thread(self._serve, (ready,))
            ready.acquire()

    def _serve(self, ready) -> None:
        import gevent

        hub = gevent.get_hub()
        self._wake = hub.loop.async_()  # send() is thread-safe; sends before it runs coalesce
        self._wake.start(self._spawn_queued)
        ready.release()
        hub.join()  # for ever: the started watcher keeps the loop alive
        home_log.error("pi: picamera2's thread ended")

    def _spawn_queued(self) -> None:
        import gevent

        while self._queue:
            gevent.spawn(self._queue.popleft())

    def run(self, function) -> None:
        if self._wake is None:
            _start_thread(function, ())
        else:
            self._queue.append(function)
            self._wake.send()


_home_lock = _new_lock()
_home: _Home | None = None
_holds: dict[int, object] = {}  # camera number -> native lock a capture run holds
_stuck: dict[int, str] = {}  # camera number -> why: a picamera2 call has not returned


class _Stuck(CameraError):
    """A picamera2 call overran: the camera stays held until (if ever) it returns."""


class _Call:
    def __init__(self, function) -> None:
        self.function = function
        self.lock, self.done = _new_lock(), _new_lock()
        self.done.acquire()
        self.finished, self.late = False, None
        self.result = self.error = None

    def run(self) -> None:
        try:
            self.result = self.function()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self.error = exc
        with self.lock:
            self.finished, late = True, self.late
        self.done.release()
        if late is not None:
            late(self.result)


def _call(num: int, what: str, timeout: float, function, undo=None, rescue=None):
    """function() on picamera2's home, waiting at most `timeout` seconds. If it overruns,
    camera `num` is stuck until it returns; then undo(its result) and let the camera go."""
    global _home
    with _home_lock:
        _home = _home or _Home()
    call = _Call(function)
    _home.run(call.run)
    if not call.done.acquire(timeout=timeout):
        message = (f"camera {num} is stuck: picamera2's {what} did not return within "
                   f"{timeout:g} s; restart the server to use it again")
        with call.lock:
            if not call.finished:
                _stuck[num] = message
                call.late = lambda result: _returned_late(num, what, undo, result)
        if call.late is not None:
            log.error("pi: %s", message)
            if rescue is not None:  # picamera2's way to free a wait on a dead event loop
                _home.run(_Call(rescue).run)
            raise _Stuck(message)
    if call.error is not None:
        raise call.error
    return call.result


def _returned_late(num: int, what: str, undo, result) -> None:
    if undo is not None and result is not None:
        try:
            undo(result)
        except Exception:  # noqa: BLE001 - it is only cleanup, and nobody waits for it
            home_log.warning("pi: camera %d: error while releasing it", num, exc_info=True)
    del _stuck[num]
    _holds[num].release()
    home_log.warning("pi: camera %d: picamera2's %s returned after all; the camera is free",
                     num, what)


def _hold(num: int) -> None:
    """One capture run per camera: wait for an earlier run of camera `num` to let go."""
    lock = _holds.setdefault(num, _new_lock())
    if num in _stuck or not lock.acquire(timeout=STOP_TIMEOUT + 1):
        raise CameraError(_stuck.get(num) or f"camera {num} is in use by another camera of "
                          "this server (the same CAMERA_SOURCE twice?)")


def _quality(jpeg_quality: int, Quality):
    """picamera2 takes a Quality level, not a 1-100 q: a bitrate on a Pi 4 and older,
    a quantiser on a Pi 5."""
    for limit, level in ((40, "VERY_LOW"), (60, "LOW"), (75, "MEDIUM"), (90, "HIGH")):
        if jpeg_quality < limit:
            return getattr(Quality, level)
    return Quality.VERY_HIGH


def _open(num: int, settings, output: _NewestFrame):
    """On picamera2's home: open camera `num` and start recording into `output`."""
    from libcamera import Transform
    from picamera2 import Picamera2
    from picamera2.encoders import MJPEGEncoder, Quality
    from picamera2.outputs import FileOutput

    cameras = Picamera2.global_camera_info()  # Picamera2(camera_num=N) indexes this list
    if num >= len(cameras):
        found = ", ".join(f"{i}: {c.get('Model', '?')}" for i, c in enumerate(cameras))
        raise CameraError(f"no camera {num} found (cameras: {found or 'none'}); check the "
                          "cable and 'rpicam-hello --list-cameras'")
    # Constructed in two steps to keep hold of a camera whose open fails: see _discard.
    camera = Picamera2.__new__(Picamera2)
    try:
        camera.__init__(camera_num=num)
    except Exception as exc:  # noqa: BLE001 - any failed open: reported with its cause
        _discard(camera)
        cause = exc.__cause__ or exc.__context__ or exc  # `from e` only since 0.3.35
        hint = f"; {BUSY_HINT}" if "busy" in str(cause).lower() else ""
        raise CameraError(f"camera {num} could not be opened: {cause}{hint}") from None
    try:
        s = settings
        turn = s.rotation == 180  # 180 degrees is both flips
        camera.configure(camera.create_video_configuration(
            main={"size": s.resolution or DEFAULT_SIZE},
            transform=Transform(hflip=s.hflip ^ turn, vflip=s.vflip ^ turn),
            controls={"FrameRate": s.fps or DEFAULT_FPS}))
        camera.start_recording(MJPEGEncoder(), FileOutput(output),
                               quality=_quality(s.jpeg_quality, Quality))
    except BaseException:
        with contextlib.suppress(Exception):
            _release(camera)
        raise
    return camera


def _discard(camera) -> None:
    """Undo what a failed Picamera2() leaves: it made its notify pipe (picamera2.py:338)
    and registered with the class-level camera manager (:345, which starts the shared
    listener) before opening, and close() does nothing for a camera that is not open
    (:712). Left alone, every failed open would keep two fds and the listener for good."""
    manager, num = getattr(type(camera), "_cm", None), getattr(camera, "camera_idx", None)
    with contextlib.suppress(Exception):
        if manager is not None and manager.cameras.get(num) is camera:
            manager.cleanup(num)  # stops the listener if no other camera is open
    with contextlib.suppress(Exception):
        camera.notifymeread.close()
    with contextlib.suppress(Exception):
        os.close(camera.notifyme_w)


def _release(camera) -> None:
    """On picamera2's home: stop recording and close the camera."""
    try:
        camera.stop_recording()  # stop() waits for the event loop, with no timeout
    except Exception:  # noqa: BLE001 - e.g. cancelled after it hung: close anyway
        home_log.warning("pi: stopping the recording failed", exc_info=True)
        with contextlib.suppress(Exception):
            camera.stop_encoder()
    finally:
        camera.close()


class Camera(BaseCamera):
    """A Pi camera's MJPEG stream, one capture for every viewer."""

    supports = frozenset(DRIVER_SETTINGS)  # rotation: 0 or 180 (else an error)

    def frames(self) -> Iterator[bytes]:
        try:
            import picamera2  # noqa: F401 - imported for real on picamera2's home
        except ImportError:
            raise CameraError(INSTALL_HINT) from None
        s = self.settings
        if s.rotation in (90, 270):
            raise CameraError(f"CAMERA_ROTATION={s.rotation}: the Pi camera turns only by 180; "
                              "use 0 or 180 (with CAMERA_HFLIP/CAMERA_VFLIP)")
        try:
            num = int(s.source or 0)
        except ValueError:
            raise CameraError(f"CAMERA_SOURCE={s.source!r}: expected a Pi camera number, 0, 1, "
                              "... (see 'rpicam-hello --list-cameras')") from None
        _hold(num)
        held, camera, output = True, None, _NewestFrame()
        try:
            camera = _call(num, "open", OPEN_TIMEOUT, lambda: _open(num, s, output), undo=_release)
            fps = s.fps or DEFAULT_FPS
            log.info("pi: camera %d recording %s at %g fps", num,
                     "x".join(map(str, camera.camera_configuration()["main"]["size"])), fps)
            timeout = FIRST_FRAME_TIMEOUT
            while True:
                frame = output.take(timeout)
                if frame is None:
                    raise CameraError(f"no frame from camera {num} in {timeout:g} s")
                yield frame
                timeout = max(GAP_TIMEOUT, 5.0 / fps)
        except _Stuck:
            held = False  # the overrunning call lets the camera go when it returns
            raise
        finally:
            try:
                if camera is not None:
                    _call(num, "stop", STOP_TIMEOUT, lambda: _release(camera),
                          rescue=getattr(camera, "cancel_all_and_flush", None))
                    log.info("pi: camera %d closed", num)
            except _Stuck:
                held = False
                atexit.unregister(camera.close)  # at exit, it would wait as long again
                raise
            finally:
                if held:
                    _holds[num].release()
