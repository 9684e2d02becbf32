"""Benchmark: what recording a stream costs, beside what its viewers cost.

Runs the server (gunicorn, one gevent worker, pinned to CPU 0, benchmark driver: 58 KB
JPEGs at 30 fps, record = off) and measures its CPU with bench.py's load client on CPU
1 in three scenarios, taken in turn within each round so that the machine's noise falls
on all three alike:

    1 viewer
    1 viewer + recording   (a manual clip, POST /camera/<name>/record: the same
                            tap, queue and writer as continuous recording)
    4 viewers

It prints the server's CPU per captured frame of each (median of --runs), and what
recording and three extra viewers add (medians of each round's own differences):
recording must cost less than three extra viewers of the same stream. Server CPU is read from /proc/<pid>/task/*/schedstat (ns),
since one viewer at 30 fps costs about a tenth of a clock tick a second. Needs app.py
to wire recording (recordings_http).

    python benchmarks/recording.py --runs 9 --seconds 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402

SCENARIOS = [("1 viewer", False, 1), ("1 viewer + recording", True, 1), ("4 viewers", False, 4)]


def request(url: str, method: str = "GET") -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        return json.loads(r.read())


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            sys.exit("the server did not start or stop recording in time")
        time.sleep(0.1)


def measure(args, procs, url: str, record: bool, viewers: int) -> dict:
    """One window of `viewers`, recording a manual clip through it if `record`."""
    base = url.rsplit("/video_feed", 1)[0]
    camera = next(iter(request(f"{base}/status")["cameras"]))
    status = f"{base}/camera/{camera}/status"
    if record:
        request(f"{base}/camera/{camera}/record", "POST")
        wait_for(lambda: request(status)["recording"] is not None)
    before = request(status)["recorder"]
    result = bench.measure(args, procs, url, viewers)
    after = request(status)["recorder"]
    if record:
        request(f"{base}/camera/{camera}/record/stop", "POST")
        wait_for(lambda: request(status)["recording"] is None)
    # us per delivered frame x delivered frames a second = the server's CPU; per captured
    # frame, it is what the whole server spends on each frame the camera makes.
    result["us"] = result["us_per_frame"] * result["frames"] / args.seconds / args.fps
    result["written"] = after["frames_written"] - before["frames_written"]
    result["dropped"] = after["dropped"] - before["dropped"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the recordings go (default: a temporary folder, "
                             "deleted afterwards)")
    args = parser.parse_args()
    # bench.start_server's other knobs: the local server, one worker, no Redis.
    args.server_cmd, args.redis, args.workers = None, False, 1
    folder = args.dir or Path(tempfile.mkdtemp(prefix="recording-bench-"))
    os.environ.update({"RECORD_MODE": "off", "RECORD_SEGMENT": "3600",
                       "RECORDINGS_DIR": str(folder)})
    print(f"server: gunicorn app:app (gevent, CAMERA=bench, {args.fps:g} fps) on CPU "
          f"{args.server_cpu}; client on CPU {args.client_cpu}; {args.runs} rounds of "
          f"{args.seconds:g} s per scenario; recordings in {folder}\n", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in SCENARIOS}
    procs, url = bench.start_server(args)
    try:
        if "recorder" not in request(url.replace("/video_feed", "/status")):
            sys.exit("this server does not record: app.py does not wire recordings_http yet")
        for _ in range(args.runs):
            for name, record, viewers in SCENARIOS:
                runs[name].append(measure(args, procs, url, record, viewers))
    finally:
        bench.stop_server(procs)
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    print("| scenario | server CPU | us per captured frame (median) | runs | fps |")
    print("|---|---|---|---|---|")
    median = {}
    for name, _, _ in SCENARIOS:
        us = [r["us"] for r in runs[name]]
        median[name] = statistics.median(us)
        print(f"| {name} | {median[name] * args.fps / 1e4:.2f}% | {median[name]:.1f} | "
              f"{' / '.join(f'{x:.0f}' for x in us)} | "
              f"{statistics.median(r['fps_median'] for r in runs[name])} |")
    # This machine's noise moves whole rounds up and down; each round's own differences
    # (its scenarios ran back to back) cancel most of it.
    base = [r["us"] for r in runs["1 viewer"]]
    recording = statistics.median(r["us"] - b for r, b in zip(runs["1 viewer + recording"], base))
    three = statistics.median(r["us"] - b for r, b in zip(runs["4 viewers"], base))
    print(f"\nmedian of each round's differences: recording adds {recording:.1f} us per "
          f"frame, three extra viewers add {three:.1f} us: recording costs "
          f"{recording / three if three > 0 else float('inf'):.2f} of three extra viewers "
          f"({'met' if recording < three else 'NOT met'}: less than three extra viewers)")
    recorded = runs["1 viewer + recording"]
    print(f"recording rounds: {sum(r['written'] for r in recorded)} frames written, "
          f"{sum(r['dropped'] for r in recorded)} dropped")


if __name__ == "__main__":
    main()
