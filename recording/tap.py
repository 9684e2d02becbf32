"""The recorder's tap: what request handlers asked of a camera's recording, and the
native thread that turns it and the camera's frames into the writer's messages.

    request handlers --ask--> Asked ------------------+
    camera Fanout --history--> tap thread --> ClipPlanner --> WriterQueue --> Writer

The tap looks at the camera's frames every TAP_INTERVAL and takes every live one since
its last look (`Viewer.next_frames` over a short fanout history); the planner
(plan.py) decides when clips start, cut and end and picks the timelapse stills; the
tap hands those decisions to the writer's bounded queue (writer.py). It never
touches the disk, so a stalled disk costs dropped recording frames (counted), never a
viewer's or the capture's time. It runs while something is asked or the settings record
all the time; a request starts it again.

Request handlers (greenlets) only change what is asked under a native lock and wake or
start the thread: they never wait for the disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from capture import CameraClosed, native

from .clip_file import RecordingError
from .plan import Asked, Clip, ClipPlanner, Rules
from .writer import Figures, Stop, Writer, WriterQueue

if TYPE_CHECKING:
    from base_camera import BaseCamera
    from capture import Viewer

log = logging.getLogger("recording")

TAP_INTERVAL = 1.0  # seconds between the tap's looks at the frames (requests wake it)...
FIRST_LOOK = 0.1  # ...and while a clip is asked for but has no frame yet, so it starts now
HISTORY_FRAMES = 64  # the fanout's history to start with: two looks' worth at 30 fps...
HISTORY_MAX = 1024  # ...grown to two looks' worth of what the camera really delivers


class Tap:
    """One camera's tap. `queue_bytes` and `queue_frames` bound the writer's queue
    (read at each session's start)."""

    def __init__(self, camera: BaseCamera, rules: Rules, writer: Writer, figures: Figures,
                 queue_bytes: int, queue_frames: int) -> None:
        self.camera = camera
        self.name = camera.name
        self.rules = rules
        self.writer = writer
        self.figures = figures
        self.queue_bytes, self.queue_frames = queue_bytes, queue_frames
        self.closed = False
        self.camera_closed = False
        self.running = False  # a tap thread exists (it sets this False as it ends)
        self.planner: ClipPlanner | None = None  # the running session's, for status
        self.queue: WriterQueue | None = None
        self._asked = Asked()  # replaced under _lock, read whole without it
        self._lock = native.allocate_lock()
        self._thread_done: native.Flag | None = None
        self._wakeup = native.Waiter()  # requests and close() wake the tap at once

    # -- requests (any thread; never blocks on disk) ----------------------------------

    @property
    def asked(self) -> Asked:
        """What is asked now."""
        return self._asked

    @property
    def clip(self) -> Clip | None:
        """The clip being recorded, if any."""
        planner = self.planner
        return planner.clip if planner is not None else None

    def check_open(self) -> None:
        if self.closed or self.camera_closed:
            raise RecordingError("the server is shutting down")

    def ask(self, change: Callable[[Asked], Asked | None]) -> Asked | None:
        """Apply a request to what is asked, under the lock, and wake the tap, starting
        it unless it runs; None, and nothing changes, when `change` returns None."""
        with self._lock:
            asked = change(self._asked)
            if asked is None:
                return None
            self._asked = asked
            self._ensure_running()
        self._wakeup.wake()
        return asked

    def run(self) -> None:
        """Start the tap thread unless it runs (recording all the time)."""
        with self._lock:
            self._ensure_running()

    def close(self, wait: float) -> None:
        """Stop: the open file is finished (trailer, fsync) and playable. Waits up to
        `wait` seconds for that; call again with a wait to wait more."""
        # No lock: this runs in signal handlers too, which may have interrupted a holder.
        self.closed = True
        done = self._thread_done if self.running else None
        self._wakeup.wake()
        if done is not None and wait > 0 and not done.wait(wait):
            log.warning("%s: the recording was not finished within %.1f s", self.name, wait)

    def _ensure_running(self) -> None:
        """Under _lock: start the tap thread unless it runs."""
        if self.running or self.closed or self.camera_closed:
            return
        self.running = True
        self._thread_done = native.Flag()
        native.start_thread(self._thread, (self._thread_done,))

    def _needed(self) -> bool:
        """Under _lock: is there anything for the threads to do?"""
        if self.closed or self.camera_closed:
            return False
        return self.rules.persistent or self._asked.pending

    # -- the tap thread ---------------------------------------------------------------

    def _thread(self, done: native.Flag) -> None:
        try:
            while True:
                try:
                    self._session()
                except Exception:  # noqa: BLE001 - a bug must not end recording silently
                    log.exception("%s: recording failed", self.name)
                    self.figures.error = "internal error: see the log"
                    _pause(1.0)
                with self._lock:
                    if not self._needed():
                        self.running = False
                        return
        finally:
            done.set()
            native.destroy_thread_hub()

    def _session(self) -> None:
        """Subscribe, run the writer, and feed it until nothing is wanted any more."""
        planner = self.planner = ClipPlanner(self.rules)
        queue = self.queue = WriterQueue(self.queue_bytes, self.queue_frames)
        writer_done = native.Flag()
        native.start_thread(self.writer.run, (queue, writer_done))
        viewer = None
        try:
            try:
                viewer = self.camera.subscribe(counted=False, native_thread=True)
            except CameraClosed:
                self.camera_closed = True
                return
            self._follow(viewer, planner, queue)
        finally:
            if viewer is not None:
                viewer.close()
                if self.camera.fanout.subscribers == 0:
                    self.camera.fanout.keep_history(0)
            queue.put([*planner.end(), Stop()])
            writer_done.wait(3600)  # the writer finishes the file; the camera is free now

    def _follow(self, viewer: Viewer, planner: ClipPlanner, queue: WriterQueue) -> None:
        """Look at the frames until nothing is wanted or the camera closes."""
        history = HISTORY_FRAMES
        self.camera.fanout.keep_history(history)
        missed = None
        while True:
            # Every frame since the last look comes from the fanout's history: one
            # wake-up per TAP_INTERVAL, not per frame (two thread wake-ups cost more
            # than a frame's own work). Frames are timed by capture time, so looking
            # late changes nothing in the files.
            first_look = self._asked.pending and planner.clip is None
            self._wakeup.wait(FIRST_LOOK if first_look else TAP_INTERVAL)
            try:
                frames = viewer.next_frames(0)
            except CameraClosed:
                self.camera_closed = True
                return
            if missed is not None:
                if viewer.missed != missed and planner.clip is not None:
                    self.figures.dropped += viewer.missed - missed  # fell out of the history
                if len(frames) * 4 > history * 3 and history < HISTORY_MAX:
                    # A faster camera than the history was sized for: keep more. (Not
                    # on the first look, which may get older frames kept before.)
                    history = min(HISTORY_MAX, len(frames) * 3)
                    self.camera.fanout.keep_history(history)
            missed = viewer.missed
            asked, closing = self._asked, self.closed
            if frames:
                steps = planner.frames(frames, asked, closing)
            else:  # no frame: deadlines still pass (a camera that stopped delivering)
                steps = planner.tick(time.time(), asked, closing)
            if steps:
                self.figures.dropped += queue.put(steps)
            with self._lock:
                self._asked = self._asked.expire(planner.as_of)
                needed = self._needed()
            if planner.clip is None and not needed:
                return


def _pause(seconds: float) -> None:
    """Sleep in a native thread (time.sleep may be gevent's)."""
    lock = native.allocate_lock()
    lock.acquire()
    lock.acquire(timeout=seconds)
