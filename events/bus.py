"""The event feed: what happened (motion started or ended, a file was recorded), in order,
for everyone who follows it: the pages' EventSource streams, curl, the webhooks.

    detector / recorder's writer (OS threads) or a request --publish--> EventBus
        -> the last HISTORY events -> each Subscription takes every event since its last

The bus is a capture.Fanout whose frames are events: the same lock, history and two
wake-ups (OS threads woken directly, greenlets through the hub's async watcher), so a
publish from any thread never waits for a subscriber, and a subscriber that falls more
than HISTORY events behind skips to the oldest one kept and is told how many it missed.

Each event is built once as its Server-Sent Events message (`id:`, `event:`, `data:`)
and shared by every subscriber, as a frame's multipart part is. Ids increase by one per
event from the time the process started in milliseconds, so they keep increasing across
restarts: a client that reconnects with the Last-Event-ID of an earlier run is given
every event this run still has.
"""

from __future__ import annotations

import json
import logging
import re
import time

from capture import CameraClosed, Fanout, native

log = logging.getLogger("events")

HISTORY = 256  # events kept for subscribers that fall behind or reconnect
_KIND = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # an SSE event name: one line, no spaces


class FeedClosed(Exception):
    """The bus was closed (the server shuts down): subscriptions end."""


class Event(bytes):
    """One event: its Server-Sent Events message, with what it says as attributes."""

    id: int
    kind: str
    camera: str | None
    time: float
    data: dict

    def __new__(cls, id: int, kind: str, data: dict, payload: str) -> Event:
        event = super().__new__(cls, b"id: %d\nevent: %s\ndata: %s\n\n" % (
            id, kind.encode(), payload.encode()))
        event.id, event.kind, event.data = id, kind, data
        event.camera = data.get("camera")
        event.time = data.get("time") or time.time()
        return event


class Subscription:
    """One follower of the feed: takes every event after the last one it took, in order.

    `missed` counts the events that left the history before this subscriber took them.
    Use as a context manager, or call `close()`.
    """

    def __init__(self, viewer, camera: str | None) -> None:
        self._viewer = viewer
        self.camera = camera
        self.missed = 0

    @property
    def last_id(self) -> int:
        return self._viewer.last_seq

    def next_events(self, timeout: float | None = None) -> list[Event]:
        """The events published since the last one taken (of this subscription's camera,
        with one), oldest first; [] after `timeout` seconds. Raises FeedClosed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            missed = self._viewer.missed
            try:
                frames = self._viewer.next_frames(remaining)
            except CameraClosed:
                raise FeedClosed() from None
            self.missed += self._viewer.missed - missed
            events = [f.data for f in frames
                      if self.camera is None or f.data.camera == self.camera]
            if events or not frames or remaining == 0:
                return events

    def close(self) -> None:
        self._viewer.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class EventBus:
    """Events by id, the last `history` of them kept. Build it in the thread that serves
    requests (under gevent, the hub's): its greenlet subscribers are woken through that
    thread's hub."""

    def __init__(self, history: int = HISTORY, first_id: int | None = None) -> None:
        self._fanout = Fanout()
        self._fanout.keep_history(history)
        # See the module's docstring; a bus that relays another's ids starts at 1.
        self.first_id = int(time.time() * 1000) if first_id is None else first_id
        self._fanout.seq = self.first_id - 1
        self._lock = native.allocate_lock()  # the id and its message are one step

    @property
    def last_id(self) -> int:
        """The id of the newest event (first_id - 1 before any)."""
        return self._fanout.seq

    @property
    def subscribers(self) -> int:
        return self._fanout.subscribers

    def publish(self, kind: str, data: dict) -> int:
        """Send an event to every subscriber; its id. Any thread or greenlet; it never
        waits for a subscriber (a native lock held for a few microseconds)."""
        if not _KIND.fullmatch(kind):
            raise ValueError(f"event kind must match {_KIND.pattern}, not {kind!r}")
        # One line of JSON (SSE ends a data field at a newline); what is not JSON, as text,
        # so that a publisher's mistake costs its event's fidelity, not its thread.
        payload = json.dumps(data, separators=(",", ":"), default=str)
        with self._lock:  # the id goes into the message: nobody publishes in between
            event = Event(self._fanout.seq + 1, kind, data, payload)
            self._fanout.publish(event, event.time)
        return event.id

    def relay(self, event_id: int, kind: str, data: dict) -> bool:
        """Publish an event another process's bus numbered (CAMERA=redis web workers
        relay the publisher's), keeping its id, so that a client's Last-Event-ID means the
        same on every worker. Build such a bus with `first_id=1`: any id it relays is
        then news. An id this bus has passed is dropped: False."""
        payload = json.dumps(data, separators=(",", ":"), default=str)
        with self._lock:
            if event_id <= self._fanout.seq:
                return False
            self._fanout.seq = event_id - 1  # ids the publisher's stream trimmed are skipped
            event = Event(event_id, kind, data, payload)
            self._fanout.publish(event, event.time)
        return True

    def subscribe(self, camera: str | None = None, last_id: int | None = None,
                  native_thread: bool = False) -> Subscription:
        """Follow the feed from now, or from after `last_id` (a client's Last-Event-ID):
        what the history still has after it first. `camera`: that camera's events only.
        `native_thread`: the caller is an OS thread even under gevent (a webhook sender).
        Raises FeedClosed."""
        try:
            viewer = self._fanout.subscribe(counted=False, native_thread=native_thread)
        except CameraClosed:
            raise FeedClosed() from None
        newest = self._fanout.seq
        if last_id is None or last_id > newest:  # none, or not ours (the clock went back)
            last_id = newest
        # An id from an earlier run: every event of this one is news to that client.
        viewer.last_seq = max(last_id, self.first_id - 1)
        return Subscription(viewer, camera)

    def since(self, last_id: int) -> list[Event]:
        """The events kept that came after `last_id`, oldest first."""
        return [f.data for f in self._fanout.since(last_id, self._fanout.seq)]

    def close(self) -> None:
        """End every subscription (the server shuts down); publish goes on harmlessly."""
        self._fanout.close()
