"""What a stream holds is given back when its client goes, however it goes: clip
playback ended, left early, stopped reading, or cut by a server shutdown; and the
smaller hardening points around recordings (the listing with a bad index line, paths in
/status, the timelapse command's refusals).

The playback tests write a real clip (PyAV, the recorder's own ClipFile) into the
server's RECORDINGS_DIR and play it from real gunicorn gevent and gthread servers. What
a player holds is counted from outside: /status `players`, the worker's open files (the
clip's file) and, under gevent, its threads.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DRIVERS, ROOT, thread_count, wait_until
from serverkit import open_files, silent_viewer

sys.path[:0] = [str(ROOT), str(DRIVERS)]

from numbered import numbered  # noqa: E402

import recording  # noqa: E402
from capture import Frame  # noqa: E402
from recording.clip_file import ClipFile  # noqa: E402
from server import cameras, config  # noqa: E402

ACCEPT = {"Accept": "*/*"}


def make_clip(root: Path, times: list[float], pad: int = 0, camera: str = "camera",
              ago: float = 3600.0) -> Path:
    """A recording of `camera` whose frames come at `times` (seconds from its start),
    written as the recorder writes one, where the server looks for it."""
    start = time.time() - ago
    local = time.localtime(start)
    folder = root / camera / time.strftime("%Y-%m-%d", local)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{camera}-{time.strftime('%Y%m%d-%H%M%S', local)}.mkv"
    clip = ClipFile(path, "continuous", camera, Frame(numbered(0, pad), start, 0))
    for i, t in enumerate(times):
        clip.write(Frame(numbered(i, pad), start + t, i))
        if i % 32 == 31:
            clip.flush()  # big frames need not all sit in memory
    clip.finish()
    return path


def play_url(path: Path) -> str:
    return f"/camera/camera/recordings/{path.name}/play"


def players(server) -> int:
    return server.status()["recorder"]["players"]


def holds(pid: int, path: Path) -> bool:
    """Has the process `path` open?"""
    return str(path) in open_files(pid).values()


def idle(server, pid: int, clip: Path):
    """Nobody plays, and the worker holds the clip's file no more."""
    return players(server) == 0 and not holds(pid, clip)


def playback_server(servers, mode: str, root: Path, **env):
    return servers(mode, {"CAMERA": "counter", "COUNTER_FPS": "10",
                          "RECORDINGS_DIR": str(root), **env})


# -- playback gives back what it holds -------------------------------------------------

@pytest.mark.parametrize("mode", ["gevent", "gthread", "flask"])
def test_twelve_plays_one_after_another_all_play(servers, tmp_path, mode):
    """More plays than MAX_PLAYERS (8), each to its end: none is refused."""
    clip = make_clip(tmp_path, [0.0, 0.05, 0.1, 0.15])
    server = playback_server(servers, mode, tmp_path)
    for n in range(12):
        with server.stream(play_url(clip), ACCEPT) as stream:
            assert stream.status == 200, (n, stream.response.read())
            parts = []
            with pytest.raises(EOFError):
                while True:
                    parts.append(stream.next_part())
        assert parts, n  # a newest-frame stream may skip frames on a loaded machine
    wait_until(lambda: players(server) == 0, timeout=5, message="no player left")


@pytest.mark.parametrize("mode", ["gevent", "gthread", "flask"])
def test_a_play_left_early_frees_its_reader_and_file_at_once(servers, tmp_path, mode):
    """A 60 s clip at 10 fps, left after 1 s: the next write fails, the response ends,
    and with it the reader thread and the open file."""
    clip = make_clip(tmp_path, [i / 10 for i in range(600)])
    server = playback_server(servers, mode, tmp_path)
    pid = server.worker()
    assert players(server) == 0
    threads = thread_count(pid)
    with server.stream(play_url(clip), ACCEPT) as stream:
        first = time.monotonic()
        stream.next_part()
        while time.monotonic() - first < 1.0:
            stream.next_part()
        assert players(server) == 1 and holds(pid, clip)
    left = time.monotonic()
    wait_until(lambda: idle(server, pid, clip), timeout=3, interval=0.1,
               message="the player to stop and close the clip")
    assert time.monotonic() - left < 2.5
    if mode == "gevent":  # gthread keeps its pool's threads: only gevent's count is exact
        wait_until(lambda: thread_count(pid) == threads, timeout=2,
                   message="the reader thread to end")


@pytest.mark.parametrize("mode", ["gevent", "gthread", "flask"])
def test_a_play_left_while_nothing_is_sent_frees_its_reader_within_check_every(
        servers, tmp_path, mode):
    """A clip with a frame every 20 s, left after its first: nothing is written that
    could fail, so the departure is noticed by asking the kernel (CHECK_EVERY, 2 s)."""
    clip = make_clip(tmp_path, [0.0, 20.0, 40.0, 60.0])
    server = playback_server(servers, mode, tmp_path)
    pid = server.worker()
    with server.stream(play_url(clip), ACCEPT) as stream:
        stream.next_part()
        time.sleep(0.5)  # a viewer that looks at the first frame for a moment, then leaves
        assert players(server) == 1 and holds(pid, clip)
    left = time.monotonic()
    wait_until(lambda: idle(server, pid, clip), timeout=5, interval=0.1,
               message="the player to stop and close the clip")
    assert time.monotonic() - left < 3.5


