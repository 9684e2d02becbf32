"""The README's client commands run as written against a real server.

Each line of the README's checked-commands block runs with the host replaced by the test
server's, long durations shortened (300 frames -> 20, 60 s -> 2 s), and the players made
headless (mpv without a window, VLC as `cvlc` with dummy outputs, not as root). What
each command made is checked: frame counts and durations by ffprobe, a decoded frame.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, free_port, need_tool, wait_until

FPS = 20


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- checked-commands.*?-->\n```sh\n(.*?)```", text, re.S)
    assert block, "the README has no checked-commands block"
    return [line for line in block[1].splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    from conftest import start_server

    server = start_server("gevent", tmp_path_factory.mktemp("readme"),
                          {"CAMERA": "counter", "COUNTER_FPS": str(FPS)})
    yield server
    server.kill()


def probe(path) -> tuple[int, float]:
    out = subprocess.run([need_tool("ffprobe"), "-v", "error", "-count_frames", "-show_entries",
                          "stream=nb_read_frames:format=duration", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    data = json.loads(out)
    return int(data["streams"][0]["nb_read_frames"]), float(data["format"]["duration"])


def as_tested(line: str, port: int) -> list[str]:
    line = line.replace("camera.local:5000", f"127.0.0.1:{port}")
    line = line.replace("-frames:v 300", "-frames:v 20").replace("-t 60", "-t 2")
    argv = shlex.split(line)
    if argv[0] == "mpv":
        argv += ["--vo=null", "--ao=null", "--frames=10", "--msg-level=all=v"]
    if argv[0] == "vlc":
        argv = ["cvlc", "-I", "dummy", "--vout", "dummy", "--aout", "dummy", "-vv", *argv[1:]]
        if os.geteuid() == 0:  # VLC refuses to run as root
            argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                    "env", "HOME=/tmp", *argv]
    return argv


def vlc_decodes(argv: list[str], cwd) -> bool:
    """VLC plays the stream with its MJPEG demuxer and decoder. (It does not exit at the
    end of a live stream: it is stopped once it shows it decodes.)"""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 30
        for line in proc.stdout:
            seen |= {mark for mark in ('using demux module "mjpeg"', "codec (mjpeg) started")
                     if mark in line}
            if {'using demux module "mjpeg"', "codec (mjpeg) started"} <= seen:
                return True
            if time.monotonic() > deadline:
                return False
        return False
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("index", range(5))
def test_each_client_command_in_the_readme_works(camera, tmp_path, index):
    line = readme_commands()[index]
    argv = as_tested(line, camera.port)
    need_tool(argv[0] if argv[0] != "setpriv" else "cvlc")
    os.chmod(tmp_path, 0o777)
    if line.startswith("vlc"):
        assert vlc_decodes(argv, tmp_path)
        return
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2000:]
    if "clip.mkv" in line:
        frames, duration = probe(tmp_path / "clip.mkv")
        assert frames == 20 and abs(duration - 20 / FPS) < 0.3, (frames, duration)
    elif "clip.mp4" in line:
        frames, duration = probe(tmp_path / "clip.mp4")
        assert abs(duration - 2.0) < 0.3 and frames > 0, (frames, duration)
    elif line.startswith("mpv"):
        assert "VO: [null] 640x480" in output
    else:
        assert (tmp_path / "now.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_the_readme_has_the_five_checked_commands():
    assert [line.split()[0] for line in readme_commands()] == ["ffmpeg", "ffmpeg", "mpv",
                                                               "vlc", "curl"]


# -- the two set-up commands, on machines with and without sudo and python3-venv ----------

def readme_block(marker: str) -> str:
    """The lines between the README's <!-- marker --> and <!-- /marker --> (as .ci/run)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker} -->\n```sh\n(.*?)```\n<!-- /{marker} -->", text, re.S)
    assert block, f"the README has no {marker} block"
    return block[1]


