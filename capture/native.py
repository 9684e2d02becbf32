"""Native OS threads and waits, whatever gevent patched.

Under gunicorn's gevent worker `threading` is monkey-patched: its threads are greenlets
and its locks switch greenlets on the one hub thread. Capture, recording and size
variants must run in real OS threads (a driver blocked in C would freeze every client)
and wait on real locks. This module builds both from the stdlib's originals; without
gevent they are simply the stdlib's threads and locks.
"""

from __future__ import annotations

import importlib


def original(module: str, name: str):
    """`module.name` as the stdlib defines it, even after gevent monkey-patched it."""
    try:
        from gevent import monkey
    except ImportError:
        return getattr(importlib.import_module(module), name)
    return monkey.get_original(module, name)


start_thread = original("_thread", "start_new_thread")
allocate_lock = original("_thread", "allocate_lock")


def gevent_hub():
    """The calling thread's gevent hub if gevent patched `threading`, else None."""
    try:
        from gevent import get_hub, monkey
    except ImportError:
        return None
    return get_hub() if monkey.is_module_patched("threading") else None


class Flag:
    """A set-once flag: `set()` from any thread; `wait()` blocks only the calling OS thread."""

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._lock.acquire()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        # Callers may race: only the first one releases the lock.
        if not self._set:
            self._set = True
            try:
                self._lock.release()
            except RuntimeError:
                pass

    def wait(self, timeout: float) -> bool:
        """True once set; False after `timeout` seconds."""
        if self._lock.acquire(timeout=max(timeout, 0)):
            self._lock.release()
            return True
        return self._set


class Waiter:
    """A reusable wake-up for one OS thread: `wait()` returns after the next `wake()`.

    A binary semaphore: wakes that come before the wait are kept (coalesced), so a wake
    between the caller's check and its wait is never lost.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._lock.acquire()

    def wake(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # already woken, not yet waited for
            pass

    def wait(self, timeout: float | None = None) -> None:
        if timeout is None:
            self._lock.acquire()
        else:
            self._lock.acquire(timeout=max(timeout, 0))


def destroy_thread_hub() -> None:
    """Free the gevent hub code in this native thread may have made (a patched
    time.sleep makes one), so a thread that ends leaves no event loop behind."""
    try:
        from gevent._hub_local import get_hub_if_exists  # the only way that makes none
    except ImportError:
        return
    hub = get_hub_if_exists()
    if hub is not None:
        hub.destroy(destroy_loop=True)
