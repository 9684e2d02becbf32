"""Motion detection in a real server: a scene camera whose object moves on request, an
event that starts its clip with seconds from before, /status, motion.jpg, and the
switch; and the HTTP rules of the motion routes in-process."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
from conftest import wait_until
from test_redis import publishers, redis_server, web  # noqa: F401 - fixtures

MOTION_FPS = 5


def moving_since(path) -> float | None:
    """When the scene driver's object first moved (DRIVER_EVENTS: `moving <time>`)."""
    lines = path.read_text().split("\n") if path.exists() else []
    times = [float(line.split()[1]) for line in lines if line.startswith("moving ")]
    return times[-1] if times else None


def test_motion_starts_an_event_clip_with_seconds_from_before_and_can_be_switched_off(
        servers, tmp_path):
    move, log = tmp_path / "move", tmp_path / "driver-events"
    server = servers("gevent", {
        "CAMERA": "scene", "CAMERA_FPS": "10", "MOTION": "1", "MOTION_GAP": "2",
        "MOTION_FPS": str(MOTION_FPS), "RECORD_MODE": "events", "RECORD_PRE_EVENT": "2",
        "RECORD_POST_EVENT": "1", "RECORDINGS_DIR": str(tmp_path / "rec"),
        "SCENE_MOVE": str(move), "DRIVER_EVENTS": str(log)})
    # It captures and analyses with nobody watching; the scene is learnt.
    status = wait_until(lambda: (s := server.status())["frames_captured"] >= 20
                        and s["motion"]["fps"] and s, timeout=20, message="analysed frames")
    motion = status["motion"]
    assert status["viewers"] == 0 and motion["enabled"] and not motion["active"]
    assert motion["events"] == 0 and motion["since"] is None and motion["noise"] >= 6
    assert 0 < motion["ms_per_frame"] < 50

    move.touch()
    first = wait_until(lambda: moving_since(log), timeout=5, message="the object moving")
    seen = wait_until(lambda: server.status()["motion"]["active"] and time.time(), timeout=5,
                      interval=0.01, message="the motion event")
    motion = server.status()["motion"]
    # `since` is the first motion frame's capture time: the object has moved enough (1%
    # of the picture changed) by the second or third frame analysed.
    assert first <= motion["since"] < first + 3 / MOTION_FPS, motion["since"] - first
    # The second motion frame is the next one analysed (1/MOTION_FPS later, give or take
    # a camera frame); the event is on within 0.5 s of it.
    assert seen - motion["since"] < 1 / MOTION_FPS + 0.1 + 0.5, seen - motion["since"]
    event = wait_until(lambda: (e := server.status()["motion"]["last_event"])["clip"] and e,
                       timeout=2, message="the clip's name")  # once the writer opened it
    assert event["end"] is None and event["peak"] > 1 and event["start"] == motion["since"]
    assert event["clip"].startswith("/camera/camera/recordings/camera-")
    assert event["clip"].endswith("-event.mkv")
    code, headers, body = server.get("/camera/camera/motion.jpg")
    assert code == 200 and headers["Content-Type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape[1] >= 320

    move.unlink()  # it stops, joins the scene, and the gap ends the event
    status = wait_until(lambda: not (s := server.status())["motion"]["active"]
                        and s["recording"] is None and s, timeout=30, message="the event's end")
    event = status["motion"]["last_event"]
    assert status["motion"]["events"] == 1 and event["end"] - event["start"] > 2
    assert status["recorder"]["events"] == 1  # triggered on every motion frame: one event
    clip, = json.loads(server.get("/camera/camera/recordings")[2])
    assert clip["download"] == event["clip"] and clip["snapshot"] == event["snapshot"]
    assert clip["start"] < first - 1  # pre_event seconds from before the first motion
    assert clip["end"] > event["end"] - 2 + 1 - 0.5  # post_event after the last motion frame
    code, headers, body = server.get(event["snapshot"])
    assert code == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"

    # Switched off: no detection, no event, no capture kept for it.
    code, _, body = server.get("/camera/camera/motion?enabled=0", method="POST")
    assert code == 200 and json.loads(body)["motion"]["enabled"] is False
    assert server.get("/camera/camera/motion.jpg")[0] == 404
    captured = server.status()["frames_captured"]
    move.touch()
    wait_until(lambda: server.status()["frames_captured"] >= captured + 20, timeout=10)
    motion = server.status()["motion"]
    assert motion["events"] == 1 and not motion["active"] and motion["fps"] is None
    move.unlink()
    code, _, body = server.get("/camera/camera/motion?enabled=1", method="POST")
    assert code == 200 and json.loads(body)["motion"]["enabled"] is True
    wait_until(lambda: server.status()["motion"]["fps"], timeout=10, message="detection again")


def test_motion_routes_answer_what_they_accept(app_client):
    client = app_client({"CAMERA_NAME": "door"})
    assert client.get("/status").json["motion"] is None  # not set for this camera
    assert client.get("/camera/door/motion.jpg").status_code == 404
    assert client.post("/camera/door/motion").status_code == 400
    assert client.post("/camera/door/motion", data={"enabled": "yes"}).status_code == 400
    assert client.post("/camera/nosuch/motion", data={"enabled": "1"}).status_code == 404
    evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert client.post("/camera/door/motion", data={"enabled": "1"},
                       headers=evil).status_code == 403
    assert client.get("/status").json["motion"] is None
    response = client.post("/camera/door/motion", data={"enabled": "1"})
    assert response.status_code == 200 and response.json["motion"]["enabled"] is True
    motion = client.get("/camera/door/status").json["motion"]
    assert motion["enabled"] and motion["events"] == 0 and motion["last_event"] is None
    response = wait_until(lambda: (r := client.get("/camera/door/motion.jpg")).status_code
                          == 200 and r, timeout=10, message="motion.jpg")
    assert response.mimetype == "image/jpeg" and response.data[:2] == b"\xff\xd8"
    assert client.post("/camera/door/motion?enabled=0").json["motion"]["enabled"] is False


def test_snapshot_route_refuses_names_the_recorder_does_not_make(app_client, tmp_path):
    client = app_client({"CAMERA_NAME": "door", "RECORDINGS_DIR": str(tmp_path)})
    day = tmp_path / "door" / "2026-11-30"
    day.mkdir(parents=True)
    (day / "door-20261130-071255-event.jpg").write_bytes(b"\xff\xd8snapshot")
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    ok = client.get("/camera/door/recordings/door-20261130-071255-event.mkv/snapshot.jpg")
    assert ok.status_code == 200 and ok.data == b"\xff\xd8snapshot"
    for file in ("door-20261130-071255-manual.mkv", "..%2F..%2Fsecret.mkv", "secret.mkv",
                 "door-20261130-071255-event.jpg", "door-20261130-071255-event"):
        assert client.get(f"/camera/door/recordings/{file}/snapshot.jpg").status_code == 404


def test_the_readme_motion_commands_switch_detection_and_fetch_motion_jpg(servers, tmp_path):
    from test_readme import checked_block, shell

    (tmp_path / "cameras.toml").write_text('[cameras.door]\ndriver = "scene"\nmotion = true\n')
    server = servers("gevent", {"CAMERAS_FILE": str(tmp_path / "cameras.toml")})
    wait_until(lambda: server.status()["cameras"]["door"]["motion"]["fps"], timeout=20,
               message="detection")
    switch_line, picture_line = checked_block("motion")
    code, output, errors = shell(switch_line.replace("camera.local:5000",
                                                     f"127.0.0.1:{server.port}"), tmp_path)
    assert code == 0 and json.loads(output)["motion"]["enabled"] is False, errors
    shell(switch_line.replace("enabled=0", "enabled=1").replace(
        "camera.local:5000", f"127.0.0.1:{server.port}"), tmp_path)
    wait_until(lambda: server.get("/camera/door/motion.jpg")[0] == 200, timeout=10)
    code, _, errors = shell(picture_line.replace("camera.local:5000",
                                                 f"127.0.0.1:{server.port}"), tmp_path)
    picture = cv2.imread(str(tmp_path / "motion.jpg"))
    assert code == 0 and picture is not None and picture.shape[1] >= 320, errors


def test_with_redis_the_publisher_detects_and_workers_show_and_switch_it(
        servers, redis_server, publishers, tmp_path):  # noqa: F811 - fixtures
    move = tmp_path / "move"
    publishers(CAMERA="scene", MOTION="1", MOTION_GAP="1", SCENE_MOVE=str(move))
    server = web(servers, redis_server, workers=2)
    # Nobody watches: the publisher captures all the same, for its detector.
    motion = wait_until(lambda: (server.status().get("motion") or {}).get("fps")
                        and server.status()["motion"], timeout=20, message="its detector")
    assert motion["enabled"] and not motion["active"] and server.status()["viewers"] == 0
    with server.events() as one, server.events("/camera/camera/events") as two:
        move.touch()
        # Each feed is a worker's relay of the publisher's: the same event, the same id.
        start = one.next_event()
        assert start["event"] == "motion" and start["data"]["state"] == "start"
        assert two.next_event() == start
    wait_until(lambda: server.status()["motion"]["active"], timeout=5, message="the status")
    with server.events(headers={"Last-Event-ID": str(start["id"] - 1)}) as again:
        assert again.next_event() == start  # a reconnect to any worker resumes
    move.unlink()
    code, headers, body = server.get("/camera/camera/motion.jpg")
    assert code == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    for enabled in ("0", "1"):  # through any worker: every worker shows the answer
        code, _, body = server.get(f"/camera/camera/motion?enabled={enabled}", method="POST")
        assert code == 200 and json.loads(body)["motion"]["enabled"] is (enabled == "1")
        wait_until(lambda: all(server.status()["motion"]["enabled"] is (enabled == "1")
                               for _ in range(4)), timeout=5, message="the status")
    assert server.get("/camera/camera/motion?enabled=2", method="POST")[0] == 400
