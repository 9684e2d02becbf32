"""Motion events from motion frames: when one starts, goes on and ends.

    (time, motion?, score) per analysed frame --> Episodes --> Step: started, motion,
                                                               peak, ended

`motion_frames` consecutive motion frames start an event; it starts at the first of
them (so a clip's pre-event seconds come before the first motion seen). Every further
motion frame keeps it going; `motion_gap` seconds without one end it, seen at the next
frame without motion or at a tick (no frame came: a camera that stopped delivering).
The highest score of an event (and of the run of frames that started it) is its peak,
whose frame the caller keeps as the event's snapshot.

Pure: the caller gives every time (frames' capture times, or the clock for ticks).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Event:
    """One motion event. Times are epoch seconds."""

    start: float  # the capture time of its first motion frame
    detected: float  # of the frame that made it an event (the motion_frames-th)
    last_motion: float  # of its latest motion frame
    peak: float  # its highest score (percent changed)
    peak_time: float
    motion_frames: int
    end: float | None = None  # when motion_gap had passed, or detection stopped


@dataclass(frozen=True, slots=True)
class Step:
    """What one frame (or tick) did."""

    started: Event | None = None  # an event began with this frame
    ended: Event | None = None  # the event before ended (before this frame's own part)
    motion: bool = False  # a motion frame of the current event (keeps a clip going)
    peak: bool = False  # this frame is the highest scored of its run or event so far


class Episodes:
    """One camera's events: the current one, the run of motion frames before one, and
    how many there were."""

    def __init__(self, frames: int = 2, gap: float = 10.0) -> None:
        self.frames = frames
        self.gap = gap
        self.event: Event | None = None
        self.last: Event | None = None  # the latest event that ended
        self.count = 0  # events started
        self._run = 0  # consecutive motion frames not yet an event
        self._run_start = 0.0
        self._run_peak = (0.0, 0.0)  # (score, time)

    def frame(self, now: float, motion: bool, score: float) -> Step:
        """An analysed frame captured at `now`."""
        event = self.event
        if not motion:
            self._run = 0
            ended = self._end(now) if event is not None and now - event.last_motion >= self.gap \
                else None
            return Step(ended=ended)
        if event is not None:
            event.last_motion = now
            event.motion_frames += 1
            peak = score > event.peak
            if peak:
                event.peak, event.peak_time = score, now
            return Step(motion=True, peak=peak)
        if self._run == 0:
            self._run_start, self._run_peak = now, (score, now)
            peak = True
        else:
            peak = score > self._run_peak[0]
            if peak:
                self._run_peak = (score, now)
        self._run += 1
        if self._run < self.frames:
            return Step(peak=peak)
        self.event = Event(start=self._run_start, detected=now, last_motion=now,
                           peak=self._run_peak[0], peak_time=self._run_peak[1],
                           motion_frames=self._run)
        self.count += 1
        self._run = 0
        return Step(started=self.event, motion=True, peak=peak)

    def tick(self, now: float) -> Step:
        """No frame to analyse at `now`: the gap may have passed all the same."""
        event = self.event
        if event is not None and now - event.last_motion >= self.gap:
            return Step(ended=self._end(now))
        return Step()

    def stop(self, now: float) -> Event | None:
        """Detection stops (switched off, camera closed): the current event ends now."""
        self._run = 0
        return self._end(now) if self.event is not None else None

    def _end(self, now: float) -> Event:
        event, self.event = self.event, None
        event.end = now
        self.last = event
        return event
