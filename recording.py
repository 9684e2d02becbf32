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
- the writer appends each JPEG as a Matroska block timed by its capture time (1 ms),
  hands each batch to the OS with one writev, writes stills, appends one index line per
  finished file, applies retention, and on a disk error stops that camera's recording,
  leaves no empty or unplayable file and retries every RETRY_AFTER seconds.

Files: <root>/<camera>/<YYYY-MM-DD>/<camera>-<YYYYmmdd-HHMMSS>[-event|-manual].mkv (local
time of the first frame; continuous files carry no suffix, "-2".. only on a clash), and
<root>/<camera>/timelapse/<YYYY-MM-DD>/<HHMMSS>.jpg. Each day folder has an index.jsonl
with one line per finished file (start, end, frames, bytes, kind), so listing needs no
file to be opened; files without a line (cut by a crash) are read once with PyAV, which
also plays clips back. Writing needs no PyAV.

Calls from request handlers (greenlets) only change state under a native lock and wake
or start the threads: they never wait for the disk.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import struct
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import native
from fanout import CameraClosed, Frame
from jpeg import jpeg_size

if TYPE_CHECKING:
    from base_camera import BaseCamera

log = logging.getLogger("recording")

KINDS = ("continuous", "event", "manual")
TAP_INTERVAL = 0.5  # seconds between the tap's looks at the frames (commands wake it)
HISTORY_FRAMES = 32  # the fanout's history to start with: two looks' worth at 30 fps...
HISTORY_MAX = 1024  # ...grown to two looks' worth of what the camera really delivers
TICK_GRACE = 1.0  # a deadline passed by this much ends a clip even without frames
QUEUE_BYTES = 16 << 20  # the writer's queue: at most this many bytes of frames...
QUEUE_FRAMES = 300  # ...and this many frames; more are dropped from the recording
RETRY_AFTER = 10.0  # seconds between attempts while the disk fails
RETENTION_EVERY = 60.0  # seconds between retention passes while recording
FSYNC_EVERY = 10.0  # seconds between fsyncs of the open file (bounds a power loss's loss)
GAP_CUT = 10.0  # a continuous file is cut when the camera gave no frame for this long
CLUSTER_MS = 1000  # Matroska clusters of at most 1 s: a cut file plays to its last frame
INDEX = "index.jsonl"
TIMELAPSE = "timelapse"
DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
STILL = re.compile(r"(\d{2})(\d{2})(\d{2})\.jpg")

av = None  # PyAV, imported on first need (about 15 MiB): only playback and probing use it


def load_av():
    """Import PyAV once. Call it from a thread that may import (the main thread or a
    request), never first from a recorder thread: imports there could meet gevent's
    patched import-time locks."""
    global av
    if av is None:
        try:
            import av as module
        except ImportError as exc:
            raise RecordingError("PyAV is not installed: pip install av (Raspberry Pi OS: "
                                 "sudo apt install python3-av)") from exc
        av = module
    return av


class RecordingError(Exception):
    """A request the recorder cannot do; the message is meant for users."""


# -- names ------------------------------------------------------------------------------

def file_pattern(camera: str) -> re.Pattern:
    """The names a camera's recorder makes: nothing else is ever served or deleted."""
    return re.compile(re.escape(camera) + r"-(\d{8})-(\d{6})(?:-(event|manual))?"
                      r"(?:-([2-9]|[1-9]\d{1,2}))?\.mkv")


def timelapse_video_name(camera: str, day: str) -> str:
    return f"{camera}-timelapse-{day.replace('-', '')}.mkv"


