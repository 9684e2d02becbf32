"""Real client programs read the stream: ffmpeg (both boundary modes) and OpenCV."""

from __future__ import annotations

import subprocess
import sys

import cv2
import pytest
from conftest import DRIVERS, assert_keeps_up, frame_number, need_tool

sys.path.insert(0, str(DRIVERS))
from numbered import numbered  # noqa: E402


@pytest.mark.parametrize("strict", ["0", "1"])
def test_ffmpeg_reads_consecutive_frames_byte_identical(servers, tmp_path, strict):
    ffmpeg = need_tool("ffmpeg")
    server = servers("gevent", {"CAMERA": "counter", "COUNTER_FPS": "20"})
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "mpjpeg",
                    "-strict_mime_boundary", strict, "-i", server.url + "/video_feed",
                    "-frames:v", "6", "-c", "copy", "-f", "image2", str(tmp_path / "%02d.jpg")],
                   check=True, timeout=30)
    # ffmpeg exits 0 on a timeout too: count what it wrote.
    jpegs = [p.read_bytes() for p in sorted(tmp_path.glob("*.jpg"))]
    assert len(jpegs) == 6
    numbers = [frame_number(j) for j in jpegs]
    assert_keeps_up(numbers)
    assert all(jpeg == numbered(n) for jpeg, n in zip(jpegs, numbers))


def test_opencv_videocapture_decodes_the_stream(servers):
    need_tool("ffmpeg")  # OpenCV's FFmpeg backend does the reading; ensure the stack is here
    server = servers("gevent", {"CAMERA": "counter", "COUNTER_FPS": "20"})
    capture = cv2.VideoCapture(server.url + "/video_feed", cv2.CAP_FFMPEG)
    try:
        assert capture.isOpened()
        for _ in range(5):
            ok, image = capture.read()
            assert ok and image.shape == (480, 640, 3)
    finally:
        capture.release()


def test_snapshot_by_curl_like_home_assistant_still_image(servers, tmp_path):
    curl = need_tool("curl")
    server = servers("gevent", {"CAMERA": "counter"})
    out = tmp_path / "still.jpg"
    subprocess.run([curl, "-sf", "-m", "10", "-o", str(out), server.url + "/snapshot.jpg"],
                   check=True, timeout=15)
    assert out.read_bytes()[:2] == b"\xff\xd8" and frame_number(out.read_bytes())