FAKES = {
    # python3: `-m venv` fails as Debian's does without python3-venv, until it is installed.
    "python3": """
if [ "$1 $2" = "-m venv" ]; then
  if [ -n "$VENV_WORKS" ] || [ -e "$STATE/python3-venv" ]; then
    /bin/mkdir -p .venv/bin
    for tool in pip python; do
      printf '#!/bin/bash\\necho ".venv/bin/%s $*" >> "$STATE/log"\\n' $tool > .venv/bin/$tool
      /bin/chmod +x .venv/bin/$tool
    done
    echo "python3 $*" >> "$STATE/log"; exit 0
  fi
  echo "The virtual environment was not created successfully because ensurepip is not"\\
       "available." >&2
  echo "python3 $* (failed)" >> "$STATE/log"; exit 1
fi
exit 2""",
    # apt-get: needs root, as the real one does; `install python3-venv` installs it.
    "apt-get": """
if [ "$FAKE_UID" != 0 ]; then
  echo "E: Could not open lock file - open (13: Permission denied)" >&2
  echo "apt-get $* (denied)" >> "$STATE/log"; exit 100
fi
echo "apt-get $*" >> "$STATE/log"
case " $* " in *" python3-venv "*) : > "$STATE/python3-venv" ;; esac""",
    "sudo": """
echo "sudo $1" >> "$STATE/log"
FAKE_UID=0 exec "$@\"""",
}


def run_setup(block: str, tmp_path, *, root: bool, sudo: bool, venv_works: bool):
    """Run a README block in bash with fake python3, apt-get and sudo (only when `sudo`)
    first on PATH: what it ran, in order, and its exit status."""
    bin_dir, state, cwd = tmp_path / "bin", tmp_path / "state", tmp_path / "clone"
    for folder in (bin_dir, state, cwd):
        folder.mkdir(parents=True)
    for name, body in FAKES.items():
        if name == "sudo" and not sudo:
            continue
        (bin_dir / name).write_text("#!/bin/bash\n" + body.lstrip("\n") + "\n")
        (bin_dir / name).chmod(0o755)
    # No /usr/bin on PATH: `command -v sudo` cannot find the machine's own sudo.
    env = {"PATH": str(bin_dir), "STATE": str(state), "FAKE_UID": "0" if root else "1000",
           "VENV_WORKS": "1" if venv_works else ""}
    result = subprocess.run(["/bin/bash", "-c", block], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=30)
    log = (state / "log").read_text().splitlines() if (state / "log").exists() else []
    return log, result.returncode, result.stderr


@pytest.mark.parametrize("marker,requirements,last", [
    ("run-command", "requirements.txt", ".venv/bin/python app.py"),
    ("test-command", "requirements-dev.txt", ".venv/bin/python -m pytest"),
])
@pytest.mark.parametrize("root,sudo", [(True, False), (False, True)],
                         ids=["root-without-sudo", "user-with-sudo"])
def test_the_setup_commands_install_python3_venv_only_where_it_is_missing(
        tmp_path, marker, requirements, last, root, sudo):
    block = readme_block(marker)
    venv = "python3 -m venv --system-site-packages .venv"
    via = ["sudo apt-get", "sudo apt-get"] if sudo else []
    log, code, stderr = run_setup(block, tmp_path / "missing", root=root, sudo=sudo,
                                  venv_works=False)
    apt = [line for line in log if line.startswith("apt-get")]
    assert code == 0, (log, stderr)
    assert apt == ["apt-get update", "apt-get install -y python3-venv"], log
    assert [line for line in log if line.startswith("sudo")] == via, log
    assert log[0] == f"{venv} (failed)" and log[-3:] == [
        venv, f".venv/bin/pip install -r {requirements}", last], log

    log, code, stderr = run_setup(block, tmp_path / "present", root=root, sudo=sudo,
                                  venv_works=True)
    assert code == 0 and log == [venv, f".venv/bin/pip install -r {requirements}", last], log


def test_the_setup_command_fails_clearly_for_a_user_without_sudo_or_python3_venv(tmp_path):
    log, code, stderr = run_setup(readme_block("run-command"), tmp_path, root=False,
                                  sudo=False, venv_works=False)
    assert code != 0 and "Permission denied" in stderr and "ensurepip" in stderr
    assert not any(line.startswith(".venv/bin/python app.py") for line in log), log


# -- every other shell block: recording, timelapse, Redis ---------------------------------

def checked_block(name: str) -> list[str]:
    """The command lines of the README's sh block marked <!-- checked: name -->."""
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- checked: {name} -->\n```sh\n(.*?)```", text, re.S)
    assert block, f"the README has no sh block marked 'checked: {name}'"
    return [line for line in block[1].splitlines() if line and not line.startswith("#")]


