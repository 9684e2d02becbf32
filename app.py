"""The web app: viewer page, MJPEG stream, snapshot and status.

Run it with `python app.py` (threads), `flask --app app run`, or `gunicorn app:app`
(gevent, settings in gunicorn.conf.py). The camera driver is the module
`camera_<CAMERA>` (unset: the emulated `camera.py`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hmac
import importlib
import inspect
import logging
import pkgutil
import signal
import socket
import sys
import threading
from pathlib import Path

from flask import Flask, Response, abort, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

import config
from base_camera import BaseCamera, CameraClosed, Frame

HERE = Path(__file__).resolve().parent
log = logging.getLogger("app")

BOUNDARY = "frame"
SNAPSHOT_TIMEOUT = 4.0  # OctoPrint gives a snapshot 5 s, Home Assistant 10 s
NO_CACHE = {
    "Cache-Control": "no-cache, no-store, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
}
STREAM_HEADERS = {**NO_CACHE, "X-Accel-Buffering": "no"}  # nginx: do not buffer
BROWSER_DESTINATIONS = {"image", "document", "iframe", "frame", "embed", "object"}


# -- wire format: each part is built once per frame and shared by every viewer --------

_BOUNDARY_LINE = b"\r\n--" + BOUNDARY.encode() + b"\r\n"
_PART_HEAD = _BOUNDARY_LINE[2:] + b"Content-Type: image/jpeg\r\n"


@functools.lru_cache(maxsize=4)
def browser_part(frame: Frame) -> bytes:
    """The frame, then the NEXT part's boundary and headers: Chrome draws a part only once
    it has parsed the next part's headers, so sending them now shows this frame now."""
    return frame.data + _BOUNDARY_LINE + b"Content-Type: image/jpeg\r\n\r\n"


@functools.lru_cache(maxsize=4)
def exact_part(frame: Frame) -> bytes:
    """A part with Content-Length and capture time, for ffmpeg, OpenCV and scripts: they
    read exactly one frame with no boundary scanning. The boundary follows at once, so
    clients that split on it are not a frame behind either."""
    return b"Content-Type: image/jpeg\r\nContent-Length: %d\r\nX-Timestamp: %.6f\r\n\r\n%s%s" % (
        len(frame.data), frame.timestamp, frame.data, _BOUNDARY_LINE)


def wants_advance_headers() -> bool:
    """Browsers get advance headers, other clients exact parts; ?advance_headers=0|1 forces."""
    forced = request.args.get("advance_headers")
    if forced is not None:
        if forced not in ("0", "1"):
            abort(400, "advance_headers must be 0 or 1")
        return forced == "1"
    dest = request.headers.get("Sec-Fetch-Dest")
    if dest:
        return dest in BROWSER_DESTINATIONS
    accept = request.headers.get("Accept", "")
    return "text/html" in accept or "image/" in accept  # browsers without Sec-Fetch-*


def max_fps() -> float | None:
    raw = request.args.get("fps")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        abort(400, f"fps must be a positive number, not {raw!r}")
    return value


def stream(viewer, advance: bool, fps: float | None, sock: socket.socket | None = None):
    """The response body: one part per frame the viewer takes, for as long as it reads."""
    part = browser_part if advance else exact_part
    interval = 1.0 / fps if fps else 0.0
    due = 0.0
    try:
        yield _PART_HEAD + b"\r\n" if advance else _BOUNDARY_LINE[2:]
        while True:
            frame = viewer.next_frame()
            if interval:
                # Keep to a schedule of capture times so ?fps=N averages N; 5 ms of
                # slack absorbs capture jitter.
                if frame.timestamp + 0.005 < due:
                    continue
                due = due + interval if frame.timestamp < due + interval else frame.timestamp + interval
            yield part(frame)
    except CameraClosed:
        # Shutting down: make the server's next keep-alive read see EOF, so the
        # connection closes now instead of idling through the graceful timeout.
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
    finally:
        viewer.close()


# -- the driver -------------------------------------------------------------------------

def available_drivers() -> list[str]:
    names = {m.name[len("camera_"):] for m in pkgutil.iter_modules()
             if m.name.startswith("camera_")}
    return ["emulated", *sorted(names)]


