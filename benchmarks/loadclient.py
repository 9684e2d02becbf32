"""MJPEG load client: N viewers on one epoll loop, cheap enough for one core.

Each viewer reads into one shared buffer (no per-viewer copies of frames) and finds
part boundaries with bytes.find (C speed), so any MJPEG server can be measured, with
or without Content-Length. A part counts when the boundary after it arrives; when it
carried an X-Timestamp, capture-to-receipt latency is sampled. Prints one JSON line.

    .venv/bin/python benchmarks/loadclient.py URL --viewers 400 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import statistics
import time
import urllib.parse

TS_HEADER = b"X-Timestamp:"


class Viewer:
    """One connection: HTTP chunk framing, then multipart parts, parsed as bytes arrive."""

    __slots__ = ("sock", "head", "boundary", "chunked", "chunk_left", "line", "mode", "left",
                 "headers", "tail", "counted", "ts", "frames", "failed")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = b""  # response headers, until complete
        self.boundary = b""
        self.chunked = False
        self.chunk_left = 0  # bytes of chunk data still to come (chunked responses)
        self.line = b""  # a chunk-size line split across reads
        self.mode = "scan"  # scan for a boundary | headers of a part | body of known length
        self.left = 0  # body bytes still to come
        self.headers = b""  # a part's headers, until complete
        self.tail = b""  # the end of the last scanned bytes: a boundary may straddle reads
        self.counted = True  # the part before the next boundary was counted already
        self.ts = None  # X-Timestamp of the part being received
        self.frames = 0
        self.failed = False


def connect(host: str, port: int, path: str) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode())
    sock.setblocking(False)
    return sock


def run(url: str, viewers: int, seconds: float, warmup: float) -> dict:
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    selector = selectors.EpollSelector()
    conns = []
    for _ in range(viewers):
        viewer = Viewer(connect(host, port, path))
        selector.register(viewer.sock, selectors.EVENT_READ, viewer)
        conns.append(viewer)
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    latencies: list[float] = []
    started = time.monotonic()
    measure_from, measure_to = started + warmup, started + warmup + seconds
    cpu_start = None
    while (now := time.monotonic()) < measure_to:
        if cpu_start is None and now >= measure_from:
            cpu_start = time.process_time()
            for viewer in conns:
                viewer.frames = 0
        measuring = cpu_start is not None
        for key, _ in selector.select(0.5):
            viewer = key.data
            try:
                n = viewer.sock.recv_into(view)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n == 0:
                viewer.failed = True
                selector.unregister(viewer.sock)
                continue
            if not viewer.boundary:
                viewer.head += bytes(view[:n])
                end = viewer.head.find(b"\r\n\r\n")
                if end < 0:
                    continue
                head = viewer.head[:end].decode("latin-1")
                if " 200 " not in head.split("\r\n", 1)[0] + " ":
                    viewer.failed = True
                    selector.unregister(viewer.sock)
                    continue
                marker = head.lower().index("boundary=") + len("boundary=")
                name = head[marker:].split("\r\n", 1)[0].strip().strip('"').split(";")[0]
                viewer.boundary = b"--" + name.encode()
                viewer.chunked = "transfer-encoding: chunked" in head.lower()
                body = viewer.head[end + 4:]
                buffer[:len(body)] = body
                n = len(body)
            received = time.time()
            for a, b in _dechunk(viewer, buffer, n):
                _feed(viewer, buffer, a, b, received, measuring, latencies)
    cpu = time.process_time() - (cpu_start or 0)
    for viewer in conns:
        viewer.sock.close()
    fps = sorted(v.frames / seconds for v in conns)
    latencies.sort()
    return {
        "viewers": viewers, "seconds": seconds,
        "frames": sum(v.frames for v in conns),
        "failed": sum(v.failed for v in conns),
        "without_frames": sum(v.frames == 0 for v in conns),
        "fps_min": round(fps[0], 2), "fps_median": round(statistics.median(fps), 2),
        "latency_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
        "latency_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)
        if latencies else None,
        "client_cpu_percent": round(100 * cpu / seconds, 1),
    }


def _dechunk(viewer: Viewer, buffer: bytearray, n: int):
    """The (start, end) spans of buffer[:n] that are body data, without chunk framing."""
    if not viewer.chunked:
        yield 0, n
        return
    i = 0
    while i < n:
        if viewer.chunk_left:
            take = min(viewer.chunk_left, n - i)
            yield i, i + take
            viewer.chunk_left -= take
            i += take
            continue
        end = buffer.find(b"\n", i, n)  # the CRLF after data, or a size line
        if end < 0:
            viewer.line += bytes(buffer[i:n])
            return
        line = (viewer.line + bytes(buffer[i:end])).strip()
        viewer.line = b""
        i = end + 1
        if line:
            viewer.chunk_left = int(line.split(b";")[0], 16)


def _feed(viewer: Viewer, buffer: bytearray, a: int, b: int, received: float,
          measuring: bool, latencies: list) -> None:
    """Multipart parsing of body bytes buffer[a:b]; bodies of known length are skipped,
    not scanned."""
    boundary = viewer.boundary
    while a < b:
        if viewer.mode == "body":
            take = min(viewer.left, b - a)
            viewer.left -= take
            a += take
            if viewer.left == 0:
                _part_done(viewer, received, measuring, latencies)
                viewer.mode, viewer.counted = "scan", True
        elif viewer.mode == "headers":
            end = buffer.find(b"\r\n\r\n", a, b)
            viewer.headers += bytes(buffer[a:b if end < 0 else end])
            if end < 0:
                if len(viewer.headers) > 4096:  # not a part header: resynchronise
                    viewer.mode, viewer.headers = "scan", b""
                return
            a = end + 4
            length = None
            for line in viewer.headers.split(b"\r\n"):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"x-timestamp":
                    viewer.ts = float(value)
            viewer.headers = b""
            if length is not None:
                viewer.mode, viewer.left = "body", length
                if length == 0:
                    viewer.mode = "scan"
            else:
                viewer.mode, viewer.counted = "scan", False
        else:  # scan for the boundary that ends a part of unknown length
            after = -1
            if viewer.tail:  # a boundary that started in the previous read
                joined = viewer.tail + bytes(buffer[a:a + len(boundary)])
                at = joined.find(boundary)
                if 0 <= at < len(viewer.tail):
                    after = a + at + len(boundary) - len(viewer.tail)
                viewer.tail = b""
            if after < 0:
                pos = buffer.find(boundary, a, b)
                if pos < 0:
                    viewer.tail = bytes(buffer[max(a, b - len(boundary) + 1):b])
                    return
                after = pos + len(boundary)
            if not viewer.counted:
                _part_done(viewer, received, measuring, latencies)
            viewer.mode, viewer.headers = "headers", b""
            eol = buffer.find(b"\n", after, b)  # the rest of the boundary line
            if eol < 0:
                return
            a = eol + 1


def _part_done(viewer: Viewer, received: float, measuring: bool, latencies: list) -> None:
    """One whole frame arrived."""
    if measuring:
        viewer.frames += 1
        if viewer.ts is not None:
            latencies.append(received - viewer.ts)
    viewer.ts = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--cpu", type=int, help="pin this client to one CPU core")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.viewers + 64 <= hard:  # one socket per viewer
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.viewers + 64, hard))
    print(json.dumps(run(args.url, args.viewers, args.seconds, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
