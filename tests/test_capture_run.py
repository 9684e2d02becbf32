"""CaptureRun on its own: backoff, placeholders, stall, idle stop and a stuck driver.

A run reaches its camera only through capture.RunOwner and reads the time only through
capture.Clock, so most tests give it a recording owner and simulated time: no thread and
no sleep, milliseconds whatever the machine's load. The tests with a real BaseCamera
(a stuck driver, a driver's own method names) use real threads and wait on events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial

import pytest

import base_camera
from base_camera import BaseCamera
from capture import PLACEHOLDER_JPEG
from capture.run import CameraError, CaptureRun, Clock
from server import config

START = 1000.0  # simulated monotonic time when a run starts


def jpeg(n: int) -> bytes:
    return b"\xff\xd8 frame %d" % n


class Sim:
    """Simulated time for one run. It passes only while the capture thread waits (its
    backoff) or the driver sleeps (`sleep`); meanwhile the watchdog checks at its tick, as
    its thread would. `at` schedules what the test does, and when."""

    def __init__(self) -> None:
        self.now = START
        self.waits: list[float] = []  # the capture thread's waits: its backoff
        self.clock = Clock(monotonic=lambda: self.now, wait=self.wait)
        self.run: CaptureRun | None = None
        self.watching = False
        self.next_check = 0.0
        self.actions: list[tuple[float, Callable[[], object]]] = []

    def start(self, owner: Owner, previous: CaptureRun | None = None) -> CaptureRun:
        self.run = CaptureRun(owner, previous, self.clock)
        self.watching = True
        self.next_check = self.now + self.run.tick
        return self.run

    def at(self, seconds: float, action: Callable[[], object]) -> None:
        """Do `action` `seconds` after the start."""
        self.actions.append((START + seconds, action))
        self.actions.sort(key=lambda a: a[0])

    def wait(self, flag, seconds: float) -> bool:
        self.waits.append(seconds)
        self.sleep(seconds, until=flag)
        return flag.is_set()

    def sleep(self, seconds: float, until=None) -> None:
        end = self.now + seconds
        while not (until is not None and until.is_set()):
            if not self.watching or self.next_check > end:
                self._advance(end)
                return
            self._advance(self.next_check)
            self.next_check += self.run.tick
            # The watchdog's loop: it ends once the run stopped or its check stopped it.
            if self.run.stopped.is_set() or self.run.check(self.now):
                self.watching = False

    def _advance(self, when: float) -> None:
        while self.actions and self.actions[0][0] <= when:
            self.now, action = self.actions.pop(0)
            action()
        self.now = when


class Owner:
    """A camera as its run sees it (capture.RunOwner), recording what the run did.
    `drivers`: the frames() factory of each start; the last one is used again."""

    def __init__(self, *drivers: Callable, idle_timeout: float = 10.0,
                 stall_timeout: float = 5.0) -> None:
        self.name = "test"
        self.settings = config.CameraSettings(idle_timeout=idle_timeout,
                                              stall_timeout=stall_timeout)
        self.drivers = drivers
        self.starts = 0
        self.live: list[tuple[float, bytes, float | None]] = []  # (time, data, timestamp)
        self.placeholders: list[float] = []  # when each was published
        self.errors: list[tuple[float, str]] = []
        self.subscribers = 1
        self.idle_since: float | None = None
        self.join_at_last_moment = False

    def frames(self):
        self.starts += 1
        return self.drivers[min(self.starts, len(self.drivers)) - 1]()

    def publish(self, run: CaptureRun, data: bytes, live: bool,
                timestamp: float | None) -> None:
        now = run.clock.monotonic()
        if live:
            self.live.append((now, data, timestamp))
        else:
            assert data == PLACEHOLDER_JPEG and timestamp is None
            self.placeholders.append(now)

    def error(self, run: CaptureRun, message: str) -> None:
        self.errors.append((run.clock.monotonic(), message))

    def idle_for(self, now: float) -> float:
        return 0.0 if self.idle_since is None else now - self.idle_since

    def end_if_idle(self, run: CaptureRun) -> bool:
        if self.join_at_last_moment:  # a viewer joins between the idle check and the stop
            self.join_at_last_moment = False
            self.subscribers, self.idle_since = self.subscribers + 1, None
        if self.subscribers:
            return False
        run.stop()
        return True

    def after_capture(self, run: CaptureRun) -> CaptureRun | None:
        run.driver_returned.set()
        return None

    def leave(self, now: float) -> None:
        self.subscribers -= 1
        if self.subscribers == 0:
            self.idle_since = now


def failing(exc: Exception) -> Callable:
    def frames():
        raise exc
        yield  # a generator whose device fails to open
    return frames


def delivering(sim: Sim, every: float = 0.25, count: int | None = None,
               closed: list | None = None, pause: tuple[int, float] | None = None) -> Callable:
    """A driver giving a frame every `every` seconds (`count` of them, then it ends);
    `pause`: after frame n it gives none for that many seconds."""
    def frames():
        n = 0
        try:
            while count is None or n < count:
                n += 1
                yield jpeg(n)
                sim.sleep(pause[1] if pause and pause[0] == n else every)
        finally:
            if closed is not None:
                closed.append(sim.now)
    return frames


def since_start(times) -> list[float]:
    return [t - START for t in times]


# -- restarts with backoff ------------------------------------------------------------------

def test_a_failing_driver_is_restarted_after_1_s_doubling_to_30_s():
    sim = Sim()
    owner = Owner(failing(OSError("no device")))
    run = sim.start(owner)
    sim.at(200, run.stop)
    run.capture()
    assert sim.waits == [1, 2, 4, 8, 16] + [30] * 6
    assert since_start(t for t, _ in owner.errors) == [0, 1, 3, 7, 15, 31, 61, 91, 121, 151, 181]
    assert {message for _, message in owner.errors} == {"OSError: no device"}
    assert owner.starts == 11 and run.error == "OSError: no device"


def test_a_frame_resets_the_backoff_and_a_driver_that_ends_is_restarted():
    sim = Sim()
    down = failing(OSError("no device"))
    owner = Owner(down, down, delivering(sim, count=2), down)
    run = sim.start(owner)
    sim.at(12, run.stop)
    run.capture()
    # Two failures, two frames, then frames() ends: the backoff starts again at 1 s.
    assert sim.waits == [1, 2, 1, 2, 4, 8]
    assert since_start(t for t, _, _ in owner.live) == [3, 3.25]
    assert owner.errors[2] == (START + 3.5, "the driver's frames() ended")


def test_a_driver_yielding_anything_but_jpeg_bytes_fails_with_a_clear_message():
    sim = Sim()
    owner = Owner(lambda: iter(["not a jpeg"]), lambda: iter([b"GIF89a"]))
    run = sim.start(owner)
    sim.at(2, run.stop)
    run.capture()
    assert [message for _, message in owner.errors] == [
        "the driver yielded str, not JPEG bytes", "the driver yielded bytes, not JPEG bytes"]
    assert owner.live == []


def test_a_driver_may_yield_its_own_capture_time_and_any_bytes_like_jpeg():
    sim = Sim()
    owner = Owner(lambda: iter([(jpeg(1), 1234.5), bytearray(jpeg(2)), memoryview(jpeg(3))]))
    run = sim.start(owner)
    sim.at(0.5, run.stop)
    run.capture()
    assert [(data, timestamp) for _, data, timestamp in owner.live] == [
        (jpeg(1), 1234.5), (jpeg(2), None), (jpeg(3), None)]
    assert all(type(data) is bytes for _, data, _ in owner.live)


def test_driver_errors_are_redacted_and_camera_errors_shown_as_they_are():
    sim = Sim()
    owner = Owner(failing(OSError("cannot open rtsp://admin:hunter22@cam/live")),
                  failing(CameraError("the camera is unplugged")))
    run = sim.start(owner)
    sim.at(2, run.stop)
    run.capture()
    assert [message for _, message in owner.errors] == [
        "OSError: cannot open rtsp://admin:***@cam/live", "the camera is unplugged"]


# -- placeholders and stalls ----------------------------------------------------------------

def test_while_the_driver_is_down_viewers_get_the_placeholder_at_once_then_every_second():
    sim = Sim()
    owner = Owner(failing(OSError("no device")), stall_timeout=1.0)  # watchdog tick 0.25 s
    run = sim.start(owner)
    sim.at(6.5, run.stop)
    run.capture()
    assert run.tick == 0.25
    assert since_start(owner.placeholders) == [0, 1, 2, 3, 4, 5, 6]
    assert owner.live == []


def test_placeholders_stop_once_the_driver_delivers_again():
    sim = Sim()
    owner = Owner(failing(OSError("no device")), delivering(sim), stall_timeout=1.0)
    run = sim.start(owner)
    sim.at(5, run.stop)
    run.capture()
    assert since_start(owner.placeholders) == [0, 1]
    assert since_start(t for t, _, _ in owner.live)[:2] == [1, 1.25]
    assert len(owner.live) == 16 and run.error is None


def test_a_driver_silent_for_stall_timeout_is_reported_and_viewers_get_the_placeholder():
    sim = Sim()
    owner = Owner(delivering(sim, pause=(1, 7.5)), stall_timeout=4.0)  # watchdog tick 1 s
    run = sim.start(owner)
    seen = []
    sim.at(6, lambda: seen.append((run.error, run.stalled(sim.now))))
    sim.at(10, run.stop)
    run.capture()
    assert seen == [("no frame from the driver for 5 s", True)]
    assert since_start(owner.placeholders) == [5, 6, 7]  # stalled: more than 4 s
    assert since_start(t for t, _, _ in owner.live)[:2] == [0, 7.5]
    assert run.error is None and not run.stalled(sim.now)


# -- idle stop ------------------------------------------------------------------------------

def test_the_run_stops_idle_timeout_after_the_last_subscriber_left_and_closes_the_driver():
    sim = Sim()
    closed = []
    owner = Owner(delivering(sim, closed=closed), idle_timeout=1.0)  # watchdog tick 0.25 s
    run = sim.start(owner)
    sim.at(2, lambda: owner.leave(sim.now))
    run.capture()  # returns: the run stopped itself
    assert run.stopped_at == START + 3 and closed == [START + 3]
    assert since_start(t for t, _, _ in owner.live)[-1] == 2.75
    assert owner.starts == 1 and not sim.watching


def test_a_subscriber_joining_at_the_last_moment_keeps_the_run():
    sim = Sim()
    owner = Owner(delivering(sim), idle_timeout=1.0)
    run = sim.start(owner)
    sim.at(2, lambda: owner.leave(sim.now))
    sim.at(2.5, lambda: setattr(owner, "join_at_last_moment", True))
    sim.at(4, lambda: owner.leave(sim.now))
    run.capture()
    # Idle at 3 s, but someone joined before the stop: the same driver runs on, and the
    # watchdog stops it 1 s after that one left too.
    assert run.stopped_at == START + 5 and owner.starts == 1
    assert since_start(t for t, _, _ in owner.live) == [n / 4 for n in range(20)]


@pytest.mark.parametrize("idle,stall,tick", [
    (10, 5, 1.0),  # the defaults
    (1, 5, 0.25),
    (3600, 0.4, 0.1),
    (0, 5, 0.05),
])
def test_the_watchdog_checks_every_quarter_of_the_shorter_timeout_from_50_ms_to_1_s(
        idle, stall, tick):
    waits = []

    def wait(flag, seconds):
        waits.append(seconds)
        return len(waits) == 3  # stopped at the third

    owner = Owner(idle_timeout=idle, stall_timeout=stall)
    run = CaptureRun(owner, None, Clock(monotonic=lambda: START, wait=wait))
    watchdog = threading.Thread(target=run.watch)  # it frees its thread's hub when done
    watchdog.start()
    watchdog.join(5)
    assert waits == [tick] * 3


# -- a real camera: its runs, a stuck driver, the driver's own names --------------------------

class Driver(BaseCamera):
    """Frames at up to 100 fps. With `hang_first`, its first frames() hangs before its
    first frame (a read() stuck in C) until the test sets `release`. It records the thread
    of each frames() call and how many ran at once."""

    def __init__(self, hang_first: bool = False) -> None:
        super().__init__(config.CameraSettings(name="test"))
        self.hang_first = hang_first
        self.release = threading.Event()
        self.threads: list[int] = []
        self.running = self.most_running = 0
        self.started = threading.Semaphore(0)  # released at each frames() call
        self.closed = threading.Semaphore(0)  # released each time one ends

    def frames(self):
        self.threads.append(threading.get_ident())
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.started.release()
        try:
            if self.hang_first and len(self.threads) == 1:
                self.release.wait()
            n = 0
            while True:
                n += 1
                yield jpeg(n)
                time.sleep(0.01)
        finally:
            self.running -= 1
            self.closed.release()


def until_stopped(flag, seconds: float) -> bool:
    """A wait that ignores its timeout: no watchdog tick and no restart happens by itself;
    the test calls `CaptureRun.check` with the time it means."""
    while not flag.wait(3600):
        pass
    return True


@pytest.fixture
def manual_runs(monkeypatch):
    """The cameras built in this test make runs that only the test's checks move on."""
    monkeypatch.setattr(base_camera, "CaptureRun",
                        partial(CaptureRun, clock=Clock(wait=until_stopped)))


