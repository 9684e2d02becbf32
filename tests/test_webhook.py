"""Motion webhooks against real local HTTP receivers (http.server on 127.0.0.1): one that
answers, one that fails and then answers, one that hangs (the sender gives up after its
timeout; publishing is never held up), one that is down (connection refused: retried,
counted), and a URL whose password and token never show in the status or the log.
The last test runs the sender in a gevent-patched process, as under gunicorn.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from conftest import ROOT, wait_until

from events import EventBus
from events.webhook import Webhook, for_cameras, payload, split_credentials

FAST = {"timeout": 1.0, "backoff": (0.05, 0.1)}  # the defaults are 5 s and (1 s, 2 s)


class Receiver:
    """A webhook receiver: answers each POST with the next of `answers` (an HTTP status,
    or "hang": never answers until the test ends), the last one from then on."""

    def __init__(self, answers: list = (204,)) -> None:
        self.answers = list(answers)
        self.posts: list[dict] = []
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append({"path": self.path, "headers": dict(self.headers),
                                       "json": json.loads(body)})
                answer = receiver.answers.pop(0) if len(receiver.answers) > 1 \
                    else receiver.answers[0]
                if answer == "hang":
                    receiver.released.wait(30)
                    return
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def factory(answers: list = (204,)) -> Receiver:
        made.append(Receiver(answers))
        return made[-1]

    yield factory
    for receiver in made:
        receiver.close()


@pytest.fixture
def hooks():
    made: list[Webhook] = []

    def factory(url: str, bus: EventBus, **options) -> Webhook:
        made.append(Webhook("door", url, bus, **{**FAST, **options}).start())
        return made[-1]

    yield factory
    for hook in made:
        hook.close(wait=0)


def down_url() -> str:
    """A port nobody listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/hook"


def motion(state: str, camera: str = "door", score: float = 3.5) -> dict:
    return {"camera": camera, "state": state, "time": 1700000000.5, "score": score,
            "clip": "/camera/door/recordings/door-20231114-221320-event.mkv" if
            state == "end" else None, "snapshot": None}


def test_each_motion_event_of_its_camera_is_posted_as_json(receivers, hooks):
    receiver, bus = receivers(), EventBus()
    hook = hooks(receiver.url, bus)
    bus.publish("motion", motion("start"))
    bus.publish("recording", {"camera": "door", "state": "start"})  # not a motion event
    bus.publish("motion", motion("start", camera="garden"))  # not its camera
    bus.publish("motion", motion("end"))
    wait_until(lambda: hook.sent == 2, timeout=10, message="two posts delivered")
    assert [post["json"] for post in receiver.posts] == [
        {"camera": "door", "event": "motion_start", "time": 1700000000.5, "score": 3.5,
         "clip": None, "snapshot": None},
        {"camera": "door", "event": "motion_end", "time": 1700000000.5, "score": 3.5,
         "clip": "/camera/door/recordings/door-20231114-221320-event.mkv",
         "snapshot": None}]
    assert receiver.posts[0]["headers"]["Content-Type"] == "application/json"
    assert hook.status() == {"url": receiver.url, "sent": 2, "failed": 0, "dropped": 0,
                             "queued": 0, "last_error": None}


def test_a_receiver_that_fails_for_a_moment_gets_the_event_on_a_later_try(receivers,
                                                                         hooks):
    receiver, bus = receivers([503, 500, 204]), EventBus()
    hook = hooks(receiver.url, bus)
    bus.publish("motion", motion("start"))
    wait_until(lambda: hook.sent == 1, timeout=10, message="delivered on the third try")
    assert len(receiver.posts) == 3 and hook.failed == 0 and hook.last_error is None


def test_a_receiver_that_refuses_the_event_is_not_asked_again(receivers, hooks):
    receiver, bus = receivers([404]), EventBus()
    hook = hooks(receiver.url, bus)
    bus.publish("motion", motion("start"))
    wait_until(lambda: hook.failed == 1, timeout=10, message="a refused post counted")
    assert len(receiver.posts) == 1 and hook.last_error == "HTTP 404 Not Found (1 try)"


def test_a_receiver_that_is_down_is_tried_three_times_and_counted(hooks, caplog):
    caplog.set_level(logging.INFO, "events")
    bus = EventBus()
    hook = hooks(down_url(), bus)
    bus.publish("motion", motion("start"))
    bus.publish("motion", motion("end"))
    wait_until(lambda: hook.failed == 2, timeout=10, message="two failed posts counted")
    assert hook.sent == 0 and hook.last_error == "Connection refused (3 tries)"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first failure of a run; the second is in the status
    assert "motion_start not delivered: Connection refused (3 tries)" in warnings[0].message


