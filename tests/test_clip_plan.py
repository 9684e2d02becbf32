"""The clip planner (recording/plan.py), pure: which clip each frame belongs to, where files
are cut, the pre-event ring and the timelapse stills, with frame times in milliseconds.
No threads, no disk: `play` drives a planner as the tap does, and the tables say which
files (kind, first frame, last frame) and stills come out."""

from __future__ import annotations

import math

import pytest

from capture import Frame
from recording.plan import (
    GAP_CUT,
    TICK_GRACE,
    Asked,
    ClipPlanner,
    Close,
    Held,
    Open,
    Rules,
    Still,
    Window,
    Write,
)

FRAME = b"x" * 100  # every frame's JPEG: 100 bytes


def rules(mode: str = "off", segment: int = 300_000, pre_event: int = 5000,
          post_event: int = 10_000, timelapse: int = 0) -> Rules:
    """Rules with times in milliseconds."""
    return Rules(mode, segment / 1000, pre_event / 1000, post_event / 1000, timelapse / 1000)


def play(plan: Rules, requests: dict[int, str], until: int, every: int = 250, look: int = 250,
         dark: tuple[int, int] | None = None) -> list[str]:
    """Run a planner as the tap would, from 0 to `until` ms: the camera gives a frame
    every `every` ms (none from dark[0] to before dark[1]); `requests` ("record",
    "record <ms>", "stop", "event", "close": the recorder closes) are made at their
    times; a look every `look` ms hands the planner the frames since the last one (a
    look without frames is a tick) with what was asked by then, then expires what has
    passed. The files as "<kind> <first>-<last>" (" closed at <ms>" when a look without
    frames ended it) and "stills <ms> ...", checking that every file holds each frame
    delivered between its first and last, once and in order."""
    planner, asked, closing = ClipPlanner(plan), Asked(), False
    delivered: list[int] = []
    files: list[list] = []  # kind, frame times, closed by a look without frames at
    stills: list[int] = []
    pending: list[Frame] = []
    for t in range(0, until + 1, math.gcd(every, look)):
        request = requests.get(t, "")
        if request == "close":
            closing = True
        elif request:
            asked = ask(asked, request, t / 1000, plan)
        if t % every == 0 and not (dark and dark[0] <= t < dark[1]):
            pending.append(Frame(FRAME, t / 1000, len(delivered)))
            delivered.append(t)
        if t % look == 0:
            steps = (planner.frames(pending, asked, closing) if pending
                     else planner.tick(t / 1000, asked, closing))
            carry_out(steps, files, stills, None if pending else t)
            pending = []
            asked = asked.expire(planner.as_of)
    carry_out(planner.end(), files, stills, None)
    written = [ms for _, times, _ in files for ms in times]
    assert written == sorted(set(written))  # each frame once, in order
    for _, times, _ in files:
        assert times == [ms for ms in delivered if times[0] <= ms <= times[-1]]
    return ([f"{kind} {times[0]}-{times[-1]}" + (f" closed at {at}" if at is not None else "")
             for kind, times, at in files] + ([f"stills {' '.join(map(str, stills))}"]
                                              if stills else []))


def ask(asked: Asked, request: str, now: float, plan: Rules) -> Asked:
    """A request as the recorder's control surface makes it."""
    if request == "event":
        return asked.trigger(now, plan)
    if request == "stop":
        return asked.stop(now) or asked
    seconds = request.removeprefix("record").strip()
    return asked.record(now, int(seconds) / 1000 if seconds else None, plan)


def carry_out(steps: list, files: list[list], stills: list[int], tick: int | None) -> None:
    """What the writer would do with the steps, in milliseconds."""
    open_file = None
    for step in steps:
        match step:
            case Open(kind):
                files.append(open_file := [kind, [], None])
            case Held(frames):
                files[-1][1].extend(round(f.timestamp * 1000) for f in frames)
            case Write(frame):
                files[-1][1].append(round(frame.timestamp * 1000))
            case Close():
                files[-1][2] = tick
            case Still(frame):
                stills.append(round(frame.timestamp * 1000))
    assert open_file is None or open_file[1], "a file opened without a frame"


