"""Fanout on its own: the newest frame wins, nothing queues, every waiter wakes once per
frame, close ends every wait, timeouts return None; OS-thread and greenlet waiters.

Waiters are OS threads or greenlets (gevent's hub in this thread, as under gunicorn's
gevent worker); the producer is always an OS thread, as a capture thread is. The tests
synchronise on events, never on elapsed time. The last test runs a monkey-patched process,
where Fanout chooses the greenlets' wake-ups by itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import gevent
import pytest
from conftest import ROOT

from capture import CameraClosed, Fanout, native


def frame(n: int) -> bytes:
    return b"\xff\xd8 frame %d" % n


class Counting:
    """A viewer's wake-up that counts its waits and wakes, and says when it waits."""

    def __init__(self, waiter, waiting: threading.Semaphore) -> None:
        self.waiter = waiter
        self.waiting = waiting
        self.waits = self.wakes = 0

    def wait(self, timeout: float | None = None) -> None:
        self.waits += 1
        self.waiting.release()  # registered already: a frame published now wakes it
        self.waiter.wait(timeout)

    def wake(self) -> None:
        self.wakes += 1
        self.waiter.wake()


class Waiters:
    """Runs viewers' code as OS threads or as greenlets of this thread's hub."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.results: list[dict] = []
        self._workers: list = []

    def spawn(self, body: Callable[[], object]) -> dict:
        result: dict = {}

        def run() -> None:
            try:
                result["value"] = body()
            except BaseException as exc:  # noqa: BLE001 - the test looks at it
                result["error"] = exc

        self.results.append(result)
        if self.kind == "threads":
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
        else:
            worker = gevent.spawn(run)
        self._workers.append(worker)
        return result

    def join(self, timeout: float = 10) -> list[dict]:
        if self.kind == "threads":
            for worker in self._workers:
                worker.join(timeout)
        else:
            gevent.joinall(self._workers, timeout=timeout)  # runs the hub meanwhile
        assert all(result for result in self.results), "a waiter did not finish"
        return self.results


@pytest.fixture(params=["threads", "greenlets"])
def waiters(request, monkeypatch):
    """Waiters of each kind, and a `make()` for fanouts that suit them (greenlets get the
    hub's wake-ups, as when gevent patched `threading`)."""
    fanouts: list[Fanout] = []
    hub = None
    if request.param == "greenlets":
        # A hub of its own: in-process tests before (the connection cap's gevent
        # listener) may leave this thread's hub with watchers and greenlets of theirs.
        gevent.get_hub().destroy(destroy_loop=True)
        hub = gevent.get_hub()
        monkeypatch.setattr(native, "gevent_hub", lambda: hub)
    runner = Waiters(request.param)

    def make() -> Fanout:
        fanouts.append(Fanout())
        return fanouts[-1]

    runner.make = make
    yield runner
    for fanout in fanouts:
        fanout.release()
    if hub is not None:
        hub.destroy(destroy_loop=True)


def producer(body: Callable[[], None]) -> threading.Thread:
    """The producer: an OS thread, as a capture thread is."""
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def counting(viewer, waiting: threading.Semaphore) -> Counting:
    viewer._waiter = spy = Counting(viewer._waiter, waiting)
    return spy


def acquire(semaphore: threading.Semaphore, times: int) -> None:
    for _ in range(times):
        assert semaphore.acquire(timeout=10), "a waiter never waited"


# -- the newest frame, nothing queued ------------------------------------------------------

def test_the_newest_frame_wins():
    fanout = Fanout()
    viewer = fanout.subscribe()
    for n in (1, 2, 3):
        fanout.publish(frame(n), timestamp=100.0 + n)
    taken = viewer.next_frame()
    assert (taken.seq, taken.data, taken.timestamp, taken.live) == (3, frame(3), 103.0, True)
    assert viewer.next_frame(0) is None  # and never the same frame twice
    placeholder = fanout.publish(b"placeholder", live=False)
    assert viewer.next_frame(0) is placeholder and not placeholder.live


def test_a_slow_viewer_skips_to_the_newest_frame_and_nothing_queues_for_it():
    fanout = Fanout()
    slow, fast = fanout.subscribe(), fanout.subscribe()
    fanout.publish(frame(1))
    assert slow.next_frame(0).seq == 1
    for n in range(2, 1002):  # the producer never waits for the slow viewer
        fanout.publish(frame(n))
        assert fast.next_frame(0).seq == n
    assert slow.next_frame(0).data == frame(1001)
    assert slow.next_frame(0) is None
    fanout.publish(frame(1002))
    assert slow.next_frame(0).seq == fast.next_frame(0).seq == 1002


def test_a_joining_viewer_gets_the_newest_frame_at_once_but_not_one_from_before_a_clear():
    fanout = Fanout()
    fanout.publish(frame(1))
    with fanout.subscribe() as viewer:
        assert viewer.next_frame(0).seq == 1
    fanout.clear()  # a new capture run starts: its viewers wait for its first frame
    with fanout.subscribe() as viewer:
        assert viewer.next_frame(0) is None
        fanout.publish(frame(2))
        assert viewer.next_frame(0).seq == 2


def test_history_gives_every_frame_since_the_last_taken_and_counts_those_lost():
    fanout = Fanout()
    fanout.keep_history(3)
    viewer = fanout.subscribe(native_thread=True)
    fanout.publish(frame(1))
    assert [f.seq for f in viewer.next_frames(0)] == [1]
    for n in range(2, 7):
        fanout.publish(frame(n))
    assert [f.seq for f in viewer.next_frames(0)] == [4, 5, 6]  # 2 and 3 left the history
    assert viewer.missed == 2 and viewer.next_frames(0) == []


def test_subscribers_and_viewers_are_counted_and_idle_since_the_last_one_left():
    fanout = Fanout()
    assert fanout.idle_since is not None
    stream = fanout.subscribe()
    snapshot = fanout.subscribe(counted=False)
    assert (fanout.viewers, fanout.subscribers, fanout.idle_since) == (1, 2, None)
    stream.close()
    stream.close()  # twice is once
    assert (fanout.viewers, fanout.subscribers, fanout.idle_since) == (0, 1, None)
    before = time.monotonic()
    snapshot.close()
    assert fanout.subscribers == 0 and before <= fanout.idle_since <= time.monotonic()


# -- waiting: OS threads and greenlets -----------------------------------------------------

def test_every_waiter_is_woken_once_per_frame_and_takes_each_frame_once(waiters):
    fanout, frames, count = waiters.make(), 20, 4
    waiting = threading.Semaphore(0)
    spies = []

    def view():
        with fanout.subscribe() as viewer:
            spies.append(counting(viewer, waiting))
            return [viewer.next_frame(10).seq for _ in range(frames)]

    for _ in range(count):
        waiters.spawn(view)

    def produce():
        for n in range(1, frames + 1):
            acquire(waiting, count)  # everyone waits: this frame must wake each one
            fanout.publish(frame(n))

    thread = producer(produce)
    results = waiters.join()
    thread.join(10)
    assert [r.get("value", r.get("error")) for r in results] == [list(range(1, 21))] * count
    assert [(s.waits, s.wakes) for s in spies] == [(frames, frames)] * count


def test_a_waiter_that_was_busy_takes_only_the_newest_frame(waiters):
    fanout = waiters.make()
    took, busy = threading.Semaphore(0), threading.Event()

    def view():
        with fanout.subscribe() as viewer:
            first = viewer.next_frame(10).seq
            took.release()
            busy.wait(10)  # busy with frame 1 (a greenlet holds up its hub meanwhile)
            return first, viewer.next_frame(0).seq, viewer.next_frame(0)

    waiters.spawn(view)

    def produce():
        fanout.publish(frame(1))
        acquire(took, 1)
        for n in range(2, 6):
            fanout.publish(frame(n))
        busy.set()

    thread = producer(produce)
    [result] = waiters.join()
    thread.join(10)
    assert result["value"] == (1, 5, None)


def test_close_ends_every_wait_with_camera_closed(waiters):
    fanout, count = waiters.make(), 3
    waiting = threading.Semaphore(0)

    def view():
        with fanout.subscribe() as viewer:
            counting(viewer, waiting)
            return viewer.next_frame()  # no timeout: only the close ends it

    for _ in range(count):
        waiters.spawn(view)

    def produce():
        acquire(waiting, count)
        fanout.close()

    thread = producer(produce)
    results = waiters.join()
    thread.join(10)
    assert [type(r.get("error")) for r in results] == [CameraClosed] * count
    with pytest.raises(CameraClosed):
        fanout.subscribe()


def test_a_wait_with_a_timeout_returns_none_when_no_frame_comes(waiters):
    fanout = waiters.make()

    def view():
        with fanout.subscribe() as viewer:
            started = time.monotonic()
            taken = viewer.next_frame(0.02)
            return taken, time.monotonic() - started, viewer.next_frame(0)

    waiters.spawn(view)
    [result] = waiters.join()
    taken, waited, again = result["value"]
    assert taken is None and again is None and waited >= 0.02


def test_os_thread_waiters_beside_viewers_get_every_frame_too(waiters):
    """A recorder or variant maker (an OS thread) on a fanout whose viewers are greenlets."""
    fanout, frames = waiters.make(), 10
    waiting = threading.Semaphore(0)
    taken = []

    def record():
        with fanout.subscribe(native_thread=True) as viewer:
            counting(viewer, waiting)
            taken.extend(viewer.next_frame(10).seq for _ in range(frames))

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()

    def view():
        with fanout.subscribe() as viewer:
            counting(viewer, waiting)
            return [viewer.next_frame(10).seq for _ in range(frames)]

    waiters.spawn(view)

    def produce():
        for n in range(1, frames + 1):
            acquire(waiting, 2)
            fanout.publish(frame(n))

    thread = producer(produce)
    [result] = waiters.join()
    recorder.join(10)
    thread.join(10)
    assert result["value"] == taken == list(range(1, frames + 1))


# -- the native primitives -----------------------------------------------------------------

def test_a_native_waiter_keeps_a_wake_that_came_before_its_wait_but_only_one():
    waiter = native.Waiter()
    waiter.wake()
    waiter.wake()  # coalesced with the first
    started = time.monotonic()
    waiter.wait(10)  # returns at once: the wake is kept
    assert time.monotonic() - started < 5
    woken = threading.Event()

    def wait():
        waiter.wait()
        woken.set()

    threading.Thread(target=wait, daemon=True).start()
    assert not woken.wait(0.02)  # the second wake was not kept
    waiter.wake()
    assert woken.wait(10)


def test_a_native_flag_is_set_once_from_any_thread_and_wakes_its_waiters():
    flag = native.Flag()
    assert not flag.is_set() and flag.wait(0) is False
    results = []
    waiters = [threading.Thread(target=lambda: results.append(flag.wait(10)))
               for _ in range(3)]
    setters = [threading.Thread(target=flag.set) for _ in range(3)]  # racing setters
    for thread in waiters + setters:
        thread.start()
    for thread in waiters + setters:
        thread.join(10)
    assert results == [True, True, True] and flag.is_set() and flag.wait(0)


# -- under gevent's monkey-patching ---------------------------------------------------------

MONKEY_PATCHED = r"""
from gevent import monkey
monkey.patch_all()

import json
import gevent
from capture import native
from capture import CameraClosed, Fanout

fanout = Fanout()
hub_free = native.Waiter()  # woken by a greenlet that ran while the viewers waited
took = native.Waiter()  # woken by each viewer that took a frame
seen = {"greenlets": [], "thread": []}


def view(into, native_thread=False):
    try:
        with fanout.subscribe(native_thread=native_thread) as viewer:
            while True:
                into.append(viewer.next_frame(10).seq)
                took.wake()
    except CameraClosed:
        into.append("closed")


def record():  # a recorder: an OS thread even under gevent
    view(seen["thread"], native_thread=True)
    recorder_done.set()


def ticker():
    for _ in range(20):
        gevent.sleep(0)
    hub_free.wake()


def produce():
    hub_free.wait(10)
    for n in range(1, 4):
        fanout.publish(b"\xff\xd8 %d" % n)
        while not (len(seen["thread"]) >= n and all(len(s) >= n for s in seen["greenlets"])):
            took.wait(10)
    fanout.close()


viewers = []
for _ in range(3):
    seen["greenlets"].append([])
    viewers.append(gevent.spawn(view, seen["greenlets"][-1]))
gevent.sleep(0)  # the viewers are waiting now
recorder_done = native.Flag()
native.start_thread(record, ())
native.start_thread(produce, ())
gevent.spawn(ticker)
gevent.joinall(viewers, timeout=10)
recorder_done.wait(10)
print(json.dumps(seen))
"""


def test_under_gevent_greenlet_viewers_wait_in_the_hub_and_threads_on_native_locks():
    """Greenlets waiting for frames leave the hub free (a greenlet that blocked the OS
    thread would stop every client) and wake when an OS thread publishes."""
    proc = subprocess.run([sys.executable, "-c", MONKEY_PATCHED], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["greenlets"] == [[1, 2, 3, "closed"]] * 3
    assert seen["thread"] == [1, 2, 3, "closed"]
