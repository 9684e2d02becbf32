"""A cap on the connections one client holds (MAX_CONNECTIONS_PER_CLIENT), so that one
address cannot take the slots everybody else needs.

gunicorn serves at most `worker_connections` (2000) connections at once. An idle
connection that never sends a request holds its slot until `keepalive` (5 s) cuts it,
without ever reaching the app; one client reopening 2000 of them as they are cut made
other requests wait up to 4-5 s (benchmarks/connections.py), near OctoPrint's 5 s
snapshot timeout. The cap therefore counts where the slot is taken:

- Direct clients (PROXY_HOPS=0): per connection, at accept. `install(worker, ...)`, from
  gunicorn.conf.py's post_worker_init, wraps the gevent worker's per-connection `handle`
  (and its listener) or the gthread worker's `accept`, whatever `-k` chose. The excess
  gets a fixed 503 with Retry-After and is closed at once; a slot is given back when its
  connection closes, however it closes. A refusal must be cheap, not only quick: the
  refused client reconnects at once, and everybody else's connections wait in the
  kernel's accept queue behind its flood until it is refused.
- Behind a reverse proxy (PROXY_HOPS > 0) every connection is the proxy's, so the socket
  is not counted; `RequestCap`, a WSGI middleware inside ProxyFix, counts the open
  requests (a stream is open for as long as it runs) of each forwarded address instead.

A client is an IPv4 address, or an IPv6 /64 as access.py's lockout counts them. The cost
is two dict updates per connection (per request for `RequestCap`), nothing per frame.
"""

from __future__ import annotations

import _socket  # the C sockets, which gevent does not patch: no hub, no greenlet
import errno
import ipaddress
import logging
import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial

from werkzeug.wrappers import Response

from server import patches

log = logging.getLogger("connections")

SETTING = "MAX_CONNECTIONS_PER_CLIENT"
RETRY_AFTER = 5  # seconds: the idle connections holding the slots are cut after keepalive
LOG_EVERY = 10.0  # seconds between refusal lines: a flood of them cannot fill the disk
ACCEPT_BATCH = 100  # refusals in a row before gevent's hub serves the rest (its max_accept)

_BODY = f"503 Service Unavailable: too many connections from your address ({SETTING})\n"
# One write, sent before the request is read: the client may never send one.
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"Content-Length: %d\r\nRetry-After: %d\r\nConnection: close\r\n\r\n%s"
           % (len(_BODY), RETRY_AFTER, _BODY.encode()))


def client_key(address: object) -> str | None:
    """Who a connection or request is from: an IPv4 address as is, an IPv6 address by its
    /64 (one host owns a /64 and may use any address in it), an IPv4-mapped IPv6 address
    as the IPv4 one. `address` is a socket's peer (a tuple) or a REMOTE_ADDR. None (not
    counted) without an IP address: a Unix socket's peer."""
    if isinstance(address, tuple):
        address = address[0] if address else None
    if not isinstance(address, str) or not address:
        return None
    if ":" not in address:
        return address  # IPv4, the usual case, needs no parsing
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])  # without a zone index
    except ValueError:
        return address  # not an address (a proxy's odd X-Forwarded-For): a key of its own
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


