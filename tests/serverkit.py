"""Real servers and what to measure of them, for the tests and the benchmarks alike.

A server is started as a subprocess of one of the real entry points (`python app.py`,
gunicorn with gevent or gthread workers, `flask run`) on a free port, in its own process
group so it can be killed whole. `MJPEGStream` reads its multipart stream part by part
over a real socket. The figures (CPU seconds, RSS, threads, open files) are read from
/proc for a process and all its descendants.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = Path(__file__).resolve().parent / "drivers"
TICK = os.sysconf("SC_CLK_TCK")


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


_EPHEMERAL = _ephemeral_ports()


def free_port() -> int:
    """A port free to listen on, outside the kernel's range for outgoing connections:
    port 0 hands out a port from that range, and with thousands of client sockets
    open (or in TIME_WAIT) one of them can take it before the server binds it."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        if port in _EPHEMERAL:
            break
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = ""):
    """Poll `predicate` until it returns a truthy value (returned) or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}")
        time.sleep(interval)


@dataclass
class Server:
    mode: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    env: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker(self) -> int:
        """The process that owns the cameras: gunicorn's worker, else the server itself."""
        if self.mode not in ("gevent", "gthread", "dev"):
            return self.proc.pid
        return wait_until(lambda: (pid := worker_pid(self.proc.pid)) != self.proc.pid and pid,
                          message="gunicorn's worker")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, headers: dict | None = None, timeout: float = 10.0,
            method: str = "GET", source: str | None = None):
        """(status, headers, body) of one finite request (from address `source`)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                          source_address=(source, 0) if source else None)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def status(self) -> dict:
        code, _, body = self.get("/status")
        assert code == 200, body
        return json.loads(body)

    def events(self, path: str = "/events", headers: dict | None = None,
               timeout: float = 10.0) -> EventStream:
        return EventStream(self.port, path, headers, timeout)

    def stream(self, path: str = "/video_feed", headers: dict | None = None,
               timeout: float = 10.0, rcvbuf: int | None = None,
               source: str | None = None) -> MJPEGStream:
        return MJPEGStream(self.port, path, headers, timeout, rcvbuf, source)

    def kill(self) -> None:
        """Kill the server and anything it started (gunicorn's workers) at once."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{self.mode} server did not stop within {timeout} s")
        return self.proc.returncode


def server_command(mode: str, port: int) -> list[str]:
    if mode == "dev":
        return [sys.executable, "app.py"]
    if mode == "flask":
        return [sys.executable, "-m", "flask", "--app", "app", "run", "--port", str(port),
                "--host", "127.0.0.1"]
    if mode == "gevent":
        return [sys.executable, "-m", "gunicorn", "app:app"]
    if mode == "gthread":
        return [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "32",
                "app:app"]
    raise ValueError(mode)


def start_server(mode: str, tmp_path: Path, env: dict | None = None,
                 wait: bool = True, args: list[str] | None = None,
                 wrap: list[str] | None = None) -> Server:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("CAMERA", "OPENCV_", "BASIC_AUTH", "JPEG_", "STREAM_"))}
    full_env.update({
        "HOST": "127.0.0.1", "PORT": str(port), "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(DRIVERS), full_env.get("PYTHONPATH", "")]),
    })
    full_env.update(env or {})
    log_path = tmp_path / f"server-{mode}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen((wrap or []) + server_command(mode, port) + (args or []), cwd=ROOT,
                                env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(mode, port, proc, log_path, env or {})
    if wait:
        def ready():
            if proc.poll() is not None:
                raise AssertionError(f"{mode} server exited with {proc.returncode}:\n"
                                     f"{server.log()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False
        wait_until(ready, timeout=30, message=f"{mode} server on port {port}")
    return server


@dataclass
class Part:
    headers: dict
    body: bytes
    received: float  # time.time() when the part was complete


class MJPEGStream:
    """Reads a multipart/x-mixed-replace stream part by part over a real socket.

    Parts with Content-Length are read exactly; parts without it end at the next
    boundary (the advance-headers format), so such a part is returned once the next
    part's headers have arrived, as a browser would draw it.
    """

    def __init__(self, port: int, path: str, headers: dict | None, timeout: float,
                 rcvbuf: int | None = None, source: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        if rcvbuf or source:
            sock = socket.socket()
            if rcvbuf:  # a small receive buffer: a slow link, set before connecting
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source:  # another client: any 127.0.0.0/8 address is this machine's
                sock.bind((source, 0))
            sock.settimeout(timeout)
            sock.connect(("127.0.0.1", port))
            self.conn.sock = sock
        self.conn.request("GET", path, headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        content_type = self.headers.get("Content-Type", "")
        self.boundary = b"--" + content_type.partition("boundary=")[2].encode()
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.response.read1(65536)
        if not chunk:
            raise EOFError("stream ended")
        self.buffer += chunk

    def next_part(self) -> Part:
        while (start := self.buffer.find(self.boundary + b"\r\n")) < 0:
            self._fill()
        while (head_end := self.buffer.find(b"\r\n\r\n", start)) < 0:
            self._fill()
        lines = self.buffer[start + len(self.boundary) + 2:head_end].decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines if line)}
        body_start = head_end + 4
        if "content-length" in headers:
            end = body_start + int(headers["content-length"])
            while len(self.buffer) < end:
                self._fill()
        else:
            marker = b"\r\n" + self.boundary + b"\r\n"
            while (end := self.buffer.find(marker, body_start)) < 0:
                self._fill()
            # The next part's headers must be complete too: that is what a browser waits for.
            while self.buffer.find(b"\r\n\r\n", end + len(marker)) < 0:
                self._fill()
        body = self.buffer[body_start:end]
        self.buffer = self.buffer[end:]
        return Part(headers, body, time.time())

    def frames(self, n: int) -> list[Part]:
        return [self.next_part() for _ in range(n)]

    def close(self) -> None:
        # The response holds its own reference to the socket: close both, or the
        # connection stays open.
        self.response.close()
        self.conn.close()

    def __enter__(self) -> MJPEGStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class EventStream:
    """Reads a text/event-stream (Server-Sent Events) message by message over a real
    socket, as EventSource parses it: fields up to a blank line; comments kept apart."""

    def __init__(self, port: int, path: str = "/events", headers: dict | None = None,
                 timeout: float = 10.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", path, headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        self.comments: list[str] = []
        self.retry: int | None = None

    def next_event(self) -> dict:
        """The next message with an event in it: {"id", "event", "data"} (data parsed as
        JSON); `retry:` fields and comment lines on the way are kept."""
        fields: dict = {}
        while True:
            line = self.response.readline()
            if not line:
                raise EOFError("feed ended")
            line = line.decode().rstrip("\n")
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
            elif "retry" in fields:
                self.retry = int(fields.pop("retry"))
            if not line and "data" in fields:
                return {"id": int(fields["id"]) if "id" in fields else None,
                        "event": fields.get("event", "message"),
                        "data": json.loads(fields["data"])}

    def close(self) -> None:
        self.response.close()
        self.conn.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# -- figures of a running server, from /proc -------------------------------------------

def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            try:
                pids.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
        i += 1
    return pids


def worker_pid(master: int) -> int:
    """gunicorn's first worker under `master`, else `master` itself (flask run)."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return master
    return int(children[0]) if children else master


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of these processes so far: to the nanosecond from each thread's
    schedstat where the kernel keeps it (one viewer at 30 fps costs about 1 ms a second,
    a tenth of a clock tick), else user + system ticks from stat."""
    total = 0.0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
            total += sum(int((t / "schedstat").read_text().split()[0]) for t in tasks) / 1e9
        except (OSError, IndexError, ValueError):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
            except OSError:
                pass
    return total


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def thread_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def open_files(pid: int) -> dict[str, str]:
    """fd -> what it is (socket, pipe, anon_inode:[eventpoll], a path)."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def silent_viewer(port: int, path: str = "/video_feed") -> socket.socket:
    """A client that asks for the stream and then never reads a byte."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock
