"""Which clip is wanted, and when: the recorder's decisions, as pure code.

    what was asked (Asked) + the camera's frames --> ClipPlanner --> Open, Write, Held,
                                                                     Close, Still

No threads, no disk and no clock of its own: a frame's capture time is the time, so the
tap may look at frames late without changing a file, and tests drive it with numbers.
The tap (tap.py) feeds it and queues its decisions to the writer
(writer.py), which carries them out.

The one rule of which clip a frame belongs to is `Asked.wanted`: a manual clip or an
event while its window holds the frame's time, and the clip already open goes on while
either does (one file: a trigger or a manual clip during a clip extends it); else a
continuous file in continuous mode, else none. The planner cuts a file when the wanted
kind changes, at `segment` seconds, and after a gap of GAP_CUT seconds without frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from capture import Frame
    from server.config import CameraSettings

GAP_CUT = 10.0  # a continuous file is cut when the camera gave no frame for this long
TICK_GRACE = 1.0  # a deadline passed by this much ends a clip even without frames

Kind = Literal["continuous", "event", "manual"]


@dataclass(frozen=True)
class Rules:
    """A camera's recording settings, as the planner needs them (config.CameraSettings)."""

    mode: str = "off"  # off, continuous or events
    segment: float = 300.0  # seconds per file at most, whatever its kind
    pre_event: float = 5.0
    post_event: float = 10.0
    timelapse: float = 0.0  # seconds between stills; 0: none

    @classmethod
    def of(cls, settings: CameraSettings) -> Rules:
        return cls(settings.record, settings.segment, settings.pre_event,
                   settings.post_event, settings.timelapse)

    @property
    def continuous(self) -> bool:
        return self.mode == "continuous"

    @property
    def persistent(self) -> bool:
        """Records or takes stills all the time: keeps the camera capturing."""
        return self.mode != "off" or self.timelapse > 0

    @property
    def ring_seconds(self) -> float:
        """The pre-event buffer: only with record = "events" (in continuous mode those
        seconds are in the file before the event's), else 0."""
        return self.pre_event if self.mode == "events" else 0.0

    @property
    def still_every(self) -> float:
        """Seconds between timelapse stills (at least one), 0 for none."""
        return max(1.0, self.timelapse) if self.timelapse > 0 else 0.0


# -- what was asked -----------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """Capture times from `start` up to, not including, `until` (epoch seconds)."""

    start: float
    until: float

    def holds(self, ts: float) -> bool:
        return self.start <= ts < self.until


def _runs(window: Window | None, now: float) -> bool:
    """A window asked for is over once time reaches its end."""
    return window is not None and now < window.until


@dataclass(frozen=True)
class Asked:
    """What request handlers asked for: a manual clip and an event, as windows of capture
    time. Immutable: the recorder replaces it under its lock, the tap reads it whole."""

    manual: Window | None = None
    until_stopped: bool = False  # the manual clip was asked without seconds
    event: Window | None = None

    def record(self, now: float, seconds: float | None, rules: Rules) -> Asked:
        """A manual clip from `now` for `seconds` (None: until stopped, at most
        `segment`). Again while one runs: it goes on from now."""
        start = self.manual.start if _runs(self.manual, now) else now
        until = now + (seconds if seconds is not None else rules.segment)
        return replace(self, manual=Window(start, until), until_stopped=seconds is None)

    def stop(self, now: float) -> Asked | None:
        """The manual clip ends at `now`; None if none runs."""
        if not _runs(self.manual, now):
            return None
        return replace(self, manual=Window(self.manual.start, now))

    def trigger(self, now: float, rules: Rules) -> Asked:
        """An event: from `pre_event` before now (what the ring holds) to `post_event`
        after; a trigger while one runs moves its end to `post_event` after this one."""
        event = self.event
        if _runs(event, now):
            return replace(self, event=Window(event.start,
                                              max(event.until, now + rules.post_event)))
        return replace(self, event=Window(now - rules.ring_seconds, now + rules.post_event))

    def expire(self, ts: float) -> Asked:
        """Without the windows that capture time `ts` has passed."""
        manual = self.manual if _runs(self.manual, ts) else None
        event = self.event if _runs(self.event, ts) else None
        if manual is self.manual and event is self.event:
            return self
        return replace(self, manual=manual, event=event)

    @property
    def pending(self) -> bool:
        """A manual clip or an event is asked for and not over yet."""
        return self.manual is not None or self.event is not None

    def wanted(self, ts: float, current: Kind | None, continuous: bool) -> Kind | None:
        """The kind of clip a frame captured at `ts` belongs to, given the clip open now
        (`current`): the one rule of which clip is wanted."""
        manual = self.manual is not None and self.manual.holds(ts)
        event = self.event is not None and self.event.holds(ts)
        if current in ("manual", "event") and (manual or event):
            return current  # one file: a trigger during a clip extends it
        if manual:
            return "manual"
        if event:
            return "event"
        return "continuous" if continuous else None


