"""A camera's recordings on disk: what files are called and where they go, the day
folders' index, listing, strict path checks, deleting, retention, and timelapse stills.

    <root>/<camera>/<YYYY-MM-DD>/<camera>-<YYYYmmdd-HHMMSS>[-event|-manual][-N].mkv
    <root>/<camera>/<YYYY-MM-DD>/index.jsonl
    <root>/<camera>/timelapse/<YYYY-MM-DD>/<HHMMSS>.jpg

Times are local, of a file's first frame, so names sort in time order; continuous files
carry no suffix, and "-2".. is added only on a clash. index.jsonl has one line per
finished file (start, end, frames, bytes, kind), so listing opens no file; files without
a line (cut by a crash or a power loss) are read once with PyAV (`clip_file.probe`).

Only names that the recorder makes are ever served or deleted (`file_pattern`), and only
as regular files inside the camera's own folder.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .clip_file import RecordingError, probe

if TYPE_CHECKING:
    from .clip_file import ClipFile

log = logging.getLogger("recording")

INDEX = "index.jsonl"
TIMELAPSE = "timelapse"
DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
STILL = re.compile(r"(\d{2})(\d{2})(\d{2})\.jpg")


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
    snapshot: bool = False  # an event's snapshot (motion's peak frame) lies beside it

    def as_dict(self) -> dict:
        return {
            "file": self.file, "kind": self.kind,
            "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "duration": None if self.end is None else round(self.end - self.start, 3),
            "frames": self.frames, "bytes": self.bytes, "in_progress": self.in_progress,
        }


class CameraFolder:
    """<root>/<camera>: where the recorder's writer puts files (`new_path`, `add_to_index`,
    `write_still`) and what requests list, check and delete. `open_clip` arguments are
    the file being written, if any: listed as in progress, never deleted."""

    def __init__(self, root: Path | str, camera: str) -> None:
        self.name = camera
        self.dir = Path(root) / camera
        self._probed: dict[tuple, tuple] = {}  # (path, size, mtime) -> probe()
        self._summaries: dict[Path, tuple] = {}  # day folder -> (its mtime, _summary())
        self._bad_index: set[tuple] = set()  # (index, size, mtime) whose bad lines were logged

    # -- writing (the recorder's writer thread) -------------------------------------------

    def new_path(self, kind: str, ts: float) -> Path:
        """A free name for a file of `kind` whose first frame was captured at `ts`; its
        day folder is made."""
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

    def add_to_index(self, clip: ClipFile) -> None:
        """Append a finished file's line to its day's index.jsonl (OSError if not)."""
        entry = {"file": clip.path.name, "kind": clip.kind, "start": round(clip.start, 3),
                 "end": round(clip.end, 3), "frames": clip.frames, "bytes": clip.size}
        with open(clip.path.parent / INDEX, "a", encoding="utf-8") as index:
            index.write(json.dumps(entry) + "\n")

    def write_still(self, ts: float, data: bytes) -> bool:
        """Save a timelapse still captured at `ts`; False if that second has one already.
        OSError if it cannot be written; half a JPEG is never left."""
        local = time.localtime(ts)
        day = self.dir / TIMELAPSE / time.strftime("%Y-%m-%d", local)
        path = day / time.strftime("%H%M%S.jpg", local)
        day.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            exc.filename = exc.filename or str(path)  # os.write names no file
            raise
        os.close(fd)
        return True

    # -- listing --------------------------------------------------------------------------

    def path_of(self, file: str) -> Path | None:
        """The recording `file` names, if it is one of this camera's (strict name, inside
        this camera's folder, a regular file), else None."""
        day = self._day_of(file)
        return None if day is None else self._inside(self.dir / day / file)

    def snapshot_path(self, file: str) -> Path | None:
        """Where the snapshot of recording `file` goes: `<name without .mkv>.jpg` in its
        day folder (made if missing); None unless `file` is a name the recorder makes."""
        day = self._day_of(file)
        if day is None:
            return None
        (self.dir / day).mkdir(parents=True, exist_ok=True)
        return self.dir / day / f"{file[:-len('.mkv')]}.jpg"

    def snapshot_of(self, file: str) -> Path | None:
        """The snapshot of recording `file`, if there is one (strict name, inside this
        camera's folder, a regular file), else None."""
        day = self._day_of(file)
        return None if day is None else self._inside(
            self.dir / day / f"{file[:-len('.mkv')]}.jpg")

    def _day_of(self, file: str) -> str | None:
        """The day folder of a name the recorder makes (YYYY-MM-DD); None for any other
        name: a name from a URL is used only once it matched exactly."""
        match = file_pattern(self.name).fullmatch(file)
        if not match or _name_time(match) is None:
            return None
        return f"{match[1][:4]}-{match[1][4:6]}-{match[1][6:]}"

    def _inside(self, path: Path) -> Path | None:
        """`path` if it is a regular file (no symlink) in a day folder of this camera."""
        try:
            if not path.is_file() or path.is_symlink():
                return None
            if path.resolve().parent.parent != self.dir.resolve():
                return None
        except OSError:
            return None
        return path

    def recordings(self, day: str | None = None, limit: int | None = None,
                   open_clip: ClipFile | None = None,
                   open_elsewhere: str | None = None) -> list[Recording]:
        """The recordings, newest first (one day's with `day`). `open_clip`: the file this
        process writes; `open_elsewhere`: the name of one another process writes."""
        pattern = file_pattern(self.name)
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
            index = self._index(folder / INDEX)
            found = []
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            jpegs = {e.name for e in entries if e.name.endswith(".jpg")}  # snapshots
            for entry in entries:
                match = pattern.fullmatch(entry.name)
                if not match:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                path = Path(entry.path)
                if open_clip is not None and open_clip.path == path:
                    found.append(Recording(entry.name, path, open_clip.kind, open_clip.start,
                                           open_clip.end, open_clip.frames, st.st_size, True))
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
                                       st.st_size, entry.name == open_elsewhere))
            for item in found:
                item.snapshot = f"{item.file[:-len('.mkv')]}.jpg" in jpegs
            found.sort(key=lambda r: (r.start, r.file), reverse=True)
            result += found
            if limit is not None and len(result) >= limit:
                return result[:limit]
        return result

    def _index(self, path: Path) -> dict[str, dict]:
        """The usable lines of a day's index; the others are logged once per version of
        the file (the page lists every few seconds), in one line."""
        entries, bad = _read_index(path)
        if bad:
            try:
                st = path.stat()
                key = (str(path), st.st_size, st.st_mtime_ns)
            except OSError:
                key = (str(path), None, None)
            if key not in self._bad_index:
                if len(self._bad_index) > 1000:
                    self._bad_index.clear()
                self._bad_index.add(key)
                (number, why), more = bad[0], len(bad) - 1
                log.warning("%s: %s/%s: skipped %d unusable line%s (line %d: %s%s); "
                            "those files are listed from themselves", self.name,
                            path.parent.name, path.name, len(bad), "s" * (len(bad) > 1),
                            number, why, f", and {more} more" if more else "")
        return entries

    def _probe(self, path: Path, st) -> tuple:
        """probe() once per version of a file (it reads every packet)."""
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._probed:
            if len(self._probed) > 1000:
                self._probed.clear()
            try:
                self._probed[key] = probe(path)
            except Exception:  # noqa: BLE001 - unreadable: listed without figures
                self._probed[key] = (None, None, None)
        return self._probed[key]

    def delete(self, path: Path, open_clip: ClipFile | None = None,
               open_elsewhere: str | None = None) -> None:
        if (open_clip is not None and open_clip.path == path) or path.name == open_elsewhere:
            raise RecordingError("this recording is still being written")
        path.unlink()
        path.with_suffix(".jpg").unlink(missing_ok=True)  # its snapshot goes with it

    def timelapse_days(self) -> list[dict]:
        """Days with stills, newest first: day, stills (count), first, last, video."""
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

    # -- retention ------------------------------------------------------------------------

    def apply_retention(self, keep_days: float | None, keep_gb: float | None,
                        open_file: Path | None) -> tuple[int, int] | None:
        """Delete files older than keep_days, then the oldest (recordings and stills
        alike) while the camera's files total more than keep_gb; never `open_file`.
        Emptied day folders go, with their index. (files, bytes) deleted, or None."""
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
                for _, size, path in files:
                    if path.name == INDEX:
                        path.unlink(missing_ok=True)
                        total -= size
                try:
                    folder.rmdir()
                except OSError:
                    pass
        return (count, freed) if count else None

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


