"""The event feed over HTTP: recording files appear on /events and the camera's feed as
they start and end, under every server; a reconnecting client gets what it missed; the
feed says it is alive while quiet and gives its subscription back however its client
goes; it counts against no viewer limit but goes through the login.

The body generator is tested on its own with a scripted subscription and clock
(milliseconds); the rest against real servers.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest
from conftest import wait_until
from serverkit import open_files

from events import EventBus, FeedClosed, routes

CAMERAS = '[cameras.door]\ndriver = "counter"\n[cameras.garden]\ndriver = "counter"\n'


def feed_server(servers, tmp_path, mode: str = "gevent", **env):
    (tmp_path / "cameras.toml").write_text(CAMERAS)
    return servers(mode, {"CAMERAS_FILE": str(tmp_path / "cameras.toml"), "COUNTER_FPS": "20",
                          "RECORDINGS_DIR": str(tmp_path / "recordings"), **env})


def record(server, camera: str, seconds: float = 0.3) -> None:
    code, _, body = server.get(f"/camera/{camera}/record?seconds={seconds}", method="POST")
    assert code == 202, body


def next_of(feed, kind: str) -> dict:
    """The next event of `kind` (a feed may carry others)."""
    while (event := feed.next_event())["event"] != kind:
        pass
    return event


@pytest.mark.parametrize("mode", ["gevent", "gthread", "flask"])
def test_recording_files_appear_on_the_feeds_as_they_start_and_end(servers, tmp_path, mode):
    server = feed_server(servers, tmp_path, mode)
    with server.events("/events") as every, server.events("/camera/door/events") as door:
        for feed in (every, door):
            assert feed.status == 200
            assert feed.headers["Content-Type"] == "text/event-stream"
            assert feed.headers["Cache-Control"].startswith("no-cache")
            assert feed.headers["X-Accel-Buffering"] == "no"
        record(server, "garden")
        record(server, "door")
        seen = [next_of(every, "recording") for _ in range(4)]
        mine = [next_of(door, "recording") for _ in range(2)]
    ids = [event["id"] for event in seen]
    assert ids == sorted(ids) and len(set(ids)) == 4
    by_camera = {c: [e["data"] for e in seen if e["data"]["camera"] == c]
                 for c in ("door", "garden")}
    assert [e["data"] for e in mine] == by_camera["door"]
    for camera, (start, end) in by_camera.items():
        assert (start["state"], end["state"]) == ("start", "end")
        assert start["kind"] == end["kind"] == "manual"
        assert start["file"] == end["file"] and start["file"].startswith(f"{camera}-")
        assert start["time"] <= end["time"] <= time.time()
        assert end["download"] == f"/camera/{camera}/recordings/{end['file']}"
        code, headers, body = server.get(end["download"])
        assert code == 200 and body[:4] == b"\x1a\x45\xdf\xa3"  # the Matroska file
    assert every.retry == door.retry == routes.RETRY_MS


def test_a_client_that_reconnects_with_its_last_event_id_gets_what_it_missed(servers,
                                                                             tmp_path):
    server = feed_server(servers, tmp_path)
    with server.events() as feed:
        record(server, "door")
        start, end = next_of(feed, "recording"), next_of(feed, "recording")
    with server.events(headers={"Last-Event-ID": str(start["id"])}) as again:
        assert again.next_event() == end  # EventSource's reconnect
    with server.events(f"/camera/door/events?last_event_id={start['id'] - 1}") as curl:
        assert [curl.next_event(), curl.next_event()] == [start, end]
    code, _, body = server.get("/events?last_event_id=abc")
    assert code == 400 and b"last_event_id must be an event id" in body


def test_an_unknown_camera_has_no_feed_and_head_subscribes_nothing(app_client):
    client = app_client()
    response = client.get("/camera/nope/events")
    assert response.status_code == 404
    assert response.text == "404 Not Found: no camera 'nope'; cameras: camera\n"
    response = client.head("/events")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert client.application.extensions["events"].subscribers == 0


def test_the_feed_is_behind_the_login_as_every_url(app_client):
    client = app_client({"BASIC_AUTH_USERNAME": "admin", "BASIC_AUTH_PASSWORD": "s3cret-pw"})
    assert client.get("/events").status_code == 401
    assert client.get("/camera/camera/events").status_code == 401


def test_a_feed_response_gives_its_subscription_back_when_closed_started_or_not(app_client):
    client = app_client()
    bus = client.application.extensions["events"]
    unstarted = client.get("/events", buffered=False)
    started = client.get("/camera/camera/events", buffered=False)
    assert next(started.response) == b"retry: %d\n\n" % routes.RETRY_MS
    assert bus.subscribers == 2
    unstarted.close()
    started.close()
    assert bus.subscribers == 0


def test_feeds_count_against_no_viewer_limit(servers, tmp_path):
    server = feed_server(servers, tmp_path, MAX_CLIENTS="1")
    with server.events() as one, server.events("/camera/door/events") as two:
        assert one.status == two.status == 200
        with server.stream("/camera/door/video_feed") as viewer:
            assert viewer.status == 200
            assert server.status()["viewers"] == 1


def sockets(pid: int) -> set[str]:
    return {target for target in open_files(pid).values() if target.startswith("socket:")}


@pytest.mark.parametrize("mode", ["gevent", "gthread"])
def test_a_feed_left_while_quiet_is_let_go_within_check_every(servers, tmp_path, mode):
    """Nothing is written that could fail: the departure is noticed by asking the kernel."""
    server = feed_server(servers, tmp_path, mode)
    pid = server.worker()
    server.status()  # the worker is serving
    before = sockets(pid)
    feed = server.events()
    mine = wait_until(lambda: sockets(pid) - before, timeout=5, message="the feed's socket")
    feed.close()
    left = time.monotonic()
    wait_until(lambda: not sockets(pid) & mine, timeout=6, interval=0.1,
               message="the feed's socket closed")
    assert time.monotonic() - left < routes.CHECK_EVERY + 1.5


@pytest.mark.parametrize("mode", ["gevent", "gthread"])  # flask run has no shutdown hook
def test_sigterm_ends_the_feeds_at_once(servers, tmp_path, mode):
    server = feed_server(servers, tmp_path, mode)
    with server.events() as feed:
        stopped = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(EOFError):
            feed.next_event()
        assert time.monotonic() - stopped < 2.0
    assert server.stop(timeout=10) == 0


# -- the body on its own: a scripted subscription and clock --------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedSubscription:
    """next_events() hands out the script: a list of events, None (nothing within the
    timeout: time moves on by it), an int (that many more missed, then nothing) or
    FeedClosed."""

    def __init__(self, script: list, clock: Clock) -> None:
        self.script, self.clock = list(script) + [FeedClosed], clock
        self.missed, self.closed, self.timeouts = 0, False, []

    def next_events(self, timeout: float | None = None) -> list:
        self.timeouts.append(timeout)
        item = self.script.pop(0)
        if item is FeedClosed:
            raise FeedClosed()
        if item is None:
            self.clock.now += timeout
            return []
        if isinstance(item, int):
            self.missed += item
            return []
        return item

    def close(self) -> None:
        self.closed = True


def run(script: list, sock=None) -> tuple[list[bytes], ScriptedSubscription]:
    clock = Clock()
    subscription = ScriptedSubscription(script, clock)
    return list(routes.body(subscription, sock, clock=clock)), subscription


def test_a_quiet_feed_sends_a_keep_alive_comment_every_keep_alive_seconds():
    quiet = int(routes.KEEP_ALIVE / routes.CHECK_EVERY) + 1  # waits until one is due
    body, subscription = run([None] * (2 * quiet))
    assert body == [b"retry: 2000\n\n", b": keep-alive\n\n", b": keep-alive\n\n"]
    assert set(subscription.timeouts) == {routes.CHECK_EVERY} and subscription.closed


def test_events_are_sent_as_they_come_and_a_slow_client_is_told_what_it_missed():
    bus = EventBus()
    with bus.subscribe() as feed:
        for n in range(3):
            bus.publish("motion", {"camera": "door", "n": n})
        events = feed.next_events(0)
    body, _ = run([events[:2], 5, events[2:]])
    assert body == [b"retry: 2000\n\n", bytes(events[0]) + bytes(events[1]),
                    b": missed 5 events: this client read too slowly\n\n", bytes(events[2])]


def test_a_client_gone_while_the_feed_is_quiet_is_noticed_within_check_every():
    server_end, client_end = socket.socketpair()
    client_end.close()
    try:
        body, subscription = run([None] * 10, server_end)
        assert body == [b"retry: 2000\n\n"] and subscription.closed
        assert len(subscription.timeouts) == 1  # one quiet wait: CHECK_EVERY
    finally:
        server_end.close()


def test_shutdown_ends_the_feed_and_closes_the_reading_side():
    server_end, client_end = socket.socketpair()
    try:
        body, subscription = run([], server_end)
        assert body == [b"retry: 2000\n\n"] and subscription.closed
        assert server_end.recv(1, socket.MSG_DONTWAIT) == b""
    finally:
        server_end.close()
        client_end.close()
