"""Benchmark: what motion detection costs.

1. CPU per analysed frame, in this process: camera-like frames (tests/drivers/camera_hd.py:
   noisy, moving content, JPEG quality 80) at 640x480, 1280x720 and 1920x1080, each
   decoded as the server does (1/4 or 1/8 scale, straight to greyscale) and scored by the
   detector, five frames a second of injected time. The thread's own CPU time per frame
   (time.thread_time), the median of --frames frames, in each of --runs runs.
2. The whole server's CPU with no viewers: gunicorn (one gevent worker, pinned to CPU 0
   when `taskset` exists), CAMERA=hd at 1280x720 and 30 fps, kept capturing by
   `MOTION=1` (MOTION_FPS=5) against the same camera kept capturing by a timelapse
   instead (a still a day: no detector). Each scenario its own server, in turn within
   each round so that the machine's noise falls on both alike; CPU of the process tree
   from /proc over --seconds.
3. Viewers beside the detector: the motion server of 2. with --viewers full-size viewers
   (benchmarks/loadclient.py, in this process on the other core), their frames per
   second, and the detector's frames analysed per second meanwhile.

    .venv/bin/python benchmarks/motion.py --runs 3

Targets (the issue): at most 2 ms per analysed 1280x720 frame; motion at 5 fps at most
2% of a core; 30 full-size viewers keep 30 fps while it runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "drivers"),
                str(ROOT / "benchmarks")]

from camera_hd import pictures  # noqa: E402
from loadclient import run as load  # noqa: E402
from serverkit import cpu_seconds, start_server, tree, wait_until  # noqa: E402

from motion import Detector, small_grey  # noqa: E402

SIZES = [(640, 480), (1280, 720), (1920, 1080)]
SCENARIOS = {  # name -> environment: the camera kept capturing with no viewers by...
    "motion at 5 fps": {"MOTION": "1", "MOTION_FPS": "5"},
    "no motion (a timelapse keeps it on)": {"RECORD_TIMELAPSE": "86400"},
}


def per_frame(width: int, height: int, frames: int) -> tuple[float, float]:
    """Median ms of CPU per analysed frame: (decode + detector, the detector alone)."""
    jpegs = pictures(width, height, 80)
    detector = Detector()
    total, alone = [], []
    for i in range(frames):
        began = time.thread_time()
        picture = small_grey(jpegs[i % len(jpegs)])
        middle = time.thread_time()
        detector.analyse(picture, 1_800_000_000 + i / 5)
        end = time.thread_time()
        total.append(end - began)
        alone.append(end - middle)
    return 1000 * statistics.median(total), 1000 * statistics.median(alone)


def hd_server(env: dict, folder: Path):
    """CAMERA=hd at 1280x720 and 30 fps under gunicorn gevent, pinned to CPU 0."""
    wrap = ["taskset", "-c", "0"] if shutil.which("taskset") else None
    server = start_server("gevent", folder, {
        "CAMERA": "hd", "CAMERA_RESOLUTION": "1280x720", "CAMERA_FPS": "30",
        "RECORDINGS_DIR": str(folder / "recordings"), "LOG_LEVEL": "WARNING", **env},
        wrap=wrap)
    wait_until(lambda: server.status()["running"], timeout=20, message="capturing")
    return server


def with_viewers(viewers: int, seconds: float, warmup: float, folder: Path) -> dict:
    """The viewers' frame rates and the detector's, all at once."""
    server = hd_server(SCENARIOS["motion at 5 fps"], folder)
    try:
        if hasattr(os, "sched_setaffinity") and os.cpu_count() > 1:
            os.sched_setaffinity(0, {1})  # the viewers on the other core
        wait_until(lambda: server.status()["motion"]["fps"], timeout=20, message="analysing")
        result = load(f"http://127.0.0.1:{server.port}/video_feed", viewers, seconds, warmup)
        after = server.status()["motion"]
        return {**result, "motion_fps": after["fps"], "ms_per_frame": after["ms_per_frame"]}
    finally:
        server.kill()


def server_cpu(env: dict, seconds: float, warmup: float, folder: Path) -> float:
    """Percent of a core the whole server spends over `seconds`, with no viewers."""
    server = hd_server(env, folder)
    try:
        time.sleep(warmup)
        pids = tree(server.proc.pid)
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = cpu_seconds(pids), time.monotonic()
        status = server.status()
        if status["viewers"] or not status["running"]:
            sys.exit(f"the camera must capture with no viewers: {status}")
        return 100 * (cpu1 - cpu0) / (t1 - t0)
    finally:
        server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--viewers", type=int, default=30)
    args = parser.parse_args()

    print("CPU per analysed frame (ms; median of each run's frames, then of the runs):\n")
    print("| camera frame | decoded to | decode + detector | detector alone | runs |")
    print("|---|---|---|---|---|")
    for width, height in SIZES:
        runs = [per_frame(width, height, args.frames) for _ in range(args.runs)]
        small = small_grey(pictures(width, height, 80)[0]).shape
        total = [r[0] for r in runs]
        print(f"| {width}x{height} | {small[1]}x{small[0]} | {statistics.median(total):.2f} | "
              f"{statistics.median(r[1] for r in runs):.3f} | "
              f"{' / '.join(f'{x:.2f}' for x in total)} |", flush=True)

    print(f"\nThe whole server, no viewers, CAMERA=hd 1280x720 at 30 fps, {args.seconds:g} s "
          f"per scenario, {args.runs} rounds:\n")
    folder = Path(tempfile.mkdtemp(prefix="motion-bench-"))
    results: dict[str, list[float]] = {name: [] for name in SCENARIOS}
    try:
        for _ in range(args.runs):
            for name, env in SCENARIOS.items():
                results[name].append(server_cpu(env, args.seconds, args.warmup, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("| scenario | server CPU (median) | runs |")
    print("|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.2f}% | "
              f"{' / '.join(f'{x:.2f}' for x in values)} |")
    (motion, base) = results.values()
    added = [m - b for m, b in zip(motion, base, strict=True)]
    print(f"\nmotion detection adds {statistics.median(added):.2f}% of a core (median of each "
          f"round's difference: {' / '.join(f'{x:.2f}' for x in added)})")

    print(f"\n{args.viewers} full-size viewers of the motion camera, {args.seconds:g} s, "
          f"{args.runs} runs:\n")
    print("| run | viewers' fps (median / lowest) | failed | frames analysed per s | "
          "ms per analysed frame |")
    print("|---|---|---|---|---|")
    folder = Path(tempfile.mkdtemp(prefix="motion-bench-"))
    try:
        for run in range(args.runs):
            r = with_viewers(args.viewers, args.seconds, args.warmup, folder)
            print(f"| {run + 1} | {r['fps_median']:.2f} / {r['fps_min']:.2f} | {r['failed']} | "
                  f"{r['motion_fps']:.1f} | {r['ms_per_frame']:.2f} |", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