def load_camera(settings: config.Settings) -> BaseCamera:
    """Import `camera_<CAMERA>` (the project folder first on the path) and build its Camera."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    name = settings.driver_module
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise config.ConfigError(
                f"CAMERA={settings.camera}: {name}.py needs the module {exc.name!r}, "
                "which is not installed") from None
        raise config.ConfigError(
            f"CAMERA={settings.camera!r}: no driver module {name}.py on the import path; "
            f"drivers found: {', '.join(available_drivers())}") from None
    cls = getattr(module, "Camera", None)
    if not (isinstance(cls, type) and issubclass(cls, BaseCamera)):
        raise config.ConfigError(f"CAMERA={settings.camera}: {module.__file__} has no "
                                 "Camera class subclassing BaseCamera")
    # Classic drivers define __init__(self) and read their settings themselves.
    takes_settings = len(inspect.signature(cls).parameters) > 0
    return cls(settings) if takes_settings else cls()


# -- the app ----------------------------------------------------------------------------

def create_app(settings: config.Settings | None = None) -> Flask:
    settings = settings if settings is not None else config.load()
    camera = load_camera(settings)
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.extensions["camera"] = camera
    stream_slots = threading.Lock()  # makes the MAX_CLIENTS check and join one step

    @app.before_request
    def require_login():
        if settings.auth_username is None:
            return None
        auth = request.authorization
        given_user = (auth.username or "") if auth and auth.type == "basic" else ""
        given_pass = (auth.password or "") if auth and auth.type == "basic" else ""
        # Compare both, always, in constant time: no early exit tells what was wrong.
        ok_user = hmac.compare_digest(given_user.encode(), settings.auth_username.encode())
        ok_pass = hmac.compare_digest(given_pass.encode(), settings.auth_password.encode())
        if ok_user and ok_pass:
            return None
        return Response("401 Unauthorized: log in to see this camera\n", 401,
                        {"WWW-Authenticate": 'Basic realm="camera", charset="UTF-8"'},
                        mimetype="text/plain")

    @app.after_request
    def cors(response: Response) -> Response:
        if settings.cors_allow_origin and request.endpoint in ("video_feed", "snapshot",
                                                               "status"):
            response.headers["Access-Control-Allow-Origin"] = settings.cors_allow_origin
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return Response(f"{exc.code} {exc.name}: {exc.description}\n", exc.code, headers,
                        mimetype="text/plain")

    @app.route("/")
    def index():
        action = request.args.get("action")  # mjpg-streamer's URLs
        if action == "stream":
            return video_feed()
        if action == "snapshot":
            return snapshot()
        return render_template("index.html")

    @app.route("/video_feed")
    def video_feed():
        advance, fps = wants_advance_headers(), max_fps()
        headers = {**STREAM_HEADERS}
        mimetype = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        if request.method == "HEAD":
            return Response(b"", headers=headers, content_type=mimetype)
        with stream_slots:
            if settings.max_clients is not None and camera.viewers >= settings.max_clients:
                return Response(f"503 Service Unavailable: {settings.max_clients} viewers "
                                "already (MAX_CLIENTS)\n", 503, {"Retry-After": "5"},
                                mimetype="text/plain")
            try:
                viewer = camera.subscribe()
            except CameraClosed:
                abort(503, "the server is shutting down")
        # A viewer that accepts no data for STREAM_SEND_TIMEOUT is dropped: the server's
        # blocked send raises, the response ends and the subscription with it.
        sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
        if sock is not None:
            sock.settimeout(settings.send_timeout)
        return Response(stream(viewer, advance, fps, sock), headers=headers,
                        content_type=mimetype, direct_passthrough=True)

    @app.route("/snapshot.jpg")
    def snapshot():
        try:
            frame = camera.snapshot(SNAPSHOT_TIMEOUT)
        except CameraClosed:
            frame = None
        if frame is None:
            reason = camera.status()["error"] or "no frame from the camera in time"
            return Response(f"503 Service Unavailable: {reason}\n", 503,
                            {"Retry-After": "5", **NO_CACHE}, mimetype="text/plain")
        headers = {**NO_CACHE, "X-Timestamp": f"{frame.timestamp:.6f}"}
        return Response(frame.data, headers=headers, mimetype="image/jpeg")

    @app.route("/status")
    def status():
        response = jsonify(camera.status())
        response.headers.update(NO_CACHE)
        return response

    @app.cli.command("publish")
    def publish():
        """Capture with CAMERA and publish every frame to Redis for CAMERA=redis servers."""
        import camera_redis

        camera_redis.publish(camera)

    atexit.register(camera.close)
    return app


def _fail(message: str) -> None:
    """A configuration error: one line, no traceback, non-zero exit.

    Exit status 4 is gunicorn's "app failed to load": its master stops instead of
    restarting the worker forever.
    """
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(4)


def _configure_logging(settings: config.Settings) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(settings.log_level)


def _raise_open_files_limit() -> None:
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


try:
    _settings = config.load()
    _configure_logging(_settings)
    _raise_open_files_limit()
    app = create_app(_settings)
except config.ConfigError as _exc:
    _fail(str(_exc))


if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and \
        threading.current_thread() is threading.main_thread():
    # Stop on SIGTERM as on Ctrl-C, so atexit closes the camera (gunicorn has its own).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


if __name__ == "__main__":
    log.info("serving on http://%s:%d/ (camera: %s)", _settings.host, _settings.port,
             _settings.camera or "emulated")
    app.run(host=_settings.host, port=_settings.port, threaded=True, debug=False)
