"""Camera-side cost: the OpenCV driver passing an MJPEG source's JPEGs through versus
decoding and re-encoding them (CPU per frame, in-process, no server).

    .venv/bin/python benchmarks/opencv_passthrough.py --size 1280x720 --frames 300
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camera_opencv import Camera  # noqa: E402
from server import config  # noqa: E402


def cpu_per_frame(source: Path, frames: int, **settings: str) -> tuple[float, int]:
    """CPU microseconds per frame of the driver's frames(), and the mean JPEG size."""
    env = {"OPENCV_CAMERA_SOURCE": str(source), "CAMERA_FPS": "1000", **settings}
    generator = Camera(config.load(env)).frames()
    next(generator)  # opening the file is not per-frame work
    size, start = 0, time.process_time()
    for _ in range(frames):
        size += len(next(generator))
    used = time.process_time() - start
    generator.close()
    return 1e6 * used / frames, size // frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source.avi"
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                        f"testsrc2=size={args.size}:rate=30", "-frames:v", "300", "-c:v",
                        "mjpeg", "-q:v", "3", str(source)], check=True)
        passthrough = cpu_per_frame(source, args.frames)
        encode = cpu_per_frame(source, args.frames, CAMERA_HFLIP="1")  # needs the pixels
    print(f"{args.size} MJPEG source, {args.frames} frames, CPU per frame:")
    print(f"  passthrough:       {passthrough[0]:8.0f} us  ({passthrough[1]} bytes per JPEG)")
    print(f"  decode + encode:   {encode[0]:8.0f} us  ({encode[1]} bytes per JPEG, with a flip)")
    print(f"  passthrough is {encode[0] / passthrough[0]:.0f}x cheaper")


if __name__ == "__main__":
    main()
