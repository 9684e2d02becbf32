"""Hardening: no secret leaks, no stuck slots or threads, clear start-up errors, and
`python app.py` is the production server."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, events, free_port, start_server, thread_count, wait_until
from test_config import run_to_exit

from base_camera import PLACEHOLDER_JPEG

# -- secrets -------------------------------------------------------------------------------

@pytest.mark.parametrize("env,secret", [
    ({"CAMERA": "opencv", "OPENCV_CAMERA_SOURCE": "rtsp://user:s3cretpw@127.0.0.1:{port}/live"},
     "s3cretpw"),
    ({"CAMERA": "redis", "REDIS_URL": "redis://:hunter22pw@127.0.0.1:{port}/0"}, "hunter22pw"),
])
def test_a_source_outage_never_shows_or_logs_the_password(servers, env, secret):
    port = free_port()  # nothing listens there: every attempt fails
    env = {k: v.format(port=port) for k, v in env.items()}
    server = servers("gevent", {**env, "CAMERA_STALL_TIMEOUT": "1"})
    code, _, body = server.get("/snapshot.jpg")
    assert code == 503 and b"127.0.0.1" in body and secret.encode() not in body
    status = server.status()
    assert status["error"] and "***" in status["error"] and secret not in status["error"]
    page = server.get("/")[2]
    assert secret.encode() not in page
    # The driver is retried with backoff (1 s, 2 s): each retry's log lines too.
    wait_until(lambda: server.log().count("restarting the driver") >= 2, timeout=10,
               message="two retries logged")
    assert secret not in server.log()


def test_redis_down_never_shows_its_password_in_any_answer_or_log_line(servers):
    secret = "hunter22pw"
    port = free_port()  # nothing listens there
    server = servers("gevent", {"CAMERA": "redis",
                                "REDIS_URL": f"redis://:{secret}@127.0.0.1:{port}/0"})
    answers = [server.get("/status")]  # first: before the capture thread saw the outage
    for path in ("/camera/camera/event", "/camera/camera/record", "/camera/camera/record/stop"):
        answers.append(server.get(path, method="POST"))
        assert answers[-1][0] == 503 and b"Redis at redis://:***@127.0.0.1" in answers[-1][2]
    answers += [server.get("/snapshot.jpg"), server.get("/status"), server.get("/"),
                server.get("/camera/camera/status")]
    for code, headers, body in answers:
        assert secret.encode() not in body and secret not in str(headers), body
    assert "***" in server.status()["error"]
    wait_until(lambda: "restarting the driver" in server.log(), timeout=10,
               message="the outage logged")
    assert "Redis at redis://:***@127.0.0.1" in server.log() and secret not in server.log()


# -- Host names, proxies -------------------------------------------------------------------

def test_a_dns_rebinding_page_cannot_record_or_read_on_a_real_server(servers):
    server = servers("gevent", {"CAMERA": "counter", "RECORD_MODE": "events"})
    page = {"Host": f"attacker.example:{server.port}",
            "Origin": f"http://attacker.example:{server.port}"}
    code, _, body = server.get("/camera/camera/event", headers=page, method="POST")
    assert code == 400 and body == (b"400 Bad Request: Host 'attacker.example' is not one this "
                                    b"server answers to; add it to ALLOWED_HOSTS\n")
    assert server.get("/snapshot.jpg", headers={"Host": "attacker.example"})[0] == 400
    own = {"Host": f"127.0.0.1:{server.port}", "Origin": f"http://127.0.0.1:{server.port}"}
    assert server.get("/camera/camera/event", headers=own, method="POST")[0] == 202
    wait_until(lambda: server.log().count("refused Host 'attacker.example' from 127.0.0.1") == 2,
               timeout=5, message="one line per refusal")


@pytest.mark.parametrize("host,warned", [("0.0.0.0", True), ("127.0.0.1", False)])
def test_proxy_hops_on_an_address_reachable_without_the_proxy_warns_once(servers, host, warned):
    server = servers("dev", {"CAMERA": "counter", "PROXY_HOPS": "1", "HOST": host})
    wait_until(lambda: "Booting worker" in server.log(), timeout=10, message="the worker")
    assert server.get("/status")[0] == 200
    lines = [line for line in server.log().splitlines() if "PROXY_HOPS=1" in line]
    assert len(lines) == (1 if warned else 0), server.log()
    if warned:
        assert "WARNING" in lines[0] and "HOST=0.0.0.0" in lines[0]
        assert "set HOST=127.0.0.1" in lines[0]


# -- viewers that left, drivers that never return, snapshots -------------------------------

def partial_viewer(port: int, path: str) -> socket.socket:
    """A client that reads the response head and first part, then goes quiet."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while data.count(b"Content-Type: image/jpeg") < 1 or len(data) < 2000:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the stream: {data[:200]!r}"
        data += chunk
    return sock


