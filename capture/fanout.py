"""The newest-frame buffer: one producer publishes, every subscriber takes the newest.

    producer (any OS thread) -> publish() -> newest Frame -> each waiting Viewer wakes

A camera's capture thread is the producer of its Fanout; a size variant's maker and a
clip's player are producers of theirs. Each Viewer waits on its own wake-up and takes
the newest frame newer than the last it took: a slow viewer skips frames, never queues
them. Consumers that need every frame (recording) ask for a short history.

Who waits decides how to wake them, chosen once per viewer: OS threads (every viewer
without gevent; recorders and variant makers always) wait on native locks and are woken
by the producer directly. Greenlets (viewers under gevent) may only be switched to in
their hub's thread, so the producer signals the hub's async watcher (thread-safe,
coalescing) and the hub wakes them.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass

from . import native

try:
    from greenlet import getcurrent as _getcurrent  # comes with gevent
except ImportError:
    _getcurrent = None


class CameraClosed(Exception):
    """The frames' source was closed (server shutting down, clip ended): streams end."""


@dataclass(frozen=True, eq=False, slots=True)
class Frame:
    """One JPEG as captured. Shared by every viewer, never copied per viewer."""

    data: bytes
    timestamp: float  # time.time() at capture
    seq: int  # increases by one per published frame
    live: bool = True  # False: the "camera unavailable" placeholder