def test_a_play_whose_viewer_stops_reading_ends_at_the_send_timeout(servers, tmp_path):
    """A 10 s clip of 5 MB/s: the socket buffers (a few MB) fill within a second or two,
    then the blocked send times out after STREAM_SEND_TIMEOUT, long before the clip ends."""
    clip = make_clip(tmp_path, [i / 25 for i in range(250)], pad=200000)
    server = playback_server(servers, "gevent", tmp_path, STREAM_SEND_TIMEOUT="1")
    pid = server.worker()
    silent = silent_viewer(server.port, play_url(clip))
    try:
        started = time.monotonic()
        wait_until(lambda: players(server) == 1, timeout=5)
        wait_until(lambda: idle(server, pid, clip), timeout=10, interval=0.1,
                   message="the silent viewer dropped, its player stopped")
        assert time.monotonic() - started < 7
    finally:
        silent.close()
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("mode", ["gevent", "gthread"])  # flask run has no shutdown hook
def test_sigterm_ends_a_clip_being_played_at_once(servers, tmp_path, mode):
    """Shutdown ends playback as it ends live streams, not after the graceful timeout."""
    clip = make_clip(tmp_path, [i / 10 for i in range(600)])
    server = playback_server(servers, mode, tmp_path)
    with server.stream(play_url(clip), ACCEPT) as stream:
        stream.next_part()
        stopped = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(EOFError):
            while True:
                stream.next_part()
        assert time.monotonic() - stopped < 2.0
    assert server.stop(timeout=10) == 0
    assert time.monotonic() - stopped < 4.0  # gunicorn's graceful timeout is 5 s


def test_playback_and_the_live_stream_send_the_same_no_cache_headers(servers, tmp_path):
    clip = make_clip(tmp_path, [0.0, 0.05])
    server = playback_server(servers, "gevent", tmp_path)
    names = ("Cache-Control", "Pragma", "Expires", "X-Accel-Buffering")
    with server.stream("/video_feed", ACCEPT) as live, \
            server.stream(play_url(clip), ACCEPT) as played:
        assert live.status == played.status == 200
        assert {n: played.headers[n] for n in names} == {n: live.headers[n] for n in names}
    assert live.headers["Pragma"] == "no-cache"


def test_a_live_stream_closed_before_its_first_part_releases_its_viewer(app_client):
    """A server may close a response it never iterated (a generator that never started
    runs no `finally`): the viewer is let go all the same."""
    from werkzeug.test import EnvironBuilder

    client = app_client()
    started = []
    body = client.application(EnvironBuilder("/video_feed").get_environ(),
                              lambda status, headers: started.append(status))
    assert started == ["200 OK"]
    assert client.get("/status").json["viewers"] == 1
    body.close()  # as a server that meets an error before the first part would
    assert client.get("/status").json["viewers"] == 0


# -- the listing skips an index line it cannot use ------------------------------------------

def folder_with_index(tmp_path: Path, files: list[str], lines: list[str]):
    """A day folder with stub recordings `files` and an index of `lines`."""
    from recording import folder as recordings

    day = tmp_path / "cam" / "2025-01-02"
    day.mkdir(parents=True)
    for name in files:
        (day / name).write_bytes(b"\x1a\x45\xdf\xa3")
    (day / "index.jsonl").write_text("".join(line + "\n" for line in lines))
    return recordings.CameraFolder(tmp_path, "cam")


