"""Soak: run the server for N minutes under connection churn and print its memory,
threads and file descriptors over time. Not part of the test run.

    .venv/bin/python benchmarks/soak.py --minutes 10 [--mode gevent|gthread] [--churn-rate 20]

Long viewers stay connected throughout; around them, short viewers come and go (some
mid-frame, some before the response), snapshots and status requests, page-reload
bursts, and viewers that never read (dropped after STREAM_SEND_TIMEOUT). Everything
runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serverkit import fd_count, open_files, rss_kib, silent_viewer, start_server, thread_count  # noqa: E402


def figures(pid: int) -> tuple[float, int, int]:
    """RSS MiB, threads, open file descriptors of `pid`."""
    return rss_kib([pid]) / 1024, thread_count(pid), fd_count(pid)


class Load:
    """The clients. Counters are only approximate under races; they are for reading."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        self.port, self.stop = port, stop
        self.long_frames: list[int] = []
        self.churn = 0
        self.errors = 0

    def request(self, path: str) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", path)
        return conn.getresponse()

    def short_viewer(self) -> None:
        kind = random.random()
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"GET /video_feed HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if kind < 0.2:
                return  # gone before the response
            wanted = random.randint(1, 200_000)  # up to a few frames, often mid-frame
            got = 0
            while got < wanted:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += len(chunk)

    def silent_viewer(self) -> None:
        sock = silent_viewer(self.port)
        self.stop.wait(15)  # never reads: the server must drop it by itself
        sock.close()

    def churner(self, rate: float, deadline: float) -> None:
        while not self.stop.is_set() and time.monotonic() < deadline:
            choice = random.random()
            try:
                if choice < 0.70:
                    self.short_viewer()
                elif choice < 0.80:
                    self.request("/snapshot.jpg").read()
                elif choice < 0.90:
                    self.request("/status").read()
                elif choice < 0.97:
                    for _ in range(10):  # a page reload burst
                        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                            s.sendall(b"GET /video_feed HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                else:
                    threading.Thread(target=self.silent_viewer, daemon=True).start()
                self.churn += 1
            except OSError:
                self.errors += 1
            time.sleep(random.expovariate(rate))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--mode", choices=["gevent", "gthread"], default="gevent")
    parser.add_argument("--long-viewers", type=int, default=5)
    parser.add_argument("--churn-rate", type=float, default=20, help="connections per second")
    parser.add_argument("--interval", type=float, default=10, help="seconds between lines")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    events = folder / "events"
    server = start_server(args.mode, folder, {
        "CAMERA": "counter", "COUNTER_FPS": "30", "COUNTER_PAD": "40000",
        "STREAM_SEND_TIMEOUT": "5", "CAMERA_IDLE_TIMEOUT": "3", "DRIVER_EVENTS": str(events),
        "LOG_LEVEL": "WARNING"})
    port = server.port
    try:
        # The master listens before its worker has booted: wait for an answer, so the
        # "before" figures include the worker's own start-up files.
        for _ in range(100):
            try:
                server.status()
                break
            except OSError:
                time.sleep(0.1)
        pid = server.worker()
        idle, idle_files = figures(pid), open_files(pid)
        stop = threading.Event()
        load = Load(port, stop)
        load.long_frames = [0] * args.long_viewers
        streams = [load.request("/video_feed") for _ in range(args.long_viewers)]
        counter_threads = []
        for index, response in enumerate(streams):
            def read(response=response, index=index):
                while not stop.is_set() and response.read1(65536):
                    load.long_frames[index] += 1  # reads, roughly frames at these sizes
            counter_threads.append(threading.Thread(target=read, daemon=True))
        for t in counter_threads:
            t.start()
        deadline = time.monotonic() + args.minutes * 60
        churners = [threading.Thread(target=load.churner, args=(args.churn_rate / 4, deadline),
                                     daemon=True) for _ in range(4)]
        for t in churners:
            t.start()
        print(f"soak: {args.mode} server pid {pid}, {args.long_viewers} long viewers, "
              f"~{args.churn_rate:g} connections/s for {args.minutes:g} min")
        print(f"idle before: RSS {idle[0]:.1f} MiB, threads {idle[1]}, fds {idle[2]}")
        print("   time  RSS MiB  threads  fds  viewers  frames captured  churn  errors")
        started, rows = time.monotonic(), []
        while time.monotonic() < deadline:
            time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))
            status = server.status()
            row = figures(pid)
            rows.append(row)
            print(f"{time.monotonic() - started:6.0f}s  {row[0]:7.1f}  {row[1]:7d}  {row[2]:3d}"
                  f"  {status['viewers']:7d}  {status['frames_captured']:15d}  {load.churn:5d}"
                  f"  {load.errors:6d}", flush=True)
        stop.set()
        for t in churners + counter_threads:
            t.join(15)  # readers see the stop at their next chunk
        for response in streams:
            response.close()
        idle_deadline = time.monotonic() + 30
        while time.monotonic() < idle_deadline:  # viewers gone, idle timeout passed
            status = server.status()
            if status["viewers"] == 0 and not status["running"]:
                break
            time.sleep(0.5)
        end = figures(pid)
        while end[1] > idle[1] and time.monotonic() < idle_deadline:
            time.sleep(0.2)  # the capture threads end just after it reports stopped
            end = figures(pid)
        starts = events.read_text().split().count("start")
        print(f"idle after:  RSS {end[0]:.1f} MiB, threads {end[1]}, fds {end[2]}")
        print(f"capture runs during the soak: {starts} (one expected: long viewers stayed)")
        first = rows[min(len(rows) - 1, max(0, int(60 / args.interval) - 1))]
        growth = rows[-1][0] - first[0]
        ok = starts == 1 and end[1] == idle[1] and end[2] <= idle[2] + 2 and growth < 5
        print(f"RSS growth after the first minute: {growth:+.1f} MiB; "
              f"leak check: {'OK' if ok else 'FAILED'}")
        extra = {fd: what for fd, what in open_files(pid).items() if fd not in idle_files}
        if extra:
            print("open since before the soak:", ", ".join(sorted(extra.values())))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
