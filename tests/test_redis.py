"""The Redis frame bus with a real redis-server: one publisher, many workers and servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    DRIVERS,
    ROOT,
    assert_keeps_up,
    events,
    frame_number,
    free_port,
    need_tool,
    wait_until,
)
from test_config import run_to_exit

from base_camera import PLACEHOLDER_JPEG

sys.path.insert(0, str(DRIVERS))
from numbered import numbered  # noqa: E402


class RedisServer:
    def __init__(self, tmp_path: Path) -> None:
        self.binary = need_tool("redis-server")
        self.port = free_port()
        self.dir = tmp_path
        self.proc = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind",
                                      "127.0.0.1", "--save", "", "--appendonly", "no",
                                      "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis
        wait_until(lambda: _pings(redis.Redis(port=self.port)), timeout=10, message="redis")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _pings(client) -> bool:
    try:
        return client.ping()
    except Exception:  # noqa: BLE001 - not up yet
        return False


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def publishers(redis_server, tmp_path):
    """Factory: `flask --app app publish` with the counter driver at 10 fps, or `env`."""
    started = []

    def start(**extra) -> subprocess.Popen:
        log = tmp_path / f"publisher-{len(started)}.log"
        events = tmp_path / "events"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAMERA")}
        env.update({"CAMERA": "counter", "COUNTER_FPS": "10", "REDIS_URL": redis_server.url,
                    "CAMERA_IDLE_TIMEOUT": "1", "DRIVER_EVENTS": str(events),
                    "PYTHONPATH": str(DRIVERS), "PYTHONUNBUFFERED": "1", **extra})
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "publish"],
                                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        proc.events, proc.log = events, log
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def publisher(publishers):
    return publishers()


def web(servers, redis_server, workers: int = 3, **env):
    return servers("gevent", {"CAMERA": "redis", "REDIS_URL": redis_server.url,
                              "CAMERA_IDLE_TIMEOUT": "1", **env},
                   args=["--workers", str(workers)])


def test_two_servers_with_three_workers_each_stream_one_camera(servers, redis_server,
                                                               publisher):
    first, second = web(servers, redis_server), web(servers, redis_server)
    streams = [s.stream() for s in (first, second) for _ in range(6)]
    for stream in streams:
        stream.next_part()
    for stream in streams:
        parts = stream.frames(6)
        numbers = [frame_number(p.body) for p in parts]
        assert_keeps_up(numbers)
        assert all(p.body == numbered(n) for p, n in zip(parts, numbers))
        span = float(parts[-1].headers["x-timestamp"]) - float(parts[0].headers["x-timestamp"])
        assert 0.35 < span < 0.8  # 10 fps
    assert events(publisher.events) == ["start"]  # one camera for all of them
    for stream in streams:
        stream.close()


def test_publisher_captures_only_while_someone_watches(servers, redis_server, publisher):
    server = web(servers, redis_server, workers=2)
    time.sleep(1.5)  # the publisher is polling: with nobody watching it must not start
    assert events(publisher.events) == []
    with server.stream() as stream:
        stream.frames(2)
        assert events(publisher.events) == ["start"]
    # Worker idle timeout (1 s) -> it unsubscribes -> publisher idle timeout (1 s) -> stop.
    wait_until(lambda: events(publisher.events) == ["start", "stop"], timeout=10,
               message="the camera stopped")
    assert "nobody watching" in publisher.log.read_text()


def test_snapshot_through_redis(servers, redis_server, publisher):
    server = web(servers, redis_server, workers=2)
    code, headers, body = server.get("/snapshot.jpg")  # starts the camera through the bus
    assert code == 200 and body == numbered(frame_number(body))
    code, _, again = server.get("/snapshot.jpg")  # now from the newest-frame key
    assert code == 200 and frame_number(again) >= frame_number(body)


def test_viewers_stay_connected_through_a_redis_restart(servers, redis_server, publisher):
    server = web(servers, redis_server, workers=2, CAMERA_STALL_TIMEOUT="1")
    with server.stream() as stream:
        before = frame_number(stream.frames(3)[-1].body)
        redis_server.stop()
        wait_until(lambda: stream.next_part().body == PLACEHOLDER_JPEG, timeout=10,
                   message="the placeholder")
        redis_server.start()
        part = wait_until(lambda: (p := stream.next_part()).body != PLACEHOLDER_JPEG and p,
                          timeout=30, message="live frames again")
        assert frame_number(part.body) is not None
    assert publisher.poll() is None  # the publisher rode through the restart too
    assert before


def test_publisher_stops_cleanly_on_sigterm(redis_server, publisher):
    wait_until(lambda: "publishing camera (camera_counter)" in publisher.log.read_text(),
               timeout=10)
    publisher.send_signal(signal.SIGTERM)
    assert publisher.wait(10) == 0
    assert "publisher stopped" in publisher.log.read_text()


def test_publisher_keeps_retrying_an_unreachable_redis(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMERA")}
    env.update({"CAMERA": "counter", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                "PYTHONPATH": str(DRIVERS)})
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "publish"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    time.sleep(2)  # let it fail a few times: it must keep running, not crash
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0
    assert output.count("retrying in") >= 2 and "Traceback" not in output


@pytest.mark.parametrize("mode", ["dev", "gevent"])
def test_bad_redis_url_is_a_clear_start_up_error(tmp_path, mode):
    code, output = run_to_exit(mode, {"CAMERA": "redis", "REDIS_URL": "redis://host:notaport"},
                               tmp_path)
    assert code != 0 and "Traceback" not in output
    assert "error: REDIS_URL='redis://host:notaport'" in output


def test_frames_keep_their_capture_time_across_the_bus(servers, redis_server, publishers):
    publishers(CAMERA="stamped")
    server = web(servers, redis_server, workers=2)
    with server.stream() as stream:
        parts = stream.frames(3)
    for part in parts:  # the driver's own capture time, not the worker's receive time
        assert float(part.headers["x-timestamp"]) == 1_000_000_000 + frame_number(part.body)
        assert part.body == numbered(frame_number(part.body))  # the time tag is gone again
    code, headers, body = server.get("/snapshot.jpg")
    assert code == 200 and float(headers["X-Timestamp"]) == 1_000_000_000 + frame_number(body)
    assert body == numbered(frame_number(body))


def test_every_camera_of_a_file_through_redis_with_viewers_summed_over_workers(
        servers, redis_server, publishers, tmp_path):
    path = tmp_path / "cameras.toml"
    path.write_text('[cameras.red]\ndriver = "solid"\nfps = 10\ncolor = "#ff0000"\n'
                    '[cameras.green]\ndriver = "solid"\nfps = 10\ncolor = "#00ff00"\n')
    publishers(CAMERAS_FILE=str(path))
    server = web(servers, redis_server, workers=2, CAMERAS_FILE=str(path))
    streams = [server.stream(f"/camera/{name}/video_feed") for name in ("red", "green", "red")
               for _ in range(3)]
    try:
        for stream, name in zip(streams, ["red"] * 3 + ["green"] * 3 + ["red"] * 3):
            tag = stream.next_part().body[6:40]
            assert tag.startswith(f"camera={name};".encode()), tag
        # Whichever worker answers, it counts every worker's viewers, and shows the
        # publisher's figures, not its own.
        def summed():
            cameras = server.status()["cameras"]
            return (cameras["red"]["viewers"] == 6 and cameras["green"]["viewers"] == 3
                    and all(c["running"] and c["fps"] for c in cameras.values()))

        for _ in range(4):
            wait_until(summed, timeout=10, message="viewers summed over the workers")
    finally:
        for stream in streams:
            stream.close()


def test_web_workers_pass_recording_commands_to_the_publisher_which_records(
        servers, redis_server, publishers, tmp_path):
    recordings = tmp_path / "recordings"
    server = web(servers, redis_server, workers=2, RECORDINGS_DIR=str(recordings))
    code, _, body = server.get("/camera/camera/event", method="POST")
    assert code == 503 and b"no publisher is running" in body
    publishers(RECORDINGS_DIR=str(recordings), COUNTER_FPS="20", RECORD_POST_EVENT="3",
               RECORD_PRE_EVENT="0")
    code = wait_until(lambda: (c := server.get("/camera/camera/event", method="POST")[0])
                      != 503 and c, timeout=10, message="the publisher listens")
    assert code == 202
    # Whichever worker answers, /status shows the publisher's recording.
    wait_until(lambda: (server.status().get("recording") or {}).get("kind") == "event",
               timeout=10, message="the event clip in /status")
    # The file the publisher writes is listed as in progress, and cannot be deleted.
    open_file = wait_until(lambda: (items := json.loads(server.get(
        "/camera/camera/recordings")[2])) and items[0], timeout=10, message="the file listed")
    assert open_file["in_progress"], open_file
    code, _, body = server.get(f"/camera/camera/recordings/{open_file['file']}",
                               method="DELETE")
    assert code == 409 and b"still being written" in body, (code, body)
    code, _, body = server.get("/camera/camera/record?seconds=1", method="POST")
    assert code == 202, body
    listing = wait_until(lambda: (items := json.loads(server.get(
        "/camera/camera/recordings")[2])) and not items[0]["in_progress"] and items,
        timeout=15, message="a finished clip listed")
    assert listing[0]["frames"] > 10 and listing[0]["kind"] in ("event", "manual")
    assert (recordings / "camera").is_dir()
