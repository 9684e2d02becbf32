"""A fake picamera2: what camera_pi.py relies on, behaving as picamera2 does at 3e6dff0
(0.3.36+). Written from reading its source; line numbers are picamera2/picamera2.py's
unless another file is named.

- One camera manager per process, the class attribute Picamera2._cm (:161). add()
  registers a camera and, for the first, starts the listener with threading.Thread
  (:83-86, :99-103): under gevent's patch_all a greenlet on the hub of whichever native
  thread opened first. It waits on libcamera's event_fd in a 0.2 s select loop
  (:116-127), hands completed requests to their camera and pokes that camera's notify
  pipe (:129-143). cleanup() unregisters and, for the last camera, stops and joins it
  (:105-114).
- Picamera2(camera_num=0, ...) (:314-376) makes the notify pipe first (:338), maps the
  number through global_camera_info() (IndexError when absent, :344), registers with the
  manager (:345) and only then opens; a failed open is re-raised as RuntimeError("Camera
  __init__ sequence did not complete.") from its cause (:366-368; `from e` since 0.3.35,
  before that only __context__). So a failed constructor leaves its pipe open and itself
  registered: close() returns early for a camera that is not open (:712).
- global_camera_info() (:295-312): a dict per camera, sorted by Id backwards, USB last.
- create_video_configuration(main=..., transform=..., controls=...) (:881-935): the main
  size rounded down to even numbers (align_stream(optimal=False), :1087-1100).
- start_recording(encoder, output, pts=None, config=None, quality=None, name=None)
  (:2521-2536) gives the encoder its output and size and calls encoder.start(quality=...)
  (:2434-2477), then start(): the event loop thread (NullPreview,
  previews/null_preview.py:52-65) if none runs yet, then the camera (:1299-1352). The
  loop waits on the notify pipe and calls process_requests() (null_preview.py:12-29),
  which runs queued jobs and feeds the encoders (:1411-1493). An exception there ends the
  loop thread for good (null_preview.py:84-88); the loop is stopped only by close().
- stop() hands stop_ to the event loop and waits with no timeout (:1394-1405,
  dispatch_functions :1508-1537, job.py:78-84). cancel_all_and_flush() cancels the jobs
  waiting (:1354-1366), which makes that wait raise CancelledError.
- stop_recording() is stop() then stop_encoder() (:2538-2541). close() stops the event
  loop, then the camera directly, releases it, unregisters, closes the pipe (:704-735).

Test switches (environment, read at each call):
FAKE_PICAMERA2_LOG         append each call as a JSON line to this file
FAKE_PICAMERA2_CAMERAS, FAKE_PICAMERA2_BUSY: see libcamera.py
FAKE_PICAMERA2_LOOP_DIES   camera numbers whose event loop raises, and
FAKE_PICAMERA2_LOOP_HANGS  camera numbers whose event loop blocks for ever (holding the
                           camera's lock, as a job stuck in process_requests would),
FAKE_PICAMERA2_LOOP_AFTER  on its first wake after this many frames (default 5)
FAKE_PICAMERA2_PLATFORM    vc4 (Pi 4 and older, the default) or pisp (Pi 5): encoders.py
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import threading
from concurrent.futures import CancelledError, Future

import libcamera
from libcamera import numbers

_log = logging.getLogger("picamera2")


def record(event: str, **fields) -> None:
    path = os.environ.get("FAKE_PICAMERA2_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"event": event, **fields}) + "\n")


class CameraManager:
    """picamera2's own manager (:76-143): one listener thread for every camera."""

    def __init__(self) -> None:
        self.running = False
        self.cameras: dict[int, Picamera2] = {}
        self._lock = threading.Lock()
        self._cms = None

    @property
    def cms(self) -> libcamera.CameraManager:
        if self._cms is None:
            self._cms = libcamera.CameraManager.singleton()
        return self._cms

    def setup(self) -> None:
        self.thread = threading.Thread(target=self.listen, daemon=True)
        self.running = True
        self.thread.start()

    def add(self, index: int, camera: Picamera2) -> None:
        with self._lock:
            self.cameras[index] = camera
            if not self.running:
                self.setup()

    def cleanup(self, index: int) -> None:
        with self._lock:
            del self.cameras[index]
            last = not self.cameras
            if last:
                self.running = False
        if last:
            self.thread.join()  # no timeout, as in picamera2 (:113)
            self._cms = None

    def listen(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.cms.event_fd, selectors.EVENT_READ, self.handle_request)
        while self.running:
            for key, _ in selector.select(0.2):
                key.data()
        selector.unregister(self.cms.event_fd)
        self._cms = None

    def handle_request(self, flushid=None) -> None:
        with self._lock:
            poke = set()
            for request in self.cms.get_ready_requests():
                if (request.status == libcamera.Request.Status.Complete
                        and request.cookie != flushid):
                    # A KeyError ends the listener, as in picamera2.
                    camera = self.cameras[request.cookie]
                    with camera._requestslock:
                        camera._requests.append(request)
                    poke.add(request.cookie)
                else:
                    request.reuse()
            for cookie in poke:
                os.write(self.cameras[cookie].notifyme_w, b"\x00")


