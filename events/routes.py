"""The event feed over HTTP: Server-Sent Events (text/event-stream), for EventSource and
`curl -N`.

    GET /events                  every camera's events
    GET /camera/<name>/events    one camera's

Each event is `id: N`, `event: motion|recording`, `data: <one line of JSON>` and a blank
line. A client that reconnects with `Last-Event-ID` (EventSource does by itself; curl:
`?last_event_id=N`) first gets what the bus's history still has after N. A comment line
(`: keep-alive`) every KEEP_ALIVE seconds keeps proxies from closing a quiet feed.

A feed counts against no viewer limit (MAX_CLIENTS counts streams); login, Host and
cross-site rules are the app's, as for every route. The response gives its subscription
back however the client goes (stream/mjpeg.py's long_response): a client that left while
nothing was sent is noticed within CHECK_EVERY seconds.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

from flask import Blueprint, Flask, Response, abort, current_app, request

from stream import mjpeg

from .bus import EventBus, FeedClosed, Subscription

MIMETYPE = "text/event-stream"
KEEP_ALIVE = 15.0  # seconds between comment lines on a quiet feed (proxies cut at 30-60 s)
CHECK_EVERY = mjpeg.CHECK_EVERY  # seconds: a client that left is noticed this soon
RETRY_MS = 2000  # EventSource reconnects this soon after a restart (browsers: 3 s)

bp = Blueprint("events", __name__)


def install(app: Flask, bus: EventBus) -> None:
    """Serve `bus` at /events and /camera/<name>/events."""
    app.extensions["events"] = bus
    app.register_blueprint(bp)


@bp.get("/events")
def every_camera():
    return feed(None)


@bp.get("/camera/<name>/events")
def one_camera(name: str):
    cameras = current_app.extensions["cameras"]
    if name not in cameras:
        abort(404, f"no camera {name!r}; cameras: {', '.join(cameras)}")
    return feed(name)


def last_event_id() -> int | None:
    """Where the client left off: the Last-Event-ID header (EventSource sends it when it
    reconnects) or ?last_event_id= (for curl); a 400 saying so when it is no id."""
    raw = request.args.get("last_event_id")
    named = "last_event_id"
    if raw is None:
        raw, named = request.headers.get("Last-Event-ID"), "Last-Event-ID"
    if raw is None or raw == "":  # EventSource sends an empty one before the first id
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        abort(400, f"{named} must be an event id (a whole number), not {raw!r}")
    return int(raw)


def feed(camera: str | None) -> Response:
    resume = last_event_id()
    headers = {**mjpeg.STREAM_HEADERS}
    if request.method == "HEAD":
        return Response(b"", headers=headers, content_type=MIMETYPE)
    bus: EventBus = current_app.extensions["events"]
    try:
        subscription = bus.subscribe(camera=camera, last_id=resume)
    except FeedClosed:
        abort(503, "the server is shutting down")
    sock = mjpeg.client_socket(request.environ)
    settings = current_app.config.get("SETTINGS")
    return mjpeg.long_response(body(subscription, sock), subscription.close, sock,
                               settings.send_timeout if settings else None,
                               mimetype=MIMETYPE, headers=headers)


def body(subscription: Subscription, sock: socket.socket | None = None,
         keep_alive: float = KEEP_ALIVE, check_every: float = CHECK_EVERY,
         clock: Callable[[], float] = time.monotonic) -> Iterator[bytes]:
    """The feed: each event's message as it comes, a keep-alive comment on a quiet feed,
    a comment saying how many events a client too slow for the history missed."""
    sent_at = checked_at = clock()
    missed = 0
    try:
        # At once: the client sees the response (EventSource's open) before any event.
        yield b"retry: %d\n\n" % RETRY_MS
        while True:
            events = subscription.next_events(min(check_every, keep_alive))
            if subscription.missed > missed:
                yield b": missed %d events: this client read too slowly\n\n" % (
                    subscription.missed - missed)
                missed = subscription.missed
            if events:
                yield b"".join(events)
                sent_at = checked_at = clock()
                continue
            now = clock()
            if now - sent_at >= keep_alive:
                yield b": keep-alive\n\n"
                sent_at = checked_at = now
            elif now - checked_at >= check_every:
                if sock is not None and mjpeg.peer_closed(sock):
                    return
                checked_at = now
    except FeedClosed:
        mjpeg.shut_reading(sock)  # as streams do at shutdown
    finally:
        subscription.close()