def live_frame(viewer):
    while (frame := viewer.next_frame(5)) is not None and not frame.live:
        pass
    return frame


def test_an_idle_camera_stops_its_driver_unless_someone_joins_at_the_last_moment(manual_runs):
    camera = Driver()
    try:
        viewer = camera.subscribe()
        assert live_frame(viewer) is not None
        run = camera._run
        viewer.close()
        idle_timeout = camera.settings.idle_timeout
        now = time.monotonic() + idle_timeout
        assert run.owner.idle_for(now) >= idle_timeout  # the watchdog finds it idle...
        late = camera.subscribe()  # ...and a viewer joins before it stops the run
        assert run.owner.end_if_idle(run) is False
        assert camera._run is run and not run.stopped.is_set()
        assert live_frame(late) is not None
        late.close()
        assert run.check(time.monotonic() + idle_timeout)  # idle: the run is over
        assert run.stopped.is_set() and camera._run is None
        assert camera.closed.acquire(timeout=5), "the driver was not closed"
        assert not camera.status()["running"]
        seq = camera.fanout.seq
        run.placeholder(time.monotonic() + 60)  # a stopped run's frames reach nobody
        assert camera.fanout.seq == seq
        with camera.subscribe() as viewer:  # a new run, a new frames()
            assert live_frame(viewer) is not None
            assert camera._run is not run and len(camera.threads) == 2
    finally:
        assert camera.close()