class Gate:
    """How many connections (or requests) each client has open: at most `limit`."""

    def __init__(self, limit: int, what: str = "a connection") -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self.what = what
        self.open: dict[str, int] = {}
        self.refused = 0
        self._lock = threading.Lock()  # gthread: the accept loop and the worker threads
        self._unlogged = 0
        self._logged_at = -math.inf

    def enter(self, key: str | None) -> bool:
        """Count one more for `key`; False (not counted) when it has `limit` open."""
        if key is None:
            return True
        with self._lock:
            count = self.open.get(key, 0)
            if count < self.limit:
                self.open[key] = count + 1
                return True
            self.refused += 1
        self._log_refusal(key)
        return False

    def full(self, key: str | None) -> bool:
        """True (a refusal, counted and logged) when `key` has `limit` open already.
        Counts nothing: for gevent's accept, in the one thread that also counts."""
        if key is None or self.open.get(key, 0) < self.limit:
            return False
        with self._lock:
            self.refused += 1
        self._log_refusal(key)
        return True

    def leave(self, key: str | None) -> None:
        """One of `key`'s is closed."""
        if key is None:
            return
        with self._lock:
            count = self.open[key] - 1
            if count:
                self.open[key] = count
            else:
                del self.open[key]

    def _log_refusal(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._logged_at < LOG_EVERY:
                self._unlogged += 1
                return
            self._logged_at, unlogged, self._unlogged = now, self._unlogged, 0
        more = f"; {unlogged} more refused in the last {LOG_EVERY:g} s" if unlogged else ""
        log.warning("refused %s from %s: %d open already (%s)%s", self.what, key,
                    self.limit, SETTING, more)


# -- the socket-level cap, in gunicorn's workers -------------------------------------------

def install(worker, limit: int | None, proxy_hops: int) -> Gate | None:
    """Cap the connections per client of this gunicorn `worker` (gevent or gthread), from
    post_worker_init, before its run() reads `handle` or `accept`. Nothing when there is
    no cap or a proxy is in front (then RequestCap counts in the app)."""
    if limit is None or proxy_hops:
        return None
    gate = Gate(limit)
    ggevent = sys.modules.get("gunicorn.workers.ggevent")  # loaded only if it is the worker
    gthread = sys.modules.get("gunicorn.workers.gthread")
    if ggevent is not None and isinstance(worker, ggevent.GeventWorker) \
            and worker.server_class is None:
        worker.handle = _gevent_handle(worker.handle, gate)
        worker.sockets = [_gevent_listener(listener, gate) for listener in worker.sockets]
    elif gthread is not None and isinstance(worker, gthread.ThreadWorker):
        accept = worker.accept
        worker.accept = lambda listener: accept(_GatedListener(listener, gate))
    else:
        log.warning("%s is not applied by %s workers", SETTING, type(worker).__name__)
        return None
    return gate


def _gevent_handle(handle: Callable, gate: Gate) -> Callable:
    """gevent: each connection is one greenlet running `handle` until it closes (every
    request of it, keep-alive and streams included), so counting around it counts the
    connection, whether it ends by the client, a timeout or the worker's shutdown."""
    def capped(listener, client, addr) -> None:
        key = client_key(addr)
        if not gate.enter(key):
            refuse_now(client)
            return
        try:
            handle(listener, client, addr)
        finally:
            gate.leave(key)
    return capped


def _gevent_listener(listener, gate: Gate):
    """gevent: the listening socket, refusing a client already at its cap as it accepts,
    before a greenlet and gevent socket are made for it, which were most of a refusal's
    cost: a flood of refusals then clears the kernel's accept queue, where everybody
    else waits, faster. The count itself stays in `_gevent_handle`, which also refuses
    a connection accepted in the same batch as the one that filled its client's slots.

    gevent's StreamServer accepts on the native socket inside the gevent one, whose
    class gevent lets subclasses choose (`_gevent_sock_class`); without that hook (a
    future gevent), the listener is left as it is and every refusal takes the slow path.
    """
    from gevent import _socket3
    from gevent import socket as gevent_socket

    native = getattr(_socket3, "_wrefsocket", None)
    if native is None or not hasattr(gevent_socket.socket, "_gevent_sock_class"):
        patches.cannot_apply("gevent", f"refuse clients over {SETTING} as they are accepted",
                             "each refusal then costs a greenlet first: 63-85 us of CPU, "
                             "not 24-30")
        return listener

    class GatedNative(native):
        __slots__ = ()

        def _accept(self):
            for _ in range(ACCEPT_BATCH):
                fd, address = super()._accept()  # BlockingIOError when there is none
                if not gate.full(client_key(address)):
                    return fd, address
                refuse_now(_socket.socket(self.family, socket.SOCK_STREAM, 0, fd))
            # A flood: let the hub serve everything else before accepting more.
            raise BlockingIOError(errno.EAGAIN, f"refused over {SETTING}")

    class GatedListener(gevent_socket.socket):
        __slots__ = ()
        _gevent_sock_class = GatedNative

    return GatedListener(listener.family, listener.type, listener.proto,
                         fileno=listener.detach())


def refuse_now(sock: socket.socket) -> None:
    """The 503 and the close, without waiting: the answer fits any socket buffer, so one
    non-blocking send takes it whole. What the client sent already is read first, or the
    close would reset the connection instead of ending it after the answer.

    It does not linger for the client to close first: a refused connection would hold
    its gevent pool slot (worker_connections) meanwhile, and gthread runs this in the
    worker's one accept loop, which must never wait."""
    try:
        sock.setblocking(False)
        try:
            sock.recv(65536)
        except BlockingIOError:
            pass
        sock.send(REFUSAL)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.close()


class _GatedListener:
    """gthread: the listening socket as the worker's accept sees it, refusing the excess.
    A refused connection looks like no connection at all (EAGAIN, which gunicorn's
    accept ignores), and the poller calls again while more are waiting."""

    def __init__(self, listener, gate: Gate) -> None:
        self._listener = listener
        self._gate = gate

    def __getattr__(self, name: str):
        return getattr(self._listener, name)

    def accept(self) -> tuple[socket.socket, object]:
        client, addr = self._listener.accept()
        key = client_key(addr)
        if not self._gate.enter(key):
            refuse_now(client)
            raise BlockingIOError(errno.EAGAIN, f"refused over {SETTING}")
        if key is None:
            return client, addr
        counted = _CountedSocket(client.family, client.type, client.proto,
                                 fileno=client.detach())
        counted._leave = partial(self._gate.leave, key)
        return counted, addr


class _CountedSocket(socket.socket):
    """gthread: an accepted connection that gives its client's slot back when gunicorn
    closes it (it closes every connection it drops: timed out, done, failed). Handed to a
    TLS wrapper (gunicorn's own TLS, after the first data), it is no longer counted."""

    __slots__ = ("_leave",)

    def close(self) -> None:
        self._release()
        super().close()

    def detach(self) -> int:
        self._release()
        return super().detach()

    def _release(self) -> None:
        leave, self._leave = getattr(self, "_leave", None), None
        if leave is not None:
            leave()


# -- the request-level cap, behind a proxy -------------------------------------------------

class RequestCap:
    """WSGI middleware: at most `limit` open requests per client address (REMOTE_ADDR, so
    inside ProxyFix: the forwarded one); the excess gets 503 at once. A request is open
    until its response is closed, so a stream counts for as long as it runs. The response
    is handed on as it is iterated, so this costs nothing per frame."""

    def __init__(self, app: Callable, limit: int) -> None:
        self.app = app
        self.gate = Gate(limit, "a request")

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        key = client_key(environ.get("REMOTE_ADDR"))
        if not self.gate.enter(key):
            body = (f"503 Service Unavailable: too many open requests from your address "
                    f"({SETTING})\n")
            refusal = Response(body, 503, {"Retry-After": str(RETRY_AFTER)},
                               mimetype="text/plain")
            return refusal(environ, start_response)
        try:
            result = self.app(environ, start_response)
        except BaseException:
            self.gate.leave(key)
            raise
        return _closing(result, partial(self.gate.leave, key), environ)


def _closing(result: Iterable[bytes], release: Callable[[], None],
             environ: dict) -> Iterable[bytes]:
    """`result`, with `release` run once when the server closes it."""
    def close() -> None:
        try:
            if inner_close is not None:
                inner_close()
        finally:
            release()

    inner_close = getattr(result, "close", None)
    file_wrapper = environ.get("wsgi.file_wrapper")
    if file_wrapper is not None and isinstance(result, file_wrapper):
        # The server sends a file it recognises with sendfile(): keep it recognisable.
        try:
            result.close = close
            return result
        except AttributeError:
            pass
    return _Closing(result, close)


class _Closing:
    """An iterable whose iterator is the response's own (no step of Python per item)."""

    __slots__ = ("_result", "close")

    def __init__(self, result: Iterable[bytes], close: Callable[[], None]) -> None:
        self._result = result
        self.close = close

    def __iter__(self):
        return iter(self._result)
