"""BaseCamera: one capture run per camera, shared by every viewer.

Data flows one way:

    driver frames() -> capture thread (native OS thread) -> newest Frame
        -> each waiting viewer's own event -> that viewer's next_frame()

A driver subclasses BaseCamera and implements `frames()`, a generator yielding JPEG
bytes (a static, class or instance method; drivers written for the classic
flask-video-streaming work unchanged). The first viewer starts the capture; it stops
`CAMERA_IDLE_TIMEOUT` seconds after the last viewer left, by closing the driver's
generator so the driver releases its device.

The driver always runs in a native OS thread, so a driver blocking in C cannot freeze
a gevent worker. Under gevent, frames cross into the hub through its thread-safe async
watcher and viewers are woken there; without gevent, plain `threading` events are used.
The choice is made once, when the camera is built.

A watchdog thread lives beside each capture run: it stops the run when the camera has
been idle long enough, and while viewers wait on a failed or stalled driver it sends
them a "camera unavailable" placeholder about once a second. A driver that raises or
ends is restarted with backoff (1 s doubling to 30 s) for as long as viewers remain.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import config

log = logging.getLogger(__name__)

PLACEHOLDER_JPEG = (Path(__file__).resolve().parent / "static" / "unavailable.jpg").read_bytes()
PLACEHOLDER_INTERVAL = 1.0  # seconds between placeholder frames while the camera is down
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


def _original(module: str, name: str):
    """`module.name` as the stdlib defines it, even after gevent monkey-patched it."""
    try:
        from gevent import monkey
    except ImportError:
        return getattr(importlib.import_module(module), name)
    return monkey.get_original(module, name)


try:
    from greenlet import getcurrent as _getcurrent  # comes with gevent
except ImportError:
    _getcurrent = None

_start_native_thread = _original("_thread", "start_new_thread")
_native_lock = _original("_thread", "allocate_lock")


def _gevent_hub():
    """The calling thread's gevent hub if gevent patched `threading`, else None."""
    try:
        from gevent import get_hub, monkey
    except ImportError:
        return None
    return get_hub() if monkey.is_module_patched("threading") else None


class CameraError(Exception):
    """A driver's failure whose message is meant for users (shown in /status as is)."""


class CameraClosed(Exception):
    """The camera was closed (server shutting down): streams end."""


@dataclass(frozen=True, eq=False, slots=True)
class Frame:
    """One JPEG as captured. Shared by every viewer, never copied per viewer."""

    data: bytes
    timestamp: float  # time.time() at capture
    seq: int  # increases by one per published frame, across runs
    live: bool = True  # False: the "camera unavailable" placeholder


class _NativeFlag:
    """A set-once flag native threads can wait on, whatever gevent patched.

    `set()` may be called from any thread but must be serialised by the caller.
    """

    def __init__(self) -> None:
        self._lock = _native_lock()
        self._lock.acquire()
        self.is_set = False

    def set(self) -> None:
        if not self.is_set:
            self.is_set = True
            self._lock.release()

    def wait(self, timeout: float) -> bool:
        if self._lock.acquire(timeout=max(timeout, 0)):
            self._lock.release()
            return True
        return False