# Each name's test: here, but "try-it" is tests/test_cameras.py's (the example cameras).
CHECKED = {"cameras-file", "try-it", "recording-http", "recording-files", "timelapse", "redis",
           "events", "motion"}  # "motion": tests/test_motion_server.py


def test_every_shell_block_in_the_readme_is_run_by_a_test():
    text = (ROOT / "README.md").read_text()
    marks = re.findall(r"<!-- ([^>]*?) -->\n```sh\n", text)
    named = {m.split(": ", 1)[1] for m in marks if m.startswith("checked: ")}
    others = [m for m in marks if not m.startswith("checked: ")]
    assert len(marks) == len(re.findall(r"```sh\n", text)), "an sh block without a marker"
    assert sorted(others) == sorted(["run-command", "test-command", "checked-commands: "
                                     "tests/test_readme.py runs each of these against a "
                                     "real server"]), others
    assert named == CHECKED


def shell(line: str, cwd, env: dict | None = None, timeout: float = 60):
    """Exit status, standard output and standard error of `line` run by bash."""
    result = subprocess.run(["bash", "-c", line], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, **(env or {})})
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    """A server with the README's `door` camera recording event clips."""
    from conftest import start_server

    tmp = tmp_path_factory.mktemp("door")
    (tmp / "cameras.toml").write_text('[cameras.door]\ndriver = "counter"\nrecord = "events"\n'
                                      'pre_event = 0.5\npost_event = 0.5\n')
    server = start_server("gevent", tmp, {"CAMERAS_FILE": str(tmp / "cameras.toml"),
                                          "COUNTER_FPS": str(FPS),
                                          "RECORDINGS_DIR": str(tmp / "recordings")})
    server.recordings = tmp / "recordings"
    yield server
    server.kill()


def test_the_readme_recording_http_commands_record_trigger_and_list(door, tmp_path):
    def run(line: str):
        line = line.replace("camera.local:5000", f"127.0.0.1:{door.port}")
        code, output, errors = shell(line.replace("seconds=30", "seconds=1"), tmp_path)
        assert code == 0, errors
        return json.loads(output)

    record_line, event_line, list_line = checked_block("recording-http")
    record, event = run(record_line), run(event_line)
    # The clip's file is opened with its first frame, a moment later.
    listing = wait_until(lambda: run(list_line), timeout=10, message="a listed clip")
    assert record["camera"] == "door" and record["clip"], record
    assert event["camera"] == "door" and event["clip"], event
    assert isinstance(listing, list) and listing and listing[0]["file"].startswith("door-")


