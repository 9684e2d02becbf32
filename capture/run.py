"""A capture run: one start..stop of a camera's driver, in its own OS thread.

The capture thread iterates the driver's `frames()` and publishes each JPEG. A driver
that raises or ends is restarted with backoff (1 s doubling to 30 s) for as long as the
run lasts. A watchdog thread beside it stops the run once the camera has had no
subscriber for its idle timeout, and while the driver is failing or stalled sends the
"camera unavailable" placeholder about once a second, so viewers always see something.

A driver stuck in C never returns from `frames()` (or from closing it). Its thread is
never abandoned for a new one: the next run waits for it and then continues in that same
thread, so one camera never has two drivers open nor more than one capture thread.

A run sees its camera only as a `RunOwner` and the time only through a `Clock`: tests
drive it with a recording owner and simulated time (tests/test_capture_run.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from server.redact import redact

from . import native
from .jpeg import PLACEHOLDER_JPEG

log = logging.getLogger(__name__)

PLACEHOLDER_INTERVAL = 1.0  # seconds between placeholder frames while the camera is down
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


class CameraError(Exception):
    """A driver's failure whose message is meant for users (shown in /status as is)."""


class Timeouts(Protocol):
    idle_timeout: float  # seconds without a subscriber before the run stops
    stall_timeout: float  # seconds without a live frame before the driver counts as stalled


class RunOwner(Protocol):
    """What a capture run needs from its camera, and nothing more.

    BaseCamera gives its runs a private object with these, not itself: no method a
    driver defines can clash with them. Tests give runs their own.
    """

    name: str  # for the log
    settings: Timeouts

    def frames(self) -> Iterator:
        """A new iterator over the driver's frames: JPEG bytes or (bytes, capture time)."""

    def publish(self, run: CaptureRun, data: bytes, live: bool,
                timestamp: float | None) -> None:
        """Give viewers a live frame or the placeholder, unless `run` was stopped."""

    def error(self, run: CaptureRun, message: str) -> None:
        """The driver failed with `message` (already redacted, meant for users)."""

    def idle_for(self, now: float) -> float:
        """Seconds the camera has had no subscriber at monotonic time `now` (0: has one)."""

    def end_if_idle(self, run: CaptureRun) -> bool:
        """Stop `run` for being idle; False if someone subscribed at the last moment."""

    def after_capture(self, run: CaptureRun) -> CaptureRun | None:
        """The capture thread is done with `run`: the run that waited for it, if any."""


@dataclass(frozen=True, slots=True)
class Clock:
    """How a run reads the time and waits: tests pass their own to run without real time."""

    monotonic: Callable[[], float] = time.monotonic
    wait: Callable[[native.Flag, float], bool] = native.Flag.wait  # flag.wait(seconds)


SYSTEM_CLOCK = Clock()