def test_viewers_that_left_are_released_within_5_s_whatever_their_fps(servers, mode, tmp_path):
    log = tmp_path / "events"
    server = servers(mode, {"CAMERA": "counter", "COUNTER_FPS": "20", "MAX_CLIENTS": "2",
                            "CAMERA_IDLE_TIMEOUT": "0.5", "DRIVER_EVENTS": str(log)})
    for _ in range(2):  # twice: slots released once are taken and released again
        gone = [partial_viewer(server.port, "/video_feed?fps=0.01") for _ in range(2)]
        assert server.get("/video_feed?fps=0.01", timeout=5)[0] == 503  # both slots taken
        for sock in gone:
            sock.close()
        started = time.monotonic()
        wait_until(lambda: server.status()["viewers"] == 0, timeout=5,
                   message="the closed viewers released")
        assert time.monotonic() - started < 5
        with server.stream("/video_feed") as stream:
            assert stream.status == 200
            stream.next_part()
        wait_until(lambda: server.status()["viewers"] == 0, timeout=5)
    wait_until(lambda: events(log)[-1:] == ["stop"], timeout=5, message="the camera stopped")


def test_a_driver_stuck_for_ever_is_never_run_twice_and_leaks_no_threads(servers, tmp_path):
    log = tmp_path / "events"
    server = servers("gevent", {"CAMERA": "stuck", "CAMERA_IDLE_TIMEOUT": "0.2",
                                "CAMERA_STALL_TIMEOUT": "0.5", "DRIVER_EVENTS": str(log)})
    pid = server.worker()
    server.status()
    threads_idle = thread_count(pid)
    with server.stream() as stream:
        stream.frames(3)
        assert stream.next_part().body == PLACEHOLDER_JPEG  # stalled: told at once
    for _ in range(6):  # idle stop, then a viewer again, while the driver stays stuck
        wait_until(lambda: server.status()["viewers"] == 0 and not server.status()["running"],
                   timeout=5, message="idle")
        with server.stream() as stream:
            assert stream.next_part().body == PLACEHOLDER_JPEG
        assert thread_count(pid) <= threads_idle + 3  # the stuck one, a run's watchdog
    status = wait_until(lambda: (s := server.status())["stuck"] and s, timeout=5,
                        message="reported stuck")
    assert "stuck" in status["error"] and status["running"] is False
    assert events(log) == ["start"]  # frames() was never called again
    wait_until(lambda: thread_count(pid) <= threads_idle + 1, timeout=5,
               message="only the stuck thread left")


def test_a_waiting_snapshot_is_not_counted_against_max_clients(servers, tmp_path):
    log = tmp_path / "events"  # a camera that opens but gives no frame: snapshots wait
    server = servers("gevent", {"CAMERA": "stuck", "STUCK_AFTER": "0", "MAX_CLIENTS": "1",
                                "DRIVER_EVENTS": str(log)})
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(server.get("/snapshot.jpg")[0]))
    waiting.start()
    wait_until(lambda: events(log) == ["start"], timeout=5, message="the snapshot waits")
    assert waiting.is_alive()  # the snapshot still waits for a frame that never comes
    with server.stream() as stream:
        assert stream.status == 200
    waiting.join(10)
    assert answers == [503]


# -- start-up errors -----------------------------------------------------------------------

