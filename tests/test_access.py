"""Access and redaction: Basic auth, lockout, CORS, cross-site refusal, masked logs.

In-process, with Flask's test client on a small app shaped like the real one; the client
address varies through REMOTE_ADDR. The shared-lockout test starts a real redis-server.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import traceback

import pytest
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from server import access, redact

USER, PASSWORD = "admin", "correct horse 42"
ATTACKER, NEIGHBOUR = "203.0.113.7", "198.51.100.2"
DASH, OTHER_DASH, EVIL = "https://dash.example", "https://b.example", "https://evil.example"
IN_CI = os.environ.get("CI", "").lower() == "true"
# What a fail2ban filter matches, on the line as the app's log format writes it.
APP_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FAIL2BAN = re.compile(r"^\S+ \S+ WARNING access: failed login from (?P<host>[0-9A-Fa-f.:]+) \(")


def basic(user: str | bytes, password: str | bytes) -> dict[str, str]:
    raw = (user if isinstance(user, bytes) else user.encode()) + b":" + (
        password if isinstance(password, bytes) else password.encode())
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


GOOD = basic(USER, PASSWORD)
WRONG = basic(USER, "hunter2-guess")


def make_app(**options) -> Flask:
    """The real app's URLs, with stand-in bodies."""
    app = Flask(__name__)
    access.install(app, **{"username": USER, "password": PASSWORD, "cors_origins": (),
                           **options})

    @app.route("/")
    def index():
        if request.args.get("action") == "snapshot":
            return Response(b"\xff\xd8jpeg\xff\xd9", mimetype="image/jpeg")
        return "viewer page"

    @app.route("/status")
    def status():
        return jsonify(running=True)

    @app.route("/video_feed")
    def video_feed():
        return Response(b"--frame\r\n", mimetype="multipart/x-mixed-replace; boundary=frame")

    @app.route("/snapshot.jpg")
    def snapshot():
        return Response("503 Service Unavailable: no frame\n", 503, {"Retry-After": "5"},
                        mimetype="text/plain")

    @app.route("/recordings", methods=["POST"])
    def record():
        return "recording\n", 201

    @app.route("/recordings/<name>", methods=["DELETE"])
    def delete(name):
        return "", 204

    return app


def call(app: Flask, path: str = "/", addr: str = "127.0.0.1", method: str = "GET",
         headers: dict | None = None):
    return app.test_client().open(path, method=method, headers=headers or {},
                                  environ_base={"REMOTE_ADDR": addr})


def access_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "access"]


def wait_until(predicate, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(0.05)
    return value


@pytest.fixture(autouse=True)
def _capture_everything(caplog):
    caplog.set_level(logging.DEBUG)


# -- redact ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("rtsp://user:secret@host/stream", "rtsp://user:***@host/stream"),
    ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
    ("rediss://default:s3cr3t@cache.example:6380", "rediss://default:***@cache.example:6380"),
    ("mqtt+ssl://cam:pa%3Ass%2F%23w0rd@broker:8883/t", "mqtt+ssl://cam:***@broker:8883/t"),
    ("opening 'http://u:p!$&()*+,;=x@10.0.0.9:8080/video?x=1'",
     "opening 'http://u:***@10.0.0.9:8080/video?x=1'"),
    ("rtsp://a@b.example:pw@cam/", "rtsp://a@b.example:***@cam/"),  # e-mail as user name
    ("rtsp://u:p@ss@cam/live", "rtsp://u:***@cam/live"),  # unencoded @: masked whole
])
def test_url_passwords_are_masked_whatever_the_scheme(text, expected):
    assert redact.redact(text) == expected


def test_several_urls_in_one_message_are_all_masked():
    text = ("failover from rtsp://cam:one1@10.0.0.1/a to rtsp://cam:two2@10.0.0.2 "
            "and redis://:three3@redis:6379/0,http://x:four4@h?token=five5&fps=2")
    masked = redact.redact(text)
    assert all(s not in masked for s in ("one1", "two2", "three3", "four4", "five5"))
    assert masked == ("failover from rtsp://cam:***@10.0.0.1/a to rtsp://cam:***@10.0.0.2 "
                      "and redis://:***@redis:6379/0,http://x:***@h?token=***&fps=2")


