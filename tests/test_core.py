"""The core server: every server mode streams, one capture run, idle stop, pacing."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
from conftest import (
    DRIVERS,
    ROOT,
    assert_keeps_up,
    events,
    fd_count,
    frame_number,
    thread_count,
    wait_until,
)

sys.path.insert(0, str(DRIVERS))
from numbered import numbered  # noqa: E402


def test_each_server_streams_whole_jpegs_to_several_viewers_at_the_driver_rate(servers, mode):
    server = servers(mode, {"CAMERA": "counter", "COUNTER_FPS": "20"})
    streams = [server.stream() for _ in range(3)]
    for stream in streams:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        assert "no-store" in stream.headers["Cache-Control"]
    parts = {i: s.frames(11) for i, s in enumerate(streams)}
    for received in parts.values():
        numbers = [frame_number(p.body) for p in received]
        assert_keeps_up(numbers)
        for part in received:
            assert part.headers["content-type"] == "image/jpeg"
            assert part.body == numbered(frame_number(part.body))
        image = cv2.imdecode(np.frombuffer(received[-1].body, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (480, 640, 3)
        # Capture times say the driver's rate; the first stream was read live, so its
        # receipt times must say the same.
        captured = float(received[-1].headers["x-timestamp"]) - float(
            received[0].headers["x-timestamp"])
        assert 0.35 < captured < 0.8, f"10 frames at 20 fps took {captured:.2f} s"
    elapsed = parts[0][-1].received - parts[0][0].received
    assert 0.35 < elapsed < 0.8, f"10 frames at 20 fps arrived in {elapsed:.2f} s"
    for stream in streams:
        stream.close()


def test_flask_run_serves_the_stream(servers):
    server = servers("flask", {"CAMERA": "counter", "COUNTER_FPS": "20"})
    with server.stream() as stream:
        numbers = [frame_number(p.body) for p in stream.frames(3)]
    assert numbers == [numbers[0], numbers[0] + 1, numbers[0] + 2]


def test_emulated_camera_is_the_default_and_loads_images_from_any_directory(servers, tmp_path):
    port_server = servers("dev", {"CAMERA_FPS": "10"}, args=[])
    with port_server.stream() as stream:
        bodies = [p.body for p in stream.frames(4)]
    images = [(ROOT / "static" / "emulated" / f"{n}.jpg").read_bytes() for n in (1, 2, 3)]
    assert bodies[:3] == images  # the first viewer gets the camera's first frame
    assert bodies[3] == images[0]
    # From another working directory: images are found next to the module.
    proc = subprocess.run(
        [sys.executable, "-c", "import camera; from server import config; "
         "print(len(next(camera.Camera(config.load({})).frames())))"],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == len(images[0])


def test_one_capture_run_serves_many_viewers(servers, mode, tmp_path):
    log = tmp_path / "events"
    server = servers(mode, {"CAMERA": "counter", "COUNTER_FPS": "20", "DRIVER_EVENTS": str(log)})
    streams = [server.stream() for _ in range(6)]
    for stream in streams:
        stream.next_part()
    assert server.status()["viewers"] == 6
    assert events(log) == ["start"]
    for stream in streams:
        stream.close()


def test_capture_stops_after_idle_timeout_and_starts_again(servers, mode, tmp_path):
    log = tmp_path / "events"
    server = servers(mode, {"CAMERA": "counter", "COUNTER_FPS": "20", "DRIVER_EVENTS": str(log),
                            "CAMERA_IDLE_TIMEOUT": "0.5"})
    pid = server.worker()
    server.status()  # let lazily started server threads settle before counting
    threads_idle, fds_idle = thread_count(pid), fd_count(pid)
    with server.stream() as stream:
        stream.frames(2)
        threads_streaming = thread_count(pid)
    # The closed viewer is noticed at the next frame; the camera stops 0.5 s later.
    wait_until(lambda: events(log) == ["start", "stop"], timeout=5, message="driver closed")
    status = wait_until(lambda: (s := server.status())["viewers"] == 0 and not s["running"]
                        and s, timeout=5, message="camera idle")
    assert status["frames_captured"] >= 2
    # The capture thread and its watchdog are gone. (Compared with the count while
    # streaming: gthread's pool and the libraries' timers come and go on their own.)
    wait_until(lambda: thread_count(pid) <= threads_streaming - 2, timeout=5,
               message=f"two threads fewer than the {threads_streaming} while streaming")
    if mode == "gevent":  # one OS thread serves every request: the count is exact
        wait_until(lambda: thread_count(pid) == threads_idle, timeout=5,
                   message=f"threads back to {threads_idle}")
    # A driver's time.sleep under gevent makes an event loop in the capture thread; the
    # run must free it with the thread, or every restart leaks descriptors.
    # (At most: the count before may include a closing keep-alive connection.)
    wait_until(lambda: fd_count(pid) <= fds_idle, timeout=5,
               message=f"open files back to {fds_idle} (now {fd_count(pid)})")
    with server.stream() as stream:
        assert frame_number(stream.next_part().body) == 1  # a new run, from its first frame
    assert events(log)[:3] == ["start", "stop", "start"]


def test_slow_viewer_skips_frames_and_does_not_hold_up_others(servers, mode):
    # 100 KB frames at 25 fps: a reader that pauses fills the socket buffers quickly.
    server = servers(mode, {"CAMERA": "counter", "COUNTER_FPS": "25", "COUNTER_PAD": "100000"})
    slow, fast = server.stream(rcvbuf=16384), server.stream()
    first = frame_number(slow.next_part().body)
    fast_numbers = [frame_number(p.body) for p in fast.frames(40)]  # 1.6 s; slow reads none
    # Not held up: a viewer held up by the slow one would get nothing once the slow
    # one's buffers are full (about the 3rd frame); this one keeps the camera's rate.
    assert_keeps_up(fast_numbers)
    slow_numbers = [first] + [frame_number(slow.next_part().body) for _ in range(60)]
    assert slow_numbers == sorted(set(slow_numbers)), "duplicates or disorder"
    assert slow_numbers[-1] - slow_numbers[0] > 60, "the slow viewer skipped no frame"
    slow.close()
    fast.close()


def test_viewer_joining_a_running_camera_gets_the_newest_frame_at_once(servers, mode):
    server = servers(mode, {"CAMERA": "counter", "COUNTER_FPS": "1"})
    with server.stream() as first:
        assert frame_number(first.next_part().body) == 1  # the camera's first frame
        started = time.monotonic()
        with server.stream() as second:
            part = second.next_part()
        waited = time.monotonic() - started
    assert frame_number(part.body) == 1
    assert waited < 0.3, f"a joining viewer waited {waited:.2f} s at 1 fps"


def test_gevent_driver_blocking_in_c_leaves_other_requests_fast(servers):
    server = servers("gevent", {"CAMERA": "blocking"})
    streams = [server.stream() for _ in range(3)]
    for stream in streams:
        stream.frames(2)
    readers = [threading.Thread(target=stream.frames, args=(30,)) for stream in streams]
    for reader in readers:
        reader.start()
    times = []
    for _ in range(40):
        started = time.perf_counter()
        code, _, _ = server.get("/status", timeout=5)
        times.append(time.perf_counter() - started)
        assert code == 200
    for reader in readers:
        reader.join(10)
    assert statistics.median(times) < 0.02, f"median {statistics.median(times) * 1000:.1f} ms"
    assert max(times) < 0.5
    for stream in streams:
        stream.close()


def test_classic_driver_api_get_frame_waits_for_a_newer_frame():
    """A classic driver (static frames(), Camera().get_frame()) works in-process too."""
    sys.path.insert(0, str(ROOT))
    import camera_counter  # tests/drivers, like a user's own driver

    camera = camera_counter.Camera()
    try:
        first = frame_number(camera.get_frame())
        second = frame_number(camera.get_frame())
        assert second > first
    finally:
        camera.close()


