"""What the server changes inside its libraries, and one warning when it cannot.

Two adjustments reach into other projects' internals, because the public API offers no
way to get what they give:

- `chunked_writes()`: gunicorn sends each chunk of a stream with one gather-write
  (about a fifth less CPU per delivered frame, benchmarks/README.md);
- `native_logging_locks()`: logging takes native locks again after gevent's patch, so a
  greenlet never waits for ever on a lock a native thread holds.

A dependency that changes can make either impossible. Then the server still runs, and
says so once at start, naming the package and version and what is lost, instead of
losing the saving or the fix silently. `cannot_apply` is that one line, for the
connection cap's listener hook (server/connections.py) too.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import socket

log = logging.getLogger("server")


def version_of(package: str) -> str:
    if package == "python":
        return f"Python {platform.python_version()}"
    try:
        return f"{package} {importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{package} (version unknown)"


def cannot_apply(package: str, what: str, lost: str) -> None:
    """The one warning for an adjustment that this version of `package` does not allow."""
    log.warning("%s: cannot %s (%s); the server runs without it", version_of(package), what,
                lost)


# -- gunicorn: one sendmsg per chunk -----------------------------------------------------

def write_chunk(sock, data) -> None:
    """gunicorn's chunked write as one gather-write.

    gunicorn.util.write_chunk joins size line, data and CRLF into a new bytes object and
    calls sendall, which in gevent also asks the kernel for SO_SNDBUF on every call. For
    a stream that is one copy of every frame for every viewer: sending the three pieces
    with one sendmsg saves about a fifth of the CPU per delivered frame (see
    benchmarks/README.md). The socket's timeout still applies (STREAM_SEND_TIMEOUT).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    views = [memoryview(b"%X\r\n" % len(data)), memoryview(data), memoryview(b"\r\n")]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views.pop(0))
        if sent:
            views[0] = views[0][sent:]


class _Probe:
    """A socket that only records which way gunicorn sent through it."""

    def __init__(self) -> None:
        self.gathered = False

    def sendmsg(self, buffers) -> int:
        self.gathered = True
        return sum(len(b) for b in buffers)

    def sendall(self, data) -> None:
        pass


def chunked_writes() -> bool:
    """Make gunicorn send chunks with `write_chunk`: True when it now does (tried on a
    probe socket through util.write, the call its responses make for every chunk)."""
    from gunicorn import util

    if not hasattr(socket.socket, "sendmsg"):
        return False  # not on this platform: nothing changed, nothing to say
    if hasattr(util, "write_chunk"):
        util.write_chunk = write_chunk
        probe = _Probe()
        try:
            util.write(probe, b"x", chunked=True)
        except Exception:  # noqa: BLE001 - any failure means: not the way we patched
            pass
        if probe.gathered:
            return True
    cannot_apply("gunicorn", "send each stream chunk with one sendmsg",
                 "its util.write no longer calls util.write_chunk; streams cost about a "
                 "fifth more CPU per frame")
    return False


# -- logging under gevent: native locks --------------------------------------------------

def native_logging_locks() -> bool:
    """Give logging native locks again after gevent's patch_all: True when done.

    gevent swaps logging's module lock and every handler's lock for gevent locks. A
    greenlet waiting for one that a native thread (a capture thread, picamera2's home)
    holds may never wake (gevent issues #2013, #1744). Native locks are held only while
    a line is written, which never switches greenlets.
    """
    from capture import native

    needed = ("_lock", "_handlerList", "_register_at_fork_reinit_lock")
    missing = [name for name in needed if not hasattr(logging, name)]
    if missing:
        cannot_apply("python", "give logging native locks under gevent",
                     f"logging has no {', '.join(missing)}; a log line written by a "
                     "capture thread may stall the event loop")
        return False
    new_rlock = native.original("_thread", "RLock")
    logging._lock = new_rlock()
    for ref in list(logging._handlerList):
        handler = ref()
        if handler is not None:
            handler.lock = new_rlock()

    def create_lock(handler: logging.Handler) -> None:
        handler.lock = new_rlock()
        logging._register_at_fork_reinit_lock(handler)

    logging.Handler.createLock = create_lock
    return True
