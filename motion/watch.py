"""Motion detection at work: one native thread per camera that watches for motion.

    camera Fanout --newest frame, at most motion_fps a second--> watch thread:
        small_grey (1/4 or 1/8 scale decode) -> Detector -> Episodes -> recorder, publish

The thread is another consumer of the camera's newest frame, like a viewer, but off the
capture thread and the event loop: it waits until the next frame is due, then takes the
newest one (frames in between are skipped, never queued), so a slow detector costs
analysed frames, never a viewer's or the recording's. Its subscription keeps the camera
capturing with no viewers, as a recording does.

At an event's start with `record = "events"` it triggers the recorder's event at the
first motion frame's capture time (the clip starts `pre_event` before it), again on
every further motion frame (the clip goes on `post_event` after the last), and keeps the
highest scored frame's JPEG as the event's snapshot beside the clip
(`<clip name without .mkv>.jpg`). Each start and end is published as a "motion" event
through the `publish(kind, data)` callable it was given (the event feed and webhooks).

Requests (greenlets) only read figures and flip `enabled` under a native lock; they
never wait for the thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import cv2

from capture import CameraClosed, native

from .detector import Detector, Tuning, small_grey
from .episode import Episodes, Event, Step
from .mask import MaskError

if TYPE_CHECKING:
    from base_camera import BaseCamera
    from capture import Frame
    from recording import Recorder

log = logging.getLogger("motion")

Publish = Callable[[str, dict], object]

TICK = 1.0  # s: without a new frame, look at the gap this often
CLIP_WAIT = 0.3  # s: at an event's start, wait this long at most for the clip's name
FIGURES = 20  # analysed frames the fps and ms_per_frame figures average over
JPEG_QUALITY = 85  # of motion.jpg


class Watch:
    """One camera's motion detection: its settings, its thread, its figures.
    `active=False`: another process owns the camera (a CAMERA=redis web worker)."""

    def __init__(self, camera: BaseCamera, recorder: Recorder | None = None,
                 publish: Publish | None = None, active: bool = True) -> None:
        self.camera = camera
        self.name = camera.name
        self.settings = camera.settings
        self.recorder = recorder
        self.publish = publish
        self.active = active
        # Inactive: forward(camera, command, args) -> result hands "motion" (args:
        # enabled) and "motion.jpg" to the owner (over Redis), as recorders do.
        self.forward: Callable[[str, str, dict], object] | None = None
        self.enabled = bool(self.settings.motion)  # switched at run time by set_enabled
        self.detector: Detector | None = None  # the running session's (motion.jpg)
        self.episodes = Episodes(self.settings.motion_frames, self.settings.motion_gap)
        self.score: float | None = None
        self.light_changes = 0
        self.error: str | None = None
        self._times: deque[float] = deque(maxlen=FIGURES)  # monotonic, of analyses
        self._cpu: deque[float] = deque(maxlen=FIGURES)  # thread CPU seconds of each
        self._event_info: dict | None = None  # the current or last event, for status
        self._clip: str | None = None  # the current event's clip file name
        self._peak_jpeg: bytes | None = None
        self._saved_peak: bytes | None = None  # the peak last written as the snapshot
        self._lock = native.allocate_lock()
        self._wakeup = native.Waiter()
        self._running = False
        self._switched = False  # by set_enabled: then /status shows it, on or off
        self._closed = False
        self._camera_closed = False
        self._done: native.Flag | None = None

    # -- control (any thread) -------------------------------------------------------------

    def start(self) -> None:
        """Begin detecting if enabled (idempotent)."""
        if self.active and self.enabled:
            with self._lock:
                self._ensure_running()

    def set_enabled(self, enabled: bool) -> None:
        """Switch detection on or off now (not kept over a restart). Off: a current
        event ends, the camera is let go (it stops once nothing else needs it)."""
        with self._lock:
            self.enabled = enabled
            self._switched = True
            if enabled and self.active:
                self.error = None
                self._ensure_running()
        self._wakeup.wake()

    def close(self, wait: float = 2.0) -> None:
        """Stop for good; wait up to `wait` seconds for the thread to end."""
        self._closed = True  # no lock: signal handlers call this too
        done = self._done if self._running else None
        self._wakeup.wake()
        if done is not None and wait > 0:
            done.wait(wait)

    def _ensure_running(self) -> None:
        """Under _lock: start the thread unless it runs."""
        if self._running or self._closed or self._camera_closed:
            return
        self._running = True
        self._done = native.Flag()
        native.start_thread(self._thread, (self._done,))

    def _wanted(self) -> bool:
        return self.enabled and self.active and not self._closed and not self._camera_closed

    # -- what requests read -----------------------------------------------------------

    @property
    def shown(self) -> bool:
        """Has motion a place in /status: set for this camera, or switched at run time."""
        return self.active and (bool(self.settings.motion) or self._switched)

    def status(self) -> dict | None:
        """/status's `motion`: None when detection is not set for this camera."""
        if not self.shown:
            return None
        event, detector = self.episodes.event, self.detector
        times, cpu = list(self._times), list(self._cpu)
        now = time.monotonic()
        fps = None
        if len(times) >= 2 and now - times[-1] < 2.0 and times[-1] > times[0]:
            fps = round((len(times) - 1) / (times[-1] - times[0]), 2)
        return {
            "enabled": self.enabled,
            "active": event is not None,
            "score": None if self.score is None else round(self.score, 2),
            "since": None if event is None else round(event.start, 3),
            "events": self.episodes.count,
            "last_event": self._event_info,
            "fps": fps if self._running else None,
            "ms_per_frame": round(1000 * sum(cpu) / len(cpu), 3) if cpu else None,
            "noise": detector.noise if detector is not None else None,
            "light_changes": self.light_changes,
            "error": self.error,
        }

    def picture(self) -> bytes | None:
        """motion.jpg: what the detector sees (Detector.view), or None before it saw."""
        detector = self.detector
        image = detector.view() if detector is not None and self._running else None
        if image is None:
            return None
        return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()

    # -- the thread -------------------------------------------------------------------

    def _thread(self, done: native.Flag) -> None:
        try:
            while True:
                try:
                    self._session()
                except MaskError as exc:
                    self.error = str(exc)
                    log.error("%s: motion detection stopped: %s", self.name, exc)
                    self.enabled = False
                except Exception:  # noqa: BLE001 - a bug must not end detection silently
                    log.exception("%s: motion detection failed", self.name)
                    self.error = "internal error: see the log"
                    self._wakeup.wait(1.0)
                with self._lock:
                    if not self._wanted():
                        self._running = False
                        return
        finally:
            done.set()
            native.destroy_thread_hub()

    def _session(self) -> None:
        """Subscribe, then analyse the newest frame every 1/motion_fps seconds until
        switched off or the camera closes."""
        try:
            viewer = self.camera.subscribe(counted=False, native_thread=True)
        except CameraClosed:
            self._camera_closed = True
            return
        settings = self.settings
        self.detector = detector = Detector(Tuning.of(settings))
        interval = 1.0 / settings.motion_fps
        due = time.monotonic()
        try:
            while self._wanted():
                wait = due - time.monotonic()
                if wait > 0:
                    self._wakeup.wait(wait)  # close() and set_enabled() wake it early
                    continue
                try:
                    frame = viewer.next_frame(TICK)  # the newest, or the next one
                except CameraClosed:
                    self._camera_closed = True
                    break
                now = time.monotonic()
                due = due + interval if now < due + interval else now + interval
                if frame is None or not frame.live:
                    if frame is not None:
                        detector.reset()  # the placeholder: the scene may differ after
                    self._apply(self.episodes.tick(time.time()), None)
                    continue
                self._analyse(detector, frame)
        finally:
            viewer.close()
            ended = self.episodes.stop(time.time())
            if ended is not None:
                self._apply(Step(ended=ended), None)

    def _analyse(self, detector: Detector, frame: Frame) -> None:
        began = time.thread_time()
        picture = small_grey(frame.data)
        if picture is None:
            return  # a frame that does not decode: the next one will
        analysis = detector.analyse(picture, frame.timestamp)
        self._cpu.append(time.thread_time() - began)
        self._times.append(time.monotonic())
        self.score = analysis.score
        if analysis.light:
            self.light_changes += 1
            log.debug("%s: a light change (%.0f%% changed): the scene is learnt again",
                      self.name, analysis.score)
        self._apply(self.episodes.frame(frame.timestamp, analysis.motion, analysis.score),
                    frame)

    def _apply(self, step: Step, frame: Frame | None) -> None:
        """Carry out what a frame or tick did: the recorder, the snapshot, the feed."""
        if step.ended is not None:
            self._ended(step.ended)
        if step.peak and frame is not None:
            self._peak_jpeg = frame.data
        if step.started is not None:
            self._started(step.started)
        elif step.motion and frame is not None:
            self._trigger(frame.timestamp)
            if self._clip is None:
                self._find_clip(0)
                self._save_snapshot()

    def _started(self, event: Event) -> None:
        self._clip, self._saved_peak = None, None
        self._info(event)  # status shows it at once, before the clip is known
        if self._trigger(event.start):
            self._find_clip(CLIP_WAIT)
        self._save_snapshot()
        self._info(event)
        log.info("%s: motion (%.1f%% of the picture)%s", self.name, event.peak,
                 f", recording {self._clip}" if self._clip else "")
        self._publish("start", event.start, event)

    def _ended(self, event: Event) -> None:
        if self._clip is None:
            self._find_clip(0)
        self._save_snapshot()
        self._info(event)
        log.info("%s: motion ended after %.1f s (peak %.1f%%)", self.name,
                 event.end - event.start, event.peak)
        self._publish("end", event.end, event)
        self._clip, self._peak_jpeg, self._saved_peak = None, None, None

    # -- the recorder, the snapshot, the feed -------------------------------------------

    def _records(self) -> bool:
        recorder = self.recorder
        return (recorder is not None and recorder.active and not recorder.closed
                and self.settings.record == "events")

    def _trigger(self, at: float) -> bool:
        """The recorder's event at capture time `at` (extends a running one)."""
        if not self._records():
            return False
        try:
            self.recorder.trigger_event(at=at)
        except Exception as exc:  # noqa: BLE001 - RecordingError, or shutting down
            log.warning("%s: motion could not start a clip: %s", self.name, exc)
            return False
        return True

    def _find_clip(self, wait: float) -> None:
        """The name of the file the current event is recorded into, waiting up to
        `wait` seconds for the recorder's writer to open it."""
        if not self._records():
            return
        deadline = time.monotonic() + wait
        while True:
            recording = (self.recorder.status() or {}).get("recording") or {}
            if recording.get("kind") in ("event", "manual") and recording.get("file"):
                self._clip = recording["file"]
                return
            if time.monotonic() >= deadline or not self._wanted():
                return
            self._wakeup.wait(0.01)

    def _save_snapshot(self) -> None:
        """Write the peak frame beside the clip, replacing an older peak's (atomic)."""
        jpeg, clip = self._peak_jpeg, self._clip
        if jpeg is None or clip is None or jpeg is self._saved_peak:
            return
        path = self.recorder.folder.snapshot_path(clip)
        if path is None:
            return
        part = path.with_name(f".{path.name}.part")
        try:
            with open(part, "wb") as out:
                out.write(jpeg)
            os.replace(part, path)
        except OSError as exc:
            part.unlink(missing_ok=True)
            log.warning("%s: could not save the motion snapshot %s: %s", self.name,
                        path.name, exc.strerror)
            return
        self._saved_peak = jpeg

    def _urls(self) -> tuple[str | None, str | None]:
        """The current event's clip download and snapshot URL paths, if any."""
        clip = self._clip
        if clip is None:
            return None, None
        download = f"/camera/{self.name}/recordings/{clip}"
        return download, (f"{download}/snapshot.jpg" if self._saved_peak is not None else None)

    def _info(self, event: Event) -> None:
        clip, snapshot = self._urls()
        self._event_info = {"start": round(event.start, 3),
                            "end": None if event.end is None else round(event.end, 3),
                            "peak": round(event.peak, 2), "clip": clip, "snapshot": snapshot}

    def _publish(self, state: str, at: float, event: Event) -> None:
        if self.publish is None:
            return
        clip, snapshot = self._urls()
        try:
            self.publish("motion", {"camera": self.name, "state": state, "time": round(at, 3),
                                    "score": round(event.peak, 2), "clip": clip,
                                    "snapshot": snapshot})
        except Exception:  # noqa: BLE001 - the feed must not stop detection
            log.exception("%s: publishing a motion event failed", self.name)


class Watches(Mapping[str, Watch]):
    """Every camera's motion detection, by camera name."""

    def __init__(self, cameras: Mapping[str, BaseCamera],
                 recorders: Mapping[str, Recorder] | None = None,
                 publish: Publish | None = None, active: bool = True) -> None:
        self.started = False
        self._by_name = {name: Watch(camera, (recorders or {}).get(name), publish, active)
                         for name, camera in cameras.items()}

    def __getitem__(self, name: str) -> Watch:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def start(self) -> None:
        """Start detecting on every camera that has it on (idempotent)."""
        self.started = True
        for watch in self._by_name.values():
            watch.start()

    def close(self, wait: float = 2.0) -> None:
        for watch in self._by_name.values():
            watch.close(wait=0)
        deadline = time.monotonic() + wait
        for watch in self._by_name.values():
            watch.close(wait=max(0.0, deadline - time.monotonic()))

