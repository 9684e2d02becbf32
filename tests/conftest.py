"""Test fixtures: servers started per test, in-process apps, system-tool checks.

The servers and what to measure of them live in serverkit.py (shared with the
benchmarks). Servers get `tests/drivers` on PYTHONPATH, so test drivers load through
CAMERA like a user's own driver would.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from serverkit import (  # noqa: F401 - the tests' names for them
    DRIVERS,
    ROOT,
    MJPEGStream,
    Part,
    Server,
    fd_count,
    free_port,
    rss_kib,
    silent_viewer,
    start_server,
    thread_count,
    wait_until,
    worker_pid,
)

MODES = ["gevent", "gthread", "flask"]
IN_CI = os.environ.get("CI", "").lower() == "true"


def events(path) -> list[str]:
    """What the test drivers recorded (DRIVER_EVENTS): "start", "stop", ..."""
    return path.read_text().split() if path.exists() else []


def need_tool(name: str) -> str:
    """Path of a system tool; skip without it, except in CI where it is a failure."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI but is not installed")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture
def servers(tmp_path):
    """Factory: servers(mode, env) starts a server; all are stopped after the test."""
    started: list[Server] = []

    def factory(mode: str, env: dict | None = None, **kwargs) -> Server:
        server = start_server(mode, tmp_path, env, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.kill()


@pytest.fixture
def app_client():
    """Factory: app_client(env) builds the app in this process (HTTP rules need no real
    server) and returns Flask's test client; its cameras are closed after the test."""
    if str(DRIVERS) not in sys.path:
        sys.path.insert(0, str(DRIVERS))
    import app as app_module
    from server import config
    from server import process as server_module

    apps = []

    def factory(env: dict | None = None):
        application = app_module.create_app(config.load({"CAMERA": "counter", **(env or {})}))
        apps.append(application)
        return application.test_client()

    yield factory
    for application in apps:
        server_module.shutdown(application, wait=2.0)


@pytest.fixture(params=MODES)
def mode(request) -> str:
    """Run a test once per server mode: gunicorn gevent, gunicorn gthread, flask run."""
    return request.param


def assert_keeps_up(numbers: list[int], share: float = 0.8) -> None:
    """What a viewer notices: frames in capture order, none twice, and at least `share`
    of the camera's frames over the span it watched (0.8 of 30 fps: 24 fps). Newest-frame
    delivery may skip a frame on a machine busy with other tests; exact counts are for
    the unit tests (test_fanout.py)."""
    assert all(a < b for a, b in zip(numbers, numbers[1:])), numbers
    span = numbers[-1] - numbers[0] + 1
    assert len(numbers) >= share * span, f"{len(numbers)} of {span} frames: {numbers}"


def frame_number(jpeg: bytes) -> int | None:
    """The number the test drivers write into each JPEG's comment segment."""
    i = jpeg.find(b"frame=", 0, 64)
    if i < 0:
        return None
    return int(jpeg[i + 6:jpeg.index(b";", i)])
