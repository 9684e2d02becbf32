"""Motion detection over HTTP: switch it on and off, and see what the detector sees.

    routes.install(app, cameras.motion)

`POST /camera/<name>/motion` with `enabled=0|1` (form or query); `GET
/camera/<name>/motion.jpg`, the detector's small picture with changed pixels red and
masked areas shaded, for tuning. Access (Basic auth, cross-site refusal of POST) is
the app's, from server/access.py, as for recording.
"""

from __future__ import annotations

import base64

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request

from recording import RecordingError
from stream import mjpeg

from .watch import Watch, Watches

bp = Blueprint("motion", __name__, cli_group=None)


def install(app: Flask, watches: Watches) -> None:
    """Register the routes (the app starts detection: see app.py)."""
    app.extensions["motion"] = watches
    app.register_blueprint(bp)


def _forward(watch: Watch, command: str, args: dict):
    """A motion command for the process that owns the camera; 503 if it cannot be."""
    if watch.forward is None:
        abort(503, "this process does not own the camera: motion detection is done by "
                   "the process that does (flask --app app publish)")
    try:
        return watch.forward(watch.name, command, args)
    except RecordingError as exc:  # what forwarding raises: no publisher, no answer
        abort(503, str(exc))


def _published(name: str) -> dict | None:
    """The camera's motion status as the owner published it."""
    cameras = current_app.extensions.get("cameras")
    return cameras.status(name).get("motion") if cameras is not None else None


def _watch(name: str) -> Watch:
    watches = current_app.extensions.get("motion") or {}
    if name not in watches:
        abort(404, f"no camera {name!r}; cameras: {', '.join(watches)}")
    return watches[name]


@bp.post("/camera/<name>/motion")
def switch(name: str):
    """enabled=1: detect motion on this camera from now; enabled=0: stop (a current
    event ends). Not kept over a restart: the settings' `motion` is."""
    watch = _watch(name)
    raw = request.values.get("enabled")
    if raw not in ("0", "1"):
        abort(400, f"enabled must be 0 or 1, not {raw!r}" if raw is not None
              else "enabled=0 or enabled=1 is required")
    if watch.active:
        watch.set_enabled(raw == "1")
        status = watch.status()
    else:  # CAMERA=redis: the publisher detects
        status = _forward(watch, "motion", {"enabled": raw == "1"})
    response = jsonify({"camera": name, "motion": status})
    response.headers.update(mjpeg.NO_CACHE)
    return response


@bp.get("/camera/<name>/motion.jpg")
def picture(name: str):
    """What the detector sees: its grey picture, changed pixels red, masked areas blue."""
    watch = _watch(name)
    if watch.active:
        enabled, jpeg = watch.enabled, watch.picture()
    else:  # CAMERA=redis: the publisher's detector
        encoded = _forward(watch, "motion.jpg", {})
        jpeg = base64.b64decode(encoded) if encoded else None
        enabled = jpeg is not None or bool((_published(name) or {}).get("enabled"))
    if not enabled:
        abort(404, f"motion detection is off for camera {name!r}: set motion = true, or "
                   f"POST /camera/{name}/motion with enabled=1")
    if jpeg is None:
        return Response("503 Service Unavailable: the detector has not analysed a frame "
                        "yet\n", 503, {"Retry-After": "1", **mjpeg.NO_CACHE},
                        mimetype="text/plain")
    return Response(jpeg, headers=mjpeg.NO_CACHE, mimetype="image/jpeg")
