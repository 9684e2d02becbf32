"""The Pi driver against a fake picamera2 whose encoder writes from its own thread."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

import config
from conftest import DRIVERS, frame_number, wait_until

FAKES = Path(__file__).resolve().parent / "fakes"


def pi_env(log: Path, **extra) -> dict:
    return {"CAMERA": "pi", "FAKE_PICAMERA2_LOG": str(log),
            "PYTHONPATH": os.pathsep.join([str(DRIVERS), str(FAKES)]), **extra}


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def events(log: Path) -> list[str]:
    return [c["event"] for c in calls(log)]


@pytest.mark.parametrize("mode", ["gevent", "dev"])
def test_streams_the_encoders_frames_in_order_at_its_rate(servers, mode, tmp_path):
    log = tmp_path / "picamera2.jsonl"
    server = servers(mode, pi_env(log, CAMERA_FPS="20", CAMERA_RESOLUTION="640x480"))
    with server.stream() as stream:
        parts = stream.frames(11)
    numbers = [frame_number(p.body) for p in parts]
    assert numbers == list(range(numbers[0], numbers[0] + 11))
    assert 0.35 < parts[-1].received - parts[0].received < 0.8


def test_settings_reach_picamera2(servers, tmp_path):
    log = tmp_path / "picamera2.jsonl"
    server = servers("gevent", pi_env(log, CAMERA_FPS="15", CAMERA_RESOLUTION="800x600",
                                      CAMERA_ROTATION="180", CAMERA_HFLIP="1",
                                      JPEG_QUALITY="95"))
    with server.stream() as stream:
        stream.next_part()
    configure = next(c for c in calls(log) if c["event"] == "configure")
    # Rotation 180 is both flips; with CAMERA_HFLIP on top, only the vertical flip remains.
    assert configure == {"event": "configure", "size": [800, 600], "hflip": False,
                         "vflip": True, "fps": 15.0}
    assert next(c for c in calls(log) if c["event"] == "start_recording")["quality"] == \
        "VERY_HIGH"


def test_camera_is_closed_when_idle_and_opened_again_for_the_next_viewer(servers, tmp_path):
    log = tmp_path / "picamera2.jsonl"
    server = servers("gevent", pi_env(log, CAMERA_FPS="20", CAMERA_IDLE_TIMEOUT="0.5"))
    with server.stream() as stream:
        stream.frames(2)
    wait_until(lambda: events(log)[-2:] == ["stop_recording", "close"], timeout=5,
               message="picamera2 stopped and closed")
    with server.stream() as stream:
        assert frame_number(stream.next_part().body) == 1  # a new recording
    assert events(log)[:4] == ["open", "configure", "start_recording", "stop_recording"]
    assert events(log).count("open") == 2


def test_missing_picamera2_says_how_to_install_it(servers, tmp_path):
    server = servers("gevent", {"CAMERA": "pi"})  # no fakes on the path
    started = time.monotonic()
    code, _, body = server.get("/snapshot.jpg")
    assert code == 503 and time.monotonic() - started < 6
    assert "sudo apt install python3-picamera2" in body.decode()
    assert "--system-site-packages" in server.status()["error"]


@pytest.mark.parametrize("fail,message", [("absent", "no Raspberry Pi camera found"),
                                          ("busy", "the Raspberry Pi camera is busy")])
def test_absent_or_busy_camera_is_a_clear_error(servers, tmp_path, fail, message):
    server = servers("gevent", pi_env(tmp_path / "log", FAKE_PICAMERA2_FAIL=fail))
    code, _, body = server.get("/snapshot.jpg")
    assert code == 503 and message in body.decode()


def test_rotation_by_90_is_refused_with_a_reason(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(FAKES))
    for name in ("picamera2", "picamera2.encoders", "picamera2.outputs", "libcamera"):
        monkeypatch.delitem(sys.modules, name, raising=False)
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
