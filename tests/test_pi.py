"""The Pi driver against a fake picamera2 that behaves as the real one where the driver
depends on it (tests/fakes/picamera2/__init__.py says what and where).

Scenario tests run a short script in a subprocess, most under gevent's patch_all as in
gunicorn's gevent worker, driving camera_pi.Camera objects through subscribe() and
next_frame(); the script prints its findings as one JSON line and must exit by itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DRIVERS, ROOT, assert_keeps_up, frame_number, wait_until

from base_camera import PLACEHOLDER_JPEG
from server import config

FAKES = Path(__file__).resolve().parent / "fakes"


def pi_env(log: Path, **extra) -> dict:
    return {"CAMERA": "pi", "FAKE_PICAMERA2_LOG": str(log),
            "PYTHONPATH": os.pathsep.join([str(DRIVERS), str(FAKES)]), **extra}


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def events(log: Path) -> list[str]:
    return [c["event"] for c in calls(log)]


PRELUDE = """
import json, os, sys, time
if os.environ.get("PI_TEST_GEVENT"):
    from gevent import monkey
    monkey.patch_all()
    from server import patches
    patches.native_logging_locks()  # as the server does after gevent patched
import camera_pi
from server import config
from base_camera import CameraError

def camera(source, **env):
    return camera_pi.Camera(config.load({"CAMERA_SOURCE": str(source), "CAMERA_FPS": "20", **env}))

def error(cam):
    return cam.status()["error"] or ""

def wait_for(predicate, timeout, poll=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        (poll or (lambda: time.sleep(0.02)))()
    return True

def live(viewer, seconds):
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        frame = viewer.next_frame(left)
        if frame is not None and frame.live:
            return True
    return False

def live_frames(viewer, seconds):
    n, deadline = 0, time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        frame = viewer.next_frame(left)
        n += frame is not None and frame.live
    return n

def opened(num):  # how many times picamera2 opened camera `num` so far
    with open(os.environ["FAKE_PICAMERA2_LOG"]) as log:
        return sum(json.loads(line) == {"event": "open", "camera": num} for line in log)

def report(**findings):
    print(json.dumps(findings), flush=True)
"""


def run_script(body: str, tmp_path: Path, gevent: bool = True, timeout: float = 20,
               **env) -> dict:
    """Run PRELUDE + body in a fresh interpreter; its JSON findings, and "seconds" it ran."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMERA", "FAKE_"))}
    full_env.update({"PYTHONPATH": os.pathsep.join(filter(None, [
        str(FAKES), str(ROOT), str(DRIVERS), full_env.get("PYTHONPATH")])),
        "FAKE_PICAMERA2_LOG": str(tmp_path / "picamera2.jsonl"), **env})
    if gevent:
        full_env["PI_TEST_GEVENT"] = "1"
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", PRELUDE + body], env=full_env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the script did not exit within {timeout} s; it printed:\n"
                             f"{exc.stdout}\n{exc.stderr}") from None
    assert proc.returncode == 0, proc.stderr
    findings = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**findings, "seconds": time.monotonic() - started, "stderr": proc.stderr}


# -- through the server --------------------------------------------------------------

@pytest.mark.parametrize("platform", ["vc4", "pisp"])
def test_streams_the_encoders_frames_in_order_at_its_rate(servers, platform, tmp_path):
    log = tmp_path / "picamera2.jsonl"
    server = servers("gevent", pi_env(log, CAMERA_FPS="20", CAMERA_RESOLUTION="640x480",
                                      FAKE_PICAMERA2_PLATFORM=platform))
    with server.stream() as stream:
        parts = stream.frames(11)
    numbers = [frame_number(p.body) for p in parts]
    assert_keeps_up(numbers)
    assert 0.35 < parts[-1].received - parts[0].received < 0.8


def test_settings_reach_picamera2(servers, tmp_path):
    log = tmp_path / "picamera2.jsonl"
    server = servers("gevent", pi_env(log, CAMERA_FPS="15", CAMERA_RESOLUTION="801x601",
                                      CAMERA_ROTATION="180", CAMERA_HFLIP="1",
                                      JPEG_QUALITY="95", CAMERA_SOURCE="1",
                                      FAKE_PICAMERA2_CAMERAS="2"))
    with server.stream() as stream:
        stream.next_part()
    configure = next(c for c in calls(log) if c["event"] == "configure")
    # Rotation 180 is both flips; with CAMERA_HFLIP on top, only the vertical flip remains.
    # picamera2 rounds the size down to even numbers.
    assert configure == {"event": "configure", "camera": 1, "size": [800, 600],
                         "hflip": False, "vflip": True, "fps": 15.0}
    start = next(c for c in calls(log) if c["event"] == "start_recording")
    assert start["quality"] == "VERY_HIGH" and start["bitrate"] > 0


