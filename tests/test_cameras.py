"""Several named cameras in one server: URLs, isolation, idle stops, status, bad files."""

from __future__ import annotations

import logging
import re
import statistics
import sys
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
from conftest import DRIVERS, ROOT, assert_keeps_up, events, wait_until
from test_config import run_to_exit

import camera
from base_camera import PLACEHOLDER_JPEG, jpeg_size
from server import cameras, config

sys.path.insert(0, str(DRIVERS))
from camera_solid import solid_jpeg, tagged  # noqa: E402

CAMERAS = """
[cameras.red]
driver = "solid"
fps = 20
color = "#ff0000"

[cameras.green]
driver = "solid"
fps = 8
color = "#00ff00"

[cameras.broken]
driver = "{broken}"
"""


def cameras_file(tmp_path, broken: str = "faulty", extra: str = "") -> str:
    path = tmp_path / "cameras.toml"
    path.write_text(CAMERAS.format(broken=broken) + extra)
    return str(path)


def frame_of(body: bytes) -> tuple[str, int]:
    """(camera, frame number) of a camera_solid frame, checking it byte for byte."""
    tag = body[6:6 + int.from_bytes(body[4:6], "big") - 2].decode()
    fields = dict(item.split("=") for item in tag.strip(";").split(";"))
    colour = {"red": "#ff0000", "green": "#00ff00"}[fields["camera"]]
    assert body == tagged(solid_jpeg(colour), tag.encode())
    return fields["camera"], int(fields["frame"])


@pytest.fixture
def three(servers, tmp_path):
    log = tmp_path / "events"
    return servers("gevent", {"CAMERAS_FILE": cameras_file(tmp_path), "FAULT": "open",
                              "CAMERA_IDLE_TIMEOUT": "0.5", "DRIVER_EVENTS": str(log)})


@pytest.mark.parametrize("path,camera", [
    ("/video_feed", "red"), ("/?action=stream", "red"), ("/?action=stream_0", "red"),
    ("/camera/red/video_feed", "red"), ("/?action=stream_1", "green"),
    ("/camera/green/video_feed?fps=4", "green"),
])
def test_each_stream_url_serves_its_cameras_frames_byte_for_byte(three, path, camera):
    with three.stream(path) as stream:
        parts = stream.frames(3)
    seen = [frame_of(p.body) for p in parts]
    assert {name for name, _ in seen} == {camera}
    numbers = [n for _, n in seen]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3


def test_each_snapshot_url_serves_its_camera_and_unknown_ones_are_404s(three):
    for path, name in [("/snapshot.jpg", "red"), ("/?action=snapshot", "red"),
                       ("/?action=snapshot_0", "red"), ("/camera/red/snapshot.jpg", "red"),
                       ("/?action=snapshot_1", "green"),
                       ("/camera/green/snapshot.jpg?1700000000000", "green")]:
        code, headers, body = three.get(path)
        assert code == 200 and headers["Content-Type"] == "image/jpeg", path
        assert frame_of(body)[0] == name, path
    code, _, body = three.get("/camera/broken/snapshot.jpg")
    assert code == 503 and b"no camera at /dev/video9" in body
    for path in ("/?action=stream_3", "/?action=snapshot_3", "/camera/blue/video_feed",
                 "/camera/blue/", "/camera/Red/status"):
        code, _, body = three.get(path)
        assert code == 404, path
    assert b"cameras: red, green, broken" in three.get("/camera/blue/status")[2]


def test_status_lists_every_camera_in_file_order_and_per_camera(three):
    with three.stream("/camera/green/video_feed") as stream:
        stream.frames(2)
        status = wait_until(lambda: (s := three.status())["cameras"]["green"]["fps"] and s,
                            timeout=5, message="green's fps")
    assert list(status["cameras"]) == ["red", "green", "broken"]
    green = status["cameras"]["green"]
    assert green["viewers"] == 1 and green["running"] and 6 < green["fps"] < 10
    assert green["frame_size"] == [160, 120]
    assert status["cameras"]["red"]["running"] is False  # nobody watches it
    assert status["viewers"] == 1
    code, _, body = three.get("/camera/green/status")
    assert code == 200 and b'"driver":"camera_solid"' in body.replace(b" ", b"")


