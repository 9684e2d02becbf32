"""Benchmark: one client holding every connection, and what everybody else waits.

    .venv/bin/python benchmarks/connections.py --runs 3 --seconds 15

For each setting of MAX_CONNECTIONS_PER_CLIENT (`--caps`, default `off,64`) it starts the
server (`gunicorn app:app`: one gevent worker, worker_connections 2000, keepalive 5 s;
`--mode gthread`: `-k gthread --threads 32`),
then an attacker process on 127.0.0.1 that keeps `--connections` (2000) idle connections
open, sending nothing and reopening each one as soon as the server cuts or refuses it.
Meanwhile other clients, each from its own loopback address (127.0.0.2-127.0.0.5, all
local on Linux), ask for `/status` one after the other (a quarter second apart) and time
each answer from connect to the last byte; one more, from 127.0.0.6, times a stream's
first frame. Printed per run: those latencies (median, 90th percentile, worst), the
attacker's reconnections per second, the server's CPU and how long it waited for a core
(the machine's other load); then the medians of the runs.
Everything stays on 127.0.0.0/8 and stops by itself.
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from serverkit import MJPEGStream, cpu_seconds, start_server, tree  # noqa: E402

ATTACKER = "127.0.0.1"
OTHERS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
VIEWER = "127.0.0.6"


# -- the attacker (a process of its own, so its loop does not slow the measuring) ----------

def attack(port: int, connections: int, seconds: float) -> None:
    """Hold `connections` idle connections to `port` for `seconds`, reopening each one the
    moment it is cut or refused; print {"reconnects": n, "seconds": s} at the end."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, connections + 256)), hard))
    selector = selectors.DefaultSelector()

    def open_one() -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((ATTACKER, 0))
        if sock.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
            sock.close()
            return
        selector.register(sock, selectors.EVENT_READ)

    for _ in range(connections):
        open_one()
    reconnects, start = 0, time.monotonic()
    while (left := start + seconds - time.monotonic()) > 0:
        for key, _ in selector.select(min(left, 0.5)):
            sock = key.fileobj
            try:
                data = sock.recv(65536)  # a 503, or b"" when the server closed it
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data and b"Connection: close" not in data:
                continue  # part of an answer: wait for the close
            selector.unregister(sock)
            sock.close()
            open_one()
            reconnects += 1
    print(json.dumps({"reconnects": reconnects, "seconds": time.monotonic() - start}))


# -- the measuring clients -----------------------------------------------------------------

def timed_status(port: int, source: str, timeout: float = 15.0) -> float | None:
    """Seconds from connect to the whole `/status` answer, from address `source`."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(source, 0)) as sock:
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None
    return time.perf_counter() - started if data.startswith(b"HTTP/1.1 200") else None


def first_frame(port: int, source: str, timeout: float = 15.0) -> float | None:
    """Seconds from connect to a stream's first whole frame, from address `source`."""
    started = time.perf_counter()
    try:
        with MJPEGStream(port, "/video_feed", None, timeout, source=source) as stream:
            if stream.status != 200:
                return None
            stream.next_part()
    except (OSError, EOFError):
        return None
    return time.perf_counter() - started