def test_camera_is_closed_when_idle_and_opened_again_for_the_next_viewer(servers, tmp_path):
    log = tmp_path / "picamera2.jsonl"
    server = servers("gthread", pi_env(log, CAMERA_FPS="20", CAMERA_IDLE_TIMEOUT="0.5"))
    with server.stream() as stream:
        stream.frames(2)
    wait_until(lambda: events(log)[-2:] == ["stop_recording", "close"], timeout=5,
               message="picamera2 stopped and closed")
    with server.stream() as stream:
        assert frame_number(stream.next_part().body) == 1  # a new recording
    assert events(log)[:4] == ["open", "configure", "start_recording", "stop_recording"]
    assert events(log).count("open") == 2


def error_shown(server) -> str:
    """The error /status shows once a viewer made the camera start and fail."""
    with server.stream() as stream:
        assert stream.next_part().body == PLACEHOLDER_JPEG  # "camera unavailable" at once
    return server.status()["error"]


def test_missing_picamera2_says_how_to_install_it(servers, tmp_path):
    server = servers("gevent", {"CAMERA": "pi"})  # no fakes on the path
    error = error_shown(server)
    assert "sudo apt install python3-picamera2" in error and "--system-site-packages" in error


@pytest.mark.parametrize("env,message", [
    ({"FAKE_PICAMERA2_CAMERAS": "0"}, "no camera 0 found (cameras: none)"),
    ({"CAMERA_SOURCE": "2", "FAKE_PICAMERA2_CAMERAS": "2"},
     "no camera 2 found (cameras: 0: imx708, 1: imx708)"),
    ({"FAKE_PICAMERA2_BUSY": "0"}, ("Failed to acquire camera: Device or resource busy; "
                                    "is another program using it? rpicam-hello")),
])
def test_absent_or_busy_camera_is_a_clear_error(servers, tmp_path, env, message):
    server = servers("gevent", pi_env(tmp_path / "log", **env))
    assert message in error_shown(server)


# -- in this process ---------------------------------------------------------------

def test_rotation_by_90_is_refused_with_a_reason(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(FAKES))
    import camera_pi
    from base_camera import CameraError

    with pytest.raises(CameraError, match="turns only by 180"):
        next(camera_pi.Camera(config.load({"CAMERA_ROTATION": "90"})).frames())


