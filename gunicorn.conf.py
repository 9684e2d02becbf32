"""gunicorn settings: `python app.py` and `gunicorn app:app` (from this folder) use them.

From another folder gunicorn skips this file silently: pass `--config
/path/to/gunicorn.conf.py` (`python app.py` always does).

One gevent worker: one process owns the cameras (for several workers, see the Redis
frame bus in the README). The settings are validated here, in the master, so a bad
value stops gunicorn with one line instead of a worker boot loop.
"""

from server import cameras as _cameras
from server import config as _config
from server import connections as _connections
from server import patches as _patches
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


_patches.chunked_writes()  # one sendmsg per chunk (server/patches.py)


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

    _patches.native_logging_locks()  # gevent made them gevent locks: see server/patches.py
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
