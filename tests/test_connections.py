"""MAX_CONNECTIONS_PER_CLIENT: one client cannot hold the connections everybody else needs.

Other clients come from other loopback addresses (127.0.0.2, ...): on Linux all of
127.0.0.0/8 is this machine, and the server sees each as a client of its own.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
from conftest import wait_until

from server import config, connections

CAP = {"CAMERA": "counter", "MAX_CONNECTIONS_PER_CLIENT": "8"}
KEEP_IDLE = ["--keep-alive", "30"]  # idle connections stay until the client closes them


def idle(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection that never sends a request."""
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def timed_get(server, path: str = "/status", **kwargs) -> tuple[int, dict, bytes, float]:
    started = time.monotonic()
    code, headers, body = server.get(path, timeout=10, **kwargs)
    return code, headers, body, time.monotonic() - started


def assert_refused_at_once(server, **kwargs) -> None:
    code, headers, body, elapsed = timed_get(server, **kwargs)
    assert code == 503, (code, body)
    assert headers["Retry-After"] == "5" and headers["Connection"] == "close"
    assert b"MAX_CONNECTIONS_PER_CLIENT" in body
    assert elapsed < 2.0, elapsed


# -- who a client is, and the count ---------------------------------------------------------

def test_a_client_is_its_ipv4_address_or_its_ipv6_slash_64():
    key = connections.client_key
    assert key(("203.0.113.7", 51000)) == key("203.0.113.7") == "203.0.113.7"
    assert key(("2001:db8:0:1::1", 51000, 0, 0)) == key("2001:db8:0:1:ffff::9") \
        == "2001:db8:0:1::/64"
    assert key("2001:db8:0:2::1") == "2001:db8:0:2::/64"
    assert key("::ffff:203.0.113.7") == "203.0.113.7"  # a dual-stack socket's IPv4 client
    assert key("fe80::1%eth0") == "fe80::/64"
    assert key("") is None and key(None) is None and key(()) is None  # a Unix socket
    assert key("unknown") == "unknown"


def test_the_gate_refuses_past_the_limit_per_client_and_frees_on_leave(caplog):
    gate = connections.Gate(2)
    assert gate.enter("a") and gate.enter("a") and gate.enter("b")
    with caplog.at_level(logging.WARNING, "connections"):
        assert not gate.enter("a") and not gate.enter("a")
    assert gate.open == {"a": 2, "b": 1} and gate.refused == 2
    # One line for the two refusals within LOG_EVERY: a flood cannot fill the log.
    assert [r.getMessage() for r in caplog.records] == [
        "refused a connection from a: 2 open already (MAX_CONNECTIONS_PER_CLIENT)"]
    gate.leave("a")
    assert gate.enter("a")
    gate.leave("a"), gate.leave("a"), gate.leave("b")
    assert gate.open == {}  # nothing kept for clients that left
    assert gate.enter(None) and gate.open == {}  # no address (a Unix socket): not counted


def test_gevent_refuses_a_client_at_its_cap_as_it_accepts_before_making_a_greenlet():
    gevent = pytest.importorskip("gevent")
    from gevent import socket as gevent_socket
    from gevent.server import StreamServer

    gate = connections.Gate(1)
    gate.enter("127.0.0.1")  # 127.0.0.1 holds its one connection already
    plain = gevent_socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen()
    listener = connections._gevent_listener(plain, gate)
    handled = []
    server = StreamServer(listener, lambda sock, address: handled.append(address[0]))
    server.start()

    def run_hub_until(predicate) -> None:
        deadline = time.monotonic() + 5
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            gevent.sleep(0.01)
    try:
        # The kernel completes the connections; the hub accepts them when it runs.
        refused = socket.create_connection(listener.getsockname(), timeout=5)
        served = idle(listener.getsockname()[1], source="127.0.0.2")
        run_hub_until(lambda: handled)
        assert handled == ["127.0.0.2"] and gate.refused == 1  # no greenlet for the refused
        assert refused.recv(4096) == connections.REFUSAL
        refused.close(), served.close()
    finally:
        server.stop()


@pytest.mark.parametrize("raw,value", [("", 64), ("8", 8), (" 200 ", 200), ("off", None),
                                       ("OFF", None), ("0", None)])
def test_the_setting_is_a_count_or_off(raw, value):
    assert config.load({"MAX_CONNECTIONS_PER_CLIENT": raw}).max_connections_per_client == value