@pytest.mark.parametrize("name", ["password", "passwd", "pass", "pwd", "token", "secret",
                                  "key", "api_key", "apikey", "auth", "PASSWORD", "Token",
                                  "access_token", "x-api-key"])
def test_password_style_parameters_are_masked(name):
    text = f"GET /video_feed?fps=2&{name}=s3cr%40t&x=1 HTTP/1.1"
    assert redact.redact(text) == f"GET /video_feed?fps=2&{name}=***&x=1 HTTP/1.1"
    assert redact.redact(f"{name}='a b' next") == f"{name}='***' next"


@pytest.mark.parametrize("text", [
    "", "camera started: 1280x720 at 30 fps, ratio 16:9, at 12:30@home",
    "GET /snapshot.jpg?1700000000000 HTTP/1.1 200", "mail admin@example.org, passthrough=1",
    "http://camera.local:5000/video_feed?advance_headers=1", "rtsp://user@cam:554/live",
])
def test_text_without_secrets_is_unchanged(text):
    assert redact.redact(text) == text


def test_registered_secrets_are_masked_bare_and_url_encoded():
    redact.add_secret("bare/s3cret:value")
    text = "AUTH bare/s3cret:value failed; url had bare%2Fs3cret%3Avalue"
    assert redact.redact(text) == "AUTH *** failed; url had ***"


def test_short_secrets_are_refused_with_a_warning_not_masked_everywhere(caplog):
    redact.add_secret("ab")
    assert redact.redact("a tab b") == "a tab b"
    assert caplog.records[-1].getMessage() == (
        "a secret shorter than 4 characters is not masked in logs; use a longer password")


def test_a_traceback_text_loses_its_secrets():
    redact.add_secret("tb-redis-secret-7")
    try:
        raise ConnectionError("AUTH tb-redis-secret-7 refused by redis://:tb-redis-secret-7"
                              "@10.0.0.5:6379/0 for rtsp://cam:tb-rtsp-8@cam/")
    except ConnectionError as exc:
        text = "".join(traceback.format_exception(exc))
    masked = redact.redact(text)
    assert "Traceback" in masked and "ConnectionError: AUTH *** refused" in masked
    assert "tb-redis-secret-7" not in masked and "tb-rtsp-8" not in masked


def test_redaction_is_fast_and_linear_on_large_and_hostile_text():
    line = "GET /video_feed?fps=2 HTTP/1.1 200 from 10.0.0.5 ratio=16:9 rtsp://cam/live"
    start = time.perf_counter()
    for _ in range(1000):
        redact.redact(line)
    assert (time.perf_counter() - start) / 1000 < 200e-6  # typically ~10 us
    start = time.perf_counter()
    for hostile in ("a" * 300_000 + "://", "k" * 300_000 + "=", "ab+/" * 75_000 + "=://"):
        redact.redact(hostile)
    assert time.perf_counter() - start < 2.0  # quadratic would take minutes


def test_log_records_of_child_loggers_are_masked_before_they_reach_the_stream():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    parent = logging.getLogger("test_access.entry")
    parent.addHandler(handler)
    parent.propagate = False
    try:
        redact.install_log_redaction(parent, handler)  # twice: still one filter
        assert sum(isinstance(f, redact.RedactingFilter) for f in handler.filters) == 1
        redact.add_secret("bare-redis-secret-9")
        child = logging.getLogger("test_access.entry.camera_redis")  # a child logger
        child.warning("opening %s", "rtsp://cam:rtsp-secret-1@10.0.0.9/live")
        child.warning("publishing to %(url)s", {"url": "redis://:redis-secret-2@r:6379/0"})
        try:
            raise ConnectionError("AUTH bare-redis-secret-9 for http://x:http-secret-3@h/")
        except ConnectionError:
            child.exception("driver failed")
        child.warning("where?", stack_info=True)  # this line's source: token=stack-secret-4
    finally:
        parent.removeHandler(handler)
        parent.propagate = True
    text = stream.getvalue()
    for secret in ("rtsp-secret-1", "redis-secret-2", "bare-redis-secret-9", "http-secret-3",
                   "stack-secret-4"):
        assert secret not in text, text
    assert "opening rtsp://cam:***@10.0.0.9/live" in text
    assert "publishing to redis://:***@r:6379/0" in text
    assert "Traceback" in text and "ConnectionError: AUTH *** for http://x:***@h/" in text
    assert "Stack (most recent call last)" in text and "token=***" in text


