"""The web app: viewer pages, MJPEG streams, snapshots and status, for every camera.

    python app.py                 # gunicorn with a gevent worker (gunicorn.conf.py)
    gunicorn app:app              # the same, from this folder (or --config gunicorn.conf.py)
    flask --app app run --debug   # the development loop

Cameras come from the environment (one camera, driver `camera_<CAMERA>`) or from a
CAMERAS_FILE (see server/config.py). The views below serve what `create_app` wired:
the cameras (`app.extensions["cameras"]`) and the settings (`app.config["SETTINGS"]`).
Importing this module builds the app and nothing else: logging, limits, signals and
shutdown belong to the entry points (server/process.py).
"""

from __future__ import annotations

import logging
import re
import threading

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from base_camera import BaseCamera, CameraClosed
from events import routes as event_routes
from motion import routes as motion_routes
from recording import routes as recording_routes
from server import access, config, connections, process
from server.cameras import Cameras
from stream import mjpeg, variants

log = logging.getLogger("app")

SNAPSHOT_TIMEOUT = 4.0  # OctoPrint gives a snapshot 5 s, Home Assistant 10 s

views = Blueprint("cameras", __name__, cli_group=None)
_stream_slots = threading.Lock()  # makes the MAX_CLIENTS check and the join one step


def create_app(settings: config.Settings | None = None) -> Flask:
    """Build the cameras from `settings` (default: the environment) and wire the app
    around them: proxy headers, the per-client cap behind a proxy, access, recording."""
    settings = settings if settings is not None else config.load()
    cameras = Cameras.build(settings)
    app = Flask(__name__)
    app.json.sort_keys = False  # cameras in the order the user listed them
    app.config["SETTINGS"] = settings
    app.extensions["cameras"] = cameras
    if settings.proxy_hops:  # behind nginx: the client's address is in X-Forwarded-For
        if settings.max_connections_per_client is not None:
            # Every connection is the proxy's: count each forwarded address's requests.
            app.wsgi_app = connections.RequestCap(app.wsgi_app,
                                                  settings.max_connections_per_client)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops,
                                x_proto=settings.proxy_hops, x_host=settings.proxy_hops)
    access.install(app, username=settings.auth_username, password=settings.auth_password,
                   cors_origins=settings.cors_allow_origins,
                   # several web workers share the login lockout through Redis
                   limiter_storage=settings.redis_url if settings.uses_redis else "memory://",
                   allowed_hosts=settings.allowed_hosts, frame_ancestors=settings.frame_ancestors)
    app.register_error_handler(HTTPException, http_error)
    app.register_blueprint(views)
    recording_routes.install(app, cameras.recorders)
    event_routes.install(app, cameras.events)
    motion_routes.install(app, cameras.motion)
    app.before_request(_start_cameras)
    return app


# -- helpers of the views -----------------------------------------------------------------

def _cameras() -> Cameras:
    return current_app.extensions["cameras"]


def _start_cameras() -> None:
    """What runs without viewers (recording, detection) starts with the first request
    where nothing started it before (`flask run`; gunicorn starts it at worker boot)."""
    cameras = _cameras()
    if not cameras.started:
        cameras.start()


def _settings() -> config.Settings:
    return current_app.config["SETTINGS"]


def text_response(code: int, message: str, headers: dict | None = None) -> Response:
    return Response(f"{message}\n", code, headers, mimetype="text/plain")


def http_error(exc: HTTPException) -> Response:
    """Every error as one line of text, its headers (Retry-After, Allow) kept."""
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return text_response(exc.code, f"{exc.code} {exc.name}: {exc.description}", headers)


def fps_cap() -> float | None:
    """?fps=: this viewer's rate cap; a 400 saying what is accepted when bad."""
    raw = request.args.get("fps")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not mjpeg.MIN_FPS <= value <= mjpeg.MAX_FPS:
        abort(400, f"fps must be a number from {mjpeg.MIN_FPS:g} to {mjpeg.MAX_FPS:g}, "
                   f"not {raw!r}")
    return value


def size_spec() -> variants.Spec | None:
    """?width=, ?height=, ?quality=: a 400 saying what is accepted when bad."""
    try:
        return variants.parse_request(request.args)
    except ValueError as exc:
        abort(400, str(exc))


def camera_named(name: str) -> BaseCamera:
    cameras = _cameras()
    if name not in cameras:
        abort(404, f"no camera {name!r}; cameras: {', '.join(cameras)}")
    return cameras[name]


def status_response(body: dict) -> Response:
    response = jsonify(body)
    response.headers.update(mjpeg.NO_CACHE)
    return response


# -- what a camera serves -----------------------------------------------------------------