class Job:
    """job.py: functions the event loop runs; the caller waits on a Future."""

    def __init__(self, functions) -> None:
        self._functions = list(functions)
        self._future = Future()
        self._future.set_running_or_notify_cancel()
        self._result = None

    def execute(self) -> bool:
        try:
            while self._functions:
                done, self._result = self._functions[0]()
                if not done:
                    break
                self._functions.pop(0)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting caller
            self._future.set_exception(exc)
            self._functions = []
        return not self._functions

    def signal(self) -> None:
        if not self._future.done():
            self._future.set_result(self._result)

    def get_result(self, timeout=None):
        return self._future.result(timeout=timeout)

    def cancel(self) -> None:
        self._future.set_exception(CancelledError())


class NullPreview:
    """previews/null_preview.py: the event loop thread, one per open camera."""

    def __init__(self) -> None:
        self._abort = threading.Event()
        self._started = threading.Event()
        self.picam2 = None

    def start(self, picam2: Picamera2) -> None:
        self.picam2 = picam2
        picam2.attach_preview(self)
        self._started.clear()
        self._abort.clear()
        self.thread = threading.Thread(target=self.thread_func, args=(picam2,), daemon=True)
        self.thread.start()
        self._started.wait()

    def thread_func(self, picam2: Picamera2) -> None:
        selector = selectors.DefaultSelector()
        selector.register(picam2.notifyme_r, selectors.EVENT_READ, self.handle_request)
        self._started.set()
        while not self._abort.is_set():
            for key, _ in selector.select(0.2):
                picam2.notifymeread.read()
                key.data(picam2)

    def handle_request(self, picam2: Picamera2) -> None:
        try:
            picam2.process_requests(self)
        except Exception as exc:
            _log.exception("Exception during process_requests()", exc_info=exc)
            raise  # ends the event loop thread

    def stop(self) -> None:
        self._abort.set()
        self.thread.join()
        self.picam2.detach_preview()
        self.picam2 = None


