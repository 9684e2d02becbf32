"""Benchmark: what recording a stream costs, beside what its viewers cost.

Runs the server (gunicorn, one gevent worker, pinned to CPU 0, benchmark driver: 58 KB
JPEGs at 30 fps, record = off) and measures its CPU with bench.py's load client on CPU
1 in three scenarios, taken in turn within each round so that the machine's noise falls
on all three alike:

    N viewers
    N viewers + recording   (a manual clip, POST /camera/<name>/record: the same
                             tap, queue and writer as continuous recording)
    N + 30 viewers          (what one viewer costs: a thirtieth of the difference,
                             measured over many viewers, where it is well above the noise)

It prints the server's CPU per captured frame of each (median of --runs), and what one
viewer adds and recording adds (medians of each round's own differences): recording must
cost less than three viewers of the same stream. Recording's cost is also read directly:
the CPU of the recorder's own threads (its tap and writer: the threads that appear when
the clip starts), which the machine's noise on the other threads does not touch. CPU is
read to the nanosecond from /proc/<pid>/task/*/schedstat (tests/serverkit.py).

    .venv/bin/python benchmarks/recording.py --runs 7 --seconds 8
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

BASE, MORE = 10, 30  # viewers in the base scenario, and how many more in the third
SCENARIOS = [(f"{BASE} viewers", False, BASE), (f"{BASE} viewers + recording", True, BASE),
             (f"{BASE + MORE} viewers", False, BASE + MORE)]


def request(url: str, method: str = "GET") -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        return json.loads(r.read())


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            sys.exit("the server did not start or stop recording in time")
        time.sleep(0.1)


def threads(procs) -> list[Path]:
    """Every thread of the server's processes."""
    return [task for pid in bench.all_pids(procs)
            for task in Path(f"/proc/{pid}/task").glob("*")]


def thread_cpu(tasks) -> float:
    """CPU seconds of these threads so far (a thread that ended counts no more)."""
    total = 0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def measure(args, procs, url: str, record: bool, viewers: int) -> dict:
    """One window of `viewers`, recording a manual clip through it if `record`."""
    base = url.rsplit("/video_feed", 1)[0]
    camera = next(iter(request(f"{base}/status")["cameras"]))
    status = f"{base}/camera/{camera}/status"
    threads_before = set(threads(procs))
    if record:
        request(f"{base}/camera/{camera}/record", "POST")
        wait_for(lambda: request(status)["recording"] is not None)
    recorder = set(threads(procs)) - threads_before  # the tap and the writer
    cpu0, t0 = thread_cpu(recorder), time.monotonic()
    before = request(status)["recorder"]
    result = bench.measure(args, procs, url, viewers)
    after = request(status)["recorder"]
    result["recorder_us"] = (1e6 * (thread_cpu(recorder) - cpu0)
                             / ((time.monotonic() - t0) * args.fps))
    result["recorder_threads"] = len(recorder)
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
    (base_name, _, _), (recording_name, _, _), (more_name, _, _) = SCENARIOS
    base = [r["us"] for r in runs[base_name]]
    added = [r["us"] - b for r, b in zip(runs[recording_name], base, strict=True)]
    recording = statistics.median(added)
    viewer = statistics.median((r["us"] - b) / MORE
                               for r, b in zip(runs[more_name], base, strict=True))
    own_runs = [r["recorder_us"] for r in runs[recording_name]]
    own = statistics.median(own_runs)

    def verdict(us: float) -> str:
        return (f"{us / viewer if viewer > 0 else float('inf'):.1f} viewers "
                f"({'met' if us < 3 * viewer else 'NOT met'}: less than three)")

    print(f"\none viewer adds {viewer:.1f} us per frame (median of each round's difference "
          f"over {MORE} viewers)")
    print(f"recording, its own threads (tap and writer): "
          f"{' / '.join(f'{x:.1f}' for x in own_runs)} us per frame, median {own:.1f} = "
          f"{verdict(own)}")
    print(f"recording, the whole server's difference (noisier: it carries the other threads' "
          f"noise): {' / '.join(f'{x:.0f}' for x in added)} us, median {recording:.1f} = "
          f"{verdict(recording)}")
    recorded = runs[recording_name]
    print(f"recording rounds: {sum(r['written'] for r in recorded)} frames written, "
          f"{sum(r['dropped'] for r in recorded)} dropped")


if __name__ == "__main__":
    main()