CASES = [
    # -- continuous, and events and manual clips cutting it
    ("continuous: one file", rules("continuous"), {}, 2000, {},
     ["continuous 0-2000"]),
    ("continuous + event: the event cuts it, from its trigger (no ring in continuous "
     "mode), and continuous goes on after", rules("continuous", pre_event=1000,
                                                   post_event=1000),
     {2000: "event"}, 5000, {}, ["continuous 0-1750", "event 2000-2750",
                                 "continuous 3000-5000"]),
    ("continuous + manual clip", rules("continuous"), {2000: "record 1000"}, 4000, {},
     ["continuous 0-1750", "manual 2000-2750", "continuous 3000-4000"]),
    # -- events
    ("pre-event: the clip starts pre_event before the trigger, from the ring",
     rules("events", pre_event=1000, post_event=1000), {3000: "event"}, 6000, {},
     ["event 2000-3750"]),
    ("pre-event, looked at once a second (TAP_INTERVAL): the same file",
     rules("events", pre_event=1000, post_event=1000), {3000: "event"}, 6000,
     {"look": 1000}, ["event 2000-3750"]),
    ("pre-event longer than the camera has run: from its first frame",
     rules("events", pre_event=5000, post_event=1000), {1000: "event"}, 3000, {},
     ["event 0-1750"]),
    ("a second trigger extends the clip to post_event after it",
     rules("events", pre_event=1000, post_event=1000), {3000: "event", 3500: "event"},
     6000, {}, ["event 2000-4250"]),
    ("a trigger after the clip ended: a new clip with its own pre-event",
     rules("events", pre_event=1000, post_event=1000), {3000: "event", 6000: "event"},
     8000, {}, ["event 2000-3750", "event 5000-6750"]),
    ("events mode without triggers: nothing", rules("events"), {}, 3000, {}, []),
    # -- manual clips
    ("a manual clip during an event: one file, the event's, to the later end",
     rules("events", pre_event=1000, post_event=2000), {3000: "event", 4000: "record 1500"},
     7000, {}, ["event 2000-5250"]),
    ("an event during a manual clip: one file, the manual one, to the later end",
     rules("off", post_event=1000), {2000: "record 1000", 2500: "event"}, 5000, {},
     ["manual 2000-3250"]),
    ("a manual clip again while one runs goes on from then, in the same file",
     rules("off"), {1000: "record 1000", 1500: "record 1000"}, 4000, {},
     ["manual 1000-2250"]),
    ("stop ends a manual clip asked until stopped", rules("off"), {1000: "record",
                                                                   2500: "stop"},
     4000, {}, ["manual 1000-2250"]),
    ("stop with no manual clip changes nothing", rules("continuous"), {1000: "stop"}, 2000,
     {}, ["continuous 0-2000"]),
    # -- segment
    ("segment: a continuous file is cut at segment, not losing a frame",
     rules("continuous", segment=1000), {}, 3000, {},
     ["continuous 0-750", "continuous 1000-1750", "continuous 2000-2750",
      "continuous 3000-3000"]),
    ("segment: a manual clip until stopped lasts at most segment",
     rules("off", segment=1000), {500: "record"}, 3000, {}, ["manual 500-1250"]),
    ("segment: an event file longer than segment is cut into segments",
     rules("events", segment=1000, pre_event=0, post_event=3000), {1000: "event"}, 5000,
     {}, ["event 1000-1750", "event 2000-2750", "event 3000-3750"]),
    # -- a camera that stops delivering
    ("a gap of more than GAP_CUT cuts a continuous file", rules("continuous"), {}, 13000,
     {"dark": (1000, 12000)}, ["continuous 0-750", "continuous 12000-13000"]),
    ("a shorter gap does not", rules("continuous"), {}, 8000, {"dark": (1000, 6000)},
     ["continuous 0-8000"]),
    ("no frames: a manual clip ends once its deadline is passed by TICK_GRACE",
     rules("off"), {1000: "record 2000"}, 5000, {"dark": (2500, 5001)},
     ["manual 1000-2250 closed at 4000"]),
    ("a look without a new frame early in a clip does not cut it in two (a loaded "
     "machine, or a look that came too soon)", rules("off"), {1000: "record 2000"}, 4000,
     {"every": 100, "look": 100, "dark": (1200, 1400)}, ["manual 1000-2900"]),
    ("an event clip likewise", rules("events", pre_event=0, post_event=2000),
     {1000: "event"}, 4000, {"every": 100, "look": 100, "dark": (1200, 1400)},
     ["event 1000-2900"]),
    # -- closing
    ("the recorder closes: the open file ends with the last frame before",
     rules("continuous"), {2000: "close"}, 4000, {}, ["continuous 0-1750"]),
    ("the recorder closes while no frame comes: the next look ends the file",
     rules("continuous"), {2000: "close"}, 4000, {"dark": (1500, 4001)},
     ["continuous 0-1250 closed at 2000"]),
    # -- timelapse
    ("timelapse: a still at each due time, on schedule", rules("off", timelapse=1000), {},
     3000, {"every": 300, "look": 300}, ["stills 0 1200 2100 3000"]),
    ("timelapse: at least a second apart", rules("off", timelapse=400), {}, 2000, {},
     ["stills 0 1000 2000"]),
    ("timelapse after a gap of more than an interval: from the first frame back",
     rules("continuous", timelapse=1000), {}, 6000, {"dark": (1250, 3500)},
     ["continuous 0-6000", "stills 0 1000 3500 4500 5500"]),
]