class _NativeWakeups:
    """Waiters that are OS threads: the producer wakes them directly."""

    def __init__(self, lock) -> None:
        self._lock = lock
        self._waiting: list[native.Waiter] = []

    def new_waiter(self) -> native.Waiter:
        return native.Waiter()

    def wait(self, fanout: Fanout, waiter: native.Waiter, last_seq: int,
             timeout: float | None) -> None:
        with self._lock:
            # Checked under the producer's lock: a frame published after this check
            # finds the waiter registered.
            if fanout.seq > last_seq or fanout.closed:
                return
            self._waiting.append(waiter)
        waiter.wait(timeout)

    def wake_all(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.wake()


class _GreenWaiter:
    """One greenlet's wake-up: the hub switches straight into it (gevent's own Event,
    minus its per-call callback and timer objects)."""

    __slots__ = ("_hub", "_greenlet")

    def __init__(self, hub) -> None:
        self._hub = hub
        self._greenlet = None

    def wait(self, timeout: float | None = None) -> None:
        self._greenlet = _getcurrent()
        timer = None
        if timeout is not None:
            timer = self._hub.loop.timer(max(timeout, 0))
            timer.start(self.wake)
        try:
            self._hub.switch()
        finally:
            self._greenlet = None
            if timer is not None:
                timer.close()

    def wake(self) -> None:
        greenlet = self._greenlet
        if greenlet is not None:
            self._greenlet = None
            try:
                greenlet.switch()
            except BaseException:  # noqa: BLE001 - one viewer must not stop the fan-out
                self._hub.handle_error(greenlet, *sys.exc_info())


class _HubWakeups:
    """Waiters that are greenlets: producers in other OS threads signal the hub, which
    wakes them in its own thread."""

    def __init__(self, hub) -> None:
        self._hub = hub
        self._waiting: list[_GreenWaiter] = []  # touched in the hub's thread only
        self._async = hub.loop.async_()
        self._async.start(self._wake_in_hub)
        self._async.ref = False  # never keeps a worker's loop alive on its own

    def new_waiter(self) -> _GreenWaiter:
        return _GreenWaiter(self._hub)

    def wait(self, fanout: Fanout, waiter: _GreenWaiter, last_seq: int,
             timeout: float | None) -> None:
        # Greenlets switch only at waits, so the hub runs no wake between the caller's
        # check and this append.
        self._waiting.append(waiter)
        waiter.wait(timeout)

    def wake_all(self) -> None:
        self._async.send()  # any thread; several sends before the hub runs coalesce

    def _wake_in_hub(self) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.wake()

    def close(self) -> None:
        self._async.close()


class Viewer:
    """One subscription: its own wake-up and the last frame it took.

    Use as a context manager, or call `close()`: the subscription ends at once.
    """

    __slots__ = ("_fanout", "_wakeups", "_waiter", "last_seq", "counted", "closed", "missed")

    def __init__(self, fanout: Fanout, wakeups, counted: bool) -> None:
        self._fanout = fanout
        self._wakeups = wakeups
        self._waiter = wakeups.new_waiter()
        self.last_seq = 0
        self.counted = counted
        self.closed = False
        self.missed = 0  # next_frames(): frames that left the history before being taken

    def next_frame(self, timeout: float | None = None) -> Frame | None:
        """The newest frame newer than the last one taken; None after `timeout` seconds.

        A slow viewer skips frames and never gets one twice. Raises CameraClosed.
        """
        fanout = self._fanout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if fanout.closed:
                raise CameraClosed()
            frame = fanout.newest
            if frame is not None and frame.seq > self.last_seq:
                self.last_seq = frame.seq
                return frame
            if deadline is None:
                self._wakeups.wait(fanout, self._waiter, self.last_seq, None)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._wakeups.wait(fanout, self._waiter, self.last_seq, remaining)

    def next_frames(self, timeout: float | None = None) -> list[Frame]:
        """Every frame published since the last one taken, oldest first, as far as the
        fanout's history reaches (see `Fanout.keep_history`); [] after `timeout`."""
        after = self.last_seq
        newest = self.next_frame(timeout)
        if newest is None:
            return []
        frames = self._fanout.since(after, newest.seq)
        if after:
            self.missed += newest.seq - after - len(frames)
        return frames

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._fanout._leave(self)

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Fanout:
    """The newest frame and everyone waiting for the next one."""

    def __init__(self) -> None:
        self._lock = native.allocate_lock()
        self._native = _NativeWakeups(self._lock)
        hub = native.gevent_hub()
        self._green = _HubWakeups(hub) if hub is not None else None
        self.seq = 0  # of the newest frame ever published
        self.newest: Frame | None = None  # what viewers take; None until a frame comes
        self.closed = False
        self.viewers = 0  # counted subscribers: stream viewers
        self.subscribers = 0  # everyone: viewers, snapshots, recorders, variant makers
        self.idle_since: float | None = time.monotonic()  # no subscriber since (monotonic)
        self._history: deque[Frame] | None = None

    def publish(self, data: bytes, timestamp: float | None = None, live: bool = True) -> Frame:
        """Make `data` the newest frame and wake everyone waiting (any OS thread)."""
        with self._lock:
            self.seq += 1
            frame = Frame(data, time.time() if timestamp is None else timestamp, self.seq, live)
            self.newest = frame
            if self._history is not None:
                self._history.append(frame)
        self._wake_all()
        return frame

    def clear(self) -> None:
        """Forget the newest frame: a new capture starts, and nobody should be shown a
        stale frame from the last one."""
        with self._lock:
            self.newest = None
            if self._history is not None:
                self._history.clear()

    def keep_history(self, frames: int) -> None:
        """Keep the last `frames` frames for `Viewer.next_frames` (0: none)."""
        with self._lock:
            self._history = deque(self._history or (), maxlen=frames) if frames else None

    def since(self, after: int, upto: int) -> list[Frame]:
        with self._lock:
            history = self._history or ()
            return [f for f in history if after < f.seq <= upto]

    def subscribe(self, counted: bool = True, native_thread: bool = False) -> Viewer:
        """Join. `counted`: a stream viewer (shown in status, counted for limits).
        `native_thread`: the caller is an OS thread even under gevent (a recorder)."""
        with self._lock:
            if self.closed:
                raise CameraClosed()
            self.subscribers += 1
            self.viewers += counted
            self.idle_since = None
        wakeups = self._native if native_thread or self._green is None else self._green
        return Viewer(self, wakeups, counted)

    def _leave(self, viewer: Viewer) -> None:
        with self._lock:
            self.subscribers -= 1
            self.viewers -= viewer.counted
            if self.subscribers == 0:
                self.idle_since = time.monotonic()

    def close(self) -> None:
        """End every subscription: waiting viewers raise CameraClosed."""
        self.closed = True
        self._wake_all()

    def release(self) -> None:
        """Free the hub watcher once nobody can wait any more (a finished clip)."""
        self.close()
        if self._green is not None:
            self._green.close()

    def _wake_all(self) -> None:
        self._native.wake_all()
        if self._green is not None:
            self._green.wake_all()
