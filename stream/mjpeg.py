"""The multipart/x-mixed-replace wire format and the stream generator.

Browsers and tools need different parts (see ../shared/DESIGN.md, "Wire format"):
Chrome draws a part only once it has parsed the NEXT part's headers, so browsers get
those headers right after each frame ("advance headers"); ffmpeg, OpenCV and scripts
read exactly one frame by its Content-Length. Either part is built once per frame and
shared by every viewer of that frame.

Every long response (the live stream, clip playback, the event feed) is made by
`long_response` (`stream_response` for the multipart ones), which gives back what it
holds once its client is gone, however it went.
"""

from __future__ import annotations

import functools
import select
import socket
import time
from collections.abc import Callable, Iterator

from flask import Response

from capture import CameraClosed, Frame, Viewer, native

BOUNDARY = "frame"
MIMETYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
MIN_FPS, MAX_FPS = 0.01, 1000.0  # ?fps= bounds: one frame per 100 s at the least
RATE_SLACK = 0.005  # seconds of capture jitter a ?fps= schedule absorbs
CHECK_EVERY = 2.0  # seconds: a viewer that left while nothing was sent is noticed this soon
BROWSER_DESTINATIONS = {"image", "document", "iframe", "frame", "embed", "object"}
NO_CACHE = {
    "Cache-Control": "no-cache, no-store, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
}
STREAM_HEADERS = {**NO_CACHE, "X-Accel-Buffering": "no"}  # nginx: do not buffer

_BOUNDARY_LINE = b"\r\n--" + BOUNDARY.encode() + b"\r\n"
_PART_HEAD = _BOUNDARY_LINE[2:] + b"Content-Type: image/jpeg\r\n"


@functools.lru_cache(maxsize=16)
def browser_part(frame: Frame) -> bytes:
    """The frame, then the NEXT part's boundary and headers: Chrome draws a part only once
    it has parsed the next part's headers, so sending them now shows this frame now."""
    return frame.data + _BOUNDARY_LINE + b"Content-Type: image/jpeg\r\n\r\n"


@functools.lru_cache(maxsize=16)
def exact_part(frame: Frame) -> bytes:
    """A part with Content-Length and capture time, for ffmpeg, OpenCV and scripts: they
    read exactly one frame with no boundary scanning. The boundary follows at once, so
    clients that split on it are not a frame behind either."""
    return b"Content-Type: image/jpeg\r\nContent-Length: %d\r\nX-Timestamp: %.6f\r\n\r\n%s%s" % (
        len(frame.data), frame.timestamp, frame.data, _BOUNDARY_LINE)


def is_browser(headers) -> bool:
    """Browsers mark image and page loads; ffmpeg, OpenCV and curl do not."""
    dest = headers.get("Sec-Fetch-Dest")
    if dest:
        return dest in BROWSER_DESTINATIONS
    accept = headers.get("Accept", "")
    return "text/html" in accept or "image/" in accept  # browsers without Sec-Fetch-*


def client_socket(environ: dict) -> socket.socket | None:
    """The client's socket, where the server says (gunicorn, Werkzeug's dev server)."""
    return environ.get("gunicorn.socket") or environ.get("werkzeug.socket")


def stream_response(body: Iterator[bytes], release: Callable[[], None],
                    sock: socket.socket | None = None,
                    send_timeout: float | None = None) -> Response:
    """A multipart stream response: `long_response` with this module's format."""
    return long_response(body, release, sock, send_timeout)


def long_response(body: Iterator[bytes], release: Callable[[], None],
                  sock: socket.socket | None = None, send_timeout: float | None = None,
                  mimetype: str = MIMETYPE,
                  headers: dict[str, str] = STREAM_HEADERS) -> Response:
    """A response that lasts as long as its client reads (a stream, an event feed) and
    runs `release` once its client is gone, however it went: the body ended, the client
    left (the next write fails, or the body noticed it while nothing was written), a
    send timed out, or the server shut down.

    `release` runs from the body's own `finally`: Werkzeug hands a direct_passthrough
    body to the server unwrapped, so the response's call_on_close never runs, but every
    WSGI server (gunicorn gevent and gthread, Werkzeug's) closes the iterable it got,
    and a generator dropped unclosed is closed when it is collected. `send_timeout`:
    a client that accepts no data for that long is dropped (the blocked send raises).
    """
    if sock is not None and send_timeout is not None:
        sock.settimeout(send_timeout)
    released = _released(body, release)
    next(released)  # into its `try`: from now on, closing it releases, even unstarted
    return Response(released, headers=headers, content_type=mimetype,
                    direct_passthrough=True)


def _released(body: Iterator[bytes], release: Callable[[], None]) -> Iterator[bytes]:
    try:
        yield b""  # taken by stream_response, never sent
        yield from body
    finally:
        try:
            close = getattr(body, "close", None)
            if close is not None:  # `yield from` closes it only once it was running
                close()
        finally:
            release()  # a body closed before it started ran no `finally` of its own


def stream(viewer: Viewer, advance: bool, fps: float | None,
           sock: socket.socket | None = None,
           clock: Callable[[], float] = time.monotonic) -> Iterator[bytes]:
    """The response body: one part per frame the viewer takes, for as long as it reads.

    `fps` caps this viewer's rate. A closed connection is noticed at the next write, or
    within CHECK_EVERY seconds (by `clock`) while nothing is written (a low cap, a
    silent camera).
    """
    part = browser_part if advance else exact_part
    interval = 1.0 / fps if fps else 0.0
    due = 0.0
    alive_at = clock()
    try:
        yield _PART_HEAD + b"\r\n" if advance else _BOUNDARY_LINE[2:]
        while True:
            frame = viewer.next_frame(CHECK_EVERY)
            if frame is not None and interval:
                due, wanted = rate_cap(frame.timestamp, due, interval)
                frame = frame if wanted else None
            if frame is not None:
                yield part(frame)
                alive_at = clock()
            elif clock() - alive_at >= CHECK_EVERY:
                if sock is not None and peer_closed(sock):
                    return
                alive_at = clock()
    except CameraClosed:
        shut_reading(sock)
    finally:
        viewer.close()


def shut_reading(sock: socket.socket | None) -> None:
    """Shutting down: make the server's next keep-alive read see EOF, so the connection
    closes now instead of idling through the graceful timeout."""
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def rate_cap(timestamp: float, due: float, interval: float) -> tuple[float, bool]:
    """?fps=: is the frame captured at `timestamp` sent, and when is the next one due?

    A schedule of capture times, so ?fps=N averages N however the camera's rate divides
    into it; RATE_SLACK absorbs capture jitter. A viewer that fell behind (or the first
    frame) restarts the schedule from its frame rather than bursting to catch up.
    """
    if timestamp + RATE_SLACK < due:
        return due, False
    return (due + interval if timestamp < due + interval else timestamp + interval), True


_poll = native.original("select", "poll") if hasattr(select, "poll") else None
_GONE = getattr(select, "POLLRDHUP", 0) | getattr(select, "POLLHUP", 0) | getattr(
    select, "POLLERR", 0)


def peer_closed(sock: socket.socket) -> bool:
    """Has the client closed its end? Asks the kernel without reading or blocking
    (also for TLS sockets, whose bytes cannot be peeked)."""
    try:
        fd = sock.fileno()
        if fd < 0:
            return True
        if _poll is not None and getattr(select, "POLLRDHUP", 0):
            poller = _poll()
            poller.register(fd, _GONE)
            return bool(poller.poll(0))
        readable = native.original("select", "select")([fd], [], [], 0)[0]
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
