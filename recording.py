"""Recording: every camera's own JPEGs into Matroska files, without re-encoding, beside
the stream and never at its expense.

    camera Fanout --history--> tap thread --bounded queue--> writer thread --> files

One Recorder per camera, two native OS threads while it has something to do:

- the tap looks at the camera's frames every TAP_INTERVAL and takes every live one
  since its last look (`Viewer.next_frames` over a short fanout history), keeps the
  pre-event ring (only with record = "events"), decides when clips start, cut and end,
  picks the timelapse stills, and hands frames to a bounded queue. It never touches the
  disk, so a stalled disk costs dropped recording frames (counted), never a viewer's or
  the capture's time;
- the writer muxes each JPEG into the open file with PyAV (clip_file.py) and hands each
  batch to the OS with one writev, writes stills, appends one index line per finished
  file, applies retention, and on a disk error stops that camera's recording, leaves no
  empty or unplayable file and retries every RETRY_AFTER seconds. Only this thread calls
  PyAV's mux, never the event loop; it holds the GIL only briefly.

Where files go, their names, the index, listing and retention: recordings.py.

Calls from request handlers (greenlets) only change state under a native lock and wake
or start the threads: they never wait for the disk.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import native
from clip_file import ClipFile, RecordingError, created, load_av, make_timelapse, probe
from fanout import CameraClosed, Frame
from recordings import (TIMELAPSE, CameraFolder, Recording, file_pattern, timelapse_video_name,
                        valid_day)

if TYPE_CHECKING:
    from base_camera import BaseCamera

log = logging.getLogger("recording")

TAP_INTERVAL = 1.0  # seconds between the tap's looks at the frames (commands wake it)...
FIRST_LOOK = 0.1  # ...and while a clip is asked for but has no frame yet, so it starts now
HISTORY_FRAMES = 64  # the fanout's history to start with: two looks' worth at 30 fps...
HISTORY_MAX = 1024  # ...grown to two looks' worth of what the camera really delivers
TICK_GRACE = 1.0  # a deadline passed by this much ends a clip even without frames
QUEUE_BYTES = 16 << 20  # the writer's queue: at most this many bytes of frames...
QUEUE_FRAMES = 300  # ...and this many frames; more are dropped from the recording
RETRY_AFTER = 10.0  # seconds between attempts while the disk fails
RETENTION_EVERY = 60.0  # seconds between retention passes while recording
GAP_CUT = 10.0  # a continuous file is cut when the camera gave no frame for this long

# Importable from here too, as the app, recordings_http and the tests always have.
__all__ = ["TIMELAPSE", "Recorder", "Recorders", "Recording", "RecordingError", "created",
           "file_pattern", "load_av", "make_timelapse", "probe", "timelapse_video_name",
           "valid_day"]


# -- the bounded queue between the tap and the writer -----------------------------------

class _Queue:
    """Batches of frames and commands from the tap to the writer, bounded: a frame that
    would take the queue past max_bytes or max_frames is dropped (the tap counts it).
    One lock and one wake-up per batch: waking a thread costs more than a frame's own
    work. Native locks only: under gevent a queue.Queue would be a greenlet queue."""

    def __init__(self, max_bytes: int, max_frames: int) -> None:
        self.max_bytes, self.max_frames = max_bytes, max_frames
        self._items: list[tuple] = []
        self._bytes = 0
        self._frames = 0
        self._lock = native.allocate_lock()
        self._waiter = native.Waiter()

    def put(self, items: list[tuple]) -> int:
        """Queue a batch and wake the writer; the number of "frame" items dropped.
        ("frames", [...]) hands over frames held in memory already (the pre-event ring)
        and is never refused; commands never are."""
        dropped = 0
        with self._lock:
            for item in items:
                op = item[0]
                if op == "frame" or op == "still":
                    size = len(item[1].data)
                    if self._frames >= self.max_frames or self._bytes + size > self.max_bytes:
                        dropped += op == "frame"
                        continue
                    self._bytes += size
                    self._frames += 1
                self._items.append(item)
        self._waiter.wake()
        return dropped

    def take(self, timeout: float) -> list[tuple]:
        """Everything queued, waiting up to `timeout` seconds for something."""
        for attempt in range(2):
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    self._bytes = self._frames = 0
                    return items
            if attempt == 0:
                self._waiter.wait(timeout)
        return []

    def __len__(self) -> int:
        return len(self._items)


def _disk_reason(exc: BaseException, path: Path | None, root: Path) -> str:
    """Why recording stopped, for /status and the log: "disk full (No space left on
    device) writing cam/2025-01-02/cam-20250102-030405.mkv", the file named relative to
    RECORDINGS_DIR: /status tells viewers what failed, not where the server keeps things."""
    if isinstance(exc, OSError) and exc.errno:
        what = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "permission denied", errno.EIO: "disk I/O error"}.get(
            exc.errno, os.strerror(exc.errno))
        return (f"{what} ({os.strerror(exc.errno)}) writing "
                f"{_shown(exc.filename or path, root)}")
    text = str(exc)
    for base in {str(root), str(root.resolve())}:
        text = text.replace(base + os.sep, "")
    return f"{type(exc).__name__}: {text} writing {_shown(path, root)}"


def _shown(path, root: Path) -> str:
    """`path` relative to the recordings folder (RECORDINGS_DIR), which is named by its
    setting; anything outside it by its name alone."""
    if path is None:
        return "a file"
    path = Path(os.fsdecode(path))
    for base in (root, root.resolve()):
        try:
            relative = path.relative_to(base)
        except ValueError:
            continue
        return "RECORDINGS_DIR" if relative == Path() else relative.as_posix()
    return path.name or str(path)


# -- the recorder -----------------------------------------------------------------------

class Recorder:
    """One camera's recording: its settings from camera.settings, its files under
    root/<camera>. `active=False`: list and serve files only (a CAMERA=redis web worker,
    where the publisher records)."""

    def __init__(self, camera: BaseCamera, root: Path | str, *, active: bool = True,
                 queue_bytes: int = QUEUE_BYTES, queue_frames: int = QUEUE_FRAMES) -> None:
        self.camera = camera
        self.name = camera.name
        self.settings = camera.settings
        self.root = Path(root)
        self.folder = CameraFolder(root, camera.name)  # names, listing, retention
        self.dir = self.folder.dir
        self.active = active
        self.queue_bytes, self.queue_frames = queue_bytes, queue_frames
        self.retry_after = RETRY_AFTER
        # Inactive recorders: forward(camera, command, args) -> result hands "record"
        # (args: seconds), "stop" and "event" to the owner (e.g. over Redis).
        self.forward = None
        self._lock = native.allocate_lock()
        self._started = False
        self._closed = False
        self._camera_closed = False
        self._running = False  # a tap thread exists (it sets this False as it ends)
        self._thread_done: native.Flag | None = None
        self._wakeup = native.Waiter()  # commands and close() wake the tap at once
        # What request handlers ask for (under _lock): epoch-second deadlines.
        self._manual_from: float | None = None
        self._manual_until: float | None = None
        self._manual_open_ended = False
        self._event_from: float | None = None
        self._event_until: float | None = None
        # Figures (each written by one thread, read by any).
        self.frames_written = 0
        self.dropped = 0
        self.files_written = 0
        self.stills_written = 0
        self.last_still: float | None = None
        self.events = 0
        self.error: str | None = None
        self._clip: dict | None = None  # the tap's open clip: kind, since
        self._file: ClipFile | None = None  # the writer's open file
        self._counted = 0  # frames of the open file counted in frames_written
        self._ring_frames = 0
        self._ring_bytes = 0
        self._queue: _Queue | None = None
        self._retry_at = 0.0
        self._retention_at = 0.0
        # This camera's clips being played (recordings_http adds and removes them):
        # each has end(), which close() calls so that shutdown ends playback too.
        self.players: set = set()

    # -- control (any thread; never blocks on disk) ----------------------------------

    @property
    def mode(self) -> str:
        return self.settings.record

    @property
    def persistent(self) -> bool:
        """Records or takes stills all the time: keeps the camera capturing."""
        return self.mode != "off" or self.settings.timelapse > 0

    def start(self) -> None:
        """Begin what the settings ask for (continuous, events, timelapse); apply
        retention once. Idempotent. RecordingError if PyAV is missing and files are
        wanted."""
        if not self.active:
            return
        if self.mode != "off":
            load_av()  # here, not first in the writer thread (see load_av)
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
        if self.persistent:
            what = [self.mode] if self.mode != "off" else []
            if self.settings.timelapse:
                what.append(f"a still every {max(1.0, self.settings.timelapse):g} s")
            log.info("%s: recording %s into %s", self.name, " and ".join(what), self.dir)
            with self._lock:
                self._ensure_running()
        elif self.settings.keep_days or self.settings.keep_gb:
            native.start_thread(self._retention_thread, ())

    def start_clip(self, seconds: float | None = None) -> dict:
        """A manual clip from now for `seconds` (None: until stop_clip, at most
        `segment`). Again while one runs: it goes on from now."""
        segment = self.settings.segment
        if seconds is not None and not (math.isfinite(seconds) and 0 < seconds <= segment):
            raise ValueError(f"seconds must be a number > 0 and <= {segment:g} (the "
                             "camera's segment)")
        if not self.active:
            return self._forward("record", seconds=seconds)
        load_av()  # here, not first in the writer thread (see load_av)
        now = time.time()
        with self._lock:
            self._check_open()
            if self._manual_until is None or now >= self._manual_until:
                self._manual_from = now
            self._manual_until = now + (seconds if seconds is not None else segment)
            self._manual_open_ended = seconds is None
            self._ensure_running()
        self._wakeup.wake()
        with self._lock:
            return {"kind": "manual", "from": round(self._manual_from, 3),
                    "until": round(self._manual_until, 3), "until_stopped": seconds is None}

    def stop_clip(self) -> bool:
        """End the manual clip now; False if none runs."""
        if not self.active:
            return bool(self._forward("stop"))
        now = time.time()
        with self._lock:
            if self._manual_until is None or now >= self._manual_until:
                return False
            self._manual_until = now
        self._wakeup.wake()
        return True

    def trigger_event(self) -> dict:
        """An event: a clip from `pre_event` before now to `post_event` after the last
        trigger (a trigger during a clip extends it)."""
        if not self.active:
            return self._forward("event")
        load_av()
        s = self.settings
        now = time.time()
        with self._lock:
            self._check_open()
            self.events += 1
            if self._event_until is not None and now < self._event_until:
                self._event_until = max(self._event_until, now + s.post_event)
            else:
                # The ring holds pre_event seconds only with record = "events".
                self._event_from = now - (s.pre_event if self.mode == "events" else 0.0)
                self._event_until = now + s.post_event
            self._ensure_running()
        self._wakeup.wake()
        with self._lock:
            return {"kind": "event", "from": round(self._event_from, 3),
                    "until": round(self._event_until, 3)}

    def close(self, wait: float = 2.0) -> None:
        """Stop: the open file is finished (trailer, fsync) and playable. Waits up to
        `wait` seconds for that; call again with a wait to wait more."""
        # No lock: this runs in signal handlers too, which may have interrupted a holder.
        self._closed = True
        for player in list(self.players):
            player.end()
        done = self._thread_done if self._running else None
        self._wakeup.wake()
        if done is not None and wait > 0 and not done.wait(wait):
            log.warning("%s: the recording was not finished within %.1f s", self.name, wait)

    @property
    def closed(self) -> bool:
        """close() was called (the server shuts down)."""
        return self._closed

    def _forward(self, command: str, **args):
        """Not the camera's owner (a CAMERA=redis web worker): hand the command to the
        process that is, through `forward(camera, command, args)` if one was set."""
        if self.forward is None:
            raise RecordingError("this process does not own the camera: recording is done "
                                 "by the process that does (flask --app app publish)")
        return self.forward(self.name, command, args)

    def _check_open(self) -> None:
        if self._closed or self._camera_closed:
            raise RecordingError("the server is shutting down")

    def _ensure_running(self) -> None:
        """Under _lock: start the tap thread unless it runs."""
        if self._running or self._closed or self._camera_closed:
            return
        self._running = True
        self._thread_done = native.Flag()
        native.start_thread(self._thread, (self._thread_done,))

    def _wanted(self, ts: float, current: str | None) -> str | None:
        """Under _lock: the kind of clip a frame captured at `ts` belongs to, if any."""
        if self._closed:
            return None
        manual = (self._manual_until is not None and self._manual_from <= ts
                  < self._manual_until)
        event = self._event_until is not None and self._event_from <= ts < self._event_until
        if current in ("manual", "event") and (manual or event):
            return current  # one file: a trigger during a clip extends it
        if manual:
            return "manual"
        if event:
            return "event"
        return "continuous" if self.mode == "continuous" else None

    def _expire(self, ts: float) -> None:
        """Under _lock: forget deadlines that `ts` has passed."""
        if self._manual_until is not None and ts >= self._manual_until:
            self._manual_until = None
        if self._event_until is not None and ts >= self._event_until:
            self._event_until = None

    def _needed(self) -> bool:
        """Under _lock: is there anything for the threads to do?"""
        if self._closed or self._camera_closed:
            return False
        return (self.persistent or self._manual_until is not None
                or self._event_until is not None)

    # -- the tap thread ---------------------------------------------------------------

    def _thread(self, done: native.Flag) -> None:
        try:
            while True:
                try:
                    self._session()
                except Exception:  # noqa: BLE001 - a bug must not end recording silently
                    log.exception("%s: recording failed", self.name)
                    self.error = "internal error: see the log"
                    _pause(1.0)
                with self._lock:
                    if not self._needed():
                        self._running = False
                        return
        finally:
            done.set()
            native.destroy_thread_hub()

    def _session(self) -> None:
        """Subscribe, run the writer, and feed it until nothing is wanted any more."""
        s = self.settings
        queue = self._queue = _Queue(self.queue_bytes, self.queue_frames)
        writer_done = native.Flag()
        native.start_thread(self._writer, (queue, writer_done))
        ring: deque[Frame] = deque()
        ring_bytes = 0
        keep_ring = self.mode == "events" and s.pre_event > 0
        continuous = self.mode == "continuous"
        clip: str | None = None
        clip_start = last_ts = 0.0
        next_still = None
        interval = max(1.0, s.timelapse) if s.timelapse > 0 else 0.0
        viewer = None
        out: list[tuple] = []
        try:
            try:
                viewer = self.camera.subscribe(counted=False, native_thread=True)
            except CameraClosed:
                self._camera_closed = True
                return
            history = HISTORY_FRAMES
            self.camera.fanout.keep_history(history)
            missed = None
            while True:
                # Every frame since the last look comes from the fanout's history: one
                # wake-up per TAP_INTERVAL, not per frame (two thread wake-ups cost more
                # than a frame's own work). Frames are timed by capture time, so looking
                # late changes nothing in the files.
                with self._lock:
                    asked = self._manual_until is not None or self._event_until is not None
                self._wakeup.wait(FIRST_LOOK if asked and clip is None else TAP_INTERVAL)
                try:
                    frames = viewer.next_frames(0)
                except CameraClosed:
                    self._camera_closed = True
                    break
                first = missed is None
                if not first and viewer.missed != missed and clip is not None:
                    self.dropped += viewer.missed - missed  # fell out of the history
                missed = viewer.missed
                if not first and len(frames) * 4 > history * 3 and history < HISTORY_MAX:
                    # A faster camera than the history was sized for: keep more. (Not
                    # on the first look, which may get older frames kept before.)
                    history = min(HISTORY_MAX, len(frames) * 3)
                    self.camera.fanout.keep_history(history)
                if not frames:
                    # No frame: deadlines still pass (a camera that stopped delivering).
                    now = time.time() - TICK_GRACE
                    with self._lock:
                        want = self._wanted(now, clip)
                        self._expire(now)
                        needed = self._needed()
                    if clip is not None and want is None:
                        queue.put([("close",)])
                        clip = self._clip = None
                    if clip is None and not needed:
                        break
                    continue
                # What was asked, as of now: commands during this batch count from the
                # next one (they are timed, so nothing is lost).
                with self._lock:
                    closed = self._closed
                    manual_from, manual_until = self._manual_from, self._manual_until
                    event_from, event_until = self._event_from, self._event_until
                for frame in frames:
                    if not frame.live:
                        continue  # the "camera unavailable" picture is never recorded
                    ts = frame.timestamp
                    if closed:
                        want = None
                    else:
                        manual = manual_until is not None and manual_from <= ts < manual_until
                        event = event_until is not None and event_from <= ts < event_until
                        if (manual or event) and clip in ("manual", "event"):
                            want = clip  # one file: a trigger during a clip extends it
                        elif manual:
                            want = "manual"
                        elif event:
                            want = "event"
                        else:
                            want = "continuous" if continuous else None
                    if clip is not None and (want != clip or ts - clip_start >= s.segment
                                             or ts - last_ts > GAP_CUT):
                        out.append(("close",))
                        clip = None
                    if want is not None and clip is None:
                        clip = want
                        out.append(("open", want))
                        clip_start = ts
                        if want == "event" and ring:
                            held = [old for old in ring if old.timestamp >= event_from]
                            if held:
                                clip_start = held[0].timestamp
                                out.append(("frames", held))
                        self._clip = {"kind": clip, "since": clip_start}
                        ring.clear()
                        ring_bytes = 0
                    if clip is not None:
                        out.append(("frame", frame))
                        last_ts = ts
                    elif keep_ring:
                        ring.append(frame)
                        ring_bytes += len(frame.data)
                        while ring[0].timestamp < ts - s.pre_event:
                            ring_bytes -= len(ring.popleft().data)
                    if interval and (next_still is None or ts >= next_still):
                        out.append(("still", frame))
                        next_still = (ts + interval if next_still is None
                                      or ts >= next_still + interval else next_still + interval)
                if clip is None:
                    self._clip = None
                if out:
                    self.dropped += queue.put(out)
                    out = []
                self._ring_frames, self._ring_bytes = len(ring), ring_bytes
                with self._lock:
                    self._expire(frames[-1].timestamp)
                    needed = self._needed()
                if clip is None and not needed:
                    break
        finally:
            if viewer is not None:
                viewer.close()
                if self.camera.fanout.subscribers == 0:
                    self.camera.fanout.keep_history(0)
            self._clip = None
            self._ring_frames = self._ring_bytes = 0
            queue.put(out + ([("close",)] if clip is not None else []) + [("stop",)])
            writer_done.wait(3600)  # the writer finishes the file; the camera is free now

    # -- the writer thread ------------------------------------------------------------

    def _writer(self, queue: _Queue, done: native.Flag) -> None:
        kind: str | None = None
        try:
            while True:
                items = queue.take(1.0)
                now = time.monotonic()
                if now >= self._retention_at:
                    self._retention_at = now + RETENTION_EVERY
                    self._retention()
                for item in items:
                    op = item[0]
                    if op == "frame":
                        if kind is not None:
                            self._write_frame(kind, item[1])
                    elif op == "frames":
                        for frame in item[1]:
                            if kind is not None:
                                self._write_frame(kind, frame)
                    elif op == "open":
                        self._finish_file()
                        kind = item[1]
                    elif op == "close":
                        self._finish_file()
                        kind = None
                    elif op == "still":
                        self._write_still(item[1])
                    elif op == "stop":
                        self._finish_file()
                        return
                self._flush_file()  # the batch is done: one writev
        except Exception:  # noqa: BLE001
            log.exception("%s: the recording writer failed", self.name)
            self.error = "internal error in the writer: see the log"
            if self._file is not None:
                self._file.close()
                self._keep_if_playable(self._file)
                self._file = None
        finally:
            done.set()
            native.destroy_thread_hub()

    def _write_frame(self, kind: str, frame: Frame) -> None:
        clip = self._file
        if clip is None:
            if time.monotonic() < self._retry_at:
                self.dropped += 1
                return
            path = None
            try:
                path = self.folder.new_path(kind, frame.timestamp)
                clip = ClipFile(path, kind, self.name, frame)
            except Exception as exc:  # noqa: BLE001 - any failure: stop and retry later
                self._disk_failed(exc, path)
                self.dropped += 1
                return
            self._file, self._counted = clip, 0
        try:
            clip.write(frame)  # into memory; the batch's end writes it
        except Exception as exc:  # noqa: BLE001
            self.dropped += 1
            self._file_failed(exc)

    def _flush_file(self) -> None:
        """The end of a batch: hand the open file's new frames to the OS."""
        clip = self._file
        if clip is None:
            return
        try:
            clip.flush()
        except Exception as exc:  # noqa: BLE001
            self._file_failed(exc)
            return
        self._count(clip)

    def _count(self, clip: ClipFile, failed: bool = False) -> None:
        """Frames that reached the file count as written; the first after a failure
        ends it."""
        if clip.flushed_frames > self._counted:
            self.frames_written += clip.flushed_frames - self._counted
            self._counted = clip.flushed_frames
            if self.error is not None and not failed:
                log.info("%s: recording resumed (%s)", self.name, clip.path.name)
                self.error = None

    def _file_failed(self, exc: BaseException) -> None:
        """The open file could not be written: stop it, keep what plays, retry later."""
        clip = self._file
        self._file = None
        self._count(clip, failed=True)
        self._disk_failed(exc, clip.path)
        self.dropped += clip.frames - clip.flushed_frames
        clip.close()
        self._keep_if_playable(clip)

    def _finish_file(self) -> None:
        clip = self._file
        if clip is None:
            return
        try:
            clip.finish()
        except Exception as exc:  # noqa: BLE001
            self._file_failed(exc)
            return
        self._file = None
        self._count(clip)
        self.files_written += 1
        try:
            self.folder.add_to_index(clip)
        except OSError as exc:
            log.debug("%s: index not written: %s", self.name, exc)  # listing probes it
        self._retention()

    def _keep_if_playable(self, clip: ClipFile) -> None:
        """After a failure: keep a file with at least one whole frame (it plays up to
        its last one), delete anything else: never an empty or broken file."""
        if clip.flushed_frames == 0:
            if clip.created:
                clip.path.unlink(missing_ok=True)
            log.debug("%s: removed %s: no whole frame was written", self.name,
                      clip.path.name)
        else:
            self.files_written += 1

    def _disk_failed(self, exc: BaseException, path: Path | None) -> None:
        reason = _disk_reason(exc, path, self.root)
        self._retry_at = time.monotonic() + self.retry_after
        if self.error is None:
            log.error("%s: recording stopped: %s; streaming goes on; retrying every %g s",
                      self.name, reason, self.retry_after)
        self.error = f"recording stopped: {reason}; retrying every {self.retry_after:g} s"

    def _write_still(self, frame: Frame) -> None:
        if time.monotonic() < self._retry_at:
            return
        try:
            if not self.folder.write_still(frame.timestamp, frame.data):
                return  # that second has its still
        except OSError as exc:
            self._disk_failed(exc, None)
            return
        self.stills_written += 1
        self.last_still = frame.timestamp

    # -- retention ----------------------------------------------------------------------

    def _retention_thread(self) -> None:
        try:
            self._retention()
        finally:
            native.destroy_thread_hub()

    def _retention(self) -> None:
        """Apply keep_days and keep_gb (recordings.CameraFolder.apply_retention); never
        to the open file, never stopping recording."""
        s = self.settings
        if not s.keep_days and not s.keep_gb:
            return
        clip = self._file
        try:
            deleted = self.folder.apply_retention(s.keep_days, s.keep_gb,
                                                  clip.path if clip is not None else None)
        except Exception:  # noqa: BLE001 - retention must never stop recording
            log.exception("%s: retention failed", self.name)
            return
        if deleted:
            log.info("%s: retention deleted %d file(s), %.1f MB", self.name, deleted[0],
                     deleted[1] / 1e6)

    # -- listing (recordings.CameraFolder) ----------------------------------------------

    def path_of(self, file: str) -> Path | None:
        """The recording `file` names, if it is one of this camera's, else None."""
        return self.folder.path_of(file)

    def is_open(self, path: Path) -> bool:
        clip = self._file
        return clip is not None and clip.path == path

    def recordings(self, day: str | None = None, limit: int | None = None) -> list[Recording]:
        """This camera's recordings, newest first (one day's with `day`)."""
        return self.folder.recordings(day, limit, self._file, self._open_elsewhere())

    def delete(self, path: Path) -> None:
        """RecordingError while it is being written."""
        self.folder.delete(path, self._file, self._open_elsewhere())

    def _open_elsewhere(self) -> str | None:
        """Where another process records (CAMERA=redis): the file it has open, from the
        camera's status (the publisher's), so that it is listed as in progress and is not
        deleted under it."""
        if self.active:
            return None
        return (self.camera.status().get("recording") or {}).get("file")

    def timelapse_days(self) -> list[dict]:
        return self.folder.timelapse_days()

    def stills(self, day: str) -> list[str]:
        """The still names of `day`, oldest first."""
        return self.folder.stills(day)

    def timelapse_path(self, day: str, file: str) -> Path | None:
        """A still or the day's timelapse video, strictly named, else None."""
        return self.folder.timelapse_path(day, file)

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict:
        """For /status: `recording` ({kind, file, since} or None) and `recorder` figures;
        {} where another process records (its figures come from there)."""
        if not self.active:
            return {}
        s = self.settings
        clip, file = self._clip, self._file
        recording = None
        if clip is not None:
            recording = {"kind": clip["kind"],
                         "file": file.path.name if file is not None else None,
                         "since": round(clip["since"], 3),
                         "frames": file.frames if file is not None else 0}
            with self._lock:
                if clip["kind"] == "manual" and self._manual_until is not None:
                    recording["until"] = round(self._manual_until, 3)
                    recording["until_stopped"] = self._manual_open_ended
                elif clip["kind"] == "event" and self._event_until is not None:
                    recording["until"] = round(self._event_until, 3)
        queue = self._queue
        return {
            "recording": recording,
            "recorder": {
                "mode": s.record,
                "frames_written": self.frames_written,
                "dropped": self.dropped,
                "files_written": self.files_written,
                "events": self.events,
                "players": len(self.players),
                "queued": len(queue) if queue is not None and self._running else 0,
                "error": self.error,
                "pre_event_buffer": ({"seconds": s.pre_event, "frames": self._ring_frames,
                                      "bytes": self._ring_bytes}
                                     if s.record == "events" else None),
                "timelapse": ({"interval": s.timelapse, "stills": self.stills_written,
                               "last": self.last_still} if s.timelapse > 0 else None),
            },
        }