def test_driver_in_process_takes_the_newest_frame(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.setenv("FAKE_PICAMERA2_LOG", str(tmp_path / "log"))
    import camera_pi

    frames = camera_pi.Camera(config.load({"CAMERA_FPS": "50"})).frames()
    first = frame_number(next(frames))
    time.sleep(0.2)  # the encoder runs ahead; the driver keeps only the newest frame
    later = frame_number(next(frames))
    frames.close()
    assert later >= first + 5
    assert events(tmp_path / "log")[-2:] == ["stop_recording", "close"]


# -- scenarios: two cameras, gevent, failures ----------------------------------------

def test_two_cameras_under_gevent_one_failing_in_backoff_the_other_streams(tmp_path):
    """Both cameras share picamera2's one listener thread. Started from camera 0's
    capture thread, it froze while that thread slept in its backoff and died with it."""
    found = run_script("""
a, b = camera(0, CAMERA_IDLE_TIMEOUT="0"), camera(1)
va = a.subscribe()                                   # camera 0 is busy: it fails first
wait_for(lambda: error(a), 5)
vb = b.subscribe()
first = live(vb, 3)
during = live_frames(vb, 1.0)                        # camera 0 sleeps in its backoff
va.close(); a.close(wait=2)                          # camera 0's capture run ends
after = live_frames(vb, 0.7)
vb.close(); b.close(wait=2)
report(error=error(a), first=first, during=during, after=after)
""", tmp_path, FAKE_PICAMERA2_CAMERAS="2", FAKE_PICAMERA2_BUSY="0",
        FAKE_PICAMERA2_PLATFORM="pisp")
    assert found["first"], found["stderr"]
    assert found["during"] >= 16 and found["after"] >= 11, found  # 20 fps
    assert "camera 0 could not be opened: Failed to acquire camera: Device or resource busy" \
        in found["error"]


def test_a_run_ended_right_after_a_failed_open_then_a_good_run_streams(tmp_path):
    """A failed open started the listener in the capture thread; that run ending destroyed
    the thread's hub with the listener in it, so the next run got no frames."""
    found = run_script("""
first = camera(0)
viewer = first.subscribe()
wait_for(lambda: error(first), 5)                    # busy: the open failed
viewer.close(); first.close(wait=2)                  # and the run ends right away
del os.environ["FAKE_PICAMERA2_BUSY"]
second = camera(0)
viewer = second.subscribe()
frames = live_frames(viewer, 1.0)
started = time.monotonic()
viewer.close(); second.close(wait=3)
report(error=error(first), frames=frames, close=time.monotonic() - started)
""", tmp_path, FAKE_PICAMERA2_BUSY="0")
    assert found["frames"] >= 15, found  # 20 fps
    assert found["close"] < 2, found
    assert "Device or resource busy" in found["error"]


def test_failed_opens_leave_no_open_files_or_threads(tmp_path):
    """Each failed Picamera2() keeps its notify pipe and its registration (which keeps the
    listener alive); the driver cleans up after it."""
    found = run_script("""
import gc
def fds():
    gc.collect()  # what garbage still holds is not a leak
    return len(os.listdir("/proc/self/fd"))
def threads():
    return len(os.listdir("/proc/self/task"))
def fail(cam):
    try:
        next(cam.frames())
    except CameraError as exc:
        return str(exc)
busy_camera, absent_camera = camera(0), camera(3)
fail(busy_camera), fail(absent_camera)               # imports, libcamera's manager
before, threads_before = fds(), threads()
busy = [fail(busy_camera) for _ in range(20)]
absent = [fail(absent_camera) for _ in range(20)]
after = fds()
threads_after = threads_before if wait_for(lambda: threads() <= threads_before, 1) else threads()
report(before=before, after=after, threads=threads_before, threads_after=threads_after,
       busy=busy[-1], absent=absent[-1])
""", tmp_path, gevent=False, FAKE_PICAMERA2_BUSY="0", FAKE_PICAMERA2_CAMERAS="2")
    assert found["after"] == found["before"], found
    assert found["threads_after"] <= found["threads"], found
    assert "Device or resource busy" in found["busy"]
    assert "no camera 3 found (cameras: 0: imx708, 1: imx708)" in found["absent"]


@pytest.mark.parametrize("loop", ["dies", "hangs"])
def test_a_hung_stop_is_bounded_reported_and_blocks_nothing_else(tmp_path, loop):
    """picamera2's stop() waits for the camera's event loop with no timeout. Camera 0's
    loop dies (or hangs) after 5 frames; camera 1 is fine."""
    found = run_script("""
camera_pi.GAP_TIMEOUT, camera_pi.STOP_TIMEOUT = 0.3, 1.0
a, b = camera(0, CAMERA_IDLE_TIMEOUT="0"), camera(1)
va, vb = a.subscribe(), b.subscribe()
started, counted = time.monotonic(), [0]
def count_b():
    frame = vb.next_frame(0.1)
    counted[0] += frame is not None and frame.live
stuck = wait_for(lambda: "is stuck" in error(a), 6, poll=count_b)
stuck_after, b_rate = time.monotonic() - started, counted[0] / (time.monotonic() - started)
stuck_error = error(a)
opens = opened(0)
if os.environ.get("FAKE_PICAMERA2_LOOP_HANGS"):  # another run of camera 0 is refused
    later, later_error, again = False, "opened", camera(0)
    try:
        next(again.frames())
    except CameraError as exc:
        later_error = str(exc)
else:
    later, later_error = live(va, 3), error(a)       # freed: camera 0 reopens
opens_later = opened(0)
closing = time.monotonic()
va.close(); a.close(wait=2)
close_a = time.monotonic() - closing
after = live_frames(vb, 0.5)
vb.close(); b.close(wait=2)
report(stuck=stuck, stuck_after=stuck_after, error=stuck_error, later_error=later_error,
       b_rate=b_rate, later=later,
       opens=opens, opens_later=opens_later, close_a=close_a, after=after)
""", tmp_path, FAKE_PICAMERA2_CAMERAS="2", FAKE_PICAMERA2_PLATFORM="vc4",
        **{f"FAKE_PICAMERA2_LOOP_{loop.upper()}": "0"})
    assert found["stuck"], found
    assert found["stuck_after"] < 3, found  # 5 frames, 0.3 s without, 1 s of stop
    assert "restart the server" in found["error"], found
    assert found["b_rate"] > 15 and found["after"] >= 8, found  # camera 1 kept its 20 fps
    if loop == "dies":
        # picamera2's cancel_all_and_flush() frees the wait: camera 0 closes and reopens.
        assert found["later"] and found["opens_later"] > found["opens"], found
    else:
        # Still stuck: later opens of camera 0 are refused without touching picamera2.
        assert not found["later"] and found["opens_later"] == found["opens"], found
        assert found["later_error"] == found["error"], found
    assert found["close_a"] < 2.1, found
    assert found["seconds"] < 15, found  # and the process exited by itself
