"""Benchmark: CPU per delivered frame, fps, latency and memory per viewer count.

Starts the server (gunicorn, one gevent worker) pinned to CPU 0 with the benchmark
driver (58 KB JPEGs at 30 fps), runs the load client pinned to CPU 1 for each viewer
count, and prints a markdown table. `--server-cmd` measures any other MJPEG server
the same way (give its stream `--url`), so figures can be compared in one run.

    python benchmarks/bench.py --viewers 100,400,800 --seconds 20
    python benchmarks/bench.py --server-cmd "gunicorn -k gevent app:app" \\
        --server-cwd ../flask-video-streaming --url http://127.0.0.1:8000/video_feed
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            pids.extend(int(c) for c in children)
        i += 1
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / TICK


def rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("the server did not start listening")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args) -> tuple[subprocess.Popen, str]:
    cpus = {int(c) for c in args.server_cpu.split(",")}
    pin = lambda: os.sched_setaffinity(0, cpus)  # noqa: E731
    if args.server_cmd:
        proc = subprocess.Popen(shlex.split(args.server_cmd), cwd=args.server_cwd,
                                preexec_fn=pin, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = int(args.url.rsplit(":", 1)[1].split("/")[0])
        wait_listening(port, proc)
        return proc, args.url
    port = free_port()
    env = {**os.environ, "CAMERA": "bench", "HOST": "127.0.0.1", "PORT": str(port),
           "CAMERA_FPS": str(args.fps), "CAMERA_IDLE_TIMEOUT": "2", "LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "app:app"], cwd=ROOT, env=env,
                            preexec_fn=pin, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc)
    return proc, f"http://127.0.0.1:{port}/video_feed"


def measure(args, proc, url: str, viewers: int) -> dict:
    """Run the load client; sample server CPU and memory over its measuring window."""
    with urllib.request.urlopen(url.replace("/video_feed", "/snapshot.jpg"), timeout=10) as r:
        r.read()  # camera running, worker warm
    rss_before = rss_kib(proc.pid)
    client = subprocess.Popen([sys.executable, str(HERE / "loadclient.py"), url,
                               "--viewers", str(viewers), "--seconds", str(args.seconds),
                               "--warmup", str(args.warmup), "--cpu", str(args.client_cpu)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(args.warmup)
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(args.seconds * 0.9)
    cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
    rss_during = rss_kib(proc.pid)
    result = json.loads(client.communicate(timeout=args.seconds + 60)[0])
    cpu = (cpu1 - cpu0) / (t1 - t0)
    delivered = result["frames"] / args.seconds
    result.update({
        "server_cpu_percent": round(100 * cpu, 1),
        "us_per_frame": round(1e6 * cpu / delivered, 1) if delivered else None,
        "rss_per_viewer_kib": round((rss_during - rss_before) / viewers, 1),
    })
    return result


def idle_cpu(proc, seconds: float) -> float:
    """Server CPU % with no viewers, after the camera's idle timeout."""
    time.sleep(4)  # CAMERA_IDLE_TIMEOUT=2 and a watchdog tick
    cpu0 = cpu_seconds(proc.pid)
    time.sleep(seconds)
    return round(100 * (cpu_seconds(proc.pid) - cpu0) / seconds, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", default="100,400,800")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=4)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--server-cpu", default="0", help="CPU(s) for the server, e.g. 0 or 0,1")
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--server-cmd", help="another MJPEG server's command line")
    parser.add_argument("--server-cwd", default=".")
    parser.add_argument("--url", help="its stream URL (with --server-cmd)")
    parser.add_argument("--idle-check", type=float, default=0,
                        help="also measure CPU over this many seconds with no viewers")
    args = parser.parse_args()
    proc, url = start_server(args)
    print(f"server: {args.server_cmd or 'gunicorn app:app (gevent, CAMERA=bench)'} on CPU "
          f"{args.server_cpu}; client on CPU {args.client_cpu}; {args.seconds:g} s per row\n")
    print("| viewers | server CPU | us/frame | fps min / median | latency p50 / p99 ms "
          "| RSS/viewer KiB | client CPU |")
    print("|---|---|---|---|---|---|---|")
    try:
        for viewers in [int(v) for v in args.viewers.split(",")]:
            r = measure(args, proc, url, viewers)
            flag = " (client-bound)" if r["client_cpu_percent"] > 90 else ""
            print(f"| {viewers} | {r['server_cpu_percent']}% | {r['us_per_frame']} "
                  f"| {r['fps_min']} / {r['fps_median']} "
                  f"| {r['latency_p50_ms']} / {r['latency_p99_ms']} "
                  f"| {r['rss_per_viewer_kib']} | {r['client_cpu_percent']}%{flag} |",
                  flush=True)
            if r["failed"] or r["without_frames"]:
                print(f"|   | {r['failed']} viewers failed, {r['without_frames']} got no frame |")
        if args.idle_check:
            print(f"\nno viewers, after the idle timeout: server CPU "
                  f"{idle_cpu(proc, args.idle_check)}%")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


if __name__ == "__main__":
    main()
