"""HTTP rules that need no real server: answered in-process by Flask's test client."""

from __future__ import annotations

import base64
import json
import runpy
import sys

import pytest
from conftest import DRIVERS, ROOT, frame_number

sys.path.insert(0, str(DRIVERS))
from numbered import numbered  # noqa: E402

PASSWORD = "s3cret:with colon"
ROUTES = ["/", "/video_feed", "/snapshot.jpg", "/status", "/?action=stream",
          "/?action=snapshot", "/camera/camera/", "/camera/camera/video_feed",
          "/camera/camera/snapshot.jpg", "/camera/camera/status", "/static/unavailable.jpg"]


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def get(client, path: str, **kwargs):
    """A finite look at any route: streams are closed after their headers."""
    response = client.get(path, buffered=False, **kwargs)
    response.close()
    return response


@pytest.mark.parametrize("path", ROUTES)
def test_basic_auth_protects_every_route(app_client, path, caplog):
    client = app_client({"BASIC_AUTH_USERNAME": "admin", "BASIC_AUTH_PASSWORD": PASSWORD})
    for headers in ({}, basic("admin", "wrong"), basic("other", PASSWORD),
                    {"Authorization": "Bearer abc"}, {"Authorization": b"Basic \xff"}):
        response = get(client, path, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('Basic realm="camera"')
    assert get(client, path, headers=basic("admin", PASSWORD)).status_code == 200
    assert PASSWORD not in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize("fps", ["0", "-1", "abc", "inf", "nan", "0.001", "1e-9", "1001"])
def test_bad_fps_is_a_400_that_says_what_is_accepted(app_client, fps):
    response = app_client().get(f"/video_feed?fps={fps}")
    assert response.status_code == 400
    assert response.text.startswith("400 Bad Request: fps must be a number from 0.01 to 1000")


def test_bad_requests_get_short_text_answers(app_client):
    client = app_client()
    for path, code, text in [("/nope", 404, "404 Not Found"),
                             ("/video_feed?advance_headers=maybe", 400,
                              "advance_headers must be 0 or 1"),
                             ("/?action=record", 404, "unknown action 'record'"),
                             ("/?action=stream_1", 404, "no input 1: 1 camera(s)"),
                             ("/camera/nope/video_feed", 404, "no camera 'nope'; cameras: camera")]:
        response = client.get(path)
        assert response.status_code == code and text in response.text, path
        assert response.mimetype == "text/plain" and len(response.data) < 300
    response = client.post("/video_feed")
    assert response.status_code == 405 and "GET" in response.headers["Allow"]


def test_unknown_query_strings_such_as_cache_busters_are_ignored(app_client):
    client = app_client()
    response = client.get("/snapshot.jpg?1700000000000")
    assert response.status_code == 200 and response.data == numbered(frame_number(response.data))
    assert get(client, "/video_feed?1700000000000&foo=bar").status_code == 200
    assert b"<img" in client.get("/?1700000000000").data  # the page, not a stream


def test_stream_headers_forbid_caching_and_buffering_and_head_has_no_body(app_client):
    client = app_client()
    for response in (get(client, "/video_feed"), client.head("/video_feed")):
        assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        assert "no-store" in response.headers["Cache-Control"]
        assert response.headers["Pragma"] == "no-cache"
        assert response.headers["Expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
        assert response.headers["X-Accel-Buffering"] == "no"
    assert client.head("/video_feed").data == b""


def test_status_is_plain_json_with_every_camera(app_client):
    response = app_client().get("/status")
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.data)
    fields = {"driver", "running", "stuck", "viewers", "frames_captured", "fps", "frame_size",
              "frame_age", "error", "uptime"}
    assert set(body) >= fields | {"cameras"}  # one camera: its fields at the top too
    assert set(body["cameras"]["camera"]) >= fields


@pytest.mark.parametrize("path", ["/video_feed", "/snapshot.jpg", "/status", "/?action=stream",
                                  "/?action=snapshot", "/camera/camera/status"])
def test_cors_for_listed_origins_on_every_camera_url(app_client, path):
    client = app_client({"CORS_ALLOW_ORIGIN": "https://a.example https://b.example",
                         "BASIC_AUTH_USERNAME": "admin", "BASIC_AUTH_PASSWORD": PASSWORD})
    preflight = client.options(path, headers={"Origin": "https://b.example",
                                              "Access-Control-Request-Method": "GET",
                                              "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 204  # no login asked for a preflight
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://b.example"
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    response = get(client, path, headers={"Origin": "https://a.example",
                                          **basic("admin", PASSWORD)})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response.headers["Vary"]
    other = get(client, path, headers={"Origin": "https://evil.example",
                                       **basic("admin", PASSWORD)})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_no_cors_headers_unless_configured(app_client):
    response = app_client().get("/status", headers={"Origin": "https://a.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


# -- Host names and framing, as the app installs them ------------------------------------

NGINX = {"Host": "camera.example.org", "X-Forwarded-For": "203.0.113.7",
         "X-Forwarded-Proto": "https"}  # what the README's nginx example sends


@pytest.mark.parametrize("env,headers,status", [
    ({"PROXY_HOPS": "1"}, NGINX, 400),  # the nginx example needs ALLOWED_HOSTS
    ({"PROXY_HOPS": "1", "ALLOWED_HOSTS": "camera.example.org"}, NGINX, 200),
    ({"ALLOWED_HOSTS": "camera.example.org"}, NGINX, 200),
    # a trusted proxy's X-Forwarded-Host is the host the browser asked for
    ({"PROXY_HOPS": "1"}, {"Host": "127.0.0.1:5000", "X-Forwarded-Host": "attacker.example"},
     400),
    ({"PROXY_HOPS": "1", "ALLOWED_HOSTS": "*.example.org"},
     {"Host": "127.0.0.1:5000", "X-Forwarded-Host": "camera.example.org"}, 200),
    # without PROXY_HOPS nobody's X-Forwarded-Host is trusted: the Host counts
    ({}, {"Host": "127.0.0.1:5000", "X-Forwarded-Host": "attacker.example"}, 200),
    ({}, {"Host": "camera.local:5000"}, 200),  # the Home Assistant and OctoPrint recipes
    ({"ALLOWED_HOSTS": "*"}, {"Host": "attacker.example"}, 200),
])
def test_the_host_rule_behind_a_proxy_and_the_readme_recipes(app_client, env, headers, status):
    client = app_client(env)
    for path in ("/", "/snapshot.jpg", "/status", "/?action=snapshot", "/camera/camera/status"):
        response = get(client, path, headers=headers)
        assert response.status_code == status, path
    if status == 400:
        name = headers.get("X-Forwarded-Host" if env else "Host", headers["Host"])
        assert response.text == (f"400 Bad Request: Host {name!r} is not one this server "
                                 "answers to; add it to ALLOWED_HOSTS\n")


@pytest.mark.parametrize("env,policy", [
    ({}, "frame-ancestors 'self'"),
    ({"FRAME_ANCESTORS": "http://homeassistant.local:8123"},
     "frame-ancestors 'self' http://homeassistant.local:8123"),
])
def test_only_pages_forbid_framing_and_streams_and_snapshots_stay_embeddable(app_client, env,
                                                                             policy):
    client = app_client(env)
    for path in ("/", "/camera/camera/"):
        response = client.get(path)
        assert response.mimetype == "text/html" and b"<img" in response.data
        assert response.headers["Content-Security-Policy"] == policy, path
    for path in ("/video_feed", "/snapshot.jpg", "/?action=stream", "/?action=snapshot",
                 "/camera/camera/video_feed", "/camera/camera/snapshot.jpg", "/status"):
        response = get(client, path)
        assert response.status_code == 200
        assert "Content-Security-Policy" not in response.headers, path
        assert "X-Frame-Options" not in response.headers, path


@pytest.mark.parametrize("name,value,message", [
    ("ALLOWED_HOSTS", "https://camera.example.org",
     "ALLOWED_HOSTS='https://camera.example.org': expected host names such as "
     "camera.example.org or *.example.org (space- or comma-separated, no scheme or port), "
     "or '*' for any"),
    ("ALLOWED_HOSTS", "camera.example.org:443", "ALLOWED_HOSTS='camera.example.org:443': "),
    ("ALLOWED_HOSTS", "* camera.example.org", "'*' cannot be combined with names"),
    ("FRAME_ANCESTORS", "homeassistant.local:8123",
     "FRAME_ANCESTORS='homeassistant.local:8123': expected origins such as "
     "http://homeassistant.local:8123 (scheme://host[:port], space-separated), or '*' for "
     "any page"),
    ("FRAME_ANCESTORS", "http://a.example; script-src *", "FRAME_ANCESTORS="),
])
def test_bad_allowed_hosts_and_frame_ancestors_are_one_line_errors(name, value, message):
    from server import config

    with pytest.raises(config.ConfigError) as error:
        config.load({name: value})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_allowed_hosts_takes_commas_wildcards_and_international_names():
    from server import config

    settings = config.load({"ALLOWED_HOSTS": "Camera.Example.org, *.example.net kamera.bücher.de"})
    assert settings.allowed_hosts == ("camera.example.org", "*.example.net",
                                      "kamera.xn--bcher-kva.de")


def test_the_gunicorn_write_patch_is_what_gunicorn_calls(monkeypatch):
    """gunicorn.conf.py sends each chunk with one sendmsg; if a gunicorn upgrade stops
    calling util.write_chunk, the ~20% saving would vanish silently: this fails then."""
    from gunicorn import util
    from gunicorn.http.wsgi import Response as GunicornResponse

    from server import patches

    monkeypatch.setattr(util, "write_chunk", util.write_chunk)  # restored afterwards
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert util.write_chunk is patches.write_chunk

    class Socket:
        gathered: list = []  # what came through sendmsg, the patch's way

        def sendmsg(self, buffers):
            self.gathered.append(b"".join(bytes(b) for b in buffers))
            return len(self.gathered[-1])

        def sendall(self, data):
            pass  # gunicorn's own way: the headers, or every chunk without the patch

    class Request:
        version, method, path, uri = (1, 1), "GET", "/video_feed", "/video_feed"
        headers, body, should_close = [], None, lambda self: False

    class Cfg:
        is_ssl, secure_scheme_headers, forwarded_allow_ips = False, {}, []
        sendfile, header_map = False, "drop"

    sock = Socket()
    response = GunicornResponse(Request(), sock, Cfg())
    response.start_response("200 OK", [("Content-Type", "multipart/x-mixed-replace")])
    response.write(b"frame")
    assert sock.gathered == [b"5\r\nframe\r\n"]  # one gather-write: size line, data, CRLF
