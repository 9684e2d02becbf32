"""What each kind of client gets: wire formats, headers, fps caps, snapshot, status, CORS."""

from __future__ import annotations

import socket
import sys
import time

import pytest
from conftest import DRIVERS, frame_number, wait_until

sys.path.insert(0, str(DRIVERS))
from numbered import numbered  # noqa: E402

CHROME_IMG = {"Sec-Fetch-Dest": "image", "Accept": "image/avif,image/webp,*/*"}
BOUNDARY_HEAD = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n"


@pytest.fixture
def counter(servers):
    return servers("gevent", {"CAMERA": "counter", "COUNTER_FPS": "20"})


def raw_body_start(server, path: str, headers: dict, size: int) -> bytes:
    """The first `size` body bytes of a stream, de-chunked, over a plain socket."""
    with server.stream(path, headers) as stream:
        data = b""
        while len(data) < size:
            data += stream.response.read1(size - len(data))
        return data


@pytest.mark.parametrize("headers", [
    CHROME_IMG,
    {"Sec-Fetch-Dest": "document", "Accept": "text/html,*/*"},
    {"Accept": "image/webp,*/*"},  # a browser without Sec-Fetch-* (older Safari)
    {},  # forced by the query string below
])
def test_browsers_get_the_next_parts_headers_right_after_each_frame(counter, headers):
    path = "/video_feed" + ("" if headers else "?advance_headers=1")
    first = numbered(1)
    data = raw_body_start(counter, path, headers, len(BOUNDARY_HEAD) * 2 + len(first) + 2)
    # Headers first, then the frame immediately followed by the next part's headers:
    # nothing of the frame waits for the next frame.
    assert data.startswith(BOUNDARY_HEAD)
    body = data[len(BOUNDARY_HEAD):]
    assert body == first + b"\r\n" + BOUNDARY_HEAD


@pytest.mark.parametrize("path,headers", [
    ("/video_feed", {"User-Agent": "Lavf/60.16.100", "Accept": "*/*"}),  # ffmpeg, OpenCV
    ("/video_feed", {}),  # curl, scripts
    ("/video_feed?advance_headers=0", CHROME_IMG),
])
def test_tools_get_whole_parts_with_length_and_capture_time(counter, path, headers):
    with counter.stream(path, headers) as stream:
        parts = stream.frames(3)
    for part in parts:
        assert int(part.headers["content-length"]) == len(part.body)
        assert part.headers["content-type"] == "image/jpeg"
        assert part.body == numbered(frame_number(part.body))
        assert abs(float(part.headers["x-timestamp"]) - part.received) < 1.0
    stamps = [float(p.headers["x-timestamp"]) for p in parts]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


def test_parts_are_built_once_per_frame_and_shared():
    from base_camera import Frame
    from stream import mjpeg

    frame = Frame(numbered(5), time.time(), 5)
    assert mjpeg.browser_part(frame) is mjpeg.browser_part(frame)
    assert mjpeg.exact_part(frame) is mjpeg.exact_part(frame)


def test_fps_query_caps_one_viewer_and_leaves_the_others(counter):
    with counter.stream("/video_feed?fps=4") as capped, counter.stream() as full:
        capped_parts = capped.frames(5)
        full_parts = full.frames(5)
    capped_stamps = [float(p.headers["x-timestamp"]) for p in capped_parts]
    gaps = [b - a for a, b in zip(capped_stamps, capped_stamps[1:])]
    assert all(0.2 < gap < 0.32 for gap in gaps), gaps  # 4 fps from a 20 fps camera
    numbers = [frame_number(p.body) for p in full_parts]
    assert numbers[-1] - numbers[0] == 4  # the other viewer still gets every frame


def test_viewers_on_different_fps_caps_share_one_capture_run(servers, tmp_path):
    log = tmp_path / "events"
    server = servers("gevent", {"CAMERA": "counter", "COUNTER_FPS": "20",
                                "DRIVER_EVENTS": str(log)})
    paths = ["/video_feed?fps=2", "/video_feed?fps=5", "/video_feed?fps=10", "/video_feed"]
    streams = [server.stream(path) for path in paths]
    try:
        rates = []
        for stream in streams:
            parts = stream.frames(3)
            stamps = [float(p.headers["x-timestamp"]) for p in parts]
            rates.append(2 / (stamps[-1] - stamps[0]))
        assert rates[0] < rates[1] < rates[2] < rates[3], rates
        assert server.status()["viewers"] == 4
        assert log.read_text().split() == ["start"]
    finally:
        for stream in streams:
            stream.close()


def test_snapshot_is_one_fresh_jpeg_and_starts_the_camera(servers):
    server = servers("gevent", {"CAMERA": "counter", "COUNTER_FPS": "10"})
    assert server.status()["running"] is False
    started = time.monotonic()
    code, headers, body = server.get("/snapshot.jpg")
    assert time.monotonic() - started < 3
    assert code == 200
    assert headers["Content-Type"] == "image/jpeg"
    assert int(headers["Content-Length"]) == len(body)
    assert "no-store" in headers["Cache-Control"]
    assert body == numbered(frame_number(body))
    # While the camera runs, a second snapshot is a newer frame, not a cached one.
    code, _, second = server.get("/snapshot.jpg")
    assert frame_number(second) >= frame_number(body)
    wait_until(lambda: frame_number(server.get("/snapshot.jpg")[2]) > frame_number(body),
               timeout=3, message="a newer snapshot")


def test_mjpg_streamer_urls_answer_as_octoprint_and_home_assistant_expect(counter):
    with counter.stream("/?action=stream&1700000000000") as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        assert stream.next_part().body[:2] == b"\xff\xd8"
    started = time.monotonic()
    code, headers, body = counter.get("/?action=snapshot&1700000000000", timeout=5)
    assert time.monotonic() - started < 5  # OctoPrint's snapshot timeout
    assert code == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    code, headers, body = counter.get("/?1700000000000")
    assert code == 200 and b"<img" in body  # the page, not a stream


def test_status_reflects_viewers_frames_and_size(counter):
    status = counter.status()
    assert status["viewers"] == 0 and status["running"] is False and status["error"] is None
    with counter.stream() as one, counter.stream() as two:
        one.frames(3)
        two.next_part()
        status = wait_until(lambda: (s := counter.status())["fps"] and s, timeout=5)
        assert status["viewers"] == 2
        assert status["running"] is True
        assert 15 < status["fps"] < 25
        assert status["frame_size"] == [640, 480]
        assert status["frame_bytes"] == len(numbered(1))
        assert 0 <= status["frame_age"] < 1
        assert status["frames_captured"] >= 3
        assert status["driver"] == "camera_counter"
        assert status["uptime"] > 0
    wait_until(lambda: counter.status()["viewers"] == 0, timeout=5, message="viewers leave")


def test_a_request_that_is_not_http_leaves_the_server_serving(counter):
    # A request that is not HTTP at all: the server answers or closes, and lives on.
    with socket.create_connection(("127.0.0.1", counter.port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x00\xa5garbage\r\n\r\n")
        sock.recv(1024)
    assert counter.get("/status")[0] == 200
    assert "Traceback" not in counter.log()