class _ThreadEvent:
    """A viewer's event when viewers are OS threads."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float | None = None) -> None:
        self._event.wait(timeout)

    def set(self) -> None:
        self._event.set()


class _GreenEvent:
    """A viewer's event when viewers are greenlets: set() runs in the hub only.

    Switching straight into the waiting greenlet from the hub is what gevent's own
    Event does, minus the per-call callback and timer objects.
    """

    __slots__ = ("_hub", "_waiter")

    def __init__(self, hub) -> None:
        self._hub = hub
        self._waiter = None

    def clear(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> None:
        self._waiter = _getcurrent()
        timer = None
        if timeout is not None:
            timer = self._hub.loop.timer(max(timeout, 0))
            timer.start(self.set)
        try:
            self._hub.switch()
        finally:
            self._waiter = None
            if timer is not None:
                timer.close()

    def set(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            try:
                waiter.switch()
            except BaseException:  # noqa: BLE001 - one viewer must not stop the fan-out
                self._hub.handle_error(waiter, *sys.exc_info())


class _Run:
    """One start..stop of the driver: its capture thread and its watchdog."""

    def __init__(self, first_seq: int) -> None:
        self.first_seq = first_seq
        self.stop = _NativeFlag()  # set once: the run is over
        self.done = _NativeFlag()  # set once: the driver's generator is closed
        self.started = time.monotonic()
        self.last_frame = self.started  # monotonic time of the newest live frame
        self.last_placeholder = 0.0  # monotonic time of the newest placeholder; 0: live
        self.error: str | None = None
        self.captured: deque[float] = deque(maxlen=30)  # monotonic capture times, for fps


class Viewer:
    """One client's subscription: its own event and the last frame it took.

    Use as a context manager, or call `close()`: the subscription ends at once.
    """

    __slots__ = ("_camera", "_event", "last_seq", "closed")

    def __init__(self, camera: BaseCamera, last_seq: int) -> None:
        self._camera = camera
        self._event = camera._new_event()
        self.last_seq = last_seq
        self.closed = False

    def next_frame(self, timeout: float | None = None) -> Frame | None:
        """The newest frame newer than the last one taken; None after `timeout` seconds.

        A slow viewer skips frames and never gets one twice. Raises CameraClosed.
        """
        camera = self._camera
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if camera._closed:
                raise CameraClosed()
            frame = camera._newest
            if frame is not None and frame.seq > self.last_seq:
                self.last_seq = frame.seq
                return frame
            if deadline is None:
                camera._wait(self._event, self.last_seq, None)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                camera._wait(self._event, self.last_seq, remaining)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._camera._leave()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class BaseCamera:
    """A camera: its driver's capture run, the newest frame and its viewers."""

    def __init__(self, settings: config.Settings | None = None) -> None:
        self.settings = settings if settings is not None else config.load()
        self._hub = _gevent_hub()
        self._lock = _native_lock()  # guards the fields below against native threads
        self._seq = 0
        self._viewers = 0
        self._idle_since: float | None = None
        self._run: _Run | None = None  # the capture run, while there is one
        self._last_run: _Run | None = None
        self._closed = False
        self._newest: Frame | None = None  # what viewers take
        self._waiting: list = []  # events of viewers waiting for a newer frame
        self._incoming: Frame | None = None  # gevent: handed from native threads to the hub
        self._local = threading.local()  # get_frame(): last frame per thread/greenlet
        self._started_at = time.time()
        self._frames_captured = 0
        self._last_error: str | None = None
        self._last_live: Frame | None = None
        if self._hub is not None:
            self._async = self._hub.loop.async_()
            self._async.start(self._on_incoming)
            self._async.ref = False  # never keeps a worker's loop alive on its own

    # -- the driver's side ---------------------------------------------------------

    def frames(self) -> Iterator[bytes]:
        """Yield JPEG frames forever. Drivers override this (static, class or instance
        method); the generator is closed when the capture stops: release the device in a
        `finally:` block."""
        raise NotImplementedError("a camera driver must implement frames()")

    # -- the viewers' side ---------------------------------------------------------

    def subscribe(self) -> Viewer:
        """Join as a viewer, starting the capture if it is not running."""
        with self._lock:
            if self._closed:
                raise CameraClosed()
            self._viewers += 1
            self._idle_since = None
            run = self._run
            if run is None:
                run = self._run = self._last_run = _Run(first_seq=self._seq + 1)
                self._newest = None
                _start_native_thread(self._capture, (run,))
                _start_native_thread(self._watch, (run,))
        return Viewer(self, last_seq=run.first_seq - 1)

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
        with self.subscribe() as viewer:
            frame = self._newest
            if frame is not None and frame.live and not self._stalled():
                return frame
            while (remaining := deadline - time.monotonic()) > 0:
                frame = viewer.next_frame(remaining)
                if frame is not None and frame.live:
                    return frame
        return None

    def status(self) -> dict:
        """Figures for /status: plain JSON-able values."""
        run, now = self._run, time.monotonic()
        live = self._last_live
        fps = None
        if run is not None and len(run.captured) >= 2 and now - run.last_frame < 2.0:
            span = run.captured[-1] - run.captured[0]
            fps = round((len(run.captured) - 1) / span, 2) if span > 0 else None
        return {
            "driver": type(self).__module__,
            "running": run is not None and run.error is None and not self._stalled(),
            "viewers": self._viewers,
            "frames_captured": self._frames_captured,
            "fps": fps,
            "frame_size": jpeg_size(live.data) if live else None,
            "frame_bytes": len(live.data) if live else None,
            "frame_age": round(time.time() - live.timestamp, 3) if live else None,
            "error": self._last_error,
            "uptime": round(time.time() - self._started_at, 3),
        }

    @property
    def viewers(self) -> int:
        return self._viewers

    def close(self, wait: float = 2.0) -> None:
        """Stop the capture, end every stream and wait up to `wait` seconds for the
        driver to release its device."""
        with self._lock:
            self._closed = True
            if self._run is not None:
                self._stop(self._run)
            run = self._last_run  # also when an earlier close(wait=0) stopped it
        self._wake_all()
        if run is not None and wait > 0 and not run.done.wait(wait):
            log.warning("the camera driver did not stop within %.1f s", wait)

    # -- internals -------------------------------------------------------------------

    def _new_event(self):
        return _ThreadEvent() if self._hub is None else _GreenEvent(self._hub)

    def _wait(self, event, last_seq: int, timeout: float | None) -> None:
        """Block the calling viewer until a frame newer than `last_seq` may be there."""
        if self._hub is not None:
            # Greenlets only switch at wait(): nothing can publish in between.
            self._waiting.append(event)
            event.wait(timeout)
            return
        event.clear()
        with self._lock:
            frame = self._newest
            if (frame is None or frame.seq <= last_seq) and not self._closed:
                self._waiting.append(event)
            else:
                return
        event.wait(timeout)

    def _leave(self) -> None:
        with self._lock:
            self._viewers -= 1
            if self._viewers == 0:
                self._idle_since = time.monotonic()

    def _stop(self, run: _Run) -> None:
        """End `run` (caller holds the lock); its threads notice and exit."""
        run.stop.set()
        if self._run is run:
            self._run = None

    def _stalled(self) -> bool:
        run = self._run
        return run is not None and time.monotonic() - run.last_frame > self.settings.stall_timeout

    def _publish(self, run: _Run, data: bytes, live: bool = True) -> Frame | None:
        """Make `data` the newest frame and wake the waiting viewers (native threads)."""
        with self._lock:
            if run.stop.is_set:
                return None
            self._seq += 1
            frame = Frame(data, time.time(), self._seq, live)
            run.last_placeholder = 0.0 if live else time.monotonic()
            if self._hub is not None:
                self._incoming = frame
            else:
                self._newest = frame
                waiting, self._waiting = self._waiting, []
        if self._hub is not None:
            self._async.send()  # thread-safe; several sends before the hub runs coalesce
        else:
            for event in waiting:
                event.set()
        return frame

    def _on_incoming(self) -> None:
        """In the hub: take the newest frame handed over and wake the waiting viewers."""
        frame = self._incoming
        run = self._run
        if frame is not None and run is not None and frame.seq >= run.first_seq:
            newest = self._newest
            if newest is None or frame.seq > newest.seq:
                self._newest = frame
        self._wake_all_in_context()

    def _wake_all(self) -> None:
        if self._hub is not None:
            self._async.send()
        else:
            self._wake_all_in_context()

    def _wake_all_in_context(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for event in waiting:
            event.set()

    def _capture(self, run: _Run) -> None:
        """The capture thread: run the driver, restart it with backoff when it fails."""
        name = type(self).__module__
        backoff = BACKOFF_FIRST
        log.info("%s: capture started", name)
        try:
            while not run.stop.is_set:
                frames = None
                try:
                    frames = self.frames()
                    for data in frames:
                        if run.stop.is_set:
                            break
                        self._on_frame(run, data)
                        backoff = BACKOFF_FIRST
                    else:
                        raise CameraError("the driver's frames() ended")
                except Exception as exc:  # noqa: BLE001 - any driver failure is reported
                    self._on_error(run, exc)
                finally:
                    _close_quietly(frames, name)
                if run.stop.is_set:
                    break
                log.info("%s: restarting the driver in %.0f s", name, backoff)
                run.stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            run.done.set()
            _destroy_thread_hub()
            log.info("%s: capture stopped", name)

    def _on_frame(self, run: _Run, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)) or data[:2] != b"\xff\xd8":
            raise CameraError(f"the driver yielded {type(data).__name__}, not JPEG bytes")
        now = time.monotonic()
        run.last_frame = now
        run.captured.append(now)
        run.error = None
        self._last_error = None
        self._frames_captured += 1
        self._last_live = self._publish(run, bytes(data)) or self._last_live

    def _on_error(self, run: _Run, exc: Exception) -> None:
        message = str(exc) if isinstance(exc, CameraError) else f"{type(exc).__name__}: {exc}"
        run.error = self._last_error = message
        log.warning("%s: %s", type(self).__module__, message)
        log.debug("driver failure", exc_info=exc)
        # Show it now, not at the watchdog's next tick, unless viewers see one already.
        if time.monotonic() - run.last_placeholder >= PLACEHOLDER_INTERVAL:
            self._publish(run, PLACEHOLDER_JPEG, live=False)

    def _watch(self, run: _Run) -> None:
        """The watchdog: idle stop, and placeholders while the driver is down."""
        s = self.settings
        tick = min(1.0, max(0.05, min(s.idle_timeout, s.stall_timeout) / 4))
        while not run.stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                idle = self._idle_since
                if self._viewers == 0 and idle is not None and now - idle >= s.idle_timeout:
                    self._stop(run)
                    break
            stalled = now - run.last_frame > s.stall_timeout
            if stalled and run.error is None:
                run.error = self._last_error = (
                    f"no frame from the driver for {now - run.last_frame:.0f} s")
                log.warning("%s: %s", type(self).__module__, run.error)
            if (run.error or stalled) and now - run.last_placeholder >= PLACEHOLDER_INTERVAL:
                self._publish(run, PLACEHOLDER_JPEG, live=False)
        _destroy_thread_hub()


def _close_quietly(frames, name: str) -> None:
    close = getattr(frames, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:  # noqa: BLE001 - a driver failing to clean up must not kill capture
        log.warning("%s: error while closing the driver", name, exc_info=True)


def _destroy_thread_hub() -> None:
    """Free the gevent hub a driver may have made in this native thread (a patched
    time.sleep makes one), so restarts do not leak loops."""
    try:
        import gevent  # noqa: F401
    except ImportError:
        return
    from gevent._hub_local import get_hub_if_exists  # the only way that does not make one

    hub = get_hub_if_exists()
    if hub is not None:
        hub.destroy(destroy_loop=True)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame marker, or None."""
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return width, height
        i += 2 + length
    return None
