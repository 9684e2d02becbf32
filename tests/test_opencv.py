"""The OpenCV driver on real video files: JPEG passthrough, re-encoding, loops, faults."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import need_tool, wait_until

from server import config


def make_video(path: Path, codec: str, frames: int = 20) -> Path:
    ffmpeg = need_tool("ffmpeg")
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=10", "-frames:v", str(frames), "-c:v", codec,
                    *(["-q:v", "3"] if codec == "mjpeg" else []), str(path)],
                   check=True, timeout=60)
    return path


def file_jpegs(video: Path, out: Path) -> list[bytes]:
    """The JPEGs stored in an MJPEG file, extracted by ffmpeg without re-encoding."""
    out.mkdir()
    subprocess.run([need_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-i",
                    str(video), "-c", "copy", "-f", "image2", str(out / "%03d.jpg")],
                   check=True, timeout=60)
    return [p.read_bytes() for p in sorted(out.iterdir())]


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_mjpeg_file_passes_through_byte_for_byte_and_loops(servers, tmp_path):
    video = make_video(tmp_path / "clip.avi", "mjpeg", frames=8)
    expected = file_jpegs(video, tmp_path / "jpegs")
    server = servers("gevent", {"CAMERA": "opencv", "OPENCV_CAMERA_SOURCE": str(video),
                                "CAMERA_FPS": "40"})
    with server.stream() as stream:
        bodies = [p.body for p in stream.frames(12)]
    # Each frame is one of the file's JPEGs byte for byte, in the file's order, and the
    # file loops (12 frames of an 8-frame file). A loaded machine may make the viewer
    # skip one (newest frame wins), never reorder or change one.
    positions = [expected.index(body) for body in bodies]  # ValueError: not the file's
    steps = [(b - a) % 8 for a, b in zip(positions, positions[1:])]
    assert all(1 <= step <= 2 for step in steps), positions
    assert sum(steps) >= 8, positions  # it went round the loop
    assert "passing its JPEGs through" in server.log()


def test_other_codecs_are_encoded_with_rotation_and_quality(servers, tmp_path):
    video = make_video(tmp_path / "clip.avi", "mpeg4")
    server = servers("gevent", {"CAMERA": "opencv", "OPENCV_CAMERA_SOURCE": str(video),
                                "CAMERA_ROTATION": "90", "JPEG_QUALITY": "50"})
    with server.stream() as stream:
        images = [decode(p.body) for p in stream.frames(3)]
    assert all(image.shape == (320, 240, 3) for image in images)  # 320x240 turned upright
    assert "encoding JPEGs" in server.log()


def test_a_transform_on_an_mjpeg_file_turns_passthrough_off(tmp_path):
    video = make_video(tmp_path / "clip.avi", "mjpeg", frames=4)
    expected = file_jpegs(video, tmp_path / "jpegs")
    import camera_opencv

    settings = config.load({"OPENCV_CAMERA_SOURCE": str(video), "CAMERA_HFLIP": "1",
                            "CAMERA_RESOLUTION": "160x120", "CAMERA_FPS": "100"})
    frames = camera_opencv.Camera(settings).frames()
    first = next(frames)
    frames.close()  # releases the file
    assert first != expected[0]
    original = decode(expected[0])
    flipped = decode(first)
    assert flipped.shape == (120, 160, 3)
    small = cv2.resize(original, (160, 120), interpolation=cv2.INTER_AREA)[:, ::-1]
    assert np.abs(flipped.astype(int) - small.astype(int)).mean() < 12


def test_missing_source_is_reported_and_snapshot_is_503(servers, tmp_path):
    missing = tmp_path / "nope.avi"
    server = servers("gevent", {"CAMERA": "opencv", "OPENCV_CAMERA_SOURCE": str(missing)})
    code, _, body = server.get("/snapshot.jpg")
    assert code == 503
    assert f"cannot open camera source {str(missing)!r}" in body.decode()
    assert server.status()["error"] == f"cannot open camera source {str(missing)!r}"


def test_source_is_released_when_the_camera_goes_idle(servers, tmp_path):
    video = make_video(tmp_path / "clip.avi", "mjpeg")
    server = servers("dev", {"CAMERA": "opencv", "OPENCV_CAMERA_SOURCE": str(video),
                             "CAMERA_IDLE_TIMEOUT": "0.3", "CAMERA_FPS": "20"})
    with server.stream() as stream:
        stream.frames(2)
    wait_until(lambda: f"{str(video)!r} released" in server.log(), timeout=5,
               message="the file released")
    pid = server.proc.pid
    open_files = [p.resolve() for p in Path(f"/proc/{pid}/fd").iterdir() if p.exists()]
    assert video.resolve() not in open_files


@pytest.mark.parametrize("source", ["0", "/dev/video0"])
def test_absent_webcam_is_a_clear_error(source):
    import camera_opencv
    from base_camera import CameraError

    if Path("/dev/video0").exists():
        pytest.skip("this machine has a webcam")
    with pytest.raises(CameraError, match="cannot open camera source"):
        next(camera_opencv.Camera(config.load({"OPENCV_CAMERA_SOURCE": source})).frames())
