"""Recording over HTTP: start and stop clips, trigger events, list, download, play and
delete recordings, list timelapse stills; and the `flask --app app timelapse` command.

    recordings_http.install(app, cameras.recorders)  # the routes and the command

Access (Basic auth, cross-site refusal of POST and DELETE) is the app's, from server/access.py.
A file name from a URL is only ever used after it matched the exact names the recorder
makes and resolved to a regular file inside that camera's folder; anything else is 404.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import datetime
from pathlib import Path

import click
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    request,
    send_file,
    url_for,
)

from capture import Fanout, native
from stream import mjpeg

from .clip_file import RecordingError, created, load_av, make_timelapse
from .folder import TIMELAPSE, Recording, timelapse_video_name, valid_day
from .recorder import Recorder, Recorders

log = logging.getLogger("recording")

bp = Blueprint("recordings", __name__, cli_group=None)
# Routes with a file name: merge_slashes=False, so "a//b" is a 404, not a redirect.

DEFAULT_LIMIT, MAX_LIMIT = 500, 100000
MAX_PLAYERS = 8  # clips played at once by this process (each is one reading thread)
NO_CACHE = mjpeg.NO_CACHE  # the live stream's: one set

_players: set[_Player] = set()  # every clip this process plays (each recorder's, too)
_players_lock = threading.Lock()


def install(app: Flask, recorders: Recorders) -> None:
    """Register the routes and the command (the app starts recording: see app.py)."""
    app.extensions["recorders"] = recorders
    app.register_blueprint(bp)


def _recorder(name: str) -> Recorder:
    recorders = current_app.extensions.get("recorders") or {}
    if name not in recorders:
        abort(404, f"no camera {name!r}; cameras: {', '.join(recorders)}")
    return recorders[name]


def _recording_path(recorder: Recorder, file: str) -> Path:
    path = recorder.path_of(file)
    if path is None:
        abort(404, f"no recording {file!r} of camera {recorder.name!r}")
    return path


def _json(body, status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers.update(NO_CACHE)
    return response


def _entry(name: str, item: Recording) -> dict:
    return {**item.as_dict(),
            "download": url_for("recordings.download", name=name, file=item.file),
            "play": url_for("recordings.play", name=name, file=item.file),
            "snapshot": url_for("recordings.snapshot", name=name, file=item.file)
            if item.snapshot else None}


def _control(call):
    try:
        return call()
    except RecordingError as exc:
        abort(503, str(exc))


# -- control ------------------------------------------------------------------------------

@bp.post("/camera/<name>/record")
def record(name: str):
    """A manual clip from now: ?seconds=N (default: until stopped, at most `segment`)."""
    recorder = _recorder(name)
    raw = request.args.get("seconds")
    seconds = None
    segment = recorder.settings.segment
    if raw is not None:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and 0 < seconds <= segment):
            abort(400, f"seconds must be a number > 0 and <= {segment:g} (the camera's "
                       f"segment), or left out to record until stopped; not {raw!r}")
    clip = _control(lambda: recorder.start_clip(seconds))
    return _json({"camera": name, "clip": clip, **recorder.status()}, 202)


@bp.post("/camera/<name>/record/stop")
def record_stop(name: str):
    recorder = _recorder(name)
    if not _control(recorder.stop_clip):
        abort(409, "no manual clip is being recorded")
    return _json({"camera": name, **recorder.status()})


@bp.post("/camera/<name>/event")
def event(name: str):
    """An event clip: pre_event seconds before now to post_event after the last one."""
    recorder = _recorder(name)
    clip = _control(recorder.trigger_event)
    return _json({"camera": name, "clip": clip, **recorder.status()}, 202)


# -- recordings ---------------------------------------------------------------------------

@bp.get("/camera/<name>/recordings")
def recordings(name: str):
    """JSON list, newest first. ?day=YYYY-MM-DD: that day only; ?limit=N (default 500)."""
    recorder = _recorder(name)
    day = request.args.get("day")
    if day is not None and not valid_day(day):
        abort(400, f"day must be a date YYYY-MM-DD, not {day!r}")
    raw = request.args.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        abort(400, f"limit must be a whole number from 1 to {MAX_LIMIT}, not {raw!r}")
    items = recorder.recordings(day=day, limit=int(raw))
    return _json([_entry(name, item) for item in items])


@bp.get("/camera/<name>/recordings/<file>", merge_slashes=False)
def download(name: str, file: str):
    recorder = _recorder(name)
    path = _recording_path(recorder, file)
    # conditional: Range requests (seeking players), If-None-Match, If-Modified-Since.
    return send_file(path, mimetype="video/x-matroska", as_attachment=True,
                     download_name=file, conditional=True, max_age=0)


@bp.delete("/camera/<name>/recordings/<file>", merge_slashes=False)
def delete(name: str, file: str):
    recorder = _recorder(name)
    path = _recording_path(recorder, file)
    if recorder.is_open(path):
        abort(409, f"{file} is still being recorded")
    try:
        recorder.delete(path)
    except RecordingError as exc:
        abort(409, str(exc))
    except FileNotFoundError:
        abort(404, f"no recording {file!r} of camera {name!r}")
    log.info("%s: deleted %s (HTTP)", name, file)
    return Response(status=204)


@bp.get("/camera/<name>/recordings/<file>/snapshot.jpg", merge_slashes=False)
def snapshot(name: str, file: str):
    """An event clip's snapshot: the frame motion detection scored highest."""
    recorder = _recorder(name)
    path = recorder.folder.snapshot_of(file)
    if path is None:
        abort(404, f"no snapshot of recording {file!r} of camera {name!r}")
    return send_file(path, mimetype="image/jpeg", conditional=True, max_age=0)