@pytest.mark.parametrize("broken,fault", [("faulty", "open"), ("stuck", "")])
def test_a_failing_or_blocked_camera_does_not_slow_the_others(servers, tmp_path, broken, fault):
    server = servers("gevent", {"CAMERAS_FILE": cameras_file(tmp_path, broken),
                                "FAULT": fault, "STUCK_AFTER": "1",
                                "CAMERA_STALL_TIMEOUT": "0.5"})
    with server.stream("/camera/broken/video_feed") as bad, \
            server.stream("/camera/red/video_feed") as red, \
            server.stream("/camera/green/video_feed") as green:
        wait_until(lambda: bad.next_part().body == PLACEHOLDER_JPEG, timeout=5,
                   message="the broken camera's placeholder")
        red_parts, green_parts = red.frames(21), green.frames(9)
        times = []
        for _ in range(20):
            started = time.perf_counter()
            assert server.get("/camera/red/status", timeout=5)[0] == 200
            times.append(time.perf_counter() - started)
    for parts, fps in ((red_parts, 20), (green_parts, 8)):
        numbers = [frame_of(p.body)[1] for p in parts]
        assert_keeps_up(numbers)
        span = float(parts[-1].headers["x-timestamp"]) - float(parts[0].headers["x-timestamp"])
        assert abs(span - (len(parts) - 1) / fps) < 0.25, (fps, span)
    assert statistics.median(times) < 0.05


def test_idle_stops_are_per_camera(three, tmp_path):
    log = tmp_path / "events"
    with three.stream("/camera/green/video_feed") as green:
        green.next_part()
        with three.stream("/camera/red/video_feed") as red:
            red.next_part()
        wait_until(lambda: "stop:red" in events(log), timeout=5, message="red stopped")
        first = frame_of(green.next_part().body)[1]
        assert [frame_of(p.body)[1] for p in green.frames(3)] == [first + 1, first + 2,
                                                                  first + 3]
        assert "stop:green" not in events(log)
    wait_until(lambda: "stop:green" in events(log), timeout=5, message="green stopped")
    assert events(log) == ["start:green", "start:red", "stop:red", "stop:green"]


BAD_FILES = [
    ("[cameras.front]\ndriver = \"opencv\"\nfps = \"fast\"\n",
     "[cameras.front] fps = 'fast': expected a number > 0 and <= 1000"),
    ("[cameras.front]\ndriver = \"opencv\"\nrotation = 45\n",
     "[cameras.front] rotation = 45: expected 0, 90, 180 or 270"),
    ("[cameras.front]\ndriver = \"nosuch\"\n",
     "[cameras.front] driver = 'nosuch': no driver module camera_nosuch.py"),
    ("[cameras.Front]\n", "[cameras.Front]: camera names are lowercase letters"),
    ("[cameras.front]\nfps = 30\nfps = 31\n", "not valid TOML"),
    ("[cameras.front\n", "line 1"),
    ("[camera.front]\n", "unknown top-level key 'camera'"),
    ("", "no cameras"),
]


@pytest.mark.parametrize("text,message", BAD_FILES)
def test_a_bad_cameras_file_is_one_line_naming_file_camera_and_key(tmp_path, text, message):
    path = tmp_path / "cams.toml"
    path.write_text(text)
    code, output = run_to_exit("dev", {"CAMERAS_FILE": str(path)}, tmp_path)
    assert code != 0 and "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and str(path) in errors[0], output


@pytest.mark.parametrize("mode", ["gevent", "flask"])
def test_a_bad_cameras_file_stops_every_entry_point(tmp_path, mode):
    path = tmp_path / "cams.toml"
    path.write_text(BAD_FILES[0][0])
    code, output = run_to_exit(mode, {"CAMERAS_FILE": str(path)}, tmp_path)
    assert code != 0 and "Traceback" not in output and BAD_FILES[0][1] in output


def test_a_key_a_camera_leaves_out_takes_the_environments_value(tmp_path):
    path = tmp_path / "cams.toml"
    path.write_text('[cameras.a]\nfps = 5\nzoom = 2\n[cameras.b]\ndriver = "opencv"\n'
                    'source = "/dev/video2"\n')
    settings = config.load({"CAMERAS_FILE": str(path), "CAMERA_FPS": "12", "CAMERA": "pi",
                            "JPEG_QUALITY": "70"})
    a, b = settings.cameras
    assert (a.name, a.driver, a.fps, a.jpeg_quality, dict(a.options)) == ("a", "pi", 5, 70,
                                                                          {"zoom": 2})
    assert (b.name, b.driver, b.fps, b.source, b.channel) == ("b", "opencv", 12, "/dev/video2",
                                                              "camera:b")


# -- the emulated camera's settings, and the settings a driver ignores ----------------------

def emulated(**settings):
    """The emulated camera's three pictures as a camera with these settings makes them,
    decoded, with the JPEGs."""
    cam = camera.Camera(replace(config.CameraSettings(), **settings))
    jpegs = [cam.picture((camera.IMAGES / f"{n}.jpg").read_bytes()) for n in (1, 2, 3)]
    return jpegs, [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]