@pytest.mark.parametrize("raw", ["many", "-1", "2.5"])
def test_a_bad_setting_is_one_line_naming_it(raw):
    with pytest.raises(config.ConfigError) as error:
        config.load({"MAX_CONNECTIONS_PER_CLIENT": raw})
    assert str(error.value) == (f"MAX_CONNECTIONS_PER_CLIENT={raw!r}: expected a whole number "
                                "of connections >= 1, or off (no cap)")


# -- direct clients: counted per connection, at accept --------------------------------------

@pytest.mark.parametrize("mode", ["gevent", "gthread", "dev"])  # dev: python app.py
def test_one_address_gets_its_cap_the_next_is_refused_at_once_and_others_are_served(
        servers, mode):
    server = servers(mode, CAP, args=KEEP_IDLE)
    held = [idle(server.port) for _ in range(4)]
    streams = [server.stream("/video_feed?fps=5") for _ in range(4)]  # viewers count too
    try:
        for stream in streams:
            stream.next_part()
        assert_refused_at_once(server)
        assert_refused_at_once(server)  # refusals are not counted
        code, _, _, elapsed = timed_get(server, source="127.0.0.2")
        assert code == 200 and elapsed < 1.0, elapsed
        with server.stream(source="127.0.0.3") as viewer:
            assert viewer.status == 200
            viewer.next_part()
        # Closing them gives the slots back (long before keep-alive would cut them).
        for sock in held:
            sock.close()
        for stream in streams:
            stream.close()
        wait_until(lambda: server.get("/status")[0] == 200, timeout=3,
                   message="the slots given back")
        again = [idle(server.port) for _ in range(8)]  # all eight of them
        assert_refused_at_once(server)
        for sock in again:
            sock.close()
    finally:
        for stream in streams:
            stream.close()
    assert "refused a connection from 127.0.0.1: 8 open already" in server.log()


@pytest.mark.parametrize("mode", ["gevent", "gthread"])
def test_connections_the_server_cuts_give_their_slots_back(servers, mode):
    server = servers(mode, CAP, args=["--keep-alive", "1"])
    held = [idle(server.port) for _ in range(8)]
    try:
        assert_refused_at_once(server)
        # Never closed by the client: cut by the server after keep-alive (gthread: its
        # first wait for data is 5 s, then keep-alive).
        wait_until(lambda: server.get("/status")[0] == 200, timeout=15,
                   message="the idle connections cut and their slots given back")
    finally:
        for sock in held:
            sock.close()


def test_without_a_cap_one_address_may_hold_more(servers):
    server = servers("gevent", {**CAP, "MAX_CONNECTIONS_PER_CLIENT": "off"}, args=KEEP_IDLE)
    held = [idle(server.port) for _ in range(20)]
    try:
        assert server.get("/status")[0] == 200
    finally:
        for sock in held:
            sock.close()


# -- behind a proxy: counted per forwarded address, per open request ------------------------

def test_behind_a_proxy_each_forwarded_address_gets_the_cap_not_the_proxy(servers):
    server = servers("gevent", {**CAP, "MAX_CONNECTIONS_PER_CLIENT": "2", "PROXY_HOPS": "1"})
    client = {"X-Forwarded-For": "203.0.113.7"}
    streams = [server.stream("/video_feed?fps=5", headers=client) for _ in range(2)]
    # More connections from the proxy's own address than the cap, for other clients.
    others = [server.stream("/video_feed?fps=5", headers={"X-Forwarded-For": f"198.51.100.{i}"})
              for i in range(1, 4)]
    # One IPv6 host: two addresses of its /64.
    others += [server.stream("/video_feed?fps=5", headers={"X-Forwarded-For": f"2001:db8::{i}"})
               for i in (1, 2)]
    try:
        for stream in streams + others:
            assert stream.status == 200
            stream.next_part()
        code, headers, body, elapsed = timed_get(server, headers=client)
        assert code == 503 and headers["Retry-After"] == "5", (code, body)
        assert b"MAX_CONNECTIONS_PER_CLIENT" in body and elapsed < 2.0
        assert server.get("/status", headers={"X-Forwarded-For": "2001:db8::ff"})[0] == 503
        assert server.get("/status", headers={"X-Forwarded-For": "2001:db8:0:1::1"})[0] == 200
        assert server.get("/status", headers={"X-Forwarded-For": "198.51.100.1"})[0] == 200
        for stream in streams:
            stream.close()
        wait_until(lambda: server.get("/status", headers=client)[0] == 200, timeout=3,
                   message="the streams' slots given back")
    finally:
        for stream in streams + others:
            stream.close()
    assert "refused a request from 203.0.113.7: 2 open already" in server.log()