@bp.get("/camera/<name>/recordings/<file>/play", merge_slashes=False)
def play(name: str, file: str):
    """The clip as an MJPEG stream at its recorded pace, for an <img>."""
    recorder = _recorder(name)
    path = _recording_path(recorder, file)
    advance = request.args.get("advance_headers")
    if advance not in (None, "0", "1"):
        abort(400, "advance_headers must be 0 or 1")
    advance = mjpeg.is_browser(request.headers) if advance is None else advance == "1"
    if request.method == "HEAD":
        return Response(b"", headers=mjpeg.STREAM_HEADERS, content_type=mjpeg.MIMETYPE)
    _control(load_av)
    if recorder.closed:
        abort(503, "the server is shutting down")
    with _players_lock:
        if len(_players) >= MAX_PLAYERS:
            return Response(f"503 Service Unavailable: {MAX_PLAYERS} clips are playing "
                            "already\n", 503, {"Retry-After": "5"}, mimetype="text/plain")
        player = _Player(path)
        _players.add(player)
        recorder.players.add(player)

    def release() -> None:
        """The response is over, however it ended: the player's thread, file and slot."""
        player.stop()
        with _players_lock:
            _players.discard(player)
            recorder.players.discard(player)

    try:
        player.start()
        if recorder.closed:  # shutdown began since the check above: end with the rest
            player.end()
        sock = mjpeg.client_socket(request.environ)
        settings = current_app.config.get("SETTINGS")
        return mjpeg.stream_response(mjpeg.stream(player.viewer, advance, None, sock),
                                     release, sock,
                                     settings.send_timeout if settings else None)
    except BaseException:
        release()
        raise


class _Player:
    """Reads a clip's packets in a native thread and publishes them into its own Fanout
    at the recorded pace; the stream ends (fanout closed) after the last frame, or
    once `end()` asks (the server shuts down)."""

    LAST_FRAME_WAIT = 2.0  # seconds the end waits for the viewer to take the last frame

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fanout = Fanout()  # made in the request's thread: its hub wakes the viewer
        self.viewer = self.fanout.subscribe()  # before the reader starts: none is missed
        self._lock = native.allocate_lock()
        self._stopped = False
        self._stop = native.Flag()

    def start(self) -> None:
        native.start_thread(self._run, ())

    def end(self) -> None:
        """End the stream now (any thread, signal handlers too: takes no lock): the
        reader wakes, stops and closes the fanout, so the viewer's stream ends."""
        self._stop.set()

    def stop(self) -> None:
        """The response is over (any thread of the request): stop reading, let the
        viewer go and free the fanout's watcher; the reader never touches the fanout
        after this."""
        self.viewer.close()
        with self._lock:
            self._stopped = True
            self._stop.set()
            self.fanout.release()

    def _run(self) -> None:
        av = load_av()  # imported by the request (play) already
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                start = created(container)
                t0 = None
                t = gap = 0.0
                for packet in container.demux(stream):
                    if not packet.size or packet.pts is None:
                        continue
                    t, previous = float(packet.pts * stream.time_base), t
                    gap = t - previous if t0 is not None else 0.0
                    now = time.monotonic()
                    if t0 is None:
                        t0 = now - t
                    delay = t0 + t - now
                    if self._stop.wait(delay) if delay > 0 else self._stop.is_set():
                        return
                    with self._lock:
                        if self._stopped:
                            return
                        self.fanout.publish(bytes(packet),
                                            start + t if start is not None else None)
                self._stop.wait(min(gap, 1.0))  # the last frame shows for its time too
                # A viewer raises CameraClosed without taking a frame it has not taken yet:
                # on a busy machine its thread may not have run since the last publish.
                deadline = time.monotonic() + self.LAST_FRAME_WAIT
                while (self.viewer.last_seq < self.fanout.seq and not self.viewer.closed
                       and time.monotonic() < deadline and not self._stop.wait(0.01)):
                    pass
        except Exception as exc:  # noqa: BLE001 - a cut or unreadable file just ends
            log.info("playing %s ended early: %s", self.path.name, exc)
        finally:
            with self._lock:
                if not self._stopped:
                    self.fanout.close()
            native.destroy_thread_hub()


