"""gunicorn settings: `python app.py` and `gunicorn app:app` (from this folder) use them.

From another folder gunicorn skips this file silently: pass `--config
/path/to/gunicorn.conf.py` (the systemd unit in the README does).

One gevent worker: one process owns the cameras (for several workers, see the Redis
frame bus in the README). The settings are validated here, in the master, so a bad
value stops gunicorn with one line instead of a worker boot loop.
"""

import socket as _socket

import gunicorn.util as _gunicorn_util

from capture import native as _native
from server import cameras as _cameras
from server import config as _config
from server import connections as _connections
from server import process as _server

try:
    _settings = _config.load()
    _cameras.check_drivers(_settings)
except _config.ConfigError as exc:
    _server.refuse(str(exc))
_server.gunicorn_conf_loaded = True
_server.configure_logging(_settings)
if _proxy_warning := _config.proxy_warning(_settings):  # in the master: once for all workers
    _server.log.warning(_proxy_warning)
_server.raise_open_files_limit()

bind = [f"[{_settings.host}]:{_settings.port}" if ":" in _settings.host
        else f"{_settings.host}:{_settings.port}"]
worker_class = "gevent"
workers = 1
worker_connections = 2000
# Streams never end by themselves: on shutdown the cameras end them (see the worker
# hooks below), so a short graceful timeout is enough.
graceful_timeout = 5
keepalive = 5  # also the longest wait for a request's headers (slow clients are cut)
control_socket_disable = True  # gunicorn 27 would otherwise create ~/.gunicorn/gunicorn.ctl
accesslog = None
loglevel = _settings.log_level.lower()


def _write_chunk(sock, data):
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


if hasattr(_gunicorn_util, "write_chunk") and hasattr(_socket.socket, "sendmsg"):
    _gunicorn_util.write_chunk = _write_chunk


def on_starting(server):
    """Refuse what cannot work, with one line: several workers on local cameras, and an
    address that is taken."""
    if server.cfg.workers > 1 and not _settings.uses_redis:
        _server.refuse(f"{server.cfg.workers} workers with CAMERA="
                       f"{_settings.camera or 'emulated'}: one process owns a camera; for "
                       "several workers run 'flask --app app publish' beside the cameras and "
                       "the web workers with CAMERA=redis (see README)")
    _server.check_bind(server.cfg.bind, _settings)
    _server.redact_gunicorn_logs(server.log)


def post_worker_init(worker):
    """End streams at once when the worker is told to stop, then let gunicorn go on."""
    import signal

    _native.native_logging_locks()  # gevent made them gevent locks: see capture/native.py
    worker.log.error_log.addFilter(_quiet_send_timeouts)
    _server.redact_gunicorn_logs(worker.log)
    _server.start(getattr(worker, "wsgi", None))  # recording runs from boot, with no viewer
    # Before the worker's run() reads its handle/accept: one client cannot hold every slot.
    _connections.install(worker, _settings.max_connections_per_client, _settings.proxy_hops)

    def closing(handler):
        def handle(signum, frame):
            _server.shutdown(getattr(worker, "wsgi", None), wait=0)
            return handler(signum, frame)
        return handle

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        handler = signal.getsignal(signum)
        if callable(handler):
            signal.signal(signum, closing(handler))


def worker_exit(server, worker):
    """Wait (briefly) for the drivers to release their devices before the worker exits."""
    _server.shutdown(getattr(worker, "wsgi", None), wait=2.0)


def _quiet_send_timeouts(record):
    """A viewer dropped for STREAM_SEND_TIMEOUT is expected: one line, not a traceback."""
    if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
        record.msg, record.args, record.exc_info, record.exc_text = (
            "dropped a viewer that accepted no data for STREAM_SEND_TIMEOUT", (), None, None)
        record.levelname, record.levelno = "INFO", 20
    return True