class Picamera2:
    _cm = CameraManager()

    @staticmethod
    def global_camera_info() -> list[dict]:
        cameras = [{**camera.properties, "Id": camera.id, "Num": num}
                   for num, camera in enumerate(Picamera2._cm.cms.cameras)]
        return sorted(cameras, key=lambda c: ("/usb" not in c["Id"], c["Id"]), reverse=True)

    def __init__(self, camera_num=0, verbose_console=None, tuning=None, allocator=None) -> None:
        self.notifyme_r, self.notifyme_w = os.pipe2(os.O_NONBLOCK)
        self.notifymeread = os.fdopen(self.notifyme_r, "rb")
        self._preview = None
        self.is_open = False
        camera_num = self.global_camera_info()[camera_num]["Num"]
        self._cm.add(camera_num, self)
        self.camera_idx = camera_num
        self._requestslock = threading.Lock()
        self._requests = []
        self.camera = None
        self.camera_config = None
        self.started = False
        self.lock = threading.Lock()  # guards _job_list, as picamera2's (:399)
        self._job_list: list[Job] = []
        self._encoders = set()
        self._event_loop_running = False
        self._frames = 0
        try:
            self.camera = self._cm.cms.cameras[camera_num]
            self.camera.acquire()
            self.is_open = True
        except Exception as e:
            _log.error("Camera __init__ sequence did not complete.")
            raise RuntimeError("Camera __init__ sequence did not complete.") from e
        atexit.register(self.close)
        record("open", camera=camera_num)

    def __del__(self) -> None:
        self.close()

    def create_video_configuration(  # picamera2's own signature and defaults
            self, main={}, lores=None, raw={}, transform=libcamera.Transform(),  # noqa: B006, B008
            colour_space=None, buffer_count=6, controls={}, display="main",  # noqa: B006
            encode="main", queue=True, sensor={}, use_case="video") -> dict:  # noqa: B006
        if self.camera is None:
            raise RuntimeError("Camera not opened")
        stream = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}
        for key, value in main.items():
            if key not in ("format", "size", "stride", "preserve_ar"):
                raise ValueError(f"Bad key {key!r}")
            stream[key] = value
        width, height = stream["size"]
        stream["size"] = (width - width % 2, height - height % 2)
        return {"use_case": use_case, "transform": transform, "buffer_count": buffer_count,
                "main": stream, "controls": {"FrameDurationLimits": (33333, 33333)} | controls,
                "display": display, "encode": encode}

    def configure(self, camera_config) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        self.camera_config = camera_config
        t = camera_config["transform"]
        record("configure", camera=self.camera_idx, size=list(camera_config["main"]["size"]),
               hflip=t.hflip, vflip=t.vflip, fps=self._fps())

    def camera_configuration(self) -> dict:
        return self.camera_config

    def _fps(self) -> float:
        controls = self.camera_config["controls"]
        return controls.get("FrameRate", 1e6 / controls["FrameDurationLimits"][0])

    def start_recording(self, encoder, output, pts=None, config=None, quality=None,
                        name=None) -> None:
        if not self.camera_config and config is None:
            config = self.create_video_configuration()
        if config is not None:
            self.configure(config)
        encoder.output = output
        encoder.width, encoder.height = self.camera_config["main"]["size"]
        if getattr(encoder, "framerate", None) is None:
            encoder.framerate = 30.0  # nominal: the sensor's fastest, at most 30 (:2466-2474)
        encoder.start(quality=quality)
        with self.lock:
            self._encoders.add(encoder)
        self.start()
        record("start_recording", camera=self.camera_idx, quality=getattr(quality, "name", None),
               bitrate=getattr(encoder, "bitrate", None), qp=getattr(encoder, "qp", None))

    def start(self, config=None, show_preview=False) -> None:
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        if not self._event_loop_running:
            NullPreview().start(self)
        if not self.started:
            self.camera.start(self._fps(), self.camera_idx)
            self.started = True

    def attach_preview(self, preview) -> None:
        self._preview = preview
        self._event_loop_running = True

    def detach_preview(self) -> None:
        self._preview = None
        self._event_loop_running = False

    def process_requests(self, display) -> None:
        with self._requestslock:
            requests, self._requests = self._requests, []
        with self.lock:
            if self._frames >= int(os.environ.get("FAKE_PICAMERA2_LOOP_AFTER", "5")):
                # The next wake after that many frames, before any job runs (a stop
                # dispatched now is never half done):
                if self.camera_idx in numbers("FAKE_PICAMERA2_LOOP_DIES"):
                    raise RuntimeError("fake: the event loop died")
                if self.camera_idx in numbers("FAKE_PICAMERA2_LOOP_HANGS"):
                    threading.Event().wait()  # for ever, holding self.lock
            finished = []
            while self._job_list and self._job_list[0].execute():
                finished.append(self._job_list.pop(0))
            for request in requests:
                self._frames += 1
                for encoder in self._encoders:
                    encoder.encode("main", request)
                request.reuse()
        for job in finished:
            job.signal()

    def dispatch_functions(self, functions, wait, signal_function=None, immediate=False):
        with self.lock:
            job = Job(functions)
            self._job_list.append(job)
            if immediate:
                os.write(self.notifyme_w, b"\x00")
        return job.get_result(timeout=None if wait is True else wait) if wait else job

    def cancel_all_and_flush(self) -> None:
        with self.lock:
            for job in self._job_list:
                job.cancel()
            self._job_list = []

    def stop_(self, request=None):
        if self.started:
            self.camera.stop()
            self._cm.handle_request(self.camera_idx)  # flush this camera's requests (:1381)
            self.started = False
            with self._requestslock:
                for unseen in self._requests:
                    unseen.reuse()
                self._requests = []
        return True, None

    def stop(self) -> None:
        if not self.started:
            return
        if self._preview is not None and self._event_loop_running:
            self.dispatch_functions([self.stop_], wait=True, immediate=True)  # waits for ever
        else:
            self.stop_()

    def stop_encoder(self, encoders=None) -> None:
        for encoder in list(self._encoders):
            encoder.stop()
        with self.lock:
            self._encoders.clear()

    def stop_recording(self) -> None:
        self.stop()
        self.stop_encoder()
        record("stop_recording", camera=self.camera_idx)

    def close(self) -> None:
        atexit.unregister(self.close)
        if self._preview:
            self._preview.stop()
        if not self.is_open:
            return
        self.stop()
        self.camera.release()
        self._cm.cleanup(self.camera_idx)
        self.is_open = False
        self.camera = None
        self.notifymeread.close()
        os.close(self.notifyme_w)
        record("close", camera=self.camera_idx)