class CaptureRun:
    """One run of a camera's driver: its capture thread's loop and its watchdog."""

    def __init__(self, owner: RunOwner, previous: CaptureRun | None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.owner = owner
        self.clock = clock
        self.stopped = native.Flag()  # set once: the run is over
        self.driver_returned = native.Flag()  # set once: frames() returned or was closed
        self.started = clock.monotonic()
        self.stopped_at: float | None = None
        self.last_frame_at = self.started  # monotonic time of the newest live frame
        self.last_placeholder_at = -math.inf  # monotonic time of the newest placeholder
        self.error: str | None = None
        self.captured: deque[float] = deque(maxlen=30)  # monotonic capture times, for fps
        # The run whose driver has not returned yet, if any: this one waits for it and
        # then continues in its thread. A run that was itself waiting never had a thread.
        owner = previous
        while owner is not None and owner.waits_for is not None:
            owner = owner.waits_for
        self.waits_for = owner if owner and not owner.driver_returned.is_set() else None

    @property
    def name(self) -> str:
        return self.owner.name

    def start(self) -> None:
        """Start the watchdog, and the capture unless it must wait for the run before."""
        if self.waits_for is None:
            native.start_thread(_capture_thread, (self,))
        native.start_thread(self.watch, ())

    def stop(self) -> None:
        if self.stopped_at is None:
            self.stopped_at = self.clock.monotonic()
        self.stopped.set()

    def stuck_for(self, now: float) -> float | None:
        """Seconds this run's driver has not returned since it was stopped, or None."""
        if self.stopped_at is None or self.driver_returned.is_set():
            return None
        return now - self.stopped_at

    def stalled(self, now: float) -> bool:
        return now - self.last_frame_at > self.owner.settings.stall_timeout

    # -- the capture thread -------------------------------------------------------------

    def capture(self) -> None:
        """Run the driver, restarting it with backoff when it fails, until stopped."""
        backoff = BACKOFF_FIRST
        log.info("%s: capture started", self.name)
        try:
            while not self.stopped.is_set():
                frames = None
                try:
                    frames = self.owner.frames()
                    for item in frames:
                        if self.stopped.is_set():
                            break
                        self._on_frame(item)
                        backoff = BACKOFF_FIRST
                    else:
                        raise CameraError("the driver's frames() ended")
                except Exception as exc:  # noqa: BLE001 - any driver failure is reported
                    self._on_error(exc)
                finally:
                    _close_quietly(frames, self.name)
                if self.stopped.is_set():
                    break
                log.info("%s: restarting the driver in %.0f s", self.name, backoff)
                self.clock.wait(self.stopped, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            log.info("%s: capture stopped", self.name)

    def _on_frame(self, item) -> None:
        # Drivers yield JPEG bytes, or (bytes, capture time) when they know it better.
        data, timestamp = item if isinstance(item, tuple) else (item, None)
        if not isinstance(data, (bytes, bytearray, memoryview)) or data[:2] != b"\xff\xd8":
            raise CameraError(f"the driver yielded {type(data).__name__}, not JPEG bytes")
        now = self.clock.monotonic()
        self.last_frame_at = now
        self.captured.append(now)
        self.error = None
        self.owner.publish(self, bytes(data), True, timestamp)

    def _on_error(self, exc: Exception) -> None:
        message = str(exc) if isinstance(exc, CameraError) else f"{type(exc).__name__}: {exc}"
        message = redact(message)  # shown in /status, snapshots and the page
        self.error = message
        self.owner.error(self, message)
        log.warning("%s: %s", self.name, message)
        log.debug("%s: driver failure", self.name, exc_info=exc)
        # Show it now, not at the watchdog's next tick, unless viewers see one already.
        self.placeholder(self.clock.monotonic())

    def placeholder(self, now: float) -> None:
        """Publish the placeholder, at most once per PLACEHOLDER_INTERVAL."""
        if now - self.last_placeholder_at >= PLACEHOLDER_INTERVAL:
            self.last_placeholder_at = now
            self.owner.publish(self, PLACEHOLDER_JPEG, False, None)

    # -- the watchdog ---------------------------------------------------------------------

    @property
    def tick(self) -> float:
        """Seconds between the watchdog's checks: a quarter of the shorter timeout, kept
        between 50 ms and 1 s, so an idle or stalled camera is noticed soon after it."""
        s = self.owner.settings
        return min(1.0, max(0.05, min(s.idle_timeout, s.stall_timeout) / 4))

    def watch(self) -> None:
        """The watchdog thread: a check every tick until the run is over."""
        tick = self.tick
        try:
            while not self.clock.wait(self.stopped, tick):
                if self.check(self.clock.monotonic()):
                    break
        finally:
            native.destroy_thread_hub()

    def check(self, now: float) -> bool:
        """One watchdog tick at monotonic time `now`: idle stop (True: the run is over),
        and placeholders while the driver is down, stalled or stuck."""
        s = self.owner.settings
        if self.owner.idle_for(now) >= s.idle_timeout and self.owner.end_if_idle(self):
            return True
        stuck = self.waits_for.stuck_for(now) if self.waits_for else None
        if stuck is not None:
            self.error = (f"the driver is stuck: its last run has not returned from "
                          f"frames() for {stuck:.0f} s")
        elif self.stalled(now) and self.error is None:
            self.error = f"no frame from the driver for {now - self.last_frame_at:.0f} s"
            log.warning("%s: %s", self.name, self.error)
        if self.error or self.stalled(now):
            self.placeholder(now)
        return False


def _capture_thread(run: CaptureRun) -> None:
    """One camera's capture thread: its run, then any run that waited for it."""
    try:
        while run is not None:
            try:
                run.capture()
            finally:
                run = run.owner.after_capture(run)
    finally:
        native.destroy_thread_hub()


def _close_quietly(frames: Iterator | None, name: str) -> None:
    close = getattr(frames, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:  # noqa: BLE001 - a driver failing to clean up must not kill capture
        log.warning("%s: error while closing the driver", name, exc_info=True)
