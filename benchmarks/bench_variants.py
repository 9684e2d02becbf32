"""Benchmark: size variants (?width=) of a 1280x720 source.

(a) In-process, pinned to one CPU: CPU per frame to make each ladder width from one
    camera JPEG (decode + resize + encode), with libjpeg's reduced decoding and without,
    medians of several runs; and three widths made from one shared decode.
(b) The server (gunicorn, one gevent worker, CAMERA=hd: tests/drivers/camera_hd.py,
    camera-like noisy 1280x720 pictures of about 109 KB, at 30 fps) pinned
    to CPU 0, the load client on CPU 1 as bench.py does: server CPU for one full-size
    viewer, then 1 and 50 viewers of the 320-wide variant (its encode is made once per
    frame and shared, so 50 must cost less than 2x one).

    .venv/bin/python benchmarks/bench_variants.py --part a --runs 5
    .venv/bin/python benchmarks/bench_variants.py --part b --seconds 15
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DRIVERS = ROOT / "tests" / "drivers"
sys.path[:0] = [str(ROOT), str(HERE), str(DRIVERS)]

import bench  # noqa: E402
import camera_hd  # noqa: E402

from capture import jpeg_size  # noqa: E402
from stream import variants  # noqa: E402

SOURCE = (1280, 720)


# -- (a) encode cost in-process ---------------------------------------------------------

def cost_per_frame(frames: list[bytes], targets, reduced: bool, count: int) -> tuple[float, int]:
    """(CPU ms per frame, decode divisor) making `targets` from `count` frames."""
    variants.scale_jpeg(frames[0], targets, reduced)  # warm up
    cpu = time.process_time()
    for i in range(count):
        made = variants.scale_jpeg(frames[i % len(frames)], targets, reduced)
    return 1000 * (time.process_time() - cpu) / count, made[1]


def part_a(args) -> None:
    os.sched_setaffinity(0, {args.cpu})
    frames = list(camera_hd.pictures(*SOURCE))
    print(f"## (a) CPU ms per frame to make a variant from a {SOURCE[0]}x{SOURCE[1]} JPEG "
          f"({statistics.mean(map(len, frames)) / 1000:.0f} KB, quality 80), quality 80, "
          f"one CPU ({args.cpu}); median of {args.runs} runs of {args.frames} frames\n")
    print("| variant | size | bytes | reduced decode | ms/frame | full decode | ms/frame "
          "| speed-up | CPU at 30 fps |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [[w] for w in (160, 320, 480, 640, 960)] + [[320, 640, 960]]
    for widths in rows:
        targets = [(variants.fit(SOURCE, (w, None)), 80) for w in widths]
        figures = {}
        for reduced in (True, False):
            runs = [cost_per_frame(frames, targets, reduced, args.frames) for _ in range(args.runs)]
            figures[reduced] = (statistics.median(r[0] for r in runs), runs[0][1])
        jpegs = variants.scale_jpeg(frames[0], targets)[0]
        (fast, r), (slow, _) = figures[True], figures[False]
        name = " + ".join(f"width={w}" for w in widths)
        size = " + ".join(f"{s[0]}x{s[1]}" for s, _ in targets)
        print(f"| {name} | {size} | {' + '.join(str(len(j)) for j in jpegs)} | 1/{r} | "
              f"{fast:.2f} | 1/1 | {slow:.2f} | {slow / fast:.2f}x | {3 * fast:.0f}% |",
              flush=True)
    print("\nDecoding alone (ms per frame, same runs):\n")
    import cv2
    import numpy as np
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}
    cells = []
    for r, flag in flags.items():
        runs = []
        for _ in range(args.runs):
            cpu = time.process_time()
            for i in range(args.frames):
                cv2.imdecode(np.frombuffer(frames[i % len(frames)], np.uint8), flag)
            runs.append(1000 * (time.process_time() - cpu) / args.frames)
        cells.append(f"1/{r}: {statistics.median(runs):.2f}")
    print("; ".join(cells))


# -- (b) server CPU, 1 vs 50 viewers ----------------------------------------------------

def part_b(args) -> None:
    env = {**os.environ, "CAMERA": "hd", "CAMERA_FPS": str(args.fps),
           "CAMERA_IDLE_TIMEOUT": "2", "LOG_LEVEL": "WARNING",
           "MAX_CONNECTIONS_PER_CLIENT": "off"}  # every viewer comes from 127.0.0.1
    port = bench.free_port()
    env.update({"HOST": "127.0.0.1", "PORT": str(port),
                "PYTHONPATH": os.pathsep.join([str(DRIVERS), os.environ.get("PYTHONPATH", "")])})
    cpus = {args.server_cpu}
    import subprocess
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "app:app"], cwd=ROOT, env=env,
                            preexec_fn=lambda: os.sched_setaffinity(0, cpus),  # noqa: PLW1509
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    procs = [proc]
    base = f"http://127.0.0.1:{port}"
    try:
        bench.wait_listening(port, proc)
        with urllib.request.urlopen(f"{base}/snapshot.jpg?width=320", timeout=15) as r:
            size = jpeg_size(r.read())
        if size != (320, 180):
            sys.exit(f"/snapshot.jpg?width=320 gave a {size} picture: app.py does not serve "
                     "?width= yet (see stream/variants.py)")
        print(f"## (b) server: gunicorn app:app (gevent, CAMERA=hd {SOURCE[0]}x{SOURCE[1]} "
              f"at {args.fps:g} fps) on CPU {args.server_cpu}; load client on CPU "
              f"{args.client_cpu}; {args.seconds:g} s per row\n")
        print("| stream | viewers | server CPU | fps min / median | latency p50 / p99 ms "
              "| variant: encodes/s, ms/frame, skipped | client CPU |")
        print("|---|---|---|---|---|---|---|")
        measured = {}
        rows = [("/video_feed", 1)] + [("/video_feed?width=320", int(n))
                                       for n in args.viewers.split(",")]
        for path, viewers in rows:
            time.sleep(1)
            before = variant_row(base)
            t0 = time.monotonic()
            r = bench.measure(args, procs, base + path, viewers)
            after = variant_row(base)
            made = ""
            if after:
                encodes = after["encodes"] - (before["encodes"] if before else 0)
                skipped = after["skipped"] - (before["skipped"] if before else 0)
                rate = encodes / (time.monotonic() - t0)
                made = f"{rate:.1f}, {after['ms_per_frame']}, {skipped}"
            measured[(path, viewers)] = r["server_cpu_percent"]
            print(f"| `{path}` | {viewers} | {r['server_cpu_percent']}% "
                  f"| {r['fps_min']} / {r['fps_median']} "
                  f"| {r['latency_p50_ms']} / {r['latency_p99_ms']} | {made} "
                  f"| {r['client_cpu_percent']}% |", flush=True)
            if r["failed"] or r["without_frames"]:
                print(f"|   | {r['failed']} viewers failed, {r['without_frames']} got no frame |")
        counts = [int(n) for n in args.viewers.split(",")]
        if len(counts) >= 2:
            one = measured[("/video_feed?width=320", counts[0])]
            many = measured[("/video_feed?width=320", counts[-1])]
            verdict = "met" if many < 2 * one else "NOT met"
            print(f"\n{counts[-1]} viewers of the 320-wide variant cost {many / one:.2f}x "
                  f"{counts[0]} ({many}% vs {one}% of a core); target < 2x: {verdict}")
    finally:
        bench.stop_server(procs)


def variant_row(base: str) -> dict | None:
    with urllib.request.urlopen(f"{base}/status", timeout=10) as r:
        status = json.load(r)
    rows = next(iter(status["cameras"].values())).get("variants") or []
    return next((row for row in rows if row["width"] == 320), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    parser.add_argument("--runs", type=int, default=5, help="(a) runs per figure")
    parser.add_argument("--frames", type=int, default=60, help="(a) frames per run")
    parser.add_argument("--cpu", type=int, default=0, help="(a) the CPU to run on")
    parser.add_argument("--viewers", default="1,50", help="(b) viewers of the 320 variant")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=4)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    if args.part in ("a", "both"):
        part_a(args)
    if args.part in ("b", "both"):
        if args.part == "both":
            print()
        part_b(args)


if __name__ == "__main__":
    main()