def test_a_receiver_that_hangs_is_given_up_after_the_timeout_and_never_holds_up_a_publish(
        receivers, hooks):
    receiver, bus = receivers(["hang"]), EventBus()
    hook = hooks(receiver.url, bus, timeout=0.5, backoff=(0.05,), queue=10)
    began = time.monotonic()
    bus.publish("motion", motion("start"))
    wait_until(lambda: receiver.posts, timeout=5, message="the first post under way")
    for _ in range(29):  # while the receiver holds the first: the detector goes on
        bus.publish("motion", motion("start"))
    published = time.monotonic() - began
    assert published < 0.25 and not hook.failed  # in well under the receiver's timeout
    wait_until(lambda: hook.failed == 1, timeout=10, message="the hanging post given up")
    assert time.monotonic() - began >= 2 * 0.5  # two tries, each waited for its timeout
    assert hook.last_error == "no answer within 0.5 s (2 tries)"
    wait_until(lambda: hook.dropped == 19, timeout=5,
               message="the queue's oldest dropped: 29 waited, 10 kept")
    assert hook.status()["queued"] <= 10


def test_the_password_and_token_of_the_url_never_show_in_the_status_or_the_log(
        receivers, hooks, caplog):
    caplog.set_level(logging.DEBUG, "events")
    receiver, bus = receivers([204, 500]), EventBus()
    url = receiver.url.replace("http://", "http://cam:pa55-w0rd@") + "?token=t0ken-abc"
    hook = hooks(url, bus)
    bus.publish("motion", motion("start"))
    wait_until(lambda: hook.sent == 1, timeout=10)
    auth = receiver.posts[0]["headers"]["Authorization"]
    assert base64.b64decode(auth.split()[1]) == b"cam:pa55-w0rd"  # sent as Basic auth
    assert receiver.posts[0]["path"] == "/hook?token=t0ken-abc"
    bus.publish("motion", motion("end"))
    wait_until(lambda: hook.failed == 1, timeout=10)
    shown = json.dumps(hook.status())
    assert "cam:***@127.0.0.1" in shown and "token=***" in shown
    everything = shown + caplog.text
    assert "pa55-w0rd" not in everything and "t0ken-abc" not in everything
    assert "HTTP 500" in caplog.text


def test_credentials_leave_the_url_for_a_basic_auth_header():
    assert split_credentials("https://a%40b:p%3Aw@hook.example:8443/x?y=1") == (
        "https://hook.example:8443/x?y=1",
        {"Authorization": "Basic " + base64.b64encode(b"a@b:p:w").decode()})
    assert split_credentials("http://hook.example/x") == ("http://hook.example/x", {})


def test_close_ends_the_sender_within_a_second_and_closing_the_bus_at_once(receivers):
    for closing in ("hook", "bus"):
        bus = EventBus()
        hook = Webhook("door", receivers().url, bus, **FAST).start()
        bus.publish("motion", motion("start"))
        wait_until(lambda: hook.sent == 1, timeout=10)  # now it waits for the next
        began = time.monotonic()
        if closing == "bus":
            bus.close()  # the server shuts down
        hook.close(wait=5)
        assert hook._done.is_set() and bus.subscribers == 0
        assert time.monotonic() - began < (1.5 if closing == "hook" else 0.5)


def test_cameras_with_a_motion_webhook_get_a_sender_the_others_none(receivers, app_client):
    bus = EventBus()
    cameras = {name: SimpleNamespace(settings=SimpleNamespace(motion_webhook=url))
               for name, url in (("door", receivers().url), ("garden", None))}
    hooks = for_cameras(cameras, bus)
    try:
        assert list(hooks) == ["door"] and bus.subscribers == 1
    finally:
        hooks["door"].close()
    assert app_client().get("/status").json["webhook"] is None


def test_the_payload_names_the_event_by_its_state():
    bus = EventBus()
    with bus.subscribe() as feed:
        bus.publish("motion", motion("end"))
        [event] = feed.next_events(0)
    assert payload(event)["event"] == "motion_end"


# -- under gevent's monkey-patching ---------------------------------------------------------

MONKEY_PATCHED = r"""
from gevent import monkey
monkey.patch_all()

import json
import sys
import gevent
from capture import native
from events import EventBus
from events.webhook import Webhook

bus = EventBus()  # in the hub's thread, as Cameras builds it
hook = Webhook("door", sys.argv[1], bus, timeout=2.0, backoff=(0.05,)).start()
ticks = []


def ticker():  # the hub keeps running while the sender waits for its receiver
    while hook.sent < 2:
        ticks.append(1)
        gevent.sleep(0.01)


def detector():
    bus.publish("motion", {"camera": "door", "state": "start", "time": 1.0})
    bus.publish("motion", {"camera": "door", "state": "end", "time": 2.0})


native.start_thread(detector, ())
gevent.spawn(ticker).join(20)
hook.close(wait=2)
print(json.dumps({"sent": hook.sent, "ticks": len(ticks)}))
"""


def test_under_gevent_the_sender_posts_from_its_own_thread_while_the_hub_runs(receivers):
    receiver = receivers()
    proc = subprocess.run([sys.executable, "-c", MONKEY_PATCHED, receiver.url], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["sent"] == 2 and result["ticks"] > 0
    assert [p["json"]["event"] for p in receiver.posts] == ["motion_start", "motion_end"]
