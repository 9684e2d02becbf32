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

import pytest

from conftest import ROOT, need_tool

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
