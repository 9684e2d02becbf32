"""Recording: every camera's own JPEGs into Matroska files, without re-encoding, beside
the stream and never at its expense.

    camera Fanout --history--> tap thread --bounded queue--> writer thread --> files

One Recorder per camera, two native OS threads while it has something to do. Its parts,
each in its own module:

- plan.py: which clip is wanted, and when: the one rule (manual, event, continuous;
  a trigger extends a clip), cuts, the pre-event ring and the timelapse stills' times.
  Pure: frames and requests in, decisions out;
- tap.py: what request handlers asked, and the tap thread, which looks at the
  camera's frames every TAP_INTERVAL, asks the planner and queues its decisions. It never
  touches the disk, so a stalled disk costs dropped recording frames (counted), never a
  viewer's or the capture's time;
- writer.py: the bounded queue and the writer thread: PyAV muxing
  (clip_file.py), one writev per batch, stills, the index, retention, and disk errors
  (stop that camera's recording, leave no empty or unplayable file, retry);
- here: the control and status surface (Recorder) and every camera's (Recorders).

Where files go, their names, the index, listing and retention: folder.py.

Calls from request handlers (greenlets) only change state under a native lock and wake
or start the threads: they never wait for the disk.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from capture import native

from .clip_file import RecordingError, created, load_av, make_timelapse, probe
from .folder import (
    TIMELAPSE,
    CameraFolder,
    Recording,
    file_pattern,
    timelapse_video_name,
    valid_day,
)
from .plan import Asked, Rules
from .tap import Tap
from .writer import QUEUE_BYTES, QUEUE_FRAMES, Figures, Writer

if TYPE_CHECKING:
    from base_camera import BaseCamera

log = logging.getLogger("recording")

# Importable from here too, as the app, recordings_http and the tests always have.
__all__ = ["TIMELAPSE", "Recorder", "Recorders", "Recording", "RecordingError", "created",
           "file_pattern", "load_av", "make_timelapse", "probe", "timelapse_video_name",
           "valid_day"]


# -- the recorder -----------------------------------------------------------------------

class Recorder:
    """One camera's recording: its settings from camera.settings, its files under
    root/<camera>. `active=False`: list and serve files only (a CAMERA=redis web worker,
    where the publisher records)."""

    def __init__(self, camera: BaseCamera, root: Path | str, *, active: bool = True,
                 queue_bytes: int = QUEUE_BYTES, queue_frames: int = QUEUE_FRAMES,
                 on_file: Callable[[dict], None] | None = None) -> None:
        self.camera = camera
        self.name = camera.name
        self.settings = camera.settings
        self.rules = Rules.of(camera.settings)
        self.folder = CameraFolder(root, camera.name)  # names, listing, retention
        self.dir = self.folder.dir
        self.active = active
        # Inactive recorders: forward(camera, command, args) -> result hands "record"
        # (args: seconds), "stop" and "event" to the owner (e.g. over Redis).
        self.forward = None
        self.figures = Figures()
        # on_file(info): a file started or ended (camera, state, kind, file, time,
        # download), called from the writer thread: the event feed's "recording".
        self._writer = Writer(self.name, self.folder, self.settings, self.figures, on_file)
        self._tap = Tap(camera, self.rules, self._writer, self.figures, queue_bytes,
                        queue_frames)
        self._lock = native.allocate_lock()
        self._started = False
        self._closed = False
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
        return self.rules.persistent

    def start(self) -> None:
        """Begin what the settings ask for (continuous, events, timelapse); apply
        retention once. Idempotent. RecordingError if PyAV is missing and files are
        wanted."""
        if not self.active:
            return
        if self.mode != "off":
            load_av()  # here, not first in the writer thread (see load_av)
        with self._lock:
            if self._started or self._tap.closed:
                return
            self._started = True
        if self.persistent:
            what = [self.mode] if self.mode != "off" else []
            if self.settings.timelapse:
                what.append(f"a still every {self.rules.still_every:g} s")
            log.info("%s: recording %s into %s", self.name, " and ".join(what), self.dir)
            self._tap.run()
        elif self.settings.keep_days or self.settings.keep_gb:
            native.start_thread(self._writer.retention_thread, ())

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
        self._tap.check_open()
        clip = self._tap.ask(lambda asked: asked.record(now, seconds, self.rules)).manual
        return {"kind": "manual", "from": round(clip.start, 3), "until": round(clip.until, 3),
                "until_stopped": seconds is None}

    def stop_clip(self) -> bool:
        """End the manual clip now; False if none runs."""
        if not self.active:
            return bool(self._forward("stop"))
        now = time.time()
        return self._tap.ask(lambda asked: asked.stop(now)) is not None

    def trigger_event(self, at: float | None = None) -> dict:
        """An event: a clip from `pre_event` before now (or capture time `at`, e.g. the
        first motion frame's) to `post_event` after the last trigger (a trigger during a
        clip extends it)."""
        if not self.active:
            return self._forward("event")
        load_av()
        now = time.time() if at is None else at
        self._tap.check_open()

        def trigger(asked: Asked) -> Asked:
            if asked.event is None or now >= asked.event.until:
                self.figures.events += 1  # a new event, not one extended (under the lock)
            return asked.trigger(now, self.rules)

        clip = self._tap.ask(trigger).event
        return {"kind": "event", "from": round(clip.start, 3), "until": round(clip.until, 3)}

    def close(self, wait: float = 2.0) -> None:
        """Stop: the open file is finished (trailer, fsync) and playable. Waits up to
        `wait` seconds for that; call again with a wait to wait more."""
        # No lock: this runs in signal handlers too, which may have interrupted a holder.
        self._closed = True
        for player in list(self.players):
            player.end()
        self._tap.close(wait)

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

    # -- tuning (the tests set these) --------------------------------------------------

    @property
    def retry_after(self) -> float:
        """Seconds between attempts while the disk fails."""
        return self._writer.retry_after

    @retry_after.setter
    def retry_after(self, seconds: float) -> None:
        self._writer.retry_after = seconds

    @property
    def queue_bytes(self) -> int:
        """The writer's queue holds at most this many bytes (from the next session)."""
        return self._tap.queue_bytes

    @queue_bytes.setter
    def queue_bytes(self, size: int) -> None:
        self._tap.queue_bytes = size

    @property
    def queue_frames(self) -> int:
        """The writer's queue holds at most this many frames (from the next session)."""
        return self._tap.queue_frames

    @queue_frames.setter
    def queue_frames(self, frames: int) -> None:
        self._tap.queue_frames = frames

    def _retention(self) -> None:
        """A retention pass now, in this thread."""
        self._writer.retention()

    # -- listing (recordings.CameraFolder) ----------------------------------------------

    def path_of(self, file: str) -> Path | None:
        """The recording `file` names, if it is one of this camera's, else None."""
        return self.folder.path_of(file)

    def is_open(self, path: Path) -> bool:
        clip = self._writer.file
        return clip is not None and clip.path == path

    def recordings(self, day: str | None = None, limit: int | None = None) -> list[Recording]:
        """This camera's recordings, newest first (one day's with `day`)."""
        return self.folder.recordings(day, limit, self._writer.file, self._open_elsewhere())

    def delete(self, path: Path) -> None:
        """RecordingError while it is being written."""
        self.folder.delete(path, self._writer.file, self._open_elsewhere())

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
        s, f, tap = self.settings, self.figures, self._tap
        queue, planner = tap.queue, tap.planner
        ring = planner.ring_figures if planner is not None else (0, 0)
        return {
            "recording": self._recording(),
            "recorder": {
                "mode": s.record,
                "frames_written": f.frames_written,
                "dropped": f.dropped,
                "files_written": f.files_written,
                "events": f.events,
                "players": len(self.players),
                "queued": len(queue) if queue is not None and tap.running else 0,
                "error": f.error,
                "pre_event_buffer": ({"seconds": s.pre_event, "frames": ring[0],
                                      "bytes": ring[1]} if s.record == "events" else None),
                "timelapse": ({"interval": s.timelapse, "stills": f.stills_written,
                               "last": f.last_still} if s.timelapse > 0 else None),
            },
        }

    def _recording(self) -> dict | None:
        """The clip being recorded: {kind, file, since, frames} and its `until`."""
        clip, file, asked = self._tap.clip, self._writer.file, self._tap.asked
        if clip is None:
            return None
        recording = {"kind": clip.kind, "file": file.path.name if file is not None else None,
                     "since": round(clip.since, 3),
                     "frames": file.frames if file is not None else 0}
        if clip.kind == "manual" and asked.manual is not None:
            recording["until"] = round(asked.manual.until, 3)
            recording["until_stopped"] = asked.until_stopped
        elif clip.kind == "event" and asked.event is not None:
            recording["until"] = round(asked.event.until, 3)
        return recording


class Recorders(Mapping[str, Recorder]):
    """Every camera's recorder, by camera name. `active=False` in CAMERA=redis web
    workers: they list and serve files, the publisher records."""

    def __init__(self, cameras: Mapping[str, BaseCamera], root: Path | str,
                 active: bool = True, on_file: Callable[[dict], None] | None = None) -> None:
        self.root = Path(root).resolve()
        self.started = False
        self._by_name = {name: Recorder(camera, self.root, active=active, on_file=on_file)
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
                recorder.figures.error = str(exc)
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