def test_a_stuck_driver_is_reported_stuck_and_never_started_twice(manual_runs):
    camera = Driver(hang_first=True)
    try:
        viewer = camera.subscribe()
        assert camera.started.acquire(timeout=5)
        first = camera._run
        viewer.close()
        assert first.check(time.monotonic() + 3600)  # idle: stopped, its driver hangs on
        viewer = camera.subscribe()
        second = camera._run
        assert second.waits_for is first
        # Its watchdog says why no frame comes, and viewers see the placeholder.
        assert not second.check(first.stopped_at + 3)
        assert second.error == ("the driver is stuck: its last run has not returned from "
                                "frames() for 3 s")
        assert viewer.next_frame(5).data == PLACEHOLDER_JPEG
        assert not camera.delivering and camera.status()["error"] == second.error
        viewer.close()
        assert second.check(time.monotonic() + 3600)
        viewer = camera.subscribe()  # a third run waits for the first one too
        third = camera._run
        assert third.waits_for is first and len(camera.threads) == 1
        camera.release.set()  # the driver returns at last
        assert camera.started.acquire(timeout=5)
        # The third run continued in the first one's thread; the second never ran.
        assert live_frame(viewer) is not None
        assert len(camera.threads) == 2 and camera.threads[0] == camera.threads[1]
        assert camera.most_running == 1 and third.waits_for is None and camera.delivering
        viewer.close()
    finally:
        camera.release.set()
        assert camera.close()


class DriverWithItsOwnNames(BaseCamera):
    """A driver defining, for its own purposes, every name BaseCamera's runs once called
    on the camera and the names they call now."""

    def __init__(self) -> None:
        super().__init__(config.CameraSettings(name="own names"))
        self._runs = self._run_owner = self.owner = "the driver's own"

    def frames(self):
        n = 0
        while True:
            n += 1
            yield jpeg(n)
            time.sleep(0.01)

    def _publish(self, *args, **kwargs):
        return "the driver's own"

    _on_live_frame = _on_error = _idle_for = _end_run = _after_capture = _publish
    publish = error = idle_for = end_if_idle = after_capture = settings_for = _publish


def test_a_driver_may_define_any_method_without_breaking_capture():
    camera = DriverWithItsOwnNames()
    try:
        with camera.subscribe() as viewer:
            frame = live_frame(viewer)
            assert frame is not None and frame.data.startswith(b"\xff\xd8 frame")
        assert camera.status()["frames_captured"] >= 1
    finally:
        assert camera.close()