@pytest.mark.parametrize("name,value", [
    ("STREAM_SEND_TIMEOUT", "1e10"), ("CORS_ALLOW_ORIGIN", "https://a.example\nX-Evil: 1"),
    ("CORS_ALLOW_ORIGIN", "https://a.example/path"), ("HOST", "999.1.1.1"),
    ("HOST", "no-such-host.invalid"), ("CAMERAS_FILE", "/nonexistent/cameras.toml"),
])
@pytest.mark.parametrize("mode", ["dev", "gevent"])
def test_values_that_used_to_fail_later_stop_the_server_at_start(tmp_path, mode, name, value):
    code, output = run_to_exit(mode, {name: value}, tmp_path)
    assert code != 0 and "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and name in errors[0], output
    assert "Booting worker" not in output


def test_values_checked_by_config_stop_flask_run_too(tmp_path):
    code, output = run_to_exit("flask", {"STREAM_SEND_TIMEOUT": "1e10"}, tmp_path)
    assert code != 0 and "Traceback" not in output
    assert "error: STREAM_SEND_TIMEOUT='1e10': expected a number > 0 and <= 3600" in output


@pytest.mark.parametrize("mode", ["dev", "gevent"])
def test_a_port_in_use_is_one_line_before_anything_says_serving(tmp_path, mode):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(mode, tmp_path, {"PORT": str(port)}, wait=False)
        started = time.monotonic()
        code = server.proc.wait(15)
        output = server.log()
    assert time.monotonic() - started < 5, "gunicorn retried the bind"
    assert code != 0 and "Traceback" not in output
    assert f"error: PORT={port}: 127.0.0.1:{port} is already in use" in output
    assert "Listening at" not in output and "Booting worker" not in output


def test_gunicorn_from_another_folder_warns_that_it_runs_without_the_settings(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--pythonpath", str(ROOT),
                             "-b", f"127.0.0.1:{port}", "app:app"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        line = wait_until(lambda: next((line for line in iter(proc.stdout.readline, "")
                                        if "without this project's settings" in line), None),
                          timeout=20, message="the warning")
    finally:
        proc.kill()
        proc.wait()
    assert f"--config {ROOT / 'gunicorn.conf.py'}" in line


def test_python_app_py_is_gunicorn_with_a_gevent_worker_that_cuts_slow_clients(servers):
    server = servers("dev", {"CAMERA": "counter"})
    wait_until(lambda: "Booting worker" in server.log(), timeout=10, message="the worker")
    log = server.log()
    assert "Using worker: gevent" in log and "development server" not in log
    slow = []
    for _ in range(20):  # slowloris: headers that never end
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
        slow.append(sock)
    started = time.monotonic()
    for sock in slow:
        assert sock.recv(1024) == b""  # the server hung up (keepalive = 5 s)
        sock.close()
    assert time.monotonic() - started < 8
    assert server.get("/status")[0] == 200


def test_the_shutdown_log_says_how_long_it_waited_for_each_stuck_driver(tmp_path, caplog,
                                                                        monkeypatch):
    """Two stuck drivers share the shutdown's wait: the second is left only a sliver of
    it, but the server did wait the whole time for it, and the log says so."""
    import sys as _sys

    from conftest import DRIVERS

    from server import config
    from server.cameras import Cameras

    if str(DRIVERS) not in _sys.path:
        _sys.path.insert(0, str(DRIVERS))
    monkeypatch.setenv("STUCK_AFTER", "0")  # each driver blocks in C at once
    monkeypatch.setenv("DRIVER_EVENTS", str(tmp_path / "events"))
    path = tmp_path / "cameras.toml"
    path.write_text('[cameras.a]\ndriver = "stuck"\n[cameras.b]\ndriver = "stuck"\n')
    cameras = Cameras.build(config.load({"CAMERAS_FILE": str(path),
                                         "RECORDINGS_DIR": str(tmp_path / "rec")}))
    for name in ("a", "b"):
        cameras[name].subscribe()
    wait_until(lambda: events(tmp_path / "events") == ["start", "start"], timeout=5,
               message="both drivers started")
    caplog.set_level("WARNING", logger="base_camera")
    cameras.close(wait=0.5)
    waited = [float(m.split("within ")[1].split(" s")[0]) for m in caplog.messages
              if "did not stop within" in m]
    assert len(waited) == 2 and all(w >= 0.5 for w in waited), caplog.messages