def runqueue_seconds(pids: list[int]) -> float:
    """Seconds these processes were ready to run but waited for a core (schedstat's
    second field): on a shared machine, the part of the latency that is not ours."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return total / 1e9


def sampler(measure, port: int, source: str, until: float, pause: float,
            samples: list) -> None:
    while time.monotonic() < until:
        samples.append(measure(port, source))
        time.sleep(pause)


def one_run(cap: str, args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="bench-connections-"))
    server = start_server(args.mode, folder, {"CAMERA": "counter", "LOG_LEVEL": "ERROR",
                                             "MAX_CONNECTIONS_PER_CLIENT": cap})
    try:
        server.status()  # the worker has booted
        quiet = [timed_status(server.port, OTHERS[0]) for _ in range(20)]
        attacker = subprocess.Popen(
            [sys.executable, __file__, "--attack-port", str(server.port), "--connections",
             str(args.connections), "--attack-seconds", str(args.seconds + args.warmup)],
            stdout=subprocess.PIPE, text=True)
        time.sleep(args.warmup)  # every connection opened, the pool full (or capped)
        pids = tree(server.proc.pid)
        cpu0, wait0, t0 = cpu_seconds(pids), runqueue_seconds(pids), time.monotonic()
        until = t0 + args.seconds
        status, frames = [], []
        threads = [threading.Thread(target=sampler,
                                    args=(timed_status, server.port, a, until, 0.25, status))
                   for a in OTHERS]
        threads.append(threading.Thread(target=sampler, args=(first_frame, server.port,
                                                              VIEWER, until, 1.0, frames)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        cpu = (cpu_seconds(pids) - cpu0) / elapsed
        waited = (runqueue_seconds(pids) - wait0) / elapsed
        out, _ = attacker.communicate(timeout=args.seconds + args.warmup + 30)
        attack_figures = json.loads(out)
    finally:
        server.kill()
    return {"quiet": quiet, "status": status, "frames": frames, "cpu": cpu, "waited": waited,
            "reconnects_s": attack_figures["reconnects"] / attack_figures["seconds"]}


def summary(samples: list[float | None]) -> dict:
    ok = sorted(s for s in samples if s is not None)
    if not ok:
        return {"n": len(samples), "failed": len(samples)}
    return {"n": len(samples), "failed": len(samples) - len(ok),
            "p50": statistics.median(ok), "p90": ok[int(0.9 * (len(ok) - 1))], "max": ok[-1]}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--caps", default="off,64", help="MAX_CONNECTIONS_PER_CLIENT values")
    parser.add_argument("--mode", choices=["gevent", "gthread"], default="gevent")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--attack-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--attack-seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack_port:
        attack(args.attack_port, args.connections, args.attack_seconds)
        return

    print(f"{args.mode}: {args.connections} idle connections from {ATTACKER}, "
          "reopened as they are cut; "
          f"/status from {len(OTHERS)} other addresses, a stream's first frame from {VIEWER}")
    print("| cap | run | /status quiet p50 | /status p50 / p90 / max (failed of n) "
          "| first frame p50 / max | attacker reconnects/s | server CPU (waiting for a core) |")
    print("|---|---|---|---|---|---|---|")
    for cap in args.caps.split(","):
        rows = []
        for run in range(1, args.runs + 1):
            result = one_run(cap, args)
            quiet, status, frames = (summary(result[k]) for k in ("quiet", "status", "frames"))
            rows.append((quiet, status, frames, result))
            print(f"| {cap} | {run} | {ms(quiet.get('p50'))} | {ms(status.get('p50'))} / "
                  f"{ms(status.get('p90'))} / {ms(status.get('max'))} ({status['failed']} of "
                  f"{status['n']}) | {ms(frames.get('p50'))} / {ms(frames.get('max'))} | "
                  f"{result['reconnects_s']:.0f} | {result['cpu']:.0%} ({result['waited']:.0%}) |",
                  flush=True)

        def med(i: int, key: str):
            values = [r[i][key] for r in rows if key in r[i]]
            return statistics.median(values) if values else None
        print(f"| {cap} | median | {ms(med(0, 'p50'))} | {ms(med(1, 'p50'))} / "
              f"{ms(med(1, 'p90'))} / {ms(med(1, 'max'))} | {ms(med(2, 'p50'))} / "
              f"{ms(med(2, 'max'))} | "
              f"{statistics.median(r[3]['reconnects_s'] for r in rows):.0f} | "
              f"{statistics.median(r[3]['cpu'] for r in rows):.0%} "
              f"({statistics.median(r[3]['waited'] for r in rows):.0%}) |", flush=True)


if __name__ == "__main__":
    main()
