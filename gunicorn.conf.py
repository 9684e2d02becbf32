"""gunicorn settings: `gunicorn app:app` picks this file up from the working directory.

One gevent worker: one process owns the camera (for several workers, see the Redis
frame bus in the README). The settings are validated here, in the master, so a bad
value stops gunicorn with one line instead of a worker boot loop.
"""

import socket as _socket
import sys as _sys

import gunicorn.util as _gunicorn_util

import config as _config

def _refuse(message: str) -> None:
    """A configuration error in the master: one line, no traceback, exit status 2."""
    print(f"error: {message}", file=_sys.stderr, flush=True)
    _sys.exit(2)


try:
    _settings = _config.load()
except _config.ConfigError as exc:
    _refuse(str(exc))

bind = [f"[{_settings.host}]:{_settings.port}" if ":" in _settings.host
        else f"{_settings.host}:{_settings.port}"]
worker_class = "gevent"
workers = 1
worker_connections = 2000
# Streams never end by themselves: on shutdown the camera ends them (see worker hooks
# below), so a short graceful timeout is enough.
graceful_timeout = 5
keepalive = 5
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
    """Several workers would each open the camera: refuse, and say what works instead."""
    if server.cfg.workers > 1 and _settings.camera != "redis":
        _refuse(f"{server.cfg.workers} workers with CAMERA={_settings.camera or 'emulated'}: "
                "one process owns a camera; for several workers run 'flask --app app publish'"
                " beside the camera and the web workers with CAMERA=redis (see README)")


def post_worker_init(worker):
    """End streams at once when the worker is told to stop, then let gunicorn go on."""
    import signal

    worker.log.error_log.addFilter(_quiet_send_timeouts)

    def closing(handler):
        def handle(signum, frame):
            for camera in _cameras(worker):
                camera.close(wait=0)
            return handler(signum, frame)
        return handle

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        handler = signal.getsignal(signum)
        if callable(handler):
            signal.signal(signum, closing(handler))


def worker_exit(server, worker):
    """Wait (briefly) for the driver to release its device before the worker exits."""
    for camera in _cameras(worker):
        camera.close(wait=2.0)


def _cameras(worker):
    app = getattr(worker, "wsgi", None)
    extensions = getattr(app, "extensions", {})
    return [extensions["camera"]] if "camera" in extensions else []


def _quiet_send_timeouts(record):
    """A viewer dropped for STREAM_SEND_TIMEOUT is expected: one line, not a traceback."""
    if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
        record.msg, record.args, record.exc_info, record.exc_text = (
            "dropped a viewer that accepted no data for STREAM_SEND_TIMEOUT", (), None, None)
        record.levelname, record.levelno = "INFO", 20
    return True
