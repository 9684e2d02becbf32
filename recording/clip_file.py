"""One recording file: the camera's own JPEGs in Matroska, muxed by PyAV (FFmpeg's muxer),
never decoded or re-encoded; reading a file's facts back (`probe`, `created`); and the
timelapse video, made of stills the same way.

Each JPEG goes in as an `av.Packet` on an mjpeg stream (size from the first frame's JPEG
header), as a keyframe timed by its capture time in milliseconds from the file's first
frame, so players play it at the real speed. The muxer's options, and why:

- `cluster_size_limit=0`: a Cluster per frame. FFmpeg builds each Cluster in memory and
  hands it over whole, with its size, when the next one starts (or in the trailer). For
  a camera's JPEGs it does so already (a keyframe starts a new Cluster once the open one
  holds 4 KB); the option makes it hold for tiny frames too. So what the muxer has
  handed over is always every frame but the newest one, whole.
- `flush_packets=1`: the muxer hands its bytes over after every packet, not when its
  I/O buffer fills, so we know which frames they complete.
- `write_crc32=0`: no CRC-32 element in each Cluster (optional in Matroska, and FFmpeg
  does not check it unless asked): 4-5 us less per 58 KB frame.

The bytes go to `_BatchFile`, not straight to a path: it keeps them until the end of the
recorder's batch and hands them to the OS with one writev (FFmpeg writing the path
itself makes a write(2) per frame with flush_packets: 13 us more per 58 KB frame on a
2-core VM), and knows exactly which frames reached the file, also when a full disk takes
only part of a batch.

Until the trailer the Segment keeps FFmpeg's "unknown size" mark, which players accept:
a file cut by a power loss (or by a full disk) plays up to its last whole frame. The
trailer (`finish`) writes the last Cluster, the Cues (the seek index), the Duration and
the sizes. The file is fsynced every FSYNC_EVERY seconds and when finished, and then
dropped from the page cache (`_BatchFile.sync`): a recording is written once and seldom read back,
so keeping it cached only evicts what the box does use, and a page cache that grows
with every recorded byte costs the kernel several times more per frame to fill (on a
2-core VM, appending 58 KB took 21 us with recycled pages and 90-150 us once the cache
had to grow) than one whose pages are recycled.

PyAV is imported on first need by `load_av`, never first from a recorder thread.
"""

from __future__ import annotations

import errno
import os
import time
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

from capture import Frame, jpeg_size

MS = Fraction(1, 1000)  # the time base of every timestamp written (Matroska's default)
MUXER_OPTIONS = {"cluster_size_limit": "0", "flush_packets": "1", "write_crc32": "0"}
FSYNC_EVERY = 10.0  # seconds between fsyncs of the open file (bounds a power loss's loss)

av = None  # PyAV, imported on first need by load_av()


class RecordingError(Exception):
    """A request the recorder cannot do; the message is meant for users."""


def load_av():
    """Import PyAV once and return it. Call it first from a thread that may import (the
    main thread or a request), never from a recorder thread: imports there could meet
    gevent's patched import-time locks."""
    global av
    if av is None:
        try:
            import av as module
        except ImportError as exc:
            raise RecordingError("PyAV is not installed: pip install av (Raspberry Pi OS: "
                                 "sudo apt install python3-av)") from exc
        av = module
    return av


