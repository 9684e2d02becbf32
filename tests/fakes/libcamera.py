"""Fake libcamera: the parts of its Python binding that picamera2 (the fake beside it) uses.

Modelled on raspberrypi/libcamera at 26bfadc6, src/py/libcamera:
- CameraManager.singleton() returns the live manager or makes one when every reference
  to the last one is gone (py_main.cpp:133-141). A manager owns an eventfd
  (EFD_CLOEXEC | EFD_NONBLOCK, py_camera_manager.cpp:26) that libcamera's own thread
  writes when a request completes (:95-102) and get_ready_requests() reads (:62-80).
- Camera.acquire() raises RuntimeError "Failed to acquire camera: <strerror>" (a
  std::system_error, py_main.cpp:153-157); here EBUSY when another program holds the
  camera (FAKE_PICAMERA2_BUSY) or this process already does.
- Camera.start() starts the sensor: libcamera's threads are C++ threads, so here a native
  thread even under gevent. It completes one request per frame period, with at most
  BUFFERS requests out at a time (a request comes back when picamera2 is done with it).

Test switches, read at each call so a test may change them between runs:
FAKE_PICAMERA2_CAMERAS  how many cameras are connected (default 1)
FAKE_PICAMERA2_BUSY     comma-separated numbers of cameras another program holds
"""

from __future__ import annotations

import enum
import errno
import os
import weakref
from dataclasses import dataclass

from capture.native import original  # the project's: the stdlib's own, after gevent's patch

BUFFERS = 6  # picamera2's default buffer_count for video (picamera2.py:888)


# The real libcamera's threads are C threads: native, whatever gevent patched.
_start_thread = original("_thread", "start_new_thread")
_new_lock = original("_thread", "allocate_lock")
_monotonic = original("time", "monotonic")


def numbers(variable: str) -> set[int]:
    """The camera numbers listed in a comma-separated environment variable."""
    return {int(n) for n in os.environ.get(variable, "").split(",") if n.strip()}


@dataclass
class Transform:
    hflip: bool = False
    vflip: bool = False


class Request:
    class Status(enum.Enum):
        Pending = 0
        Complete = 1
        Cancelled = 2

    def __init__(self, camera: Camera, cookie: int) -> None:
        self.camera, self.cookie, self.status = camera, cookie, Request.Status.Complete

    def reuse(self) -> None:
        """picamera2 is done with it: the buffer goes back to the sensor."""
        self.camera._returned()


class Camera:
    """A view of camera `num`; its state lives in its manager (like libcamera's own
    Camera objects, which the binding wraps anew on every `cameras` call)."""

    def __init__(self, manager: CameraManager, num: int) -> None:
        # Keeps the manager alive (py_camera_manager.cpp:48).
        self._manager, self._num = manager, num
        # Sorted by Id backwards, camera 0 comes first, as on a Pi 5 (cam0 is i2c@88000).
        self.id = f"/base/axi/pcie@120000/rp1/i2c@{88 - 8 * num}000/imx708@1a"
        self.properties = {"Model": "imx708", "Location": 2, "Rotation": 180}

    def __eq__(self, other) -> bool:
        return (isinstance(other, Camera)
                and (other._manager, other._num) == (self._manager, self._num))

    __hash__ = object.__hash__

    def acquire(self) -> None:
        state = self._manager._state(self._num)
        if state.acquired or self._num in numbers("FAKE_PICAMERA2_BUSY"):
            raise RuntimeError(f"Failed to acquire camera: {os.strerror(errno.EBUSY)}")
        state.acquired = True

    def release(self) -> None:
        self._manager._state(self._num).acquired = False

    def start(self, fps: float, cookie: int) -> None:
        state = self._manager._state(self._num)
        state.stop, state.stopped = _new_lock(), _new_lock()
        state.stop.acquire()
        state.stopped.acquire()
        state.out = 0
        _start_thread(self._sense, (state, 1.0 / fps, cookie))

    def stop(self) -> None:
        state = self._manager._state(self._num)
        if state.stop is not None:
            state.stop.release()
            state.stopped.acquire()
            state.stop = None

    def _sense(self, state, period: float, cookie: int) -> None:
        due = _monotonic()
        while not state.stop.acquire(timeout=max(0.0, due - _monotonic())):
            due += period
            with state.lock:
                if state.out >= BUFFERS:
                    continue  # nobody gave a buffer back: the sensor waits
                state.out += 1
            self._manager._complete(Request(self, cookie))
        state.stopped.release()

    def _returned(self) -> None:
        state = self._manager._state(self._num)
        with state.lock:
            state.out -= 1


class _CameraState:
    def __init__(self) -> None:
        self.lock = _new_lock()
        self.acquired = False
        self.stop = self.stopped = None
        self.out = 0


class CameraManager:
    _live = None  # weak reference to the one manager, as the binding keeps

    @staticmethod
    def singleton() -> CameraManager:
        manager = CameraManager._live() if CameraManager._live is not None else None
        if manager is None:
            manager = CameraManager()
            CameraManager._live = weakref.ref(manager)
        return manager

    def __init__(self) -> None:
        self.event_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._lock = _new_lock()
        self._ready: list[Request] = []
        self._states: dict[int, _CameraState] = {}

    def __del__(self) -> None:
        os.close(self.event_fd)

    @property
    def cameras(self) -> list[Camera]:
        return [Camera(self, n) for n in range(int(os.environ.get("FAKE_PICAMERA2_CAMERAS", "1")))]

    def get_ready_requests(self) -> list[Request]:
        try:
            os.eventfd_read(self.event_fd)
        except BlockingIOError:
            return []
        with self._lock:
            ready, self._ready = self._ready, []
        return ready

    def _complete(self, request: Request) -> None:
        with self._lock:
            self._ready.append(request)
        os.eventfd_write(self.event_fd, 1)

    def _state(self, num: int) -> _CameraState:
        with self._lock:
            return self._states.setdefault(num, _CameraState())