def video_feed(camera: BaseCamera) -> Response:
    """The MJPEG stream: one part per frame, for as long as the client reads."""
    advance = request.args.get("advance_headers")
    if advance not in (None, "0", "1"):
        abort(400, "advance_headers must be 0 or 1")
    advance = mjpeg.is_browser(request.headers) if advance is None else advance == "1"
    fps, spec = fps_cap(), size_spec()
    if request.method == "HEAD":
        return Response(b"", headers=mjpeg.STREAM_HEADERS, content_type=mjpeg.MIMETYPE)
    cameras, settings = _cameras(), _settings()
    with _stream_slots:
        if settings.max_clients is not None and cameras.viewers >= settings.max_clients:
            return text_response(503, f"503 Service Unavailable: {settings.max_clients} "
                                 "viewers already (MAX_CLIENTS)", {"Retry-After": "5"})
        try:
            viewer = (camera.subscribe() if spec is None
                      else cameras.variants[camera.name].subscribe(spec, fps=fps))
        except CameraClosed:
            abort(503, "the server is shutting down")
    # A viewer that accepts no data for STREAM_SEND_TIMEOUT is dropped: the server's
    # blocked send raises, the response ends and the subscription with it.
    sock = mjpeg.client_socket(request.environ)
    return mjpeg.stream_response(mjpeg.stream(viewer, advance, fps, sock), viewer.close,
                                 sock, settings.send_timeout)


def snapshot(camera: BaseCamera) -> Response:
    """One fresh JPEG, waiting a little for a camera that is starting."""
    spec = size_spec()
    try:
        frame = (camera.snapshot(SNAPSHOT_TIMEOUT) if spec is None
                 else _cameras().variants[camera.name].snapshot(spec, SNAPSHOT_TIMEOUT))
    except CameraClosed:
        frame = None
    if frame is None:
        reason = camera.status()["error"] or "no frame from the camera in time"
        return text_response(503, f"503 Service Unavailable: {reason}",
                             {"Retry-After": "5", **mjpeg.NO_CACHE})
    headers = {**mjpeg.NO_CACHE, "X-Timestamp": f"{frame.timestamp:.6f}"}
    return Response(frame.data, headers=headers, mimetype="image/jpeg")


def viewer_page(camera: BaseCamera, single: bool) -> str:
    """The viewer page; `single`: the server's only camera, at the short URLs."""
    name = camera.name
    urls = {
        "stream": url_for(".video_feed") if single else url_for(".camera_feed", name=name),
        "snapshot": url_for(".snapshot") if single else url_for(".camera_snapshot", name=name),
        "status": url_for(".camera_status", name=name),
        "camera": url_for(".camera_page", name=name).rstrip("/"),
    }
    return render_template("index.html", camera=name, urls=urls,
                           home=None if single else url_for(".index"))


# -- URLs -----------------------------------------------------------------------------------

@views.route("/")
def index():
    """The viewer page, a grid of every camera, or mjpg-streamer's ?action= URLs."""
    cameras = _cameras()
    action = request.args.get("action")  # mjpg-streamer's URLs, input N: stream_N
    if action is not None:
        match = re.fullmatch(r"(stream|snapshot)(?:_(\d{1,3}))?", action)
        if not match:
            abort(404, f"unknown action {action!r}: stream[_N] or snapshot[_N]")
        camera = cameras.at(int(match[2] or 0))
        if camera is None:
            abort(404, f"no input {match[2]}: {len(cameras)} camera(s), numbered from 0")
        return video_feed(camera) if match[1] == "stream" else snapshot(camera)
    if len(cameras) == 1:
        return viewer_page(cameras.first, single=True)
    tiles = [{"name": name, "page": url_for(".camera_page", name=name),
              "stream": url_for(".camera_feed", name=name),
              "snapshot": url_for(".camera_snapshot", name=name)} for name in cameras]
    return render_template("grid.html", tiles=tiles, status=url_for(".status"),
                           events=url_for("events.every_camera"))


@views.route("/video_feed", endpoint="video_feed")
def first_feed():
    return video_feed(_cameras().first)


@views.route("/snapshot.jpg", endpoint="snapshot")
def first_snapshot():
    return snapshot(_cameras().first)


@views.route("/status")
def status():
    cameras, settings = _cameras(), _settings()
    every = {name: cameras.status(name) for name in cameras}
    body = {"cameras": every, "viewers": cameras.viewers, "max_clients": settings.max_clients}
    if len(cameras) == 1:  # one camera: its fields at the top, as before
        body = {**next(iter(every.values())), **body}
    return status_response(body)


@views.route("/camera/<name>/")
def camera_page(name: str):
    return viewer_page(camera_named(name), single=False)


@views.route("/camera/<name>/video_feed")
def camera_feed(name: str):
    return video_feed(camera_named(name))


@views.route("/camera/<name>/snapshot.jpg")
def camera_snapshot(name: str):
    return snapshot(camera_named(name))


@views.route("/camera/<name>/status")
def camera_status(name: str):
    return status_response(_cameras().status(camera_named(name).name))


@views.cli.command("publish")
def publish():
    """Capture every camera and publish its frames to Redis for CAMERA=redis servers."""
    import camera_redis

    process.configure_logging(_settings())
    cameras = _cameras()
    cameras.start()  # the publisher owns the cameras: it records
    camera_redis.publish(cameras)


if __name__ == "__main__":
    process.main()  # gunicorn imports this module again, in its worker
else:
    try:
        app = create_app()
    except config.ConfigError as _exc:
        process.refuse(str(_exc), status=4)  # gunicorn: "app failed to load", no restarts
    process.warn_without_gunicorn_conf()