class ClipFile:
    """An open recording. `write()` muxes a frame (into memory); `flush()` hands what
    came since to the OS, making the file the first time (never an empty one);
    `finish()` writes the trailer, fsyncs and closes; `close()` closes as it is (after a
    failure). Errors are OSErrors with their errno, raised by the call that met them."""

    def __init__(self, path: Path, kind: str, camera: str, first: Frame,
                 frame_rate: float | None = None) -> None:
        av = load_av()
        self.path, self.kind = path, kind
        self.start = self.end = first.timestamp
        self.frames = 0  # handed to the muxer
        self.size = 0  # bytes in the file, once finished
        self.last_pts: int | None = None
        self.last_gap = round(1000 / frame_rate) if frame_rate else 0  # ms
        self._file = _BatchFile(path)
        self._container = av.open(self._file, "w", format="matroska",
                                  container_options=MUXER_OPTIONS)
        rate = Fraction(frame_rate).limit_denominator(1001) if frame_rate else None
        self._stream = self._container.add_stream("mjpeg", rate=rate)
        codec = self._stream.codec_context  # never encodes: it describes the stream
        codec.width, codec.height = jpeg_size(first.data) or (640, 480)
        codec.pix_fmt = "yuvj420p"  # full-range 4:2:0, what cameras' JPEGs are
        codec.time_base = self._stream.time_base = MS
        if rate is None:
            # No nominal rate (DefaultDuration): each frame is timed by its own pts.
            codec.framerate = Fraction(0, 1)
        when = datetime.fromtimestamp(first.timestamp)
        self._container.metadata.update({
            "title": f"{camera} {kind} {when:%Y-%m-%d %H:%M:%S}",
            "creation_time": datetime.fromtimestamp(first.timestamp, UTC)
            .strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # Matroska's DateUTC
            "KIND": kind, "CAMERA": camera})

    @property
    def created(self) -> bool:
        """The file was made (by us), even if closed since."""
        return self._file.created

    @property
    def flushed_frames(self) -> int:
        """Frames that reached the file whole."""
        return self._file.frames

    def write(self, frame: Frame) -> None:
        """Mux one frame, timed by its capture time. The first writes the header."""
        pts = round((frame.timestamp - self.start) * 1000)
        last = self.last_pts
        if last is not None:
            if pts <= last:
                pts = last + 1  # equal or backward capture times: keep them rising
            self.last_gap = pts - last
        packet = av.Packet(frame.data)
        packet.stream = self._stream
        packet.time_base = MS
        packet.pts = packet.dts = pts
        # The last frame's duration (the file's Duration ends with it): the gap before it.
        packet.duration = self.last_gap
        packet.is_keyframe = True
        self._container.mux(packet)
        # The muxer handed over the Cluster of the frame before this one: once those
        # bytes are in the file, so are all frames before this one.
        self._file.mark(self.frames)
        self.frames += 1
        self.last_pts = pts
        self.end = self.start + (pts + self.last_gap) / 1000

    def flush(self) -> None:
        """Hand what the muxer wrote since the last flush to the OS (one writev); fsync
        if the last one was FSYNC_EVERY seconds ago."""
        if self.frames < 2:
            return  # the muxer holds the only frame: no file with a header alone
        self._file.flush()
        if self._file.fd >= 0 and time.monotonic() - self._file.synced_at >= FSYNC_EVERY:
            self._file.sync()

    def finish(self) -> None:
        """The trailer (the last Cluster, Cues, Duration, sizes); fsync; close."""
        try:
            self._container.close()  # writes through _BatchFile, errors and all
            self._file.flush()
            self._file.frames = self.frames  # the trailer wrote the newest one
            if self._file.fd >= 0:
                self._file.sync()
                self.size = os.fstat(self._file.fd).st_size
        finally:
            self.close()

    def close(self) -> None:
        """Close the file as it is: after a failure, or once finished. Nothing more is
        written after a failure: what reached the file plays as it is."""
        self._file.broken = True  # the trailer PyAV still tries goes nowhere
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the failure was reported already
            pass
        self._file.close()


class _BatchFile:
    """The file object PyAV writes the muxer's bytes to: kept in memory until `flush()`,
    then written with one writev; the file is made by the first flush. `mark(n)`: once
    what was written so far is in the file, so are n frames; `frames` says how many
    are. Seeks (the trailer's size patches) write what is pending first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self.created = False
        self.frames = 0  # frames whole in the file
        self.synced_at = time.monotonic()
        self.broken = False  # after a failure: write nothing more
        self._pending: list[bytes] = []
        self._marks: list[tuple[int, int]] = []  # (file position after, frames)
        self._pos = 0  # where the next byte goes, once what is pending is written

    def write(self, data: bytes) -> int:
        if not self.broken:
            self._pending.append(data)
            self._pos += len(data)
        return len(data)

    def mark(self, frames: int) -> None:
        self._marks.append((self._pos, frames))

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self.broken:
            return self._pos
        self.flush()
        self._pos = os.lseek(self.fd, offset, whence)
        return self._pos

    def flush(self) -> None:
        if not self._pending or self.broken:
            return
        pending, self._pending = self._pending, []
        marks, self._marks = self._marks, []
        if self.fd < 0:
            # O_EXCL: the name is ours alone (a file of that name is never touched).
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                              0o644)
            self.created = True
        try:
            _write_all(self.fd, pending)
        except OSError as exc:
            # The frames whose last byte reached the file (its size so far) are in it.
            try:
                size = os.fstat(self.fd).st_size
            except OSError:
                size = 0
            self.frames = max([n for end, n in marks if end <= size], default=self.frames)
            self.broken = True
            exc.filename = exc.filename or str(self.path)  # writev names no file
            raise
        self.frames = max([n for _, n in marks], default=self.frames)

    def sync(self) -> None:
        """fsync, then drop the file's pages from the cache (they are on disk now)."""
        os.fsync(self.fd)
        self.synced_at = time.monotonic()
        if hasattr(os, "posix_fadvise"):  # not on macOS
            try:
                os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass  # a hint some file systems refuse: never a reason to stop recording

    def close(self) -> None:
        self._pending = []
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


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
                clip = ClipFile(tmp, "timelapse", camera, Frame(data, start, 0),
                                frame_rate=fps)
            clip.write(Frame(data, start + frames / fps, frames))
            frames += 1
            if frames % 64 == 0:
                clip.flush()  # a day of stills need not sit in memory
        if clip is None:
            raise RecordingError("no JPEG stills to make a video from")
        clip.finish()
        os.replace(tmp, out)
    finally:
        if clip is not None:
            clip.close()
        tmp.unlink(missing_ok=True)
    return frames