def valid_day(day: str) -> bool:
    if not DAY.fullmatch(day):
        return False
    try:
        datetime.strptime(day, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def _name_time(match: re.Match) -> float | None:
    try:
        return datetime.strptime(match[1] + match[2], "%Y%m%d%H%M%S").timestamp()
    except ValueError:
        return None


def _kind_of(match: re.Match) -> str:
    return match[3] or "continuous"


@dataclass
class Recording:
    """One file as the listing shows it."""

    file: str
    path: Path
    kind: str
    start: float
    end: float | None
    frames: int | None
    bytes: int
    in_progress: bool = False

    def as_dict(self) -> dict:
        return {
            "file": self.file, "kind": self.kind,
            "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "duration": None if self.end is None else round(self.end - self.start, 3),
            "frames": self.frames, "bytes": self.bytes, "in_progress": self.in_progress,
        }


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


# -- Matroska, written directly ----------------------------------------------------------
#
# The file is the camera's JPEGs as V_MJPEG SimpleBlocks, timed in milliseconds from the
# first frame: what FFmpeg's muxer (PyAV, `ffmpeg -c copy`) writes for them. Written here
# rather than through PyAV because (measured on a 2-core VM, 58 KB frames at 30 fps, same
# batches) the writer thread then costs 32-35 us per frame instead of 40-43 with one
# av mux() per frame, a server that records without playing back never loads PyAV (15-19
# MiB), and after a disk error it is known exactly which frames reached the file whole.
# A batch of frames is appended in memory and handed to the OS with one writev. Layout,
# in write order:
#
#   EBML header | Segment (size patched at the end)
#     Void (room for the SeekHead, written at the end) | Info (Duration patched at the end)
#     Tracks | Tags (KIND, CAMERA) | Cluster* (<= CLUSTER_MS each; size patched when the
#     next one starts) | Cues (at the end)
#
# Until it is finished the Segment and the newest Cluster have the "unknown size" mark,
# which players accept: a file cut by a crash or a power loss plays up to its last
# complete frame.

_EBML = b"\x1a\x45\xdf\xa3"
_SEGMENT = b"\x18\x53\x80\x67"
_SEEKHEAD = b"\x11\x4d\x9b\x74"
_SEEK, _SEEKID, _SEEKPOSITION = b"\x4d\xbb", b"\x53\xab", b"\x53\xac"
_INFO = b"\x15\x49\xa9\x66"
_TRACKS = b"\x16\x54\xae\x6b"
_TAGS = b"\x12\x54\xc3\x67"
_CLUSTER = b"\x1f\x43\xb6\x75"
_CUES = b"\x1c\x53\xbb\x6b"
_DURATION = b"\x44\x89"
_VOID = b"\xec"
_UNKNOWN = b"\x01\xff\xff\xff\xff\xff\xff\xff"  # an 8-byte size: "unknown" until patched
_SEEKHEAD_ROOM = 100  # bytes kept at the start for the SeekHead (4 entries: 89)
_EPOCH_2001 = 978307200  # Matroska dates count from 2001-01-01 UTC


def _size(n: int) -> bytes:
    """An EBML size: the shortest variable-length integer (all ones is reserved)."""
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | n).to_bytes(length, "big")
    raise ValueError(f"element too large: {n} bytes")


def _el(eid: bytes, data: bytes) -> bytes:
    return eid + _size(len(data)) + data


