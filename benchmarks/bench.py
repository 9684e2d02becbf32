"""Benchmark: CPU per delivered frame, fps, latency and memory per viewer count.

Starts the server (gunicorn, one gevent worker) pinned to CPU 0 with the benchmark
driver (58 KB JPEGs at 30 fps), runs the load client pinned to CPU 1 for each viewer
count, and prints a markdown table. `--server-cmd` measures any other MJPEG server
the same way (give its stream `--url`), so figures can be compared in one run.
`--redis` serves through the Redis frame bus instead: redis-server, the publisher and
`--workers` CAMERA=redis workers, all on `--server-cpu` and all counted as the server.

    .venv/bin/python benchmarks/bench.py --viewers 100,400,800 --seconds 20
    .venv/bin/python benchmarks/bench.py --redis --workers 2 --server-cpu 0,1 --viewers 800,1200
    .venv/bin/python benchmarks/bench.py --server-cmd "gunicorn -k gevent app:app" \\
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
sys.path.insert(0, str(ROOT / "tests"))
from serverkit import cpu_seconds, free_port, rss_kib, tree  # noqa: E402


def all_pids(procs: list[subprocess.Popen]) -> list[int]:
    """Every process of the server: each started one and its descendants."""
    return [pid for proc in procs for pid in tree(proc.pid)]


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


def start_server(args) -> tuple[list[subprocess.Popen], str]:
    """The server's processes (all measured together) and its stream URL."""
    cpus = {int(c) for c in args.server_cpu.split(",")}

    def spawn(command: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(command, preexec_fn=lambda: os.sched_setaffinity(0, cpus),
                                start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, **kwargs)

    if args.server_cmd:
        proc = spawn(shlex.split(args.server_cmd), cwd=args.server_cwd)
        port = int(args.url.rsplit(":", 1)[1].split("/")[0])
        wait_listening(port, proc)
        return [proc], args.url
    procs, port = [], free_port()
    env = {**os.environ, "CAMERA": "bench", "HOST": "127.0.0.1", "PORT": str(port),
           "CAMERA_FPS": str(args.fps), "CAMERA_IDLE_TIMEOUT": "2", "LOG_LEVEL": "WARNING",
           "MAX_CONNECTIONS_PER_CLIENT": "off",  # every viewer comes from 127.0.0.1
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    try:
        if args.redis:
            # The Redis frame bus: redis-server and the publisher count as server CPU too.
            redis_port = free_port()
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            procs.append(spawn(["redis-server", "--port", str(redis_port), "--bind",
                                "127.0.0.1", "--save", "", "--appendonly", "no"]))
            wait_listening(redis_port, procs[-1])
            procs.append(spawn([sys.executable, "-m", "flask", "--app", "app", "publish"],
                               cwd=ROOT, env=env))
            env = {**env, "CAMERA": "redis"}
        procs.append(spawn([sys.executable, "-m", "gunicorn", "--workers", str(args.workers),
                            "app:app"], cwd=ROOT, env=env))
        wait_listening(port, procs[-1])
    except BaseException:
        stop_server(procs)
        raise
    return procs, f"http://127.0.0.1:{port}/video_feed"


def stop_server(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def measure(args, procs, url: str, viewers: int) -> dict:
    """Run the load client; sample server CPU and memory over its measuring window."""
    with urllib.request.urlopen(url.replace("/video_feed", "/snapshot.jpg"), timeout=10) as r:
        r.read()  # camera running, worker warm
    rss_before = rss_kib(all_pids(procs))
    client = subprocess.Popen([sys.executable, str(HERE / "loadclient.py"), url,
                               "--viewers", str(viewers), "--seconds", str(args.seconds),
                               "--warmup", str(args.warmup), "--cpu", str(args.client_cpu)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(args.warmup)
    cpu0, t0 = cpu_seconds(all_pids(procs)), time.monotonic()
    time.sleep(args.seconds * 0.9)
    cpu1, t1 = cpu_seconds(all_pids(procs)), time.monotonic()
    rss_during = rss_kib(all_pids(procs))
    result = json.loads(client.communicate(timeout=args.seconds + 60)[0])
    cpu = (cpu1 - cpu0) / (t1 - t0)
    delivered = result["frames"] / args.seconds
    result.update({
        "server_cpu_percent": round(100 * cpu, 1),
        "us_per_frame": round(1e6 * cpu / delivered, 1) if delivered else None,
        "rss_per_viewer_kib": round((rss_during - rss_before) / viewers, 1),
    })
    return result


def idle_cpu(procs, seconds: float) -> float:
    """Server CPU % with no viewers, after the camera's idle timeout."""
    time.sleep(4)  # CAMERA_IDLE_TIMEOUT=2 and a watchdog tick
    cpu0 = cpu_seconds(all_pids(procs))
    time.sleep(seconds)
    return round(100 * (cpu_seconds(all_pids(procs)) - cpu0) / seconds, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", default="100,400,800")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=4)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--server-cpu", default="0", help="CPU(s) for the server, e.g. 0 or 0,1")
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers (with --redis)")
    parser.add_argument("--redis", action="store_true",
                        help="serve through the Redis frame bus: redis-server, flask publish, "
                             "CAMERA=redis workers (needs redis-server)")
    parser.add_argument("--server-cmd", help="another MJPEG server's command line")
    parser.add_argument("--server-cwd", default=".")
    parser.add_argument("--url", help="its stream URL (with --server-cmd)")
    parser.add_argument("--idle-check", type=float, default=0,
                        help="also measure CPU over this many seconds with no viewers")
    args = parser.parse_args()
    procs, url = start_server(args)
    ours = (f"redis-server + flask publish (CAMERA=bench) + gunicorn --workers {args.workers}"
            " (CAMERA=redis)" if args.redis else "gunicorn app:app (gevent, CAMERA=bench)")
    print(f"server: {args.server_cmd or ours} on CPU "
          f"{args.server_cpu}; client on CPU {args.client_cpu}; {args.seconds:g} s per row\n")
    print("| viewers | server CPU | us/frame | fps min / median | latency p50 / p99 ms "
          "| RSS/viewer KiB | client CPU |")
    print("|---|---|---|---|---|---|---|")
    try:
        for viewers in [int(v) for v in args.viewers.split(",")]:
            r = measure(args, procs, url, viewers)
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
                  f"{idle_cpu(procs, args.idle_check)}%")
    finally:
        stop_server(procs)


if __name__ == "__main__":
    main()
