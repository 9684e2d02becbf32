"""The event bus on its own: events in order with increasing ids, a bounded history,
resuming after a Last-Event-ID, many subscribers, a slow subscriber that never holds up
a publish (it skips to the oldest event kept and is told how many it missed), and
publishers in OS threads or the hub while greenlets wait (a monkey-patched process).

Subscribers and publishers synchronise on events, never on elapsed time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from conftest import ROOT

from events import Event, EventBus, FeedClosed


def motion(camera: str, state: str, n: int = 0) -> dict:
    return {"camera": camera, "state": state, "time": 1700000000.0 + n, "score": 2.5,
            "clip": None, "snapshot": None}


def test_events_come_in_order_with_ids_increasing_by_one():
    bus = EventBus()
    with bus.subscribe() as feed:
        ids = [bus.publish("motion", motion("door", "start", n)) for n in range(5)]
        events = feed.next_events(1)
    assert [e.id for e in events] == ids == list(range(ids[0], ids[0] + 5))
    assert [e.time for e in events] == [1700000000.0 + n for n in range(5)]
    assert all(e.kind == "motion" and e.camera == "door" for e in events)
    assert feed.missed == 0 and feed.last_id == ids[-1] == bus.last_id


def test_each_event_is_its_server_sent_events_message_built_once():
    bus = EventBus()
    with bus.subscribe() as one, bus.subscribe() as other:
        event_id = bus.publish("recording", {"camera": "door", "state": "end",
                                             "file": "door-x.mkv", "note": "two\nlines"})
        [event], [same] = one.next_events(1), other.next_events(1)
    assert isinstance(event, Event) and event is same
    head, data = bytes(event).split(b"data: ")
    assert head == b"id: %d\nevent: recording\n" % event_id
    assert data.endswith(b"\n\n") and data.count(b"\n") == 2  # one data line
    assert json.loads(data) == event.data


def test_ids_start_from_the_clock_so_they_keep_increasing_across_restarts():
    first = EventBus().publish("motion", motion("door", "start"))
    assert EventBus().publish("motion", motion("door", "start")) >= first


def test_a_new_subscriber_gets_only_events_after_it_joined():
    bus = EventBus()
    bus.publish("motion", motion("door", "start"))
    with bus.subscribe() as feed:
        assert feed.next_events(0) == []
        later = bus.publish("motion", motion("door", "end"))
        assert [e.id for e in feed.next_events(0)] == [later]


def test_a_wait_returns_nothing_after_its_timeout():
    with EventBus().subscribe() as feed:
        assert feed.next_events(0.05) == []


def test_the_history_keeps_the_newest_events_only():
    bus = EventBus(history=4)
    ids = [bus.publish("motion", motion("door", "start", n)) for n in range(10)]
    assert [e.id for e in bus.since(0)] == ids[-4:]


def test_a_slow_subscriber_never_holds_up_a_publish_and_is_told_what_it_missed():
    bus = EventBus(history=8)
    with bus.subscribe() as slow:
        ids = [bus.publish("motion", motion("door", "start", n)) for n in range(1000)]
        events = slow.next_events(1)
        assert [e.id for e in events] == ids[-8:]  # skipped to the oldest kept
        assert slow.missed == 992
        ids.append(bus.publish("motion", motion("door", "end")))
        assert [e.id for e in slow.next_events(1)] == ids[-1:] and slow.missed == 992


def test_resuming_after_a_last_event_id_replays_what_the_history_still_has():
    bus = EventBus(history=4)
    ids = [bus.publish("motion", motion("door", "start", n)) for n in range(6)]
    with bus.subscribe(last_id=ids[3]) as feed:  # still kept: exactly what came after
        assert [e.id for e in feed.next_events(0)] == ids[4:] and feed.missed == 0
    with bus.subscribe(last_id=ids[0]) as feed:  # partly gone: from the oldest kept
        assert [e.id for e in feed.next_events(0)] == ids[2:] and feed.missed == 1
    with bus.subscribe(last_id=ids[-1]) as feed:  # up to date: nothing, then the next
        assert feed.next_events(0) == []


def test_a_last_event_id_of_an_earlier_run_replays_all_of_this_run_and_one_from_the_future_none():
    bus = EventBus(history=4)
    ids = [bus.publish("motion", motion("door", "start", n)) for n in range(6)]
    with bus.subscribe(last_id=5) as feed:  # ids of an earlier run are smaller
        assert [e.id for e in feed.next_events(0)] == ids[2:] and feed.missed == 2
    with bus.subscribe(last_id=ids[-1] + 1000) as feed:  # not this bus's: from now
        assert feed.next_events(0) == []


def test_a_relaying_bus_keeps_the_publishers_ids_and_drops_repeats():
    publisher, worker = EventBus(), EventBus(first_id=1)
    ids = [publisher.publish("motion", motion("door", "start", n)) for n in range(4)]
    with worker.subscribe() as feed:
        assert worker.relay(ids[0], "motion", motion("door", "start", 0))
        assert not worker.relay(ids[0], "motion", motion("door", "start", 0))  # a repeat
        assert worker.relay(ids[3], "motion", motion("door", "start", 3))  # two trimmed
        events = feed.next_events(0)
        assert [e.id for e in events] == [ids[0], ids[3]]
        assert events[1] == publisher.subscribe(last_id=ids[2]).next_events(0)[0]
    with worker.subscribe(last_id=ids[0]) as feed:  # a client's Last-Event-ID from any worker
        assert [e.id for e in feed.next_events(0)] == [ids[3]]


def test_a_camera_subscription_gets_that_camera_only_and_waits_past_the_others():
    bus = EventBus()
    with bus.subscribe(camera="door") as door:
        bus.publish("motion", motion("garden", "start"))
        assert door.next_events(0) == []
        assert door.last_id == bus.last_id  # the garden's event is behind it now
        got: list = []
        waiter = threading.Thread(target=lambda: got.extend(door.next_events(10)))
        waiter.start()
        bus.publish("motion", motion("garden", "end"))  # wakes it: not its camera
        wanted = bus.publish("recording", {"camera": "door", "state": "start"})
        waiter.join(10)
    assert [e.id for e in got] == [wanted]


def test_many_subscribers_in_threads_each_get_every_event_in_order():
    bus = EventBus()
    feeds = [bus.subscribe() for _ in range(20)]
    results: list[list[int]] = [[] for _ in feeds]

    def follow(feed, into) -> None:
        while len(into) < 50:
            into.extend(e.id for e in feed.next_events(10))

    threads = [threading.Thread(target=follow, args=pair) for pair in zip(feeds, results)]
    for thread in threads:
        thread.start()
    publishers = [threading.Thread(target=lambda: [
        bus.publish("motion", motion("door", "start")) for _ in range(25)]) for _ in range(2)]
    for thread in publishers:
        thread.start()
    for thread in publishers + threads:
        thread.join(10)
    first = bus.first_id
    assert all(ids == list(range(first, first + 50)) for ids in results), results
    assert bus.subscribers == 20
    for feed in feeds:
        feed.close()
    assert bus.subscribers == 0


def test_close_ends_every_wait_and_refuses_new_subscribers():
    bus = EventBus()
    feed = bus.subscribe()
    ended = []

    def wait() -> None:
        try:
            feed.next_events(10)
        except FeedClosed:
            ended.append(True)

    waiter = threading.Thread(target=wait)
    waiter.start()
    bus.close()
    waiter.join(10)
    assert ended == [True]
    with pytest.raises(FeedClosed):
        bus.subscribe()
    bus.publish("motion", motion("door", "end"))  # a late publisher is not hurt


def test_a_bad_kind_is_refused_and_data_that_is_not_json_is_sent_as_text():
    bus = EventBus()
    with pytest.raises(ValueError, match="event kind"):
        bus.publish("motion\ndata: forged", {})
    with bus.subscribe() as feed:
        bus.publish("motion", {"camera": "door", "path": ROOT})
        [event] = feed.next_events(0)
    assert json.loads(bytes(event).split(b"data: ")[1]) == {"camera": "door", "path": str(ROOT)}


# -- under gevent's monkey-patching ---------------------------------------------------------

MONKEY_PATCHED = r"""
from gevent import monkey
monkey.patch_all()

