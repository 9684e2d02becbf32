"""Recording with real files: continuous files with every frame at its capture time,
events with a pre-event buffer, manual clips, timelapse stills and the timelapse command,
retention, a full disk (a real small tmpfs), files cut short, and the HTTP routes (path
tricks, cross-site refusal, Range downloads, playback).

The engine runs in-process on the numbered counter driver (frames carry their number in
a JPEG comment); the HTTP routes on a small Flask app with the blueprint; the end-to-end
tests on a real gunicorn gevent server once app.py wires the blueprint.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DRIVERS, IN_CI, ROOT, assert_keeps_up, frame_number, need_tool, wait_until

sys.path[:0] = [str(ROOT), str(DRIVERS)]

from numbered import numbered  # noqa: E402

import recording  # noqa: E402
from recording import clip_file  # noqa: E402
from recording import routes as recordings_http  # noqa: E402
from server import access, cameras, config  # noqa: E402

FPS = 30.0


# -- helpers ------------------------------------------------------------------------------

def ffprobe(path: Path) -> dict:
    """Frames (counted by reading every packet) and duration, as ffprobe says."""
    out = subprocess.run(
        [need_tool("ffprobe"), "-v", "error", "-count_packets", "-show_entries",
         "format=duration:format_tags:stream=nb_read_packets,codec_name", "-of", "json",
         str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    duration = data["format"].get("duration")
    return {"frames": int(data["streams"][0]["nb_read_packets"]),
            "codec": data["streams"][0]["codec_name"],
            "duration": float(duration) if duration not in (None, "N/A") else None,
            "tags": data["format"].get("tags", {})}


def packets(path: Path) -> list[tuple[float, bytes]]:
    """(seconds from the start, JPEG bytes) of every frame in a recording."""
    av = recording.load_av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(float(p.pts * stream.time_base), bytes(p))
                for p in container.demux(stream) if p.size]


def check_file(path: Path, frames: int, start: float, duration: float, kind: str,
               camera: str = "cam") -> None:
    """A finished file as ffprobe and PyAV read it: the camera's JPEGs on one mjpeg
    stream (size and pixel format from the JPEGs, 1 ms timestamps), the tags, the
    creation time of its first frame, the duration, and a seek index."""
    out = subprocess.run(
        [need_tool("ffprobe"), "-v", "error", "-show_entries",
         "format=duration,format_name:format_tags:stream=codec_name,width,height,pix_fmt,"
         "time_base", "-of", "json", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and not out.stderr, out.stderr
    data = json.loads(out.stdout)
    [stream] = data["streams"]
    assert (stream["codec_name"], stream["width"], stream["height"], stream["pix_fmt"],
            stream["time_base"]) == ("mjpeg", 640, 480, "yuvj420p", "1/1000")
    assert data["format"]["format_name"] == "matroska,webm"
    assert float(data["format"]["duration"]) == pytest.approx(duration, abs=0.001)
    tags = data["format"]["tags"]
    assert tags["KIND"] == kind and tags["CAMERA"] == camera
    assert tags["title"].startswith(f"{camera} {kind} ")
    recorded = packets(path)
    assert len(recorded) == frames
    av = recording.load_av()
    with av.open(str(path)) as container:
        assert clip_file.created(container) == pytest.approx(start, abs=0.001)
        # Seekable (the Cues): a seek lands on the frame asked for.
        stream = container.streams.video[0]
        middle = recorded[len(recorded) // 2][0]
        container.seek(round(middle * 1000), stream=stream)
        packet = next(p for p in container.demux(stream) if p.size)
        assert float(packet.pts * stream.time_base) == pytest.approx(middle, abs=0.001)


def numbers(path: Path) -> list[int]:
    return [frame_number(data) for _, data in packets(path)]


def files_of(root: Path, camera: str = "cam") -> list[Path]:
    return sorted((root / camera).glob("*/*.mkv"))


class Rig:
    """A counter camera and its recorder, closed after the test."""

    def __init__(self, tmp_path: Path, monkeypatch, fps: float = FPS, pad: int = 0,
                 root: Path | None = None, **settings) -> None:
        monkeypatch.setenv("COUNTER_FPS", str(fps))
        monkeypatch.setenv("COUNTER_PAD", str(pad))
        self.settings = replace(config.CameraSettings(), name="cam", driver="counter",
                                idle_timeout=0.3, **settings)
        self.camera = cameras.build(self.settings)
        self.root = root or tmp_path / "recordings"
        self.recorder = recording.Recorder(self.camera, self.root)

    def status(self) -> dict:
        return self.recorder.status()

    def close(self) -> None:
        self.recorder.close(wait=5)
        self.camera.close()


@pytest.fixture
def rig(tmp_path, monkeypatch):
    made = []

    def factory(**kwargs) -> Rig:
        made.append(Rig(tmp_path, monkeypatch, **kwargs))
        return made[-1]

    yield factory
    for r in made:
        r.close()


def collect(camera, seconds: float) -> list:
    """Every frame a viewer of `camera` is sent for `seconds` (in a thread)."""
    got = []
    camera.fanout.keep_history(64)

    def run():
        with camera.subscribe(counted=True, native_thread=True) as viewer:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                got.extend(viewer.next_frames(0.2))

    thread = threading.Thread(target=run)
    thread.start()
    return got, thread


# -- continuous ---------------------------------------------------------------------------

def test_continuous_recording_has_every_frame_at_its_capture_time_byte_identical(rig):
    r = rig(record="continuous", segment=60)
    stream, viewer = collect(r.camera, 2.5)
    r.recorder.start()
    wait_until(lambda: r.status()["recorder"]["frames_written"] >= 45, timeout=10)
    viewer.join()
    r.recorder.close(wait=5)
    [path] = files_of(r.root)
    assert path.name.startswith("cam-") and path.suffix == ".mkv"

    probe = ffprobe(path)
    recorded = packets(path)
    nums = [frame_number(data) for _, data in recorded]
    assert probe["codec"] == "mjpeg" and probe["frames"] == len(recorded)
    # Every frame the camera captured while recording, each once, in order.
    assert nums == list(range(nums[0], nums[0] + len(nums))), nums
    assert probe["frames"] == r.status()["recorder"]["frames_written"]
    # Timed by capture time: 30 fps for real, so players play it at the real speed.
    assert probe["duration"] == pytest.approx(len(nums) / FPS, abs=2.5 / FPS)
    times = [t for t, _ in recorded]
    assert times[0] == 0
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / FPS, rel=0.05)
    # Byte-identical to what the stream's viewer was sent.
    sent = {frame_number(f.data): f for f in stream}
    shared = [n for n in nums if n in sent]
    assert len(shared) >= 30
    by_number = {frame_number(data): (t, data) for t, data in recorded}
    for n in shared:
        assert by_number[n][1] == sent[n].data
    first = sent[shared[0]].timestamp
    for n in shared:  # pts = capture time - the first frame's, to the millisecond
        assert by_number[n][0] - by_number[shared[0]][0] == pytest.approx(
            sent[n].timestamp - first, abs=0.0015)
    # The index gives the listing its figures without opening the file.
    [entry] = r.recorder.recordings()
    assert entry.kind == "continuous" and entry.frames == len(nums)
    assert entry.end - entry.start == pytest.approx(probe["duration"], abs=0.002)
    assert probe["tags"].get("KIND") == "continuous"
    check_file(path, len(nums), entry.start, probe["duration"], "continuous")


def test_segments_cut_without_losing_or_repeating_a_frame(rig):
    r = rig(record="continuous", segment=1)
    r.recorder.start()
    wait_until(lambda: r.status()["recorder"]["files_written"] >= 2, timeout=10)
    r.recorder.close(wait=5)
    paths = files_of(r.root)
    assert len(paths) >= 3
    nums = [n for path in paths for n in numbers(path)]
    assert nums == list(range(nums[0], nums[0] + len(nums)))
    for path in paths[:-1]:
        assert ffprobe(path)["duration"] == pytest.approx(1.0, abs=2.5 / FPS)


def test_a_recording_camera_keeps_capturing_without_viewers_one_that_does_not_stops(rig):
    recording_camera = rig(record="continuous")
    idle_camera = rig(record="off")
    recording_camera.recorder.start()
    idle_camera.recorder.start()
    with idle_camera.camera.subscribe():
        wait_until(lambda: idle_camera.camera.status()["running"], timeout=5)
    time.sleep(1.0)  # three idle timeouts
    assert recording_camera.camera.status()["running"]
    assert not idle_camera.camera.status()["running"]
    assert idle_camera.camera.fanout.subscribers == 0
    assert idle_camera.status()["recording"] is None


# -- events and manual clips --------------------------------------------------------------

def test_event_clip_starts_pre_event_before_the_trigger_and_a_second_trigger_extends_it(rig):
    r = rig(record="events", pre_event=1.0, post_event=0.6)
    r.recorder.start()
    # The ring holds a full pre_event second once the camera has run for longer.
    wait_until(lambda: r.camera.status()["frames_captured"] >= 40, timeout=5)
    buffer = r.status()["recorder"]["pre_event_buffer"]
    assert buffer["bytes"] == pytest.approx(buffer["frames"] * len(numbered(1)), rel=0.01)
    assert not files_of(r.root)  # events mode: nothing on disk before a trigger
    first = time.time()
    r.recorder.trigger_event()
    time.sleep(0.4)
    second = time.time()
    r.recorder.trigger_event()
    wait_until(lambda: r.status()["recorder"]["files_written"] == 1 and
               r.status()["recording"] is None, timeout=5)
    [entry] = r.recorder.recordings()
    assert entry.kind == "event" and entry.file.endswith("-event.mkv")
    # To a tenth of a second, as a user would check a clip (the tap looks at the frames
    # once a second: a loaded machine moves a bound by a frame or two).
    assert entry.start == pytest.approx(first - 1.0, abs=0.1)
    assert entry.end == pytest.approx(second + 0.6, abs=0.1)
    nums = numbers(entry.path)
    assert nums == list(range(nums[0], nums[0] + len(nums)))  # every frame in between
    assert ffprobe(entry.path)["duration"] == pytest.approx(second + 0.6 - (first - 1.0),
                                                             abs=0.15)


def test_manual_clip_with_record_off_runs_its_seconds_then_lets_the_camera_stop(rig):
    r = rig(record="off", segment=10)
    r.recorder.start()
    assert r.camera.fanout.subscribers == 0
    with pytest.raises(ValueError, match="> 0 and <= 10"):
        r.recorder.start_clip(11)
    r.recorder.start_clip(0.7)
    wait_until(lambda: (r.status()["recording"] or {}).get("kind") == "manual", timeout=5)
    wait_until(lambda: r.status()["recorder"]["files_written"] == 1, timeout=5)
    wait_until(lambda: r.camera.fanout.subscribers == 0, timeout=5)  # threads gone too
    [entry] = r.recorder.recordings()
    assert entry.kind == "manual" and entry.file.endswith("-manual.mkv")
    assert entry.end - entry.start == pytest.approx(0.7, abs=0.1)
    # Until stopped: stop ends it.
    assert not r.recorder.stop_clip()
    r.recorder.start_clip()
    wait_until(lambda: r.status()["recorder"]["frames_written"] > entry.frames + 10, timeout=5)
    assert r.status()["recording"]["until_stopped"] is True
    assert r.recorder.stop_clip()
    wait_until(lambda: r.status()["recorder"]["files_written"] == 2, timeout=5)
    assert len(r.recorder.recordings()) == 2


# -- timelapse ----------------------------------------------------------------------------

def test_timelapse_stills_come_at_their_interval_and_the_command_makes_a_video(rig):
    r = rig(timelapse=1)
    r.recorder.start()
    wait_until(lambda: r.status()["recorder"]["timelapse"]["stills"] >= 3, timeout=8)
    r.recorder.close(wait=5)
    assert not files_of(r.root)  # stills only
    [day] = r.recorder.timelapse_days()
    names = r.recorder.stills(day["day"])
    folder = r.root / "cam" / "timelapse" / day["day"]
    nums = [frame_number((folder / name).read_bytes()) for name in names]
    assert len(nums) >= 3
    for a, b in zip(nums, nums[1:]):  # one still per 30 frames: one a second
        assert b - a == pytest.approx(FPS, abs=1)
    # The still is the camera's own JPEG.
    assert (folder / names[0]).read_bytes() == numbered(nums[0])

    app = blueprint_app(r)
    result = app.test_cli_runner().invoke(args=["timelapse", "cam", "--day", day["day"],
                                                "--fps", "10"])
    assert result.exit_code == 0, result.output
    video = Path(result.stdout.strip().splitlines()[0])
    assert video.parent == folder and video.suffix == ".mkv"
    probe = ffprobe(video)
    assert probe["frames"] == len(names) and probe["codec"] == "mjpeg"
    assert probe["duration"] == pytest.approx(len(names) / 10, abs=0.01)
    decoded = subprocess.run([need_tool("ffmpeg"), "-v", "error", "-i", str(video), "-f",
                              "null", "-"], capture_output=True, text=True, timeout=30)
    assert decoded.returncode == 0 and not decoded.stderr
    result = app.test_cli_runner().invoke(args=["timelapse", "nope"])
    assert result.exit_code != 0 and "no camera 'nope'" in result.output
    result = app.test_cli_runner().invoke(args=["timelapse", "cam", "--day", "2001-01-01"])
    assert result.exit_code != 0 and "no timelapse stills" in result.output


# -- retention ----------------------------------------------------------------------------

def _fake_files(root: Path, ages_days: list[float], size: int) -> list[Path]:
    """Recordings (and a still per day) with mtimes `ages_days` ago, oldest first."""
    made = []
    now = time.time()
    for age in ages_days:
        moment = now - age * 86400
        local = time.localtime(moment)
        day = root / "cam" / time.strftime("%Y-%m-%d", local)
        day.mkdir(parents=True, exist_ok=True)
        path = day / f"cam-{time.strftime('%Y%m%d-%H%M%S', local)}.mkv"
        path.write_bytes(b"\0" * size)
        os.utime(path, (moment, moment))
        made.append(path)
        still = root / "cam" / "timelapse" / time.strftime("%Y-%m-%d", local)
        still.mkdir(parents=True, exist_ok=True)
        jpg = still / time.strftime("%H%M%S.jpg", local)
        jpg.write_bytes(b"\xff\xd8" + b"\0" * 100)
        os.utime(jpg, (moment, moment))
        made.append(jpg)
    return made


def test_retention_by_size_deletes_the_oldest_first(rig, tmp_path):
    r = rig(keep_gb=0.0000035)  # 3500 bytes
    made = _fake_files(r.root, [5, 4, 3, 2, 1], 1000)
    r.recorder._retention()
    left = [p for p in made if p.exists()]
    # 5 x (1000 + 102) bytes: the oldest go until the rest fits in 3500 bytes.
    assert left == made[-7:]
    assert sum(p.stat().st_size for p in left) <= 3500
    assert not (made[0].parent).exists()  # emptied day folders go too


def test_retention_by_age_deletes_what_is_older(rig):
    r = rig(keep_days=2.5)
    made = _fake_files(r.root, [5, 4, 3, 2, 1], 10)
    r.recorder.start()  # record off: one pass at start
    wait_until(lambda: not made[5].exists(), timeout=5)
    assert [p for p in made if p.exists()] == made[6:]


def test_retention_never_deletes_the_open_file(rig):
    r = rig(record="continuous", segment=60, keep_gb=0.000001)  # 1000 bytes: always over
    r.recorder.start()
    wait_until(lambda: r.status()["recorder"]["frames_written"] >= 10, timeout=5)
    r.recorder._retention()
    assert len(files_of(r.root)) == 1
    assert r.status()["recorder"]["error"] is None


# -- failures -----------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs under the test's folder."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_stops_recording_cleanly_viewers_keep_their_rate_and_it_resumes(
        rig, small_disk):
    r = rig(record="continuous", segment=60, pad=20000, root=small_disk)
    r.recorder.retry_after = 0.5
    stream, viewer = collect(r.camera, 2.0)  # the 1 MiB disk is full after about 1 s
    r.recorder.start()
    wait_until(lambda: r.status()["recorder"]["error"], timeout=10, message="disk full")
    error = r.status()["recorder"]["error"]
    assert "disk full" in error and "No space left on device" in error
    viewer.join()
    # The stream went on at its rate while the disk filled.
    times = [f.timestamp for f in stream if f.live]
    assert len(times) >= 2.0 * FPS * 0.9
    assert max(b - a for a, b in zip(times, times[1:])) < 0.2
    assert r.camera.status()["running"]
    # Nothing empty or unplayable left behind; what is there plays.
    time.sleep(1.0)  # a couple of retries against the full disk
    assert "disk full" in r.status()["recorder"]["error"]  # still stopped, same reason
    leftovers = files_of(small_disk)
    assert leftovers
    for path in leftovers:
        assert path.stat().st_size > 0
        probe = ffprobe(path)
        assert probe["frames"] > 0
        assert numbers(path)[0] is not None
    # Space back: recording resumes by itself.
    for path in leftovers:
        path.unlink()
    written = r.status()["recorder"]["frames_written"]
    wait_until(lambda: r.status()["recorder"]["error"] is None, timeout=5)
    wait_until(lambda: r.status()["recorder"]["frames_written"] > written + 5, timeout=5)


def test_unwritable_folder_is_reported_and_leaves_nothing(rig, tmp_path, monkeypatch):
    r = rig(record="continuous")
    r.recorder.retry_after = 0.3
    r.root.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(r.root))

    monkeypatch.setattr(Path, "mkdir", refuse)
    r.recorder.start()
    wait_until(lambda: r.status()["recorder"]["error"], timeout=5)
    assert "permission denied" in r.status()["recorder"]["error"]
    assert list(r.root.iterdir()) == []
    assert r.camera.status()["running"]


def test_the_writer_tells_when_each_file_starts_and_ends_even_one_a_full_disk_ended(
        rig, monkeypatch):
    """The event feed's "recording" events; a file the disk took no frame of is gone:
    its end has no download."""
    r = rig(record="off")
    told: list[dict] = []
    recorder = recording.Recorder(r.camera, r.root, on_file=told.append)
    try:
        recorder.retry_after = 0.1
        recorder.start_clip(0.3)
        wait_until(lambda: len(told) == 2, timeout=10, message="the clip's start and end")
        start, end = told
        assert (start["state"], end["state"], start["kind"]) == ("start", "end", "manual")
        assert start["camera"] == "cam" and start["file"] == end["file"]
        assert start["time"] < end["time"]
        assert end["download"] == f"/camera/cam/recordings/{end['file']}"
        assert files_of(r.root)[0].name == end["file"]

        def full(fd, buffers):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(clip_file, "_write_all", full)
        recorder.start_clip(0.3)
        wait_until(lambda: len(told) >= 4, timeout=10, message="the failed file's events")
        assert [t["state"] for t in told[2:4]] == ["start", "end"]
        assert told[3]["download"] is None and len(files_of(r.root)) == 1
    finally:
        recorder.close(wait=5)


def test_a_stalled_disk_drops_recording_frames_never_a_viewers(rig, monkeypatch):
    r = rig(record="continuous", segment=60)
    r.recorder.queue_frames = 5
    stall = threading.Event()
    real_write = clip_file._write_all

    def slow_write(fd, buffers):  # a disk that blocks every write until it is back
        stall.wait(10)
        return real_write(fd, buffers)

    monkeypatch.setattr(clip_file, "_write_all", slow_write)
    stream, viewer = collect(r.camera, 1.5)
    r.recorder.start()
    viewer.join()
    times = [f.timestamp for f in stream]
    assert len(times) >= 1.5 * FPS * 0.9  # the viewer's rate did not change
    assert r.status()["recorder"]["dropped"] >= 20
    stall.set()  # the disk is back: the file goes on
    written = r.status()["recorder"]["frames_written"]
    wait_until(lambda: r.status()["recorder"]["frames_written"] > written + 10, timeout=5)


def test_a_file_cut_short_plays_up_to_its_last_written_frame(rig, tmp_path):
    r = rig(record="continuous", segment=60)
    r.recorder.start()
    wait_until(lambda: r.status()["recorder"]["frames_written"] >= 75, timeout=10)
    [path] = files_of(r.root)
    # As a power loss leaves it: written so far, no trailer.
    written = r.status()["recorder"]["frames_written"]
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes())
    probe = ffprobe(cut)
    assert probe["frames"] >= written  # every frame handed to the OS plays
    # And cut in the middle of a frame.
    half = tmp_path / "half.mkv"
    data = cut.read_bytes()
    half.write_bytes(data[:len(data) // 2 + 777])
    assert ffprobe(half)["frames"] >= probe["frames"] // 2 - FPS
    r.recorder.close(wait=5)
    finished = ffprobe(path)
    assert finished["duration"] is not None and finished["frames"] >= written
    # A file the index does not know (the power went before its line): read from itself.
    [indexed] = r.recorder.recordings()
    (path.parent / "index.jsonl").unlink()
    [probed] = r.recorder.recordings()
    assert (probed.file, probed.kind, probed.frames) == (indexed.file, "continuous",
                                                         indexed.frames)
    assert probed.start == pytest.approx(indexed.start, abs=0.001)


# -- HTTP ---------------------------------------------------------------------------------

def blueprint_app(*rigs: Rig, cors: tuple[str, ...] = ()):
    from flask import Flask, Response
    from werkzeug.exceptions import HTTPException

    app = Flask("recording-test")
    access.install(app, username=None, password=None, cors_origins=cors)

    @app.errorhandler(HTTPException)
    def as_text(exc):  # as app.py answers errors
        return Response(f"{exc.code} {exc.name}: {exc.description}\n", exc.code,
                        mimetype="text/plain")
    app.config["SETTINGS"] = config.Settings()
    recorders = {r.camera.name: r.recorder for r in rigs}
    app.extensions["cameras"] = {r.camera.name: r.camera for r in rigs}
    app.extensions["recorders"] = recorders
    app.register_blueprint(recordings_http.bp)
    return app


def test_http_control_list_download_with_range_and_delete(rig):
    r = rig(record="off", segment=5, post_event=0.5)
    r.recorder.start()
    client = blueprint_app(r).test_client()
    assert client.post("/camera/nope/record").status_code == 404
    for bad in ("0", "-1", "6", "nan", "inf", "ten"):
        response = client.post(f"/camera/cam/record?seconds={bad}")
        assert response.status_code == 400, bad
        assert "seconds must be a number > 0 and <= 5" in response.text
    assert client.post("/camera/cam/record/stop").status_code == 409
    response = client.post("/camera/cam/record")
    assert response.status_code == 202 and response.json["clip"]["until_stopped"]
    wait_until(lambda: client.get("/camera/cam/recordings").json, timeout=5)
    [item] = client.get("/camera/cam/recordings").json
    assert item["in_progress"] and item["kind"] == "manual"
    assert client.delete(item["download"]).status_code == 409  # still being written
    wait_until(lambda: r.status()["recorder"]["frames_written"] >= 20, timeout=5)
    assert client.post("/camera/cam/record/stop").status_code == 200
    wait_until(lambda: r.status()["recorder"]["files_written"] == 1, timeout=5)
    response = client.post("/camera/cam/event")
    assert response.status_code == 202
    wait_until(lambda: r.status()["recorder"]["files_written"] == 2, timeout=20)

    listing = client.get("/camera/cam/recordings").json
    assert [i["kind"] for i in listing] == ["event", "manual"]  # newest first
    assert listing[0]["start"] > listing[1]["start"]
    for entry in listing:
        assert set(entry) >= {"file", "start", "end", "frames", "bytes", "kind", "download",
                              "play"}
        assert not entry["in_progress"] and entry["frames"] > 0
    item = listing[1]
    path = r.root / "cam" / time.strftime("%Y-%m-%d", time.localtime(item["start"])) / \
        item["file"]
    whole = client.get(item["download"])
    assert whole.status_code == 200 and whole.data == path.read_bytes()
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.mimetype == "video/x-matroska"
    part = client.get(item["download"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == path.read_bytes()[100:200]
    assert client.get(f"/camera/cam/recordings?day={time.strftime('%Y-%m-%d')}").json
    assert client.get("/camera/cam/recordings?day=2001-01-01").json == []
    assert client.get("/camera/cam/recordings?limit=1").json == listing[:1]
    assert client.get("/camera/cam/recordings?day=yesterday").status_code == 400
    for bad in ("0", "-1", "x", "%C2%B2", "100001"):
        assert client.get(f"/camera/cam/recordings?limit={bad}").status_code == 400, bad

    assert client.delete(item["download"]).status_code == 204
    assert not path.exists()
    assert client.get(item["download"]).status_code == 404
    assert client.delete(item["download"]).status_code == 404
    assert [i["file"] for i in client.get("/camera/cam/recordings").json] == \
        [listing[0]["file"]]


def test_path_tricks_in_file_names_get_404(rig, tmp_path):
    r = rig(record="off")
    other = rig(record="off")
    other.settings = other.camera.settings = replace(other.settings, name="other")
    other.camera.name = "other"
    other.recorder = recording.Recorder(other.camera, r.root)
    day = r.root / "cam" / "2025-01-02"
    day.mkdir(parents=True)
    good = day / "cam-20250102-030405.mkv"
    good.write_bytes(b"\x1a\x45\xdf\xa3 fake")
    (day / "index.jsonl").write_text("{}\n")
    secret = tmp_path / "secret.mkv"
    secret.write_text("secret")
    (day / "cam-20250102-030406.mkv").symlink_to(secret)
    (r.root / "other" / "2025-01-02").mkdir(parents=True)
    (r.root / "other" / "2025-01-02" / "other-20250102-030405.mkv").write_text("theirs")
    client = blueprint_app(r, other).test_client()
    assert client.get("/camera/cam/recordings/cam-20250102-030405.mkv").status_code == 200
    tricks = [
        "..", "%2e%2e", "..%2Fsecret.mkv", "%2e%2e%2f%2e%2e%2fsecret.mkv",
        "2025-01-02%2Fcam-20250102-030405.mkv", "index.jsonl", "cam-20250102-030406.mkv",
        "other-20250102-030405.mkv", "cam-20250102-030405.mkv%00", "cam-20251302-030405.mkv",
        "cam-20250102-030405.MKV", "CAM-20250102-030405.mkv", "cam-20250102-030405.mkv.json",
        "cam-20250102-030405-secret.mkv", "%2Fetc%2Fpasswd", "....%2F%2F",
        "cam-20250102-030405.mkv%2F..%2F..%2F..%2Fsecret.mkv",
    ]
    for trick in tricks:
        for method in ("GET", "DELETE"):
            response = client.open(f"/camera/cam/recordings/{trick}", method=method)
            assert response.status_code == 404, (method, trick)
        assert client.get(f"/camera/cam/recordings/{trick}/play").status_code == 404, trick
    for trick in ("../cam/2025-01-02", "..%2F2025-01-02", "2025-01-02%2F..", "2025-13-01"):
        assert client.get(f"/camera/cam/timelapse/{trick}/000000.jpg").status_code == 404
    assert client.get("/camera/cam/timelapse/2025-01-02/..%2F..%2Findex.jsonl").status_code \
        == 404
    assert good.exists() and secret.exists()


def test_cross_site_posts_and_deletes_are_refused(rig):
    r = rig(record="off")
    day = r.root / "cam" / "2025-01-02"
    day.mkdir(parents=True)
    (day / "cam-20250102-030405.mkv").write_bytes(b"x")
    client = blueprint_app(r, cors=("https://dash.example",)).test_client()
    evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    for method, url in [("POST", "/camera/cam/record"), ("POST", "/camera/cam/record/stop"),
                        ("POST", "/camera/cam/event"),
                        ("DELETE", "/camera/cam/recordings/cam-20250102-030405.mkv")]:
        response = client.open(url, method=method, headers=evil)
        assert response.status_code == 403, url
        response = client.open(url, method=method, headers={"Sec-Fetch-Site": "same-site"})
        assert response.status_code == 403, url
    assert r.status()["recording"] is None and r.status()["recorder"]["events"] == 0
    assert (day / "cam-20250102-030405.mkv").exists()
    # The allowed dashboard, the page itself and scripts may.
    assert client.post("/camera/cam/event", headers={"Origin": "https://dash.example"}
                       ).status_code == 202
    assert client.post("/camera/cam/event", headers={"Sec-Fetch-Site": "same-origin"}
                       ).status_code == 202
    assert client.post("/camera/cam/event").status_code == 202


def test_play_streams_the_clip_at_its_recorded_pace(rig, tmp_path):
    r = rig(record="off")
    app = blueprint_app(r)
    r.recorder.start()
    r.recorder.start_clip(1.0)
    wait_until(lambda: r.status()["recorder"]["files_written"] == 1, timeout=5)
    [entry] = r.recorder.recordings()
    recorded = packets(entry.path)
    started = time.monotonic()
    response = app.test_client().get(f"/camera/cam/recordings/{entry.file}/play",
                                     headers={"Accept": "*/*"})
    assert response.status_code == 200
    assert response.mimetype == "multipart/x-mixed-replace"
    body = response.get_data()  # until the clip's end closes the stream
    elapsed = time.monotonic() - started
    assert elapsed == pytest.approx(recorded[-1][0], abs=0.3)
    parts = [p for p in body.split(b"--frame\r\n") if p]
    frames = [p.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0] for p in parts if b"\r\n\r\n" in p]
    assert len(frames) >= len(recorded) - 2  # a newest-frame stream may skip at most a few
    assert all(f in {data for _, data in recorded} for f in frames)
    stamps = [float(p.split(b"X-Timestamp: ")[1].split(b"\r\n")[0]) for p in parts
              if b"X-Timestamp: " in p]
    assert stamps[0] == pytest.approx(entry.start, abs=0.002)


def test_timelapse_listing(rig):
    r = rig(record="off")
    folder = r.root / "cam" / "timelapse" / "2025-01-02"
    folder.mkdir(parents=True)
    for name in ("120000.jpg", "120010.jpg"):
        (folder / name).write_bytes(numbered(1))
    client = blueprint_app(r).test_client()
    [day] = client.get("/camera/cam/timelapse").json
    assert day["day"] == "2025-01-02" and day["count"] == 2 and "stills" not in day
    [day] = client.get("/camera/cam/timelapse?day=2025-01-02").json
    assert [s["file"] for s in day["stills"]] == ["120000.jpg", "120010.jpg"]
    still = client.get(day["stills"][1]["url"])
    assert still.status_code == 200 and still.mimetype == "image/jpeg"
    assert still.data == numbered(1)
    assert client.get("/camera/cam/timelapse?day=2025-1-2").status_code == 400


# -- end to end: a real gunicorn gevent server ---------------------------------------------

def test_server_records_byte_identical_frames_and_sigterm_leaves_a_playable_file(
        servers, tmp_path):
    root = tmp_path / "recordings"
    server = servers("gevent", {"CAMERA": "counter", "COUNTER_FPS": "30",
                                "RECORD_MODE": "continuous", "RECORDINGS_DIR": str(root)})
    with server.stream(headers={"Accept": "*/*"}) as stream:
        parts = stream.frames(45)
    wait_until(lambda: server.status()["recorder"]["frames_written"] >= 60, timeout=10)
    assert server.status()["recording"]["kind"] == "continuous"
    assert server.stop(signal.SIGTERM) == 0
    [path] = files_of(root, "camera")
    probe = ffprobe(path)
    assert probe["duration"] is not None  # the trailer was written: finished on SIGTERM
    recorded = {frame_number(data): data for _, data in packets(path)}
    nums = sorted(recorded)
    assert nums == list(range(nums[0], nums[0] + len(nums)))
    for part in parts:  # the stream's frames are in the file, byte for byte
        assert recorded[frame_number(part.body)] == part.body


def test_server_refuses_cross_site_posts_and_path_tricks(servers, tmp_path):
    server = servers("gevent", {"CAMERA": "counter", "RECORDINGS_DIR": str(tmp_path)})
    code, _, _ = server.get("/camera/camera/event", method="POST",
                            headers={"Origin": "https://evil.example"})
    assert code == 403
    for trick in ("..%2F..%2Fapp.py", "%2e%2e", "camera-20250102-030405.mkv"):
        code, _, _ = server.get(f"/camera/camera/recordings/{trick}")
        assert code == 404, trick
    code, _, body = server.get("/camera/camera/event", method="POST")
    assert code == 202, body


def test_server_event_clip_is_listed_played_and_downloaded(servers, tmp_path):
    server = servers("gevent", {"CAMERA": "counter", "COUNTER_FPS": "30",
                                "RECORD_MODE": "events", "RECORD_PRE_EVENT": "0.5",
                                "RECORD_POST_EVENT": "0.5", "RECORDINGS_DIR": str(tmp_path)})
    wait_until(lambda: server.status()["frames_captured"] >= 25, timeout=10)
    code, _, body = server.get("/camera/camera/event", method="POST")
    assert code == 202, body

    def listed():
        code, _, body = server.get("/camera/camera/recordings")
        items = json.loads(body)
        return items if items and not items[0]["in_progress"] else None

    [item] = wait_until(listed, timeout=10)
    assert item["kind"] == "event" and item["duration"] == pytest.approx(1.0, abs=0.1)
    assert server.status()["recording"] is None
    code, headers, body = server.get(item["download"], headers={"Range": "bytes=0-3"})
    assert code == 206 and body == b"\x1a\x45\xdf\xa3"  # the EBML header: a Matroska file
    code, _, whole = server.get(item["download"])
    path = tmp_path / "clip.mkv"
    path.write_bytes(whole)
    recorded = [data for _, data in packets(path)]
    assert len(recorded) == item["frames"]
    started = time.monotonic()
    with server.stream(item["play"], headers={"Accept": "*/*"}) as stream:
        played = []
        with pytest.raises(EOFError):
            while True:
                played.append(stream.next_part().body)
    assert time.monotonic() - started == pytest.approx(item["duration"], abs=0.4)
    assert len(played) >= len(recorded) - 2 and set(played) <= set(recorded)


def test_server_full_disk_stops_recording_while_viewers_keep_their_rate(servers, small_disk):
    server = servers("gevent", {"CAMERA": "counter", "COUNTER_FPS": "30",
                                "COUNTER_PAD": "20000", "RECORD_MODE": "continuous",
                                "RECORDINGS_DIR": str(small_disk)})
    with server.stream(headers={"Accept": "*/*"}) as stream:
        parts = stream.frames(90)  # 3 s: the 1 MiB disk is full after about one
    times = [float(p.headers["x-timestamp"]) for p in parts]
    assert (len(times) - 1) / (times[-1] - times[0]) >= 0.8 * FPS  # the viewer keeps up
    assert_keeps_up([frame_number(p.body) for p in parts])
    status = server.status()
    assert "disk full" in status["recorder"]["error"] and status["running"]
    assert "recording stopped: disk full" in server.log()
    for path in files_of(small_disk, "camera"):
        assert ffprobe(path)["frames"] > 0


def test_a_worker_that_does_not_own_the_camera_forwards_commands_or_refuses(rig):
    """CAMERA=redis web workers: the publisher records; they list its files and hand
    commands on (through `forward`), or say where recording happens."""
    owner = rig(record="off", post_event=0.3)
    recorders = recording.Recorders({"cam": owner.camera}, owner.root)
    worker = recording.Recorder(owner.camera, owner.root, active=False)
    client = blueprint_app(owner).test_client()
    client.application.extensions["recorders"] = {"cam": worker}
    assert worker.status() == {}
    response = client.post("/camera/cam/event")
    assert response.status_code == 503 and "flask --app app publish" in response.text
    sent = []
    worker.forward = lambda camera, command, args: sent.append((camera, command, args)) or \
        recorders.command(camera, command, args)
    assert client.post("/camera/cam/event").status_code == 202
    assert client.post("/camera/cam/record?seconds=0.5").status_code == 202
    assert sent == [("cam", "event", {}), ("cam", "record", {"seconds": 0.5})]
    wait_until(lambda: recorders["cam"].status()["recorder"]["files_written"] == 1, timeout=5)
    [item] = wait_until(lambda: client.get("/camera/cam/recordings").json, timeout=5)
    # One file for both: a manual clip and an event at the same time share it.
    assert item["kind"] == "manual" and not item["in_progress"]
    assert item["duration"] == pytest.approx(0.5, abs=0.1)
    recorders.close()
