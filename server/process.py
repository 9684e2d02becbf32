"""The process around the app: entry points, logging, limits, shutdown.

`python app.py` runs `main()`: gunicorn itself, with this folder's gunicorn.conf.py
(one gevent worker), exactly as `gunicorn --config gunicorn.conf.py app:app` would, so
the command a newcomer runs is the production server. gunicorn.conf.py calls the rest
from its hooks; `flask --app app run` is the development loop and sets up nothing.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from . import config, redact

HERE = Path(__file__).resolve().parents[1]  # the project folder
CONF = HERE / "gunicorn.conf.py"
log = logging.getLogger("server")

gunicorn_conf_loaded = False  # set by gunicorn.conf.py in the master, inherited by workers


def main() -> None:
    """Serve with gunicorn and this project's gunicorn.conf.py (`python app.py`)."""
    from gunicorn.app.wsgiapp import WSGIApplication

    sys.argv = [sys.argv[0], "--config", str(CONF), *sys.argv[1:], "app:app"]
    WSGIApplication("%(prog)s [OPTIONS]", prog="app.py").run()


def refuse(message: str, status: int = 2) -> None:
    """A configuration error: one line, no traceback, non-zero exit.

    Status 4 is gunicorn's "app failed to load": its master then stops instead of
    restarting the worker forever.
    """
    print(f"error: {redact.redact(message)}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def configure_logging(settings: config.Settings) -> None:
    """Log lines with time and level, and never a password in them."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(settings.log_level)
    redact.add_secret(settings.auth_password)
    redact.add_secret(urlsplit(settings.redis_url).password)
    for camera in settings.cameras:  # a receiver's error may quote its password bare
        if camera.motion_webhook:
            redact.add_secret(urlsplit(camera.motion_webhook).password)
    redact.install_log_redaction(root)


def redact_gunicorn_logs(glog) -> None:
    """gunicorn's own loggers get their handlers after the config file was read."""
    redact.install_log_redaction(glog.error_log, glog.access_log)


def raise_open_files_limit() -> None:
    """Each viewer holds a socket: lift the soft limit (often 1024) to the hard one, so
    the limit is the machine's, not a default's."""
    try:
        import resource
    except ImportError:  # not on Linux or macOS
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            log.debug("could not raise the open files limit from %d", soft)


def check_bind(addresses: list[str], settings: config.Settings) -> None:
    """Refuse at once, with one line, when an address to listen on is taken."""
    for address in addresses:
        if address.startswith(("unix:", "fd://")):
            continue
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, int(port)))
            except OSError as exc:
                what = (f"PORT={settings.port}" if int(port) == settings.port
                        else f"bind {address}")
                reason = ("is already in use (is another server running?)"
                          if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc.strerror}")
                refuse(f"{what}: {host}:{port} {reason}")


def warn_without_gunicorn_conf() -> None:
    """gunicorn started from another folder skips gunicorn.conf.py silently and runs a
    sync worker on 0.0.0.0:8000: say so once."""
    if "gunicorn.arbiter" in sys.modules and not gunicorn_conf_loaded:
        logging.getLogger("app").warning(
            "running under gunicorn without this project's settings: start it with "
            "'gunicorn --config %s app:app' (or 'python app.py')", CONF)


def start(app) -> None:
    """Start what the app runs without viewers (recording), once the worker serves."""
    cameras = getattr(app, "extensions", {}).get("cameras")
    if cameras is not None:
        cameras.start()


def shutdown(app, wait: float) -> None:
    """Stop everything the app started: recordings are finished, streams end and the
    drivers release their devices (waiting up to `wait` seconds for them)."""
    cameras = getattr(app, "extensions", {}).get("cameras")
    if cameras is not None:
        cameras.close(wait=wait)