def test_the_emulated_camera_draws_its_name_and_turns_flips_sizes_and_encodes_its_pictures():
    _, (plain, *_) = emulated(name="camera", jpeg_quality=95)  # re-encoded, the label redrawn
    different = lambda a, b: float(np.abs(a.astype(int) - b.astype(int)).mean())  # noqa: E731
    _, (named, *_) = emulated(name="a", jpeg_quality=95)
    label, old_label = (slice(15, 60), slice(10, 80)), (slice(440, 462), slice(20, 212))
    assert different(named[label], plain[label]) > 5  # "a" is not "camera"
    background = named[5, 5].astype(int)
    assert np.abs(named[old_label].astype(int) - background).max() < 40  # "emulated camera" gone
    assert different(named[100:420], plain[100:420]) < 2  # the digit untouched

    _, (turned, *_) = emulated(name="a", rotation=90, jpeg_quality=95)
    assert turned.shape == (640, 480, 3)
    digit = (slice(160, 440), slice(45, 480))  # the turned digit, clear of either name
    assert different(turned[digit], cv2.rotate(plain, cv2.ROTATE_90_CLOCKWISE)[digit]) < 2
    _, (flipped, *_) = emulated(name="a", hflip=True, vflip=True, jpeg_quality=95)
    assert different(flipped[100:420], cv2.flip(plain, -1)[100:420]) < 2

    wide, (picture, *_) = emulated(name="a", resolution=(1280, 720))
    assert jpeg_size(wide[0]) == (1280, 720)
    # Fitted, not stretched: the sides are the background, the digit keeps its shape.
    assert np.abs(picture[100:, :150].astype(int) - background).max() < 40
    digit = cv2.resize(plain, None, fx=1.5, fy=1.5)[150:630]
    assert different(picture[150:630, 160:1120], digit) < 4

    coarse, _ = emulated(name="a", jpeg_quality=30)
    fine, _ = emulated(name="a", jpeg_quality=95)
    assert sum(map(len, coarse)) < 0.6 * sum(map(len, fine))
    reference = cv2.imencode(".jpg", plain, [cv2.IMWRITE_JPEG_QUALITY, 30])[1].tobytes()
    assert quantisation(coarse[0]) == quantisation(reference)  # encoded at quality 30


def quantisation(jpeg: bytes) -> bytes:
    """A JPEG's first quantisation table segment (DQT): what its quality made."""
    start = jpeg.index(b"\xff\xdb")
    return jpeg[start:start + 2 + int.from_bytes(jpeg[start + 2:start + 4], "big")]


def test_a_setting_the_driver_does_not_apply_is_logged_once_at_start(caplog):
    caplog.set_level(logging.WARNING, logger="cameras")
    base = config.CameraSettings()
    cameras.build(replace(base, name="front", source="/dev/video0", rotation=90, fps=5))
    cameras.build(replace(base, name="side", jpeg_quality=80))  # the default: nothing to say
    cameras.build(replace(base, name="usb", driver="opencv", rotation=90, source="/dev/video0"))
    cameras.build(replace(base, name="old", driver="counter", rotation=90))  # declares nothing
    assert [r.getMessage() for r in caplog.records] == [
        "camera front: driver emulated ignores source"]


TRY_IT = ROOT / "examples" / "cameras.toml"


def readme_try_it() -> tuple[str, str]:
    """The README's try-it cameras file and the command that serves it."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- try-it.*?-->\n```toml\n(.*?)```\n\n<!-- checked: try-it -->\n"
                      r"```sh\n(.*?)\n```", text, re.S)
    assert block, "the README has no try-it block"
    return block[1], block[2]


def test_the_readmes_try_it_file_serves_three_different_cameras_at_their_sizes(servers):
    toml, command = readme_try_it()
    assert toml == TRY_IT.read_text()
    *assignments, python, script = command.split()
    assert (python, script) == (".venv/bin/python", "app.py")  # what mode "dev" runs
    server = servers("dev", dict(a.split("=", 1) for a in assignments))
    assert list(server.status()["cameras"]) == ["front", "door", "garden"]
    pictures = {}
    for name, size in (("front", (1280, 720)), ("door", (480, 640)), ("garden", (320, 240))):
        code, _, body = server.get(f"/camera/{name}/snapshot.jpg")
        assert code == 200 and jpeg_size(body) == size, name
        pictures[name] = cv2.resize(cv2.imdecode(np.frombuffer(body, np.uint8), 1), (64, 64))
    for a, b in (("front", "door"), ("door", "garden"), ("front", "garden")):
        assert np.abs(pictures[a].astype(int) - pictures[b].astype(int)).mean() > 5, (a, b)
    with server.stream("/camera/front/video_feed") as stream:
        stamps = [float(p.headers["x-timestamp"]) for p in stream.frames(4)]
    assert 0.15 < (stamps[-1] - stamps[0]) / 3 < 0.25  # fps = 5
    assert "ignores" not in server.log()