def _uint(eid: bytes, value: int) -> bytes:
    return _el(eid, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _str(eid: bytes, value: str) -> bytes:
    return _el(eid, value.encode("utf-8"))


def _void(total: int) -> bytes:
    """A Void element of exactly `total` bytes (2 to 128)."""
    return _VOID + _size(total - 2) + bytes(total - 2)


class _ClipFile:
    """An open recording. `write()` only appends to memory; `flush()` hands what came
    since to the OS in one writev; `finish()` writes the Cues and patches the sizes,
    the duration and the SeekHead. Errors are the OS's OSError, with their errno."""

    def __init__(self, path: Path, kind: str, camera: str, first: Frame,
                 frame_rate: float | None = None) -> None:
        self.path, self.kind = path, kind
        self.start = first.timestamp
        self.end = first.timestamp
        self.frames = 0  # buffered or written
        self.flushed_frames = 0  # handed to the OS whole
        self.last_pts: int | None = None
        self.last_gap = round(1000 / frame_rate) if frame_rate else 0
        self.size = 0  # bytes handed to the OS
        self.synced_at = time.monotonic()
        self._pending: list[bytes] = []
        self._pending_ends: list[tuple[int, int]] = []  # (file offset after, frames)
        self._offset = 0  # the file's length once everything pending is written
        self._cluster_at: int | None = None  # file offset of the open Cluster
        self._cluster_ms = 0
        self._cues: list[tuple[int, int]] = []  # (cluster time, cluster position)
        width, height = jpeg_size(first.data) or (640, 480)
        when = datetime.fromtimestamp(first.timestamp)
        header = _el(_EBML, _uint(b"\x42\x86", 1) + _uint(b"\x42\xf7", 1)
                     + _uint(b"\x42\xf2", 4) + _uint(b"\x42\xf3", 8)
                     + _str(b"\x42\x82", "matroska") + _uint(b"\x42\x87", 4)
                     + _uint(b"\x42\x85", 2))
        self._segment_size_at = len(header) + 4
        self._segment = len(header) + 12  # where the Segment's data starts
        app = "flask-video-streaming recording"
        date = round((first.timestamp - _EPOCH_2001) * 1e9)
        info = _el(_INFO, _uint(b"\x2a\xd7\xb1", 1000000)  # TimestampScale: 1 ms
                   + _str(b"\x4d\x80", app) + _str(b"\x57\x41", app)
                   + b"\x44\x61\x88" + date.to_bytes(8, "big", signed=True)  # DateUTC
                   + _str(b"\x7b\xa9", f"{camera} {kind} {when:%Y-%m-%d %H:%M:%S}")
                   + _void(11))  # room for the Duration
        video = _uint(b"\xb0", width) + _uint(b"\xba", height)
        track = (_uint(b"\xd7", 1) + _uint(b"\x73\xc5", int.from_bytes(os.urandom(7), "big") + 1)
                 + _uint(b"\x83", 1) + _uint(b"\x9c", 0) + _str(b"\x86", "V_MJPEG")
                 + (_uint(b"\x23\xe3\x83", round(1e9 / frame_rate)) if frame_rate else b"")
                 + _el(b"\xe0", video))
        tracks = _el(_TRACKS, _el(b"\xae", track))
        tags = _el(_TAGS, _el(b"\x73\x73", _el(b"\x63\xc0", b"") + b"".join(
            _el(b"\x67\xc8", _str(b"\x45\xa3", name) + _str(b"\x44\x87", value))
            for name, value in (("KIND", kind), ("CAMERA", camera)))))
        self._seekhead_at = self._segment
        self._info_at = self._seekhead_at + _SEEKHEAD_ROOM
        self._duration_at = self._info_at + len(info) - 11
        self._tracks_at = self._info_at + len(info)
        self._tags_at = self._tracks_at + len(tracks)
        self._append(header + _SEGMENT + _UNKNOWN + _void(_SEEKHEAD_ROOM) + info + tracks
                     + tags)
        self.fd = -1  # the file is made by the first flush: never an empty one
        self.created = False

    def _append(self, data: bytes) -> None:
        self._pending.append(data)
        self._offset += len(data)

    def write(self, frame: Frame) -> None:
        """Append one frame (in memory), timed by its capture time."""
        pts = round((frame.timestamp - self.start) * 1000)
        last = self.last_pts
        if last is not None:
            if pts <= last:
                pts = last + 1  # equal or backward capture times: keep them rising
            self.last_gap = pts - last
        if self._cluster_at is None or pts - self._cluster_ms >= CLUSTER_MS:
            self._new_cluster(pts)
        data = frame.data
        # SimpleBlock: track 1, time from the cluster's (int16 ms), keyframe.
        self._append(b"\xa3" + _size(len(data) + 4) + b"\x81"
                     + (pts - self._cluster_ms).to_bytes(2, "big", signed=True) + b"\x80")
        self._append(data)
        self.frames += 1
        self._pending_ends.append((self._offset, self.frames))
        self.last_pts = pts
        self.end = self.start + (pts + self.last_gap) / 1000

    def _new_cluster(self, pts: int) -> None:
        self._end_cluster()
        self._cluster_at, self._cluster_ms = self._offset, pts
        self._cues.append((pts, self._offset - self._segment))
        self._append(_CLUSTER + _UNKNOWN + _uint(b"\xe7", pts))

    def _end_cluster(self) -> None:
        """Write what is pending and give the open Cluster its size."""
        if self._cluster_at is None:
            return
        self.flush()
        size = self._offset - self._cluster_at - 12
        os.pwrite(self.fd, (1 << 56 | size).to_bytes(8, "big"), self._cluster_at + 4)
        self._cluster_at = None

    def flush(self) -> None:
        """Hand everything appended since the last flush to the OS: one writev."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        ends, self._pending_ends = self._pending_ends, []
        if self.fd < 0:
            # O_EXCL: the name is ours alone (a file of that name is never touched).
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                              0o644)
            self.created = True
        try:
            _write_all(self.fd, pending)
        except OSError:
            # What reached the file: the frames whose last byte did (the size so far).
            try:
                self.size = os.fstat(self.fd).st_size
            except OSError:
                pass
            self.flushed_frames = max([n for end, n in ends if end <= self.size],
                                      default=self.flushed_frames)
            raise
        self.size = self._offset
        if ends:
            self.flushed_frames = ends[-1][1]
        now = time.monotonic()
        if now - self.synced_at >= FSYNC_EVERY:
            self.synced_at = now
            os.fsync(self.fd)

    @property
    def bytes(self) -> int:
        return self.size

    def finish(self) -> None:
        """Cues, sizes, duration and SeekHead; fsync; close. The file is complete."""
        try:
            self._end_cluster()
            cues = b"".join(
                _el(b"\xbb", _uint(b"\xb3", at) + _el(b"\xb7", _uint(b"\xf7", 1)
                                                       + _uint(b"\xf1", position)))
                for at, position in self._cues)
            cues_at = self._offset
            if cues:
                self._append(_el(_CUES, cues))
            self.flush()
            seeks = [(_INFO, self._info_at), (_TRACKS, self._tracks_at),
                     (_TAGS, self._tags_at)] + ([(_CUES, cues_at)] if cues else [])
            seekhead = _el(_SEEKHEAD, b"".join(
                _el(_SEEK, _el(_SEEKID, eid) + _el(_SEEKPOSITION, (at - self._segment)
                                                   .to_bytes(8, "big")))
                for eid, at in seeks))
            os.pwrite(self.fd, seekhead + _void(_SEEKHEAD_ROOM - len(seekhead)),
                      self._seekhead_at)
            duration = (self.last_pts or 0) + self.last_gap
            os.pwrite(self.fd, _DURATION + b"\x88" + struct.pack(">d", float(duration)),
                      self._duration_at)
            os.pwrite(self.fd, (1 << 56 | self._offset - self._segment).to_bytes(8, "big"),
                      self._segment_size_at)
            os.fsync(self.fd)
            self.size = self._offset
        finally:
            self.close()

    def close(self) -> None:
        """Close the file as it is (after a failure, or once finished)."""
        self._pending = []
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1

    abort = close


def _write_all(fd: int, buffers: list[bytes]) -> None:
    """writev until all is written (it may write less, and takes at most IOV_MAX)."""
    views = [memoryview(b) for b in buffers if b]
    while views:
        written = os.writev(fd, views[:512])
        if not written:
            raise OSError(errno.EIO, "the disk took no bytes")
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


def created(container) -> float | None:
    """A PyAV container's creation time (our files' DateUTC), in epoch seconds."""
    value = container.metadata.get("creation_time")
    try:
        moment = datetime.strptime(value.rstrip("Z")[:26], "%Y-%m-%dT%H:%M:%S.%f")
    except (AttributeError, ValueError):
        return None
    return (moment - datetime(1970, 1, 1)).total_seconds()


def probe(path: Path) -> tuple[float | None, float | None, int]:
    """(start, end, frames) of a recording read from the file itself (no decoding):
    for files without an index line, e.g. cut by a power loss."""
    load_av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = created(container)
        frames, last = 0, None
        try:
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None:
                    frames += 1
                    last = packet.pts + (packet.duration or 0)
        except av.error.FFmpegError:
            pass  # a cut file: what was read plays
        end = None
        if start is not None and last is not None:
            end = start + float(last * stream.time_base)
        return start, end, frames


def make_timelapse(stills: list[Path], out: Path, fps: float, camera: str = "") -> int:
    """The JPEG stills as a Matroska video at `fps` (no re-encoding); frames written.
    Written beside `out` and renamed into place once complete."""
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.unlink(missing_ok=True)
    clip = None
    frames = 0
    try:
        for path in stills:
            data = path.read_bytes()
            if data[:2] != b"\xff\xd8":
                continue  # not a JPEG
            if clip is None:
                start = path.stat().st_mtime
                clip = _ClipFile(tmp, "timelapse", camera, Frame(data, start, 0),
                                 frame_rate=fps)
            clip.write(Frame(data, start + frames / fps, frames))
            frames += 1
            if frames % 64 == 0:
                clip.flush()
        if clip is None:
            raise RecordingError("no JPEG stills to make a video from")
        clip.finish()
        os.replace(tmp, out)
    finally:
        if clip is not None:
            clip.close()
        tmp.unlink(missing_ok=True)
    return frames


def _disk_reason(exc: BaseException, path: Path | None) -> str:
    if isinstance(exc, OSError) and exc.errno:
        what = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "permission denied", errno.EIO: "disk I/O error"}.get(
            exc.errno, os.strerror(exc.errno))
        return f"{what} ({os.strerror(exc.errno)}) writing {exc.filename or path}"
    return f"{type(exc).__name__}: {exc} writing {path}"


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
        self.dir = Path(root) / camera.name
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
        self._file: _ClipFile | None = None  # the writer's open file
        self._file_name: str | None = None
        self._counted = 0  # frames of the open file counted in frames_written
        self._ring_frames = 0
        self._ring_bytes = 0
        self._queue: _Queue | None = None
        self._retry_at = 0.0
        self._retention_at = 0.0
        self._probed: dict[tuple, tuple] = {}  # (path, size, mtime) -> probe()
        self._summaries: dict[Path, tuple] = {}  # day folder -> (its mtime, _summary())

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
        retention once. Idempotent."""
        if not self.active:
            return
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
        done = self._thread_done if self._running else None
        self._wakeup.wake()
        if done is not None and wait > 0 and not done.wait(wait):
            log.warning("%s: the recording was not finished within %.1f s", self.name, wait)

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
                # wake-up per TAP_INTERVAL, not per frame. Frames are timed by capture
                # time, so looking late changes nothing in the files.
                self._wakeup.wait(TAP_INTERVAL)
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
                self._file = self._file_name = None
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
                path = self._new_path(kind, frame.timestamp)
                clip = _ClipFile(path, kind, self.name, frame)
            except Exception as exc:  # noqa: BLE001 - any failure: stop and retry later
                self._disk_failed(exc, path)
                self.dropped += 1
                return
            self._file, self._file_name, self._counted = clip, path.name, 0
        try:
            clip.write(frame)  # in memory (a new cluster writes the one before)
        except Exception as exc:  # noqa: BLE001
            self._file_failed(exc)
            return
        self._count(clip)

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

    def _count(self, clip: _ClipFile, failed: bool = False) -> None:
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
        self._file_name = None
        self._count(clip, failed=True)
        self._disk_failed(exc, clip.path)
        self.dropped += clip.frames - clip.flushed_frames
        clip.close()
        self._keep_if_playable(clip)

    def _new_path(self, kind: str, ts: float) -> Path:
        local = time.localtime(ts)
        day = self.dir / time.strftime("%Y-%m-%d", local)
        day.mkdir(parents=True, exist_ok=True)
        stem = f"{self.name}-{time.strftime('%Y%m%d-%H%M%S', local)}"
        stem += "" if kind == "continuous" else f"-{kind}"
        for n in range(1, 1000):
            path = day / (f"{stem}.mkv" if n == 1 else f"{stem}-{n}.mkv")
            if not path.exists():
                return path
        raise OSError(errno.EEXIST, "too many recordings in one second", str(day))

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
        self._file_name = None
        self._count(clip)
        self.files_written += 1
        entry = {"file": clip.path.name, "kind": clip.kind, "start": round(clip.start, 3),
                 "end": round(clip.end, 3), "frames": clip.frames, "bytes": clip.size}
        try:
            with open(clip.path.parent / INDEX, "a", encoding="utf-8") as index:
                index.write(json.dumps(entry) + "\n")
        except OSError as exc:
            log.debug("%s: index not written: %s", self.name, exc)  # listing probes it
        self._retention()

    def _keep_if_playable(self, clip: _ClipFile) -> None:
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
        reason = _disk_reason(exc, path)
        self._retry_at = time.monotonic() + self.retry_after
        if self.error is None:
            log.error("%s: recording stopped: %s; streaming goes on; retrying every %g s",
                      self.name, reason, self.retry_after)
        self.error = f"recording stopped: {reason}; retrying every {self.retry_after:g} s"

    def _write_still(self, frame: Frame) -> None:
        if time.monotonic() < self._retry_at:
            return
        local = time.localtime(frame.timestamp)
        day = self.dir / TIMELAPSE / time.strftime("%Y-%m-%d", local)
        path = day / time.strftime("%H%M%S.jpg", local)
        try:
            day.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return
        except OSError as exc:
            self._disk_failed(exc, path)
            return
        try:
            view = memoryview(frame.data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)  # half a JPEG is no still
            self._disk_failed(exc, path)
            return
        os.close(fd)
        self.stills_written += 1
        self.last_still = frame.timestamp

    # -- retention ----------------------------------------------------------------------

    def _retention_thread(self) -> None:
        try:
            self._retention()
        finally:
            native.destroy_thread_hub()

    def _day_dirs(self) -> list[tuple[str, Path]]:
        """(day, folder) of every day folder, recordings and timelapse, oldest first."""
        dirs = []
        for base in (self.dir, self.dir / TIMELAPSE):
            try:
                entries = list(os.scandir(base))
            except OSError:
                continue
            dirs += [(e.name, Path(e.path)) for e in entries
                     if DAY.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
        return sorted(dirs)

    def _retention(self) -> None:
        """Delete what is older than keep_days, then the oldest until the camera's files
        total at most keep_gb. Never the open file."""
        s = self.settings
        if not s.keep_days and not s.keep_gb:
            return
        try:
            deleted = self._apply_retention(s.keep_days, s.keep_gb)
        except Exception:  # noqa: BLE001 - retention must never stop recording
            log.exception("%s: retention failed", self.name)
            return
        if deleted:
            log.info("%s: retention deleted %d file(s), %.1f MB", self.name, deleted[0],
                     deleted[1] / 1e6)

    def _apply_retention(self, keep_days: float | None, keep_gb: float | None):
        open_file = self._file.path if self._file is not None else None
        cutoff = time.time() - keep_days * 86400 if keep_days else None
        limit = keep_gb * 1e9 if keep_gb else None
        folders = [(folder, self._summary(folder, open_file)) for _, folder in self._day_dirs()]
        self._summaries = {f: self._summaries[f] for f, _ in folders if f in self._summaries}
        total = sum(size for _, (_, size, _) in folders)
        count = freed = 0
        for folder, (_, size, oldest) in folders:  # oldest day first
            too_old = cutoff is not None and oldest is not None and oldest < cutoff
            if not too_old and (limit is None or total <= limit):
                if cutoff is None:
                    break  # only a size limit, and it holds
                continue
            files = sorted(_files(folder))  # (mtime, size, path), oldest first
            kept = False
            for mtime, size, path in files:
                if path.name == INDEX:
                    continue
                if path == open_file or not ((cutoff is not None and mtime < cutoff)
                                             or (limit is not None and total > limit)):
                    kept = True
                    continue
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("%s: retention could not delete %s: %s", self.name, path,
                                exc.strerror)
                    kept = True
                    continue
                total -= size
                count += 1
                freed += size
            if not kept:  # the day is gone: its index and folder too
                for mtime, size, path in files:
                    if path.name == INDEX:
                        path.unlink(missing_ok=True)
                        total -= size
                try:
                    folder.rmdir()
                except OSError:
                    pass
        return (count, freed) if count else None

    def _summary(self, folder: Path, open_file: Path | None) -> tuple:
        """(files, bytes, oldest mtime) of a day folder; cached while the folder's own
        mtime (which changes as files come and go) stays, except for the open file's."""
        try:
            mtime = folder.stat().st_mtime_ns
        except OSError:
            return (0, 0, None)
        cached = self._summaries.get(folder)
        if cached is not None and cached[0] == mtime and (
                open_file is None or open_file.parent != folder):
            return cached[1]
        files = _files(folder)
        summary = (len(files), sum(f[1] for f in files), min((f[0] for f in files),
                                                             default=None))
        self._summaries[folder] = (mtime, summary)
        return summary

    # -- listing ------------------------------------------------------------------------

    def path_of(self, file: str) -> Path | None:
        """The recording `file` names, if it is one of this camera's (strict name, inside
        this camera's folder, a regular file), else None."""
        match = file_pattern(self.name).fullmatch(file)
        if not match or _name_time(match) is None:
            return None
        day = f"{match[1][:4]}-{match[1][4:6]}-{match[1][6:]}"
        path = self.dir / day / file
        try:
            if not path.is_file() or path.is_symlink():
                return None
            if path.resolve().parent.parent != self.dir.resolve():
                return None
        except OSError:
            return None
        return path

    def is_open(self, path: Path) -> bool:
        clip = self._file
        return clip is not None and clip.path == path

    def recordings(self, day: str | None = None, limit: int | None = None) -> list[Recording]:
        """This camera's recordings, newest first (one day's with `day`)."""
        pattern = file_pattern(self.name)
        clip = self._file
        result: list[Recording] = []
        try:
            days = sorted((e.name for e in os.scandir(self.dir)
                           if DAY.fullmatch(e.name) and e.is_dir(follow_symlinks=False)),
                          reverse=True)
        except OSError:
            return []
        if day is not None:
            days = [d for d in days if d == day]
        for name in days:
            folder = self.dir / name
            index = _read_index(folder / INDEX)
            found = []
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                match = pattern.fullmatch(entry.name)
                if not match:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                path = Path(entry.path)
                if clip is not None and clip.path == path:
                    found.append(Recording(entry.name, path, clip.kind, clip.start,
                                           clip.end, clip.frames, st.st_size, True))
                    continue
                info = index.get(entry.name)
                if info is not None:
                    found.append(Recording(entry.name, path, info.get("kind", _kind_of(match)),
                                           info["start"], info.get("end"),
                                           info.get("frames"), st.st_size))
                    continue
                start, end, frames = self._probe(path, st)
                found.append(Recording(entry.name, path, _kind_of(match),
                                       start or _name_time(match) or st.st_mtime, end, frames,
                                       st.st_size))
            found.sort(key=lambda r: (r.start, r.file), reverse=True)
            result += found
            if limit is not None and len(result) >= limit:
                return result[:limit]
        return result

    def _probe(self, path: Path, st) -> tuple:
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._probed:
            if len(self._probed) > 1000:
                self._probed.clear()
            try:
                self._probed[key] = probe(path)
            except Exception:  # noqa: BLE001 - unreadable: listed without figures
                self._probed[key] = (None, None, None)
        return self._probed[key]

    def delete(self, path: Path) -> None:
        if self.is_open(path):
            raise RecordingError("this recording is still being written")
        path.unlink()

    def timelapse_days(self) -> list[dict]:
        base = self.dir / TIMELAPSE
        try:
            days = sorted((e.name for e in os.scandir(base)
                           if DAY.fullmatch(e.name) and e.is_dir(follow_symlinks=False)),
                          reverse=True)
        except OSError:
            return []
        result = []
        for day in days:
            stills = self.stills(day)
            video = base / day / timelapse_video_name(self.name, day)
            result.append({"day": day, "stills": len(stills),
                           "first": stills[0] if stills else None,
                           "last": stills[-1] if stills else None,
                           "video": video.name if video.is_file() else None})
        return result

    def stills(self, day: str) -> list[str]:
        """The still names of `day`, oldest first."""
        try:
            return sorted(e.name for e in os.scandir(self.dir / TIMELAPSE / day)
                          if STILL.fullmatch(e.name))
        except OSError:
            return []

    def timelapse_path(self, day: str, file: str) -> Path | None:
        """A still or the day's timelapse video, strictly named, else None."""
        if not valid_day(day) or not (STILL.fullmatch(file)
                                      or file == timelapse_video_name(self.name, day)):
            return None
        path = self.dir / TIMELAPSE / day / file
        return path if path.is_file() and not path.is_symlink() else None

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
            recording = {"kind": clip["kind"], "file": self._file_name,
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
                "queued": len(queue) if queue is not None and self._running else 0,
                "error": self.error,
                "pre_event_buffer": ({"seconds": s.pre_event, "frames": self._ring_frames,
                                      "bytes": self._ring_bytes}
                                     if s.record == "events" else None),
                "timelapse": ({"interval": s.timelapse, "stills": self.stills_written,
                               "last": self.last_still} if s.timelapse > 0 else None),
            },
        }


def _files(folder: Path) -> list[tuple[float, int, Path]]:
    """(mtime, size, path) of the regular files in `folder`."""
    files = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        files.append((st.st_mtime, st.st_size, Path(entry.path)))
                except OSError:
                    continue
    except OSError:
        pass
    return files


def _pause(seconds: float) -> None:
    """Sleep in a native thread (time.sleep may be gevent's)."""
    lock = native.allocate_lock()
    lock.acquire()
    lock.acquire(timeout=seconds)


def _read_index(path: Path) -> dict[str, dict]:
    entries = {}
    try:
        with open(path, encoding="utf-8") as index:
            for line in index:
                try:
                    entry = json.loads(line)
                    entries[entry["file"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a power loss
    except OSError:
        pass
    return entries


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