import json
import gevent
from capture import native
from events import EventBus, FeedClosed

bus = EventBus()
hub_free = native.Waiter()  # woken by a greenlet that ran while the subscribers waited
took = native.Waiter()  # woken by each subscriber that took events
seen = {"greenlets": [], "thread": []}


def follow(into, feed):
    try:
        with feed:
            while True:
                into.extend(e.data["n"] for e in feed.next_events(10))
                took.wake()
    except FeedClosed:
        into.append("closed")


def sender(feed):  # a webhook sender: an OS thread even under gevent
    follow(seen["thread"], feed)
    sender_done.set()


def ticker():
    for _ in range(20):
        gevent.sleep(0)
    hub_free.wake()


def everyone_has(n):
    return len(seen["thread"]) >= n and all(len(s) >= n for s in seen["greenlets"])


def detector():  # publishes from its own OS thread
    hub_free.wait(10)
    for n in (1, 2, 3):
        bus.publish("motion", {"camera": "door", "n": n})
        while not everyone_has(n):
            took.wait(10)
    detector_done.set()


def request():  # a request handler publishes from the hub, between the detector's
    while not detector_done.is_set():
        gevent.sleep(0.01)
    bus.publish("recording", {"camera": "door", "n": 4})
    while not everyone_has(4):
        gevent.sleep(0.01)
    bus.close()


followers = []
for _ in range(3):
    seen["greenlets"].append([])
    followers.append(gevent.spawn(follow, seen["greenlets"][-1], bus.subscribe()))
gevent.sleep(0)  # the followers are waiting now
sender_done = native.Flag()
detector_done = native.Flag()
# Subscribed before the detector starts (a subscriber gets the events after it joined).
native.start_thread(sender, (bus.subscribe(native_thread=True),))
native.start_thread(detector, ())
gevent.spawn(ticker)
gevent.spawn(request)
gevent.joinall(followers, timeout=10)
sender_done.wait(10)
print(json.dumps(seen))
"""


def test_under_gevent_greenlets_wait_in_the_hub_while_os_threads_and_the_hub_publish():
    """Greenlets waiting for events leave the hub free and wake when an OS thread (the
    detector) or the hub itself (a request) publishes; an OS-thread subscriber (a webhook
    sender) waits on a native lock beside them."""
    proc = subprocess.run([sys.executable, "-c", MONKEY_PATCHED], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["greenlets"] == [[1, 2, 3, 4, "closed"]] * 3
    assert seen["thread"] == [1, 2, 3, 4, "closed"]