# -- the decisions: the writer's messages -------------------------------------------------

@dataclass(frozen=True, slots=True)
class Open:
    """Start a file of this kind with the next frame (finishing any open one)."""

    kind: Kind


@dataclass(frozen=True, slots=True)
class Write:
    """A frame for the open file."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class Held:
    """The pre-event frames that start an event clip: in memory already, so the queue
    never refuses them."""

    frames: list[Frame]


@dataclass(frozen=True, slots=True)
class Close:
    """Finish the open file."""


@dataclass(frozen=True, slots=True)
class Still:
    """A timelapse still."""

    frame: Frame


Step = Open | Write | Held | Close | Still


@dataclass
class Clip:
    """The clip being recorded: its kind and its first and last frames' capture times."""

    kind: Kind
    since: float
    last: float


# -- the planner ----------------------------------------------------------------------------

class ClipPlanner:
    """One tap session's decisions: frames in capture order in, steps out. Keeps the
    open clip, the pre-event ring and the next still's due time."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.clip: Clip | None = None
        self.as_of = 0.0  # the capture time the last decision was made for
        self.ring_figures = (0, 0)  # frames and bytes in the ring after the last batch
        self._ring: deque[Frame] = deque()
        self._ring_bytes = 0
        self._next_still: float | None = None

    def frames(self, frames: list[Frame], asked: Asked, closing: bool = False) -> list[Step]:
        """The steps for a batch of frames, with what was asked as of its look (requests
        made during a batch count from the next one: they are timed, so nothing is
        lost). `closing`: the recorder is closing, nothing more is wanted."""
        out: list[Step] = []
        for frame in frames:
            if frame.live:  # the "camera unavailable" picture is never recorded
                self._frame(frame, asked, closing, out)
        if frames:
            self.as_of = frames[-1].timestamp
        self.ring_figures = (len(self._ring), self._ring_bytes)
        return out

    def tick(self, now: float, asked: Asked, closing: bool = False) -> list[Step]:
        """A look without frames at wall time `now`: deadlines pass all the same (a camera
        that stopped delivering), once passed by TICK_GRACE."""
        ts = now - TICK_GRACE
        if self.clip is not None:
            # Never before the clip's newest frame: a look too soon for a new frame (a
            # loaded machine, the quick look after a request) is no deadline passing, and
            # a time before the clip's start would end it as "not asked for yet".
            ts = max(ts, self.clip.last)
        self.as_of = ts
        if self.clip is not None and (closing or asked.wanted(ts, self.clip.kind,
                                                              self.rules.continuous) is None):
            self.clip = None
            return [Close()]
        return []

    def end(self) -> list[Step]:
        """The session ends: close the open clip, forget the ring."""
        self._ring.clear()
        self._ring_bytes = 0
        self.ring_figures = (0, 0)
        if self.clip is None:
            return []
        self.clip = None
        return [Close()]

    def _frame(self, frame: Frame, asked: Asked, closing: bool, out: list[Step]) -> None:
        ts = frame.timestamp
        clip = self.clip
        current = clip.kind if clip is not None else None
        want = None if closing else asked.wanted(ts, current, self.rules.continuous)
        if clip is not None and (want != clip.kind or ts - clip.since >= self.rules.segment
                                 or ts - clip.last > GAP_CUT):
            out.append(Close())
            clip = self.clip = None
        if want is not None and clip is None:
            clip = self._open(want, ts, asked, out)
        if clip is not None:
            out.append(Write(frame))
            clip.last = ts
        elif self.rules.ring_seconds > 0:
            self._keep(frame)
        self._still(frame, out)

    def _open(self, kind: Kind, ts: float, asked: Asked, out: list[Step]) -> Clip:
        """A new clip from the frame at `ts`; an event's starts with the ring's frames
        from its window's start (pre_event before its trigger)."""
        out.append(Open(kind))
        since = ts
        if kind == "event" and self._ring:
            held = [old for old in self._ring if old.timestamp >= asked.event.start]
            if held:
                since = held[0].timestamp
                out.append(Held(held))
        self._ring.clear()
        self._ring_bytes = 0
        self.clip = Clip(kind, since, ts)
        return self.clip

    def _keep(self, frame: Frame) -> None:
        """Into the pre-event ring, which holds the last `pre_event` seconds."""
        ring = self._ring
        ring.append(frame)
        self._ring_bytes += len(frame.data)
        while ring[0].timestamp < frame.timestamp - self.rules.ring_seconds:
            self._ring_bytes -= len(ring.popleft().data)

    def _still(self, frame: Frame, out: list[Step]) -> None:
        """A timelapse still when one is due: every `still_every` seconds of capture
        time, on schedule, or from this frame on after a gap of more than one interval."""
        every = self.rules.still_every
        due = self._next_still
        if not every or (due is not None and frame.timestamp < due):
            return
        out.append(Still(frame))
        late = due is None or frame.timestamp >= due + every
        self._next_still = frame.timestamp + every if late else due + every
