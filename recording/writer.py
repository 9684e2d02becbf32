"""The recorder's writer: the planner's decisions (plan.py) in, files on disk out.

    tap --WriterQueue (bounded)--> Writer.run (its own native thread) --> files

The writer muxes each JPEG into the open file with PyAV (clip_file.py) and hands each
batch to the OS with one writev, writes stills, appends one index line per finished file,
applies retention, and on a disk error stops that camera's recording, leaves no empty or
unplayable file and retries every RETRY_AFTER seconds. Only this thread calls PyAV's mux,
never the event loop; it holds the GIL only briefly.

Where files go, their names, the index, listing and retention: folder.py.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from capture import native

from .clip_file import ClipFile
from .plan import Close, Held, Kind, Open, Step, Still, Write

if TYPE_CHECKING:
    from collections.abc import Callable

    from capture import Frame
    from server.config import CameraSettings

    from .folder import CameraFolder

log = logging.getLogger("recording")

QUEUE_BYTES = 16 << 20  # the writer's queue: at most this many bytes of frames...
QUEUE_FRAMES = 300  # ...and this many frames; more are dropped from the recording
RETRY_AFTER = 10.0  # seconds between attempts while the disk fails
RETENTION_EVERY = 60.0  # seconds between retention passes while recording


@dataclass(frozen=True, slots=True)
class Stop:
    """The tap's session is over: finish the open file and end the writer thread."""


Message = Step | Stop


@dataclass
class Figures:
    """One camera's recording figures for /status. The writer writes them, except
    `dropped` (also the tap: the queue's refusals, frames the history lost), `events`
    (request handlers) and `error` (any of them)."""

    frames_written: int = 0
    dropped: int = 0
    files_written: int = 0
    stills_written: int = 0
    last_still: float | None = None
    events: int = 0
    error: str | None = None


# -- the bounded queue between the tap and the writer -----------------------------------

class WriterQueue:
    """Batches of messages from the tap to the writer, bounded: a frame that would take
    the queue past max_bytes or max_frames is dropped (the tap counts it). One lock and
    one wake-up per batch: waking a thread costs more than a frame's own work. Native
    locks only: under gevent a queue.Queue would be a greenlet queue."""

    def __init__(self, max_bytes: int, max_frames: int) -> None:
        self.max_bytes, self.max_frames = max_bytes, max_frames
        self._items: list[Message] = []
        self._bytes = 0
        self._frames = 0
        self._lock = native.allocate_lock()
        self._waiter = native.Waiter()

    def put(self, items: list[Message]) -> int:
        """Queue a batch and wake the writer; the number of Write frames dropped. Held
        frames are in memory already (the pre-event ring) and are never refused; other
        messages never are."""
        dropped = 0
        with self._lock:
            for item in items:
                if isinstance(item, (Write, Still)):
                    size = len(item.frame.data)
                    if self._frames >= self.max_frames or self._bytes + size > self.max_bytes:
                        dropped += isinstance(item, Write)
                        continue
                    self._bytes += size
                    self._frames += 1
                self._items.append(item)
        self._waiter.wake()
        return dropped

    def take(self, timeout: float) -> list[Message]:
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


# -- the writer -------------------------------------------------------------------------