@pytest.mark.parametrize("name,plan,requests,until,options,expected", CASES,
                         ids=[case[0] for case in CASES])
def test_the_planner_makes_these_files(name, plan, requests, until, options, expected):
    assert play(plan, requests, until, **options) == expected


def test_the_constants_the_cases_rely_on():
    assert GAP_CUT == 10.0 and TICK_GRACE == 1.0


M, E = Window(1.0, 2.0), Window(1.5, 3.0)  # a manual clip and an event, in seconds
WANTED = [
    # manual, event, open clip, continuous mode, frame time -> the clip it belongs to
    (M, None, None, False, 1.5, "manual"),
    (M, None, None, False, 2.0, None),  # the window's end is not in it
    (M, None, None, False, 0.999, None),
    (None, E, None, True, 0.5, "continuous"),
    (M, None, "continuous", True, 1.5, "manual"),  # a clip cuts a continuous file
    (M, E, None, False, 1.7, "manual"),  # both start: the manual clip
    (M, E, "event", False, 1.7, "event"),  # one file: the open clip goes on...
    (M, E, "manual", False, 2.5, "manual"),  # ...while either holds
    (None, E, "manual", True, 3.0, "continuous"),
    (None, None, "manual", False, 2.5, None),
]


@pytest.mark.parametrize("manual,event,current,continuous,ts,expected", WANTED)
def test_the_one_rule_of_which_clip_is_wanted(manual, event, current, continuous, ts,
                                              expected):
    assert Asked(manual=manual, event=event).wanted(ts, current, continuous) == expected


def test_requests_as_windows():
    plan = rules("events", pre_event=1000, post_event=2000, segment=60_000)
    asked = Asked().record(10.0, 5.0, plan)
    assert asked.manual == Window(10.0, 15.0) and not asked.until_stopped
    again = asked.record(12.0, None, plan)  # while it runs: from then, until stopped
    assert again.manual == Window(10.0, 72.0) and again.until_stopped
    assert asked.expire(15.0).record(16.0, 1.0, plan).manual == Window(16.0, 17.0)
    assert asked.stop(11.0).manual == Window(10.0, 11.0)
    assert asked.stop(15.0) is None and Asked().stop(1.0) is None
    event = Asked().trigger(10.0, plan)
    assert event.event == Window(9.0, 12.0)  # pre_event before: what the ring holds
    assert event.trigger(11.0, plan).event == Window(9.0, 13.0)
    assert event.expire(12.0).trigger(12.0, plan).event == Window(11.0, 14.0)
    assert Asked().trigger(10.0, rules("continuous", pre_event=1000)).event.start == 10.0
    assert not event.expire(12.0).pending and event.expire(11.9).pending


@pytest.mark.parametrize("mode,expected", [("events", (5, 500)), ("continuous", (0, 0)),
                                           ("off", (0, 0))])
def test_the_pre_event_ring_holds_pre_event_seconds_only_in_events_mode(mode, expected):
    planner = ClipPlanner(rules(mode, pre_event=1000))
    frames = [Frame(FRAME, ms / 1000, n) for n, ms in enumerate(range(0, 3000, 250))]
    planner.frames(frames, Asked())
    assert planner.ring_figures == expected  # 1750 to 2750: a second and its last frame
    planner.end()
    assert planner.ring_figures == (0, 0)


def test_the_unavailable_picture_is_never_recorded():
    planner = ClipPlanner(rules("continuous", timelapse=1000))
    steps = planner.frames([Frame(FRAME, 1.0, 0, live=False), Frame(FRAME, 1.5, 1)], Asked())
    assert steps == [Open("continuous"), Write(steps[1].frame), Still(steps[1].frame)]
    assert steps[1].frame.timestamp == 1.5 and planner.as_of == 1.5