def curl_events(line: str, port: int):
    """The README's `curl -N` of a feed, running: its output as it comes, line by line."""
    line = line.replace("camera.local:5000", f"127.0.0.1:{port}")
    return subprocess.Popen(["bash", "-c", f"exec {line}"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, bufsize=1)


def next_recording(curl) -> tuple[int, dict]:
    """The id and data of the next `recording` event curl prints."""
    event_id = None
    for line in curl.stdout:
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: ") and event_id is not None:
            return event_id, json.loads(line[6:])
    raise AssertionError("the feed ended")


def test_the_readme_curl_commands_show_the_feed_and_resume_it(door):
    need_tool("curl")
    follow_line, resume_line = checked_block("events")
    wait_until(lambda: door.status()["recording"] is None, timeout=15,
               message="the other tests' clips over: a trigger now starts a new file")
    curl = curl_events(follow_line, door.port)
    try:
        assert curl.stdout.readline() == "retry: 2000\n"  # the feed is open
        assert door.get("/camera/door/event", method="POST")[0] == 202
        first_id, first = next_recording(curl)  # the event clip's file starts
    finally:
        curl.kill()
        curl.wait()
    assert first["camera"] == "door" and first["kind"] == "event" and first["state"] == "start"
    again = curl_events(re.sub(r"last_event_id=\d+", f"last_event_id={first_id - 1}",
                               resume_line), door.port)
    try:
        assert next_recording(again) == (first_id, first)  # replayed from the history
    finally:
        again.kill()
        again.wait()


def test_the_readme_commands_play_and_convert_a_recorded_file(door, tmp_path):
    def finished():
        files = sorted(door.recordings.glob("door/*/door-*.mkv"))
        code, _, body = door.get("/camera/door/recordings")
        done = {item["file"] for item in json.loads(body) if not item["in_progress"]}
        return [f for f in files if f.name in done]

    if not finished():
        door.get("/camera/door/event", method="POST")
    clip = wait_until(finished, timeout=15, message="a finished clip")[0]
    mpv_line, ffmpeg_line = checked_block("recording-files")
    need_tool("mpv")
    argv = shlex.split(mpv_line.replace(
        "recordings/door/2026-11-30/door-20261130-071255-event.mkv", str(clip)))
    result = subprocess.run(argv + ["--vo=null", "--ao=null", "--frames=5"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "VO: [null] 640x480" in result.stdout, result.stdout
    need_tool("ffmpeg")
    code, _, errors = shell(ffmpeg_line.replace("door-20261130-071255-event.mkv", str(clip)),
                            tmp_path)
    assert code == 0, errors[-2000:]
    frames, duration = probe(tmp_path / "clip.mp4")
    assert frames >= FPS // 2 and duration > 0.5, (frames, duration)


def test_the_readme_timelapse_command_makes_a_video_of_the_day(tmp_path):
    import sys

    from conftest import DRIVERS
    sys.path.insert(0, str(DRIVERS))
    from numbered import numbered

    stills = tmp_path / "recordings" / "garden" / "timelapse" / "2026-11-30"
    stills.mkdir(parents=True)
    for n in range(10):
        (stills / f"{8 + n:02d}0000.jpg").write_bytes(numbered(n))
    (tmp_path / "cameras.toml").write_text('[cameras.garden]\ndriver = "emulated"\n'
                                           "timelapse = 60\n")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    [line] = checked_block("timelapse")
    code, output, errors = shell(line, tmp_path, {"PYTHONPATH": str(ROOT)})
    assert code == 0, errors
    video = Path(output.strip().splitlines()[0])
    assert video.parent == stills and video.exists(), output
    need_tool("ffprobe")
    frames, duration = probe(video)
    assert frames == 10 and duration == pytest.approx(10 / 25, abs=0.05)


def test_the_readme_redis_commands_serve_a_pi_camera_through_workers(tmp_path):
    from conftest import DRIVERS
    from test_redis import RedisServer
    redis_server = RedisServer(tmp_path)
    publish_line, workers_line = checked_block("redis")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMERA", "REDIS"))}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "fakes"), str(DRIVERS)]),
                "PORT": str(port), "HOST": "127.0.0.1", "RECORDINGS_DIR": str(tmp_path)})
    procs = []
    try:
        for line in (publish_line, workers_line):
            line = line.replace("redis.local:6379", f"127.0.0.1:{redis_server.port}")
            log = open(tmp_path / f"{len(procs)}.log", "wb")
            procs.append(subprocess.Popen(["bash", "-c", line], cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))

        def snapshot():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/snapshot.jpg",
                                            timeout=5) as response:
                    return response.read()
            except OSError:
                return None

        jpeg = wait_until(snapshot, timeout=40, interval=0.3, message="a snapshot via Redis")
        assert jpeg[:2] == b"\xff\xd8"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
            status = json.load(response)
        assert status["driver"] == "camera_redis"
        assert "pi: camera 0 recording" in (tmp_path / "0.log").read_text()  # the fake Pi
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait()
        redis_server.stop()


def test_the_readme_cameras_file_command_serves_every_camera_of_the_file(tmp_path):
    [line] = checked_block("cameras-file")
    (tmp_path / "cameras.toml").write_text('[cameras.front]\ndriver = "emulated"\n'
                                           '[cameras.back]\ndriver = "emulated"\n')
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMERA")}
    env.update({"PORT": str(port), "HOST": "127.0.0.1", "PYTHONPATH": str(ROOT),
                "RECORDINGS_DIR": str(tmp_path / "recordings")})
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(["bash", "-c", line.replace("app.py", str(ROOT / "app.py"))],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        def status():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
                    return json.load(r)
            except OSError:
                return None

        body = wait_until(status, timeout=30, interval=0.2, message="the server's status")
        assert list(body["cameras"]) == ["front", "back"]
        for name in ("front", "back"):
            url = f"http://127.0.0.1:{port}/camera/{name}/snapshot.jpg"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.read()[:2] == b"\xff\xd8"
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
