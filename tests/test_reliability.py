"""Broken cameras, misbehaving clients, storms, limits, auth and shutdown."""

from __future__ import annotations

import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    assert_keeps_up,
    events,
    frame_number,
    rss_kib,
    silent_viewer,
    thread_count,
    wait_until,
)

from base_camera import PLACEHOLDER_JPEG

# -- camera faults -------------------------------------------------------------------------

def test_camera_that_cannot_start_gives_503_snapshots_and_placeholder_streams(servers, mode):
    server = servers(mode, {"CAMERA": "faulty", "FAULT": "open"})
    started = time.monotonic()
    code, headers, body = server.get("/snapshot.jpg")
    assert time.monotonic() - started < 6
    assert code == 503 and headers["Retry-After"]
    assert body.decode().strip() == "503 Service Unavailable: no camera at /dev/video9"
    with server.stream() as stream:
        parts = stream.frames(2)
    assert all(p.body == PLACEHOLDER_JPEG for p in parts)
    # About once a second. The first part is the newest placeholder, given at once on
    # joining, so the gap is between publish times, not receipt times.
    published = [float(p.headers["x-timestamp"]) for p in parts]
    assert 0.9 < published[1] - published[0] < 2.5, published
    status = server.status()
    assert status["error"] == "no camera at /dev/video9" and status["running"] is False


def test_driver_failing_mid_stream_recovers_without_reconnecting(servers, mode, tmp_path):
    log = tmp_path / "events"
    server = servers(mode, {"CAMERA": "faulty", "FAULT": "flaky:5", "COUNTER_FPS": "20",
                            "DRIVER_EVENTS": str(log)})
    seen = []
    with server.stream() as stream:
        while not seen or frame_number(seen[-1]) is None or frame_number(seen[-1]) < 200003:
            seen.append(stream.next_part().body)
            assert len(seen) < 100
    numbers = [frame_number(b) for b in seen]
    placeholder_at = numbers.index(None)
    assert numbers[:placeholder_at] == [100001, 100002, 100003, 100004, 100005][-placeholder_at:]
    assert seen[placeholder_at] == PLACEHOLDER_JPEG
    assert numbers[-3:] == [200001, 200002, 200003]  # the restarted driver, same connection
    assert events(log)[:3] == ["start", "stop", "start"]
    assert server.status()["error"] is None


def test_stalled_driver_is_reported_and_blocks_nothing(servers, mode):
    server = servers(mode, {"CAMERA": "faulty", "FAULT": "stall:3", "COUNTER_FPS": "20",
                            "CAMERA_STALL_TIMEOUT": "1"})
    with server.stream() as stream:
        assert [frame_number(p.body) for p in stream.frames(3)] == [100001, 100002, 100003]
        stalled_part = stream.next_part()
    assert stalled_part.body == PLACEHOLDER_JPEG
    started = time.monotonic()
    status = server.status()
    assert time.monotonic() - started < 0.5
    assert status["error"].startswith("no frame from the driver for")
    assert status["running"] is False
    started = time.monotonic()
    assert server.stop() in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 8


# -- clients that misbehave ----------------------------------------------------------------

def test_viewer_that_stops_reading_is_dropped_and_others_keep_full_rate(servers, mode):
    server = servers(mode, {"CAMERA": "counter", "COUNTER_FPS": "25", "COUNTER_PAD": "200000",
                            "STREAM_SEND_TIMEOUT": "1"})
    silent = silent_viewer(server.port)
    try:
        with server.stream() as reader:
            wait_until(lambda: server.status()["viewers"] == 2, timeout=5)
            numbers = [frame_number(p.body) for p in reader.frames(50)]
            assert_keeps_up(numbers)
            wait_until(lambda: server.status()["viewers"] == 1, timeout=8,
                       message="the silent viewer dropped")
    finally:
        silent.close()
    assert "Traceback" not in server.log()


def test_storm_of_short_viewers_leaves_one_capture_run_and_no_leaks(servers, tmp_path):
    log = tmp_path / "events"
    server = servers("gevent", {"CAMERA": "counter", "COUNTER_FPS": "30",
                                "DRIVER_EVENTS": str(log)})
    pid = server.worker()
    with server.stream() as long_viewer:
        long_viewer.next_part()
        threads_before, rss_before = thread_count(pid), rss_kib([pid])
        errors = []

        def churn(n: int) -> None:
            for i in range(n):
                try:
                    if i % 3 == 0:  # gone before the response
                        with socket.create_connection(("127.0.0.1", server.port)) as s:
                            s.sendall(b"GET /video_feed HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    else:
                        with server.stream() as short:
                            short.next_part()
                except Exception as exc:  # noqa: BLE001 - collected and asserted below
                    errors.append(exc)

        churners = [threading.Thread(target=churn, args=(75,)) for _ in range(4)]
        for t in churners:
            t.start()
        frames = [frame_number(p.body) for p in long_viewer.frames(30)]
        for t in churners:
            t.join(60)
        assert not errors, errors[:3]
        assert_keeps_up(frames)  # the long viewer kept its rate through the churn
        wait_until(lambda: server.status()["viewers"] == 1, timeout=5, message="one viewer")
        assert events(log) == ["start"]
        assert thread_count(pid) == threads_before
        assert rss_kib([pid]) - rss_before < 16 * 1024, "RSS grew by 16 MiB or more"


def test_max_clients_caps_streams_but_not_snapshots_or_status(servers):
    server = servers("gevent", {"CAMERA": "counter", "MAX_CLIENTS": "2"})
    first, second = server.stream(), server.stream()
    first.next_part()
    second.next_part()
    code, headers, body = server.get("/video_feed")
    assert code == 503 and headers["Retry-After"] and b"MAX_CLIENTS" in body
    assert server.get("/snapshot.jpg")[0] == 200
    assert server.get("/status")[0] == 200
    first.close()
    wait_until(lambda: server.status()["viewers"] == 1, timeout=5)
    with server.stream() as third:
        assert third.status == 200
    second.close()


# -- shutdown --------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("mode", ["gevent", "gthread", "dev"])
def test_signal_with_viewers_ends_streams_releases_camera_and_exits(servers, mode, sig,
                                                                   tmp_path):
    log = tmp_path / "events"
    server = servers(mode, {"CAMERA": "counter", "COUNTER_FPS": "10",
                            "DRIVER_EVENTS": str(log)})
    streams = [server.stream() for _ in range(3)]
    for stream in streams:
        stream.next_part()
    started = time.monotonic()
    code = server.stop(sig, timeout=10)
    took = time.monotonic() - started
    assert took < 5, f"exit took {took:.1f} s; the server's log:\n{server.log()[-4000:]}"
    assert code in (0, -sig, 128 + sig), code
    assert events(log) == ["start", "stop"], "the driver was not closed"
    for stream in streams:
        with pytest.raises((EOFError, OSError)):
            for _ in range(30):
                stream.next_part()
        stream.close()
    assert "Traceback" not in server.log()


def test_open_files_limit_is_lifted_so_viewers_are_not_capped_at_1024(servers):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = ["prlimit", f"--nofile=256:{hard}"] if hard != resource.RLIM_INFINITY else []
    if limit and not shutil.which("prlimit"):
        pytest.skip("prlimit is not installed")
    server = servers("dev", {"CAMERA": "counter"}, wrap=limit)
    limits = Path(f"/proc/{server.worker()}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3] == (str(hard) if hard != resource.RLIM_INFINITY else str(1 << 20))
