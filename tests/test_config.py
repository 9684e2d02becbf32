"""Bad configuration stops every entry point with one line and no traceback."""

from __future__ import annotations

import subprocess

import pytest
from conftest import start_server

from server import config

BAD_VALUES = [
    ("CAMERA_FPS", "fast"), ("CAMERA_FPS", "0"), ("PORT", "99999"), ("JPEG_QUALITY", "0"),
    ("JPEG_QUALITY", "101"), ("CAMERA_ROTATION", "45"), ("CAMERA_HFLIP", "maybe"),
    ("CAMERA_RESOLUTION", "big"), ("CAMERA_IDLE_TIMEOUT", "-1"), ("CAMERA_STALL_TIMEOUT", "0"),
    ("STREAM_SEND_TIMEOUT", "nan"), ("MAX_CLIENTS", "0"), ("LOG_LEVEL", "LOUD"),
    ("REDIS_URL", "http://localhost"), ("CAMERA", "../evil"),
    ("MAX_CONNECTIONS_PER_CLIENT", "many"),
]


def run_to_exit(mode: str, env: dict, tmp_path) -> tuple[int, str]:
    server = start_server(mode, tmp_path, env, wait=False)
    try:
        code = server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError(f"{mode} kept running with {env}:\n{server.log()}")
    return code, server.log()


@pytest.mark.parametrize("name,value", BAD_VALUES)
def test_bad_value_stops_python_app_py_with_one_line_naming_the_variable(tmp_path, name, value):
    code, output = run_to_exit("dev", {name: value}, tmp_path)
    assert code != 0
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and name in lines[0]


@pytest.mark.parametrize("mode", ["gevent", "gthread", "flask"])
def test_bad_value_stops_gunicorn_and_flask_run_too(tmp_path, mode):
    code, output = run_to_exit(mode, {"CAMERA_ROTATION": "45"}, tmp_path)
    assert code != 0
    assert "Traceback" not in output
    assert "error: CAMERA_ROTATION='45': expected 0, 90, 180 or 270" in output
    assert "Booting worker" not in output  # gunicorn's master refused before forking


def test_unknown_camera_lists_the_drivers_it_found(tmp_path):
    code, output = run_to_exit("dev", {"CAMERA": "nosuch"}, tmp_path)
    assert code != 0 and "Traceback" not in output
    assert "no driver module camera_nosuch.py" in output
    for name in ("emulated", "opencv", "pi", "counter"):
        assert name in output.split("drivers found:")[1]


def test_several_gunicorn_workers_on_one_camera_are_refused_with_the_way_out(tmp_path):
    server = start_server("gevent", tmp_path, {"CAMERA": "counter"}, wait=False,
                          args=["--workers", "3"])
    code = server.proc.wait(30)
    output = server.log()
    assert code != 0 and "Traceback" not in output and "Booting worker" not in output
    assert "error: 3 workers with CAMERA=counter" in output and "CAMERA=redis" in output


def test_only_one_of_the_basic_auth_pair_is_an_error(tmp_path):
    code, output = run_to_exit("dev", {"BASIC_AUTH_USERNAME": "admin"}, tmp_path)
    assert code != 0 and "Traceback" not in output
    assert "BASIC_AUTH_PASSWORD is not set" in output


def test_settings_parse_what_users_write():
    settings = config.load({
        "CAMERA": "opencv", "CAMERA_FPS": "12.5", "CAMERA_RESOLUTION": "1280x720",
        "CAMERA_HFLIP": "yes", "CAMERA_VFLIP": "0", "MAX_CLIENTS": "", "PORT": "8080",
        "BASIC_AUTH_USERNAME": "admin", "BASIC_AUTH_PASSWORD": "a:b:c",
    })
    camera, = settings.cameras
    assert camera.driver_module == "camera_opencv"
    assert camera.fps == 12.5 and camera.resolution == (1280, 720)
    assert camera.hflip is True and camera.vflip is False
    assert settings.max_clients is None and settings.port == 8080
    assert settings.auth_password == "a:b:c"
    assert config.load({}).cameras[0].driver_module == "camera"
    assert config.load({"CAMERA": "emulated"}).cameras[0].driver_module == "camera"
