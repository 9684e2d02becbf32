"""The server's adjustments inside gunicorn and logging: active with the versions
installed, and one warning naming the package when a dependency no longer allows one."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from conftest import ROOT

from server import patches


def test_the_chunk_write_patch_applies_with_the_installed_gunicorn(monkeypatch, caplog):
    from gunicorn import util

    monkeypatch.setattr(util, "write_chunk", util.write_chunk)  # restored afterwards
    assert patches.chunked_writes() is True
    assert util.write_chunk is patches.write_chunk
    assert not caplog.records


def test_a_gunicorn_without_write_chunk_gets_one_warning_naming_its_version(monkeypatch,
                                                                            caplog):
    from gunicorn import util

    monkeypatch.delattr(util, "write_chunk")
    caplog.set_level(logging.WARNING, logger="server")
    assert patches.chunked_writes() is False
    [line] = caplog.messages
    assert line.startswith(patches.version_of("gunicorn") + ": cannot send each stream chunk")
    assert "runs without it" in line


def test_a_gunicorn_whose_writes_stop_calling_write_chunk_is_noticed(monkeypatch, caplog):
    from gunicorn import util

    monkeypatch.setattr(util, "write_chunk", util.write_chunk)
    monkeypatch.setattr(util, "write", lambda sock, data, chunked=False: sock.sendall(data))
    caplog.set_level(logging.WARNING, logger="server")
    assert patches.chunked_writes() is False
    assert "no longer calls util.write_chunk" in caplog.text


SCRIPT = """
import json, logging
from gevent import monkey
monkey.patch_all()
logging.basicConfig()
from capture import native
from server import patches
before = type(logging._lock)
applied = patches.native_logging_locks()
handler = logging.StreamHandler()
native_rlock = type(native.original("_thread", "RLock")())
print(json.dumps({"applied": applied, "gevent_before": before is not native_rlock,
                  "module": type(logging._lock) is native_rlock,
                  "old_handler": type(logging.getLogger().handlers[0].lock) is native_rlock,
                  "new_handler": type(handler.lock) is native_rlock}))
"""


def test_logging_gets_native_locks_after_geventss_patch_with_the_installed_versions():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert json.loads(out) == {"applied": True, "gevent_before": True, "module": True,
                               "old_handler": True, "new_handler": True}


def test_a_python_whose_logging_changed_gets_one_warning_and_no_half_patch(monkeypatch,
                                                                           caplog):
    monkeypatch.delattr(logging, "_handlerList")
    create_lock = logging.Handler.createLock
    caplog.set_level(logging.WARNING, logger="server")
    assert patches.native_logging_locks() is False
    assert logging.Handler.createLock is create_lock
    [line] = caplog.messages
    assert line.startswith(patches.version_of("python") + ": cannot give logging native locks")
    assert "_handlerList" in line


def test_the_connection_caps_listener_hook_applies_with_the_installed_gevent(monkeypatch,
                                                                             caplog):
    import socket

    from gevent import socket as gevent_socket

    from server import connections

    caplog.set_level(logging.WARNING, logger="server")
    def listener():
        plain = socket.socket()
        plain.bind(("127.0.0.1", 0))
        return gevent_socket.socket(plain.family, plain.type, plain.proto,
                                    fileno=plain.detach())

    original = listener()
    gated = connections._gevent_listener(original, connections.Gate(2))
    assert gated is not original and not caplog.records
    gated.close()
    from gevent import _socket3

    monkeypatch.delattr(_socket3, "_wrefsocket")  # a gevent whose internals moved
    original = listener()
    assert connections._gevent_listener(original, connections.Gate(2)) is original
    original.close()
    assert caplog.messages[0].startswith(patches.version_of("gevent") + ": cannot refuse")
