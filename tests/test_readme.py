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