KINDS = ("continuous", "event", "manual")


def _number(value, optional: bool = False) -> bool:
    if value is None:
        return optional
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def index_entry(line: str) -> tuple[dict | None, str | None]:
    """(entry, None) for an index line the listing can use, else (None, why not)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None, "not JSON"
    if not isinstance(entry, dict):
        return None, "not a JSON object"
    if not isinstance(entry.get("file"), str):
        return None, "no file name"
    if not _number(entry.get("start")):
        return None, "no start time"
    if not _number(entry.get("end"), optional=True):
        return None, "end is not a time"
    frames = entry.get("frames")
    if frames is not None and not (isinstance(frames, int) and not isinstance(frames, bool)
                                   and frames >= 0):
        return None, "frames is not a count"
    if entry.get("kind", "continuous") not in KINDS:
        return None, "unknown kind"
    return entry, None


def _read_index(path: Path) -> tuple[dict[str, dict], list[tuple[int, str]]]:
    """file name -> its index line, and (line number, why) of the lines that cannot be
    used (cut by a power loss, edited by hand): those files are read from themselves."""
    entries, bad = {}, []
    try:
        with open(path, encoding="utf-8", errors="replace") as index:
            for number, line in enumerate(index, 1):
                if not line.strip():
                    continue
                entry, why = index_entry(line)
                if entry is None:
                    bad.append((number, why))
                else:
                    entries[entry["file"]] = entry
    except OSError:
        pass
    return entries, bad
