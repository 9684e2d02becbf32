"""The multipart/x-mixed-replace wire format and the stream generator.

Browsers and tools need different parts (see ../shared/DESIGN.md, "Wire format"):
Chrome draws a part only once it has parsed the NEXT part's headers, so browsers get
those headers right after each frame ("advance headers"); ffmpeg, OpenCV and scripts
read exactly one frame by its Content-Length. Either part is built once per frame and
shared by every viewer of that frame.
"""

from __future__ import annotations

import functools
import select
import socket
import time
from collections.abc import Iterator

import native
from fanout import CameraClosed, Frame, Viewer

BOUNDARY = "frame"
MIMETYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
MIN_FPS, MAX_FPS = 0.01, 1000.0  # ?fps= bounds: one frame per 100 s at the least
CHECK_EVERY = 2.0  # seconds: a viewer that left while nothing was sent is noticed this soon
BROWSER_DESTINATIONS = {"image", "document", "iframe", "frame", "embed", "object"}

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


def stream(viewer: Viewer, advance: bool, fps: float | None,
           sock: socket.socket | None = None) -> Iterator[bytes]:
    """The response body: one part per frame the viewer takes, for as long as it reads.

    `fps` caps this viewer's rate. A closed connection is noticed at the next write, or
    within CHECK_EVERY seconds while nothing is written (a low cap, a silent camera).
    """
    part = browser_part if advance else exact_part
    interval = 1.0 / fps if fps else 0.0
    due = 0.0
    alive_at = time.monotonic()
    try:
        yield _PART_HEAD + b"\r\n" if advance else _BOUNDARY_LINE[2:]
        while True:
            frame = viewer.next_frame(CHECK_EVERY)
            if frame is not None and interval:
                # Keep to a schedule of capture times so ?fps=N averages N; 5 ms of
                # slack absorbs capture jitter.
                if frame.timestamp + 0.005 < due:
                    frame = None
                else:
                    due = (due + interval if frame.timestamp < due + interval
                           else frame.timestamp + interval)
            if frame is not None:
                yield part(frame)
                alive_at = time.monotonic()
            elif time.monotonic() - alive_at >= CHECK_EVERY:
                if sock is not None and peer_closed(sock):
                    return
                alive_at = time.monotonic()
    except CameraClosed:
        # Shutting down: make the server's next keep-alive read see EOF, so the
        # connection closes now instead of idling through the graceful timeout.
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
    finally:
        viewer.close()


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