# -- Basic auth ------------------------------------------------------------------------

def test_every_url_needs_the_login_and_accepts_it():
    app = make_app()
    for path in ("/", "/status", "/video_feed", "/?action=snapshot", "/?action=stream",
                 "/static/x.js", "/nosuch"):
        response = call(app, path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == 'Basic realm="camera", charset="UTF-8"'
        assert response.mimetype == "text/plain"
        assert response.text == "401 Unauthorized: log in to see this camera\n"
    assert call(app, "/status", headers=GOOD).json == {"running": True}
    assert call(app, "/?action=snapshot", headers=GOOD).data.startswith(b"\xff\xd8")
    for headers in (basic("admin", "correct horse 4"), basic("Admin", PASSWORD),
                    basic("", ""), basic(PASSWORD, USER)):
        assert call(app, "/status", headers=headers).status_code == 401


def test_without_a_username_nothing_asks_for_a_login():
    app = make_app(username=None, password=None)
    assert call(app, "/status").status_code == 200
    assert call(app, "/status", headers=WRONG).status_code == 200


# The WSGI server hands header bytes over as latin-1 text: "\xff" is the raw byte 0xff.
MALFORMED = [
    "Basic \xff", "Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"nocolon").decode(),
    "Basic YWRtaW4=YQ==", "Bearer abcdef", 'Digest username="admin", realm="camera"',
    "Basic", "", "Basic " + "A" * 8000, "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
    "Basic " + base64.b64encode(b"admin:" + PASSWORD.encode() + b"\n").decode(),
]


@pytest.mark.parametrize("header", MALFORMED)
def test_malformed_authorization_is_401_with_one_log_line_and_no_traceback(caplog, header):
    response = call(make_app(), "/status", addr=ATTACKER, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="camera", charset="UTF-8"'
    assert "Traceback" not in caplog.text
    assert all(r.exc_info is None and r.levelno < logging.ERROR for r in caplog.records)
    [line] = access_lines(caplog)
    assert line.startswith(f"failed login from {ATTACKER} (") and "\n" not in line


def test_raw_non_ascii_bytes_over_a_real_socket_are_401(caplog):
    server = make_server("127.0.0.1", 0, make_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        for raw in (b"Basic \xff", b"Basic \xff\xfe\x00abc", b"\xe2\x82\xac \xe2\x82\xac"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + raw
                             + b"\r\nConnection: close\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 401 "), raw
    finally:
        server.shutdown()
        thread.join()
    assert "Traceback" not in caplog.text
    assert access_lines(caplog) == ["failed login from 127.0.0.1 (bad Authorization header)"] * 3


def test_no_authorization_header_is_not_a_failure(caplog):
    app = make_app()
    for _ in range(30):  # a browser's first requests, before the login dialog
        assert call(app, "/", addr=ATTACKER).status_code == 401
    assert call(app, "/", addr=ATTACKER, headers=GOOD).status_code == 200
    assert access_lines(caplog) == []


def test_failures_log_the_address_and_user_never_a_password(caplog):
    app = make_app()
    call(app, "/", addr=ATTACKER, headers=WRONG)
    call(app, "/", addr=ATTACKER, headers=basic("adnim", PASSWORD))  # a typo'd user name
    call(app, "/", addr="2001:db8::7", headers=basic("x\nfailed login from 1.2.3.4 (", "p"))
    call(app, "/", addr=ATTACKER, headers=basic(b"\xff\xfeuser", b"pw"))
    assert access_lines(caplog) == [
        f"failed login from {ATTACKER} (user 'admin')",
        f"failed login from {ATTACKER} (user 'adnim')",
        "failed login from 2001:db8::7 (user 'x\\nfailed login from 1.2.3.4 (')",
        f"failed login from {ATTACKER} (user '\\\\xff\\\\xfeuser')",
    ]
    formatted = [logging.Formatter(APP_FORMAT).format(r) for r in caplog.records]
    assert [FAIL2BAN.match(line)["host"] for line in formatted] == [
        ATTACKER, ATTACKER, "2001:db8::7", ATTACKER]
    assert PASSWORD not in caplog.text and "hunter2" not in caplog.text


# -- lockout ---------------------------------------------------------------------------

def test_ten_failures_lock_out_that_address_even_with_the_right_password(caplog):
    app = make_app()
    for _ in range(10):
        assert call(app, "/status", addr=ATTACKER, headers=WRONG).status_code == 401
    for headers in (GOOD, WRONG, {}):
        response = call(app, "/status", addr=ATTACKER, headers=headers)
        assert response.status_code == 429 and response.mimetype == "text/plain"
        assert 55 <= int(response.headers["Retry-After"]) <= 60
        assert response.text.startswith("429 Too Many Requests: too many failed logins")
    assert call(app, "/status", addr=NEIGHBOUR, headers=GOOD).status_code == 200
    lines = access_lines(caplog)
    assert lines[:10] == [f"failed login from {ATTACKER} (user 'admin')"] * 10
    assert re.fullmatch(rf"too many failed logins from {ATTACKER}: locked out for 6?\d s",
                        lines[10])
    assert len(lines) == 11


def test_the_lockout_ends_when_the_window_has_passed():
    app = make_app(window=1)
    for _ in range(10):
        call(app, "/status", addr=ATTACKER, headers=WRONG)
    locked = call(app, "/status", addr=ATTACKER, headers=GOOD)
    assert locked.status_code == 429 and locked.headers["Retry-After"] == "1"
    wait_until(lambda: call(app, "/status", addr=ATTACKER, headers=GOOD).status_code == 200,
               timeout=3, message="the lockout to end")


def test_an_ipv6_host_is_locked_out_by_its_slash_64():
    app = make_app()
    for i in range(10):  # one host, a new address from its /64 per guess
        call(app, "/status", addr=f"2001:db8:0:1::{i + 1:x}", headers=WRONG)
    assert call(app, "/status", addr="2001:db8:0:1::ff", headers=GOOD).status_code == 429
    assert call(app, "/status", addr="2001:db8:0:2::1", headers=GOOD).status_code == 200


def test_2000_guesses_from_one_address_log_eleven_lines(caplog):
    app = make_app()
    client = app.test_client()
    for _ in range(2000):
        client.get("/status", headers=WRONG, environ_base={"REMOTE_ADDR": ATTACKER})
    assert len(access_lines(caplog)) == 11  # ten failures, one lockout


def test_2000_guesses_from_2000_addresses_log_a_bounded_number_of_lines(caplog):
    window = 1
    app = make_app(window=window)
    client = app.test_client()
    start = time.monotonic()
    for i in range(2000):
        client.get("/status", headers=WRONG,
                   environ_base={"REMOTE_ADDR": f"10.{i // 250}.{i % 250}.1"})
    elapsed = time.monotonic() - start
    windows = elapsed / window + 2  # the budget refills each window
    assert len(access_lines(caplog)) <= windows * (access.LOG_LINES_PER_WINDOW + 1) < 400

    addresses = (f"192.0.2.{n}" for n in range(1, 255))

    def summary():  # the first line logged in a later window says what was left out
        call(app, "/status", addr=next(addresses), headers=WRONG)
        return [line for line in access_lines(caplog) if "not logged" in line]
    [line, *_] = wait_until(summary, timeout=window + 2, message="the summary line")
    assert re.fullmatch(rf"\d+ more failed logins not logged in the last {window} s", line)


def test_bad_settings_are_refused():
    for options in ({"window": 0.5}, {"failures": 0}, {"password": None}):
        with pytest.raises(ValueError):
            make_app(**options)


# -- CORS ------------------------------------------------------------------------------

def cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("Access-Control-")}


@pytest.mark.parametrize("origins", [(DASH,), (DASH, OTHER_DASH), ("*",), ()])
def test_a_preflight_is_answered_without_login(origins):
    app = make_app(cors_origins=origins)
    for _ in range(10):  # not even a lockout stops it: the browser could not read a 429
        call(app, "/", addr=ATTACKER, headers=WRONG)
    response = call(app, "/recordings", addr=ATTACKER, method="OPTIONS", headers={
        "Origin": DASH, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-requested-with, bad header!"})
    assert response.status_code == 204
    headers = cors_headers(response)
    if not origins:
        assert headers == {}
        return
    assert headers["Access-Control-Allow-Origin"] == ("*" if origins == ("*",) else DASH)
    assert headers["Access-Control-Allow-Methods"] == "GET, HEAD, POST, DELETE, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "Authorization, x-requested-with"
    assert int(headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize("origins,origin,allowed", [
    ((DASH,), DASH, DASH),
    ((DASH, OTHER_DASH), DASH, DASH),
    ((DASH, OTHER_DASH), OTHER_DASH, OTHER_DASH),
    ((DASH, OTHER_DASH), "HTTPS://B.example:443", "HTTPS://B.example:443"),
    (("*",), DASH, "*"),
    (("*",), None, "*"),
    ((DASH, OTHER_DASH), EVIL, None),
    ((DASH,), None, None),
    ((), DASH, None),
])
def test_allowed_origins_are_echoed_with_credentials_and_others_get_nothing(origins, origin,
                                                                          allowed):
    # A page may send a login only from an origin listed by name (see the hostile page
    # test below), so this runs without one: CORS alone decides what the page may read.
    app = make_app(cors_origins=origins, username=None, password=None)
    headers = {"Origin": origin} if origin else {}
    for path in ("/", "/status", "/video_feed", "/?action=snapshot", "/?action=stream"):
        response = call(app, path, headers=headers)
        assert response.status_code == 200
        got = cors_headers(response)
        if allowed is None:
            assert got == {}
        elif allowed == "*":
            assert got["Access-Control-Allow-Origin"] == "*"
            assert "Access-Control-Allow-Credentials" not in got
        else:
            assert got["Access-Control-Allow-Origin"] == allowed
            assert got["Access-Control-Allow-Credentials"] == "true"
            assert "Retry-After" in got["Access-Control-Expose-Headers"]
        if origins and origins != ("*",):
            assert "Origin" in response.headers["Vary"]  # caches keep origins apart
        elif not origins:
            assert "Vary" not in response.headers


def test_error_responses_carry_cors_headers_too():
    app = make_app(cors_origins=(DASH, OTHER_DASH))
    origin = {"Origin": DASH}
    assert call(app, "/?action=snapshot", headers=origin).status_code == 401
    listed = call(app, "/?action=snapshot", headers={**origin, **GOOD})
    assert listed.status_code == 200 and listed.headers["Access-Control-Allow-Origin"] == DASH
    for _ in range(10):
        call(app, "/status", addr=ATTACKER, headers=WRONG)
    for response, status in [
        (call(app, "/?action=snapshot", headers=origin), 401),
        (call(app, "/status", addr=ATTACKER, headers=origin), 429),
        (call(app, "/snapshot.jpg", headers={**origin, **GOOD}), 503),
        (call(app, "/nosuch", headers={**origin, **GOOD}), 404),
    ]:
        assert response.status_code == status
        assert response.headers["Access-Control-Allow-Origin"] == DASH
        assert response.headers["Access-Control-Allow-Credentials"] == "true"


# -- cross-site state changes ----------------------------------------------------------

@pytest.mark.parametrize("method,path,headers,origins,status", [
    ("POST", "/recordings", {"Origin": EVIL}, (DASH,), 403),
    ("DELETE", "/recordings/a.mjpeg", {"Origin": EVIL}, (DASH,), 403),
    ("PUT", "/recordings", {"Origin": EVIL}, (), 403),
    ("PATCH", "/recordings", {"Origin": "null"}, (), 403),
    ("POST", "/recordings", {"Origin": EVIL}, ("*",), 403),  # "*" allows reading only
    ("POST", "/recordings", {"Sec-Fetch-Site": "cross-site"}, (), 403),
    ("DELETE", "/recordings/a.mjpeg", {"Sec-Fetch-Site": "same-site"}, (), 403),
    ("POST", "/recordings", {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}, (), 403),
    ("POST", "/recordings", {"Origin": "http://localhost"}, (), 201),  # same origin
    ("POST", "/recordings", {"Origin": "http://localhost:80"}, (), 201),
    ("POST", "/recordings", {"Sec-Fetch-Site": "same-origin"}, (), 201),
    ("POST", "/recordings", {"Sec-Fetch-Site": "none"}, (), 201),  # typed or bookmarked
    # Behind a TLS proxy the server sees http: the browser's own verdict still counts.
    ("POST", "/recordings", {"Origin": "https://localhost", "Sec-Fetch-Site": "same-origin"},
     (), 201),
    ("POST", "/recordings", {}, (), 201),  # curl, Home Assistant's rest_command, scripts
    ("DELETE", "/recordings/a.mjpeg", {}, (), 204),
    ("POST", "/recordings", {"Origin": DASH, "Sec-Fetch-Site": "cross-site"}, (DASH,), 201),
    ("DELETE", "/recordings/a.mjpeg", {"Origin": OTHER_DASH}, (DASH, OTHER_DASH), 204),
    ("GET", "/video_feed", {"Sec-Fetch-Site": "cross-site"}, (), 200),  # an <img> embed
])
def test_state_changes_from_other_sites_are_refused(method, path, headers, origins, status):
    app = make_app(cors_origins=origins)
    response = call(app, path, method=method, headers={**GOOD, **headers})
    assert response.status_code == status, response.text
    if status == 403:
        assert response.mimetype == "text/plain"
        assert response.text == ("403 Forbidden: pages on other sites may not change "
                                 "anything here\n")
    if origins == (DASH, OTHER_DASH):
        assert response.headers["Access-Control-Allow-Origin"] == OTHER_DASH


def test_a_hostile_page_cannot_make_login_attempts_count(caplog):
    # With "*" a preflight lets any page send an Authorization header of its choosing:
    # a brute force from the visitor's own address, and a lockout of the visitor.
    app = make_app(cors_origins=("*",))
    for _ in range(20):  # a fetch() with its own Authorization header, and a form post
        refused = call(app, "/status", addr=NEIGHBOUR, headers={**WRONG, "Origin": EVIL})
        assert refused.status_code == 403
        assert refused.text == "403 Forbidden: pages on other sites may not log in here\n"
        assert refused.headers["Access-Control-Allow-Origin"] == "*"  # it may read why
        assert call(app, "/recordings", addr=NEIGHBOUR, method="POST",
                    headers={**WRONG, "Origin": EVIL}).status_code == 403
    assert call(app, "/status", addr=NEIGHBOUR, headers=GOOD).status_code == 200
    assert access_lines(caplog) == []
    # Reading without a login is CORS's business, not refused: it is a plain 401.
    anonymous = call(app, "/status", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
    assert anonymous.status_code == 401
    assert anonymous.headers["Access-Control-Allow-Origin"] == "*"
    # An <img> on another site sends the browser's cached login and no Origin: fine.
    embed = call(app, "/video_feed", headers={**GOOD, "Sec-Fetch-Site": "cross-site"})
    assert embed.status_code == 200


def test_without_login_cross_site_state_changes_are_still_refused():
    app = make_app(username=None, password=None)
    assert call(app, "/recordings", method="POST", headers={"Origin": EVIL}).status_code == 403
    assert call(app, "/recordings", method="POST").status_code == 201


# -- Host names (DNS rebinding) --------------------------------------------------------

REBINDING = "attacker.example"  # the attacker's name, resolving to this box's address


def host_call(app: Flask, host: str, path: str = "/status", method: str = "GET",
              headers: dict | None = None):
    return call(app, path, method=method, headers={"Host": host, **GOOD, **(headers or {})})


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.0.0.1:5000", "192.168.1.20:5000", "10.0.0.5:80", "[::1]", "[::1]:5000",
    "[fe80::1ff:fe23:4567:890a]:5000", "localhost", "LOCALHOST:5000", "localhost.",
    "camera.localhost:5000", "camera.local:5000", "Printer-Cam.local", "camera.lan",
    "camera.home.arpa", "cam.internal:5000", socket.gethostname(), socket.getfqdn(),
    socket.gethostname().upper() + ":5000",
])
def test_addresses_and_local_names_are_served_without_settings(host):
    assert host_call(make_app(), host).status_code == 200


@pytest.mark.parametrize("host", [
    REBINDING, f"{REBINDING}:5000", "camera.example.org", "localhost.attacker.example",
    f"{socket.gethostname()}.attacker.example", "local", ".local", "a..local",
    "127.0.0.1.attacker.example", "[1.2.3.4]", "bad host", "",
])
def test_other_host_names_are_refused_before_anything_else(host, caplog):
    app = make_app()
    for method, path in (("GET", "/status"), ("GET", "/snapshot.jpg"), ("GET", "/video_feed"),
                         ("POST", "/recordings"), ("DELETE", "/recordings/a.mjpeg"),
                         ("OPTIONS", "/recordings")):
        response = host_call(app, host, path, method, headers={"Origin": f"http://{host}"})
        assert response.status_code == 400, (method, path)
        assert response.mimetype == "text/plain"
        assert "Access-Control-Allow-Origin" not in response.headers
    name = host.rpartition(":")[0] if host.endswith(":5000") else host
    assert response.text == (f"400 Bad Request: Host {name!r} is not one this server answers "
                             "to; add it to ALLOWED_HOSTS\n")
    lines = access_lines(caplog)
    assert len(lines) == 6 and lines[0] == f"refused Host {name!r} from 127.0.0.1: not in " \
        "ALLOWED_HOSTS"


def test_a_rebinding_page_can_neither_record_nor_delete_nor_read():
    # The page's origin is http://attacker.example, and so is the Host it sends: the
    # cross-site check alone saw a same-origin request.
    app = make_app(username=None, password=None)
    page = {"Host": REBINDING, "Origin": f"http://{REBINDING}"}
    assert call(app, "/recordings", method="POST", headers=page).status_code == 400
    assert call(app, "/recordings/a.mjpeg", method="DELETE", headers=page).status_code == 400
    assert call(app, "/?action=snapshot", headers={"Host": REBINDING}).status_code == 400
    # The same page on this server's own address still works.
    own = {"Host": "192.168.1.20:5000", "Origin": "http://192.168.1.20:5000"}
    assert call(app, "/recordings", method="POST", headers=own).status_code == 201


@pytest.mark.parametrize("allowed,host,status", [
    (("camera.example.org",), "camera.example.org", 200),
    (("camera.example.org",), "CAMERA.example.org:443", 200),
    (("camera.example.org",), "www.camera.example.org", 400),
    (("camera.example.org",), REBINDING, 400),
    (("*.example.org",), "cam1.example.org", 200),
    (("*.example.org",), "a.b.example.org:8080", 200),
    (("*.example.org",), "example.org", 400),  # *. is the names under it
    (("*.example.org",), "evilexample.org", 400),
    (("camera_srv",), "camera_srv:5000", 200),  # a Docker container's name
    (("a.example", "b.example"), "b.example", 200),
    (("*",), REBINDING, 200),  # opted out
    (("*",), "bad host", 200),
    (("camera.example.org",), "localhost", 200),  # the defaults stay
])
def test_allowed_hosts_adds_names_and_wildcards(allowed, host, status):
    assert host_call(make_app(allowed_hosts=allowed), host).status_code == status


def test_a_flood_of_refused_hosts_logs_a_bounded_number_of_lines(caplog):
    app = make_app(window=1)
    client = app.test_client()
    start = time.monotonic()
    for i in range(2000):
        client.get("/status", headers={"Host": f"n{i}.{REBINDING}"})
    windows = (time.monotonic() - start) / 1 + 2
    assert len(access_lines(caplog)) <= windows * (access.LOG_LINES_PER_WINDOW + 1) < 400

    def summary():
        client.get("/status", headers={"Host": REBINDING})
        return [line for line in access_lines(caplog) if "not logged" in line]
    [line, *_] = wait_until(summary, timeout=3, message="the summary line")
    assert re.fullmatch(r"\d+ more refused hosts not logged in the last 1 s", line)


# -- framing (clickjacking) ------------------------------------------------------------

@pytest.mark.parametrize("ancestors,policy", [
    ((), "frame-ancestors 'self'"),
    (("http://homeassistant.local:8123",),
     "frame-ancestors 'self' http://homeassistant.local:8123"),
    (("https://a.example", "https://*.b.example"),
     "frame-ancestors 'self' https://a.example https://*.b.example"),
])
def test_pages_may_be_framed_only_by_this_server_and_frame_ancestors(ancestors, policy):
    app = make_app(frame_ancestors=ancestors)
    page = call(app, "/", headers=GOOD)
    assert page.mimetype == "text/html" and page.headers["Content-Security-Policy"] == policy
    # Streams, snapshots, status and errors carry none: an <img> anywhere still works.
    for path in ("/video_feed", "/?action=snapshot", "/snapshot.jpg", "/status"):
        assert "Content-Security-Policy" not in call(app, path, headers=GOOD).headers, path


# -- the last line of defence: secrets in bodies ---------------------------------------

def test_a_secret_in_any_text_body_is_masked_and_json_stays_json():
    app = make_app(username=None, password=None)
    redact.add_secret("bare-body-secret-5")
    leak = ("Redis at redis://:body-pw-1@10.0.0.5:6379/0 said bare-body-secret-5; "
            'source rtsp://u:body-pw-2@cam/live?token="body-pw-3"')

    @app.route("/leak.txt")
    def leak_text():
        return Response(f"503 Service Unavailable: {leak}\n", 503, mimetype="text/plain")

    @app.route("/leak.json")
    def leak_json():
        return jsonify(error=leak, cameras={"cam": {"error": leak}})

    @app.route("/leak.html")
    def leak_html():
        return f"<p>{leak}</p>"

    @app.route("/leak.jpg")
    def leak_jpeg():
        return Response(b"\xff\xd8" + leak.encode(), mimetype="image/jpeg")

    for path in ("/leak.txt", "/leak.json", "/leak.html"):
        body = call(app, path).text
        assert all(f"body-pw-{n}" not in body for n in range(1, 4)), body
        assert "bare-body-secret-5" not in body
    assert call(app, "/leak.txt").text == (
        "503 Service Unavailable: Redis at redis://:***@10.0.0.5:6379/0 said ***; source "
        'rtsp://u:***@cam/live?token="***"\n')
    data = call(app, "/leak.json").json  # still JSON, each string masked
    assert data["error"] == data["cameras"]["cam"]["error"] and "***" in data["error"]
    # Pictures and streams pass untouched.
    assert call(app, "/leak.jpg").data == b"\xff\xd8" + leak.encode()


# -- several workers: the lockout in Redis ---------------------------------------------

@pytest.fixture
def redis_server():
    """A throwaway redis-server with a password, on a free port: (url, process)."""
    path = shutil.which("redis-server")
    if path is None:
        if IN_CI:
            pytest.fail("redis-server is required in CI but is not installed")
        pytest.skip("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    password = "redis-pw-4711"
    proc = subprocess.Popen([path, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--requirepass", password],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1)

        def ready():
            try:
                return client.ping()
            except redis.RedisError:
                return False
        wait_until(ready, timeout=10, message="redis-server")
        client.close()
        yield url, proc
    finally:
        proc.kill()
        proc.wait()


def test_workers_sharing_redis_share_the_lockout(redis_server, caplog):
    url, proc = redis_server
    worker_a, worker_b = make_app(limiter_storage=url), make_app(limiter_storage=url)
    for _ in range(5):
        call(worker_a, "/status", addr=ATTACKER, headers=WRONG)
        call(worker_b, "/status", addr=ATTACKER, headers=WRONG)
    for worker in (worker_a, worker_b):
        response = call(worker, "/status", addr=ATTACKER, headers=GOOD)
        assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 60
        assert call(worker, "/status", addr=NEIGHBOUR, headers=GOOD).status_code == 200

    # Redis gone: logins are still checked, never a 500; one warning, no password.
    proc.kill()
    proc.wait()
    for _ in range(5):
        assert call(worker_a, "/status", addr=NEIGHBOUR, headers=GOOD).status_code == 200
        assert call(worker_a, "/status", addr=NEIGHBOUR, headers=WRONG).status_code == 401
    warnings = [line for line in access_lines(caplog) if "lockout unavailable" in line]
    assert len(warnings) == 1
    assert "redis-pw-4711" not in caplog.text and "Traceback" not in caplog.text
