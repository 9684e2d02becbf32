"""Redaction, table-driven: which query parameters are secrets, and URLs as they may be
shown (more cases, and the log filter, in test_access.py)."""

from __future__ import annotations

import time

import pytest

from server import redact

CGI = "http://cam/cgi-bin/snapshot.cgi?loginuse=admin&{name}=s3cr%40t&res=1"


@pytest.mark.parametrize("name", [
    # IP cameras' CGI URLs (Foscam, Wanscam, Hikvision, Dahua, Axis, ...)
    "loginpas", "LoginPas", "p", "P", "pw", "pass", "passwd", "password", "pwd", "key",
    "token", "auth", "secret", "passphrase", "credential", "credentials", "user_pwd",
    "api_key", "x-api-key", "access_token",
])
def test_password_style_query_names_of_ip_cameras_are_masked(name):
    assert redact.redact(CGI.format(name=name)) == CGI.format(name=name).replace(
        "s3cr%40t", "***")


@pytest.mark.parametrize("name", [
    # p and pw are secrets only as the whole name, not as every name's end
    "ap", "step", "xp", "pp", "p.x", "a.p", "p-1", "map",
    "loginuse", "user", "passthrough", "res", "fps",
])
def test_other_query_names_are_left_alone(name):
    assert redact.redact(CGI.format(name=name)) == CGI.format(name=name)


@pytest.mark.parametrize("url,shown", [
    ("redis://:hunter22pw@127.0.0.1:16379/0", "redis://:***@127.0.0.1:16379/0"),  # no user
    ("rediss://default:s3cr3t@cache.example:6380/1", "rediss://default:***@cache.example:6380/1"),
    ("redis://u:p@ss@redis/0", "redis://u:***@redis/0"),  # an unencoded @ in the password
    ("redis://redis.example:6379/0", "redis://redis.example:6379/0"),
    ("unix:///run/redis.sock?db=0&password=s3cr3t", "unix:///run/redis.sock?db=0&password=***"),
    ("redis://h:x:pw@h:port/0", "redis://h:***@h:port/0"),  # unparseable port: still masked
])
def test_display_url_masks_the_password_whatever_the_user_name(url, shown):
    assert redact.display_url(url) == shown


@pytest.mark.parametrize("hostile", [
    "p" * 300_000 + "=", "pas" * 100_000 + "=", "-p" * 150_000 + "=x", "p=" * 150_000,
    "a" * 300_000 + "pas=",
])
def test_the_new_names_keep_redaction_linear(hostile):
    start = time.perf_counter()
    redact.redact(hostile)
    assert time.perf_counter() - start < 1.0  # quadratic would take minutes