# -- timelapse ----------------------------------------------------------------------------

@bp.get("/camera/<name>/timelapse")
def timelapse(name: str):
    """JSON list of days with stills, newest first; ?day=YYYY-MM-DD adds that day's
    stills (oldest first)."""
    recorder = _recorder(name)
    day = request.args.get("day")
    if day is not None and not valid_day(day):
        abort(400, f"day must be a date YYYY-MM-DD, not {day!r}")
    days = recorder.timelapse_days()
    if day is not None:
        days = [d for d in days if d["day"] == day]
    result = []
    for entry in days:
        item = {"day": entry["day"], "count": entry["stills"], "first": entry["first"],
                "last": entry["last"],
                "url": url_for("recordings.timelapse", name=name, day=entry["day"]),
                "video": url_for("recordings.timelapse_file", name=name, day=entry["day"],
                                 file=entry["video"]) if entry["video"] else None}
        if day is not None:
            item["stills"] = [{"file": still, "time": _still_time(entry["day"], still),
                               "url": url_for("recordings.timelapse_file", name=name,
                                              day=entry["day"], file=still)}
                              for still in recorder.stills(entry["day"])]
        result.append(item)
    return _json(result)


@bp.get("/camera/<name>/timelapse/<day>/<file>", merge_slashes=False)
def timelapse_file(name: str, day: str, file: str):
    """One still (image/jpeg) or the day's timelapse video."""
    recorder = _recorder(name)
    path = recorder.timelapse_path(day, file)
    if path is None:
        abort(404, f"no timelapse file {day}/{file} of camera {name!r}")
    if file.endswith(".jpg"):
        return send_file(path, mimetype="image/jpeg", conditional=True, max_age=0)
    return send_file(path, mimetype="video/x-matroska", as_attachment=True,
                     download_name=file, conditional=True, max_age=0)


def _still_time(day: str, still: str) -> float | None:
    try:
        return datetime.strptime(day + still[:6], "%Y-%m-%d%H%M%S").timestamp()
    except ValueError:
        return None


MIN_TIMELAPSE_FPS, MAX_TIMELAPSE_FPS = 0.1, 240.0


def _timelapse_fps(ctx, param, raw: str) -> float:
    """--fps as a finite number in range, else one line (click's FloatRange lets nan
    through, and its usage errors take three lines)."""
    try:
        fps = float(raw)
    except ValueError:
        fps = math.nan
    if not (math.isfinite(fps) and MIN_TIMELAPSE_FPS <= fps <= MAX_TIMELAPSE_FPS):
        raise click.ClickException(
            f"--fps must be a number of frames per second from {MIN_TIMELAPSE_FPS:g} to "
            f"{MAX_TIMELAPSE_FPS:g}, not {raw!r}")
    return fps


@bp.cli.command("timelapse")
@click.argument("camera")
@click.option("--day", help="the day's stills, YYYY-MM-DD (default: today)")
@click.option("--fps", default="25", callback=_timelapse_fps, show_default=True,
              metavar="NUMBER", help=f"frames per second of the video ({MIN_TIMELAPSE_FPS:g} to "
                   f"{MAX_TIMELAPSE_FPS:g})")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="where to write it (default: beside the stills); an existing regular "
                   "file is replaced, anything else is refused")
def timelapse_command(camera: str, day: str | None, fps: float, output: Path | None):
    """Make a video of a camera's timelapse stills of one day (no re-encoding)."""
    recorders = current_app.extensions.get("recorders") or {}
    if camera not in recorders:
        raise click.UsageError(f"no camera {camera!r}; cameras: {', '.join(recorders)}")
    day = day or time.strftime("%Y-%m-%d")
    if not valid_day(day):
        raise click.BadParameter(f"{day!r}: expected a date YYYY-MM-DD", param_hint="--day")
    recorder = recorders[camera]
    folder = recorder.dir / TIMELAPSE / day
    stills = [folder / name for name in recorder.stills(day)]
    if not stills:
        raise click.ClickException(f"no timelapse stills of {camera} on {day} in {folder}")
    out = output or folder / timelapse_video_name(camera, day)
    # The video is renamed over `out` once complete: that would put a regular file in
    # place of a device (/dev/full, as root), a FIFO or a socket.
    if out.exists() and not out.is_file():
        raise click.ClickException(f"{'--output ' if output else ''}{out} exists and is "
                                   "not a regular file: not replaced")
    try:
        frames = make_timelapse(stills, out, fps, camera)
    except (RecordingError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(out))
    click.echo(f"{frames} stills at {fps:g} fps: {frames / fps:.1f} s", err=True)