def _pause(seconds: float) -> None:
    """Sleep in a native thread (time.sleep may be gevent's)."""
    lock = native.allocate_lock()
    lock.acquire()
    lock.acquire(timeout=seconds)


class Recorders(Mapping[str, Recorder]):
    """Every camera's recorder, by camera name. `active=False` in CAMERA=redis web
    workers: they list and serve files, the publisher records."""

    def __init__(self, cameras: Mapping[str, BaseCamera], root: Path | str,
                 active: bool = True) -> None:
        self.root = Path(root).resolve()
        self.started = False
        self._by_name = {name: Recorder(camera, self.root, active=active)
                         for name, camera in cameras.items()}

    def __getitem__(self, name: str) -> Recorder:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def start(self) -> None:
        """Start every camera's recording as its settings ask (idempotent)."""
        self.started = True
        for recorder in self._by_name.values():
            try:
                recorder.start()
            except RecordingError as exc:
                recorder.error = str(exc)
                log.error("%s: %s", recorder.name, exc)

    def command(self, camera: str, command: str, args: dict | None = None):
        """Apply a command forwarded by a web worker (the owner's side of `forward`):
        "record" (args: seconds), "stop" or "event"."""
        recorder = self._by_name[camera]
        args = args or {}
        if command == "record":
            return recorder.start_clip(args.get("seconds"))
        if command == "stop":
            return recorder.stop_clip()
        if command == "event":
            return recorder.trigger_event()
        raise ValueError(f"unknown recording command {command!r}")

    def close(self, wait: float = 2.0) -> None:
        """Finish every open file: first tell all, then wait for them together."""
        for recorder in self._by_name.values():
            recorder.close(wait=0)
        deadline = time.monotonic() + wait
        for recorder in self._by_name.values():
            recorder.close(wait=max(0.0, deadline - time.monotonic()))