class Writer:
    """One camera's files. `run` is the writer thread of one tap session; the open file,
    the retry time and the figures outlast sessions."""

    def __init__(self, name: str, folder: CameraFolder, settings: CameraSettings,
                 figures: Figures, on_file: Callable[[dict], None] | None = None) -> None:
        self.name = name
        self.folder = folder
        self.settings = settings
        self.figures = figures
        self.on_file = on_file  # told when a file starts and ends (the event feed)
        self.retry_after = RETRY_AFTER
        self.file: ClipFile | None = None  # the open file (any thread may read it)
        self._counted = 0  # frames of the open file counted in frames_written
        self._retry_at = 0.0
        self._retention_at = 0.0

    def run(self, queue: WriterQueue, done: native.Flag) -> None:
        """The writer thread: carry out the queue's messages until Stop."""
        kind: Kind | None = None  # the open clip's (None: frames are not wanted)
        try:
            while True:
                items = queue.take(1.0)
                now = time.monotonic()
                if now >= self._retention_at:
                    self._retention_at = now + RETENTION_EVERY
                    self.retention()
                for item in items:
                    match item:
                        case Write(frame):
                            if kind is not None:
                                self._write_frame(kind, frame)
                        case Held(frames):
                            for frame in frames:
                                if kind is not None:
                                    self._write_frame(kind, frame)
                        case Open(new):
                            self._finish_file()
                            kind = new
                        case Close():
                            self._finish_file()
                            kind = None
                        case Still(frame):
                            self._write_still(frame)
                        case Stop():
                            self._finish_file()
                            return
                self._flush_file()  # the batch is done: one writev
        except Exception:  # noqa: BLE001
            log.exception("%s: the recording writer failed", self.name)
            self.figures.error = "internal error in the writer: see the log"
            if self.file is not None:
                self.file.close()
                self._tell("end", self.file, self.file.end,
                           kept=self._keep_if_playable(self.file))
                self.file = None
        finally:
            done.set()
            native.destroy_thread_hub()

    def _write_frame(self, kind: Kind, frame: Frame) -> None:
        clip = self.file
        if clip is None:
            if time.monotonic() < self._retry_at:
                self.figures.dropped += 1
                return
            path = None
            try:
                path = self.folder.new_path(kind, frame.timestamp)
                clip = ClipFile(path, kind, self.name, frame)
            except Exception as exc:  # noqa: BLE001 - any failure: stop and retry later
                self._disk_failed(exc, path)
                self.figures.dropped += 1
                return
            self.file, self._counted = clip, 0
            self._tell("start", clip, clip.start)
        try:
            clip.write(frame)  # into memory; the batch's end writes it
        except Exception as exc:  # noqa: BLE001
            self.figures.dropped += 1
            self._file_failed(exc)

    def _flush_file(self) -> None:
        """The end of a batch: hand the open file's new frames to the OS."""
        clip = self.file
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
            self.figures.frames_written += clip.flushed_frames - self._counted
            self._counted = clip.flushed_frames
            if self.figures.error is not None and not failed:
                log.info("%s: recording resumed (%s)", self.name, clip.path.name)
                self.figures.error = None

    def _file_failed(self, exc: BaseException) -> None:
        """The open file could not be written: stop it, keep what plays, retry later."""
        clip = self.file
        self.file = None
        self._count(clip, failed=True)
        self._disk_failed(exc, clip.path)
        self.figures.dropped += clip.frames - clip.flushed_frames
        clip.close()
        self._tell("end", clip, clip.end, kept=self._keep_if_playable(clip))

    def _finish_file(self) -> None:
        clip = self.file
        if clip is None:
            return
        try:
            clip.finish()
        except Exception as exc:  # noqa: BLE001
            self._file_failed(exc)
            return
        self.file = None
        self._count(clip)
        self.figures.files_written += 1
        self._tell("end", clip, clip.end)
        try:
            self.folder.add_to_index(clip)
        except OSError as exc:
            log.debug("%s: index not written: %s", self.name, exc)  # listing probes it
        self.retention()

    def _keep_if_playable(self, clip: ClipFile) -> bool:
        """After a failure: keep a file with at least one whole frame (it plays up to
        its last one), delete anything else: never an empty or broken file. Kept?"""
        if clip.flushed_frames == 0:
            if clip.created:
                clip.path.unlink(missing_ok=True)
            log.debug("%s: removed %s: no whole frame was written", self.name,
                      clip.path.name)
            return False
        self.figures.files_written += 1
        return True

    def _tell(self, state: str, clip: ClipFile, when: float, kept: bool = True) -> None:
        """A file started or ended: tell `on_file` (the event feed), with the file's
        download URL (recording/routes.py's) while there is a file to download."""
        if self.on_file is None:
            return
        file = clip.path.name
        try:
            self.on_file({"camera": self.name, "state": state, "kind": clip.kind, "file": file,
                          "time": round(when, 3),
                          "download": f"/camera/{quote(self.name)}/recordings/{quote(file)}"
                          if kept else None})
        except Exception:  # noqa: BLE001 - telling must never stop recording
            log.exception("%s: telling that %s %s failed", self.name, file, state)

    def _disk_failed(self, exc: BaseException, path: Path | None) -> None:
        reason = _disk_reason(exc, path, self.folder.dir.parent)
        self._retry_at = time.monotonic() + self.retry_after
        if self.figures.error is None:
            log.error("%s: recording stopped: %s; streaming goes on; retrying every %g s",
                      self.name, reason, self.retry_after)
        self.figures.error = f"recording stopped: {reason}; retrying every {self.retry_after:g} s"

    def _write_still(self, frame: Frame) -> None:
        if time.monotonic() < self._retry_at:
            return
        try:
            if not self.folder.write_still(frame.timestamp, frame.data):
                return  # that second has its still
        except OSError as exc:
            self._disk_failed(exc, None)
            return
        self.figures.stills_written += 1
        self.figures.last_still = frame.timestamp

    # -- retention ----------------------------------------------------------------------

    def retention_thread(self) -> None:
        """One retention pass in its own native thread (cameras that do not record)."""
        try:
            self.retention()
        finally:
            native.destroy_thread_hub()

    def retention(self) -> None:
        """Apply keep_days and keep_gb (recordings.CameraFolder.apply_retention); never
        to the open file, never stopping recording."""
        s = self.settings
        if not s.keep_days and not s.keep_gb:
            return
        clip = self.file
        try:
            deleted = self.folder.apply_retention(s.keep_days, s.keep_gb,
                                                  clip.path if clip is not None else None)
        except Exception:  # noqa: BLE001 - retention must never stop recording
            log.exception("%s: retention failed", self.name)
            return
        if deleted:
            log.info("%s: retention deleted %d file(s), %.1f MB", self.name, deleted[0],
                     deleted[1] / 1e6)