def test_a_bad_index_line_is_skipped_and_logged_once_the_rest_is_listed(tmp_path, caplog):
    good = {"file": "cam-20250102-030400.mkv", "kind": "event", "start": 1735783440.0,
            "end": 1735783441.5, "frames": 45, "bytes": 4}
    bad = [
        {"file": "cam-20250102-030401.mkv", "kind": "event"},  # no start
        {"file": "cam-20250102-030402.mkv", "start": "noon", "end": None, "frames": 1},
        {"file": "cam-20250102-030403.mkv", "start": 1.0, "end": "later", "frames": 1},
        {"file": "cam-20250102-030404.mkv", "start": 1.0, "end": 2.0, "frames": "many"},
        {"file": "cam-20250102-030405.mkv", "start": 1.0, "kind": 7},
        {"file": "cam-20250102-030406.mkv", "start": float("nan")},
        {"file": "cam-20250102-030407.mkv", "start": True},
    ]
    lines = [json.dumps(good)] + [json.dumps(b) for b in bad] + [
        "[1, 2]", "null", '"text"', "42", "{not json", '{"file": 5, "start": 1}']
    folder = folder_with_index(tmp_path, [good["file"]] + [b["file"] for b in bad], lines)
    with caplog.at_level(logging.WARNING, logger="recording"):
        listed = folder.recordings()
        again = folder.recordings()
    assert len(listed) == 8 and len(again) == 8  # every file, bad line or not
    by_file = {r.file: r for r in listed}
    assert by_file[good["file"]].kind == "event" and by_file[good["file"]].frames == 45
    assert by_file[good["file"]].start == good["start"]
    for entry in bad:  # listed from the file itself (here: an unreadable stub)
        item = by_file[entry["file"]]
        assert item.frames is None and isinstance(item.start, float)
        item.as_dict()  # what the route serializes
    warnings = [r for r in caplog.records if "index.jsonl" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once, not per listing
    message = warnings[0].getMessage()
    assert "\n" not in message and "13 unusable lines" in message
    assert "2025-01-02/index.jsonl" in message and str(tmp_path) not in message


def test_a_bad_index_line_does_not_make_the_listing_a_500(servers, tmp_path):
    clip = make_clip(tmp_path, [0.0, 0.05])
    with open(clip.parent / "index.jsonl", "a") as index:
        index.write(json.dumps({"file": clip.name, "kind": "continuous"}) + "\n")
    server = playback_server(servers, "gevent", tmp_path)
    code, _, body = server.get("/camera/camera/recordings")
    assert code == 200, body
    [item] = json.loads(body)
    assert item["file"] == clip.name and item["frames"] == 2  # read from the file
    assert "index.jsonl" in server.log() and "Traceback" not in server.log()


# -- /status names recording files relative to RECORDINGS_DIR -----------------------------

def recorder_of(tmp_path: Path, monkeypatch) -> recording.Recorder:
    monkeypatch.setenv("COUNTER_FPS", "30")
    settings = replace(config.CameraSettings(), name="cam", driver="counter",
                       record="continuous", idle_timeout=0.3)
    camera = cameras.build(settings)
    recorder = recording.Recorders({"cam": camera}, tmp_path / "recordings")["cam"]
    recorder.retry_after = 0.3
    return recorder


def first_error(recorder) -> str:
    """The error /status shows once the recorder has tried its first file."""
    try:
        recorder.start()
        return wait_until(lambda: recorder.status()["recorder"]["error"], timeout=5)
    finally:
        recorder.close(wait=5)
        recorder.camera.close()


@pytest.mark.parametrize("failure", [errno.EACCES, errno.ENOSPC])
def test_status_names_the_failing_file_relative_to_the_recordings_dir(
        tmp_path, monkeypatch, failure):
    recorder = recorder_of(tmp_path, monkeypatch)
    root = tmp_path / "recordings"
    made = []

    def refuse(path, *args, **kwargs):  # as a full or read-only disk answers
        made.append(Path(path))
        raise OSError(failure, os.strerror(failure), str(path))

    monkeypatch.setattr(ClipFile, "__init__", lambda self, path, *a, **k:
                        refuse(path))
    error = first_error(recorder)
    assert str(tmp_path) not in error
    relative = made[0].relative_to(root.resolve()).as_posix()
    assert relative.startswith("cam/") and f"writing {relative};" in error
    assert os.strerror(failure) in error


def test_status_names_the_recordings_dir_itself_by_its_setting(tmp_path, monkeypatch):
    recorder = recorder_of(tmp_path, monkeypatch)
    root = (tmp_path / "recordings").resolve()

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(root))

    monkeypatch.setattr(Path, "mkdir", refuse)
    error = first_error(recorder)
    assert str(tmp_path) not in error and "writing RECORDINGS_DIR;" in error


# -- the timelapse command ------------------------------------------------------------------

def timelapse(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    stills = tmp_path / "camera" / "timelapse" / "2025-01-02"
    stills.mkdir(parents=True, exist_ok=True)
    for name in ("120000.jpg", "120010.jpg"):
        (stills / name).write_bytes(numbered(1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMERA", "RECORD"))}
    env.update({"CAMERA": "counter", "RECORDINGS_DIR": str(tmp_path),
                "PYTHONPATH": os.pathsep.join([str(DRIVERS), env.get("PYTHONPATH", "")])})
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", "timelapse",
                           "camera", "--day", "2025-01-02", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_timelapse_refuses_to_replace_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe"  # stands for /dev/full, which a test must not risk
    os.mkfifo(fifo)
    result = timelapse(tmp_path, "--output", str(fifo))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"Error: --output {fifo} exists and is not a regular file: not replaced"]
    assert fifo.is_fifo()
    assert not list(tmp_path.glob(".pipe*"))  # no temporary file left either
    video = tmp_path / "video.mkv"
    video.write_bytes(b"old")  # a regular file is replaced, as before
    result = timelapse(tmp_path, "--output", str(video))
    assert result.returncode == 0, result.stderr
    assert video.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"


@pytest.mark.parametrize("fps", ["nan", "inf", "0", "-1", "241", "ten"])
def test_timelapse_refuses_a_bad_fps_in_one_line(tmp_path, fps):
    result = timelapse(tmp_path, "--fps", fps, "--output", str(tmp_path / "v.mkv"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"Error: --fps must be a number of frames per second from 0.1 to 240, not {fps!r}"]
    assert not (tmp_path / "v.mkv").exists()
