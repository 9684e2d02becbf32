"""The motion detector and its events, on scenes the tests make: a camera-like picture
with sensor noise and JPEG artefacts, decoded the way the server decodes frames, timed
by an injected clock (five frames a second unless said), about a millisecond a frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from drivers.camera_scene import Scene

from motion import Detector, Episodes, Tuning, small_grey
from motion.episode import Step

FPS = 5.0


class Run:
    """A detector and its events fed frames of a scene, one every 1/FPS seconds."""

    def __init__(self, scene: Scene, tuning: Tuning = Tuning(), frames: int = 2,
                 gap: float = 10.0, fps: float = FPS) -> None:
        self.scene, self.detector = scene, Detector(tuning)
        self.episodes = Episodes(frames, gap)
        self.t, self.step = 1_800_000_000.0, 1.0 / fps
        self.log: list[tuple[float, object, Step]] = []  # (time, Analysis, Step)

    def frames(self, seconds: float, brightness=lambda t: 1.0, where=None) -> list:
        """`seconds` of frames; `where(t)`: the object's position at t seconds into this
        stretch (None: no object); `brightness(t)` likewise. Returns their log."""
        out = []
        for i in range(round(seconds / self.step)):
            elapsed = i * self.step
            objects = () if where is None else (where(elapsed),)
            picture = small_grey(self.scene.jpeg(brightness(elapsed), objects))
            analysis = self.detector.analyse(picture, self.t)
            step = self.episodes.frame(self.t, analysis.motion, analysis.score)
            out.append((self.t, analysis, step))
            self.t += self.step
        self.log += out
        return out


def motion_frames(log) -> list[float]:
    return [t for t, analysis, _ in log if analysis.motion]


def started(log) -> list:
    return [step.started for _, _, step in log if step.started is not None]


def still(scene: Scene):
    """The object standing where it starts its crossing."""
    return lambda t: scene.crossing(0)


@pytest.mark.parametrize("noise", [8, 30])
def test_noisy_static_scene_with_jpeg_artefacts_gives_no_motion_for_a_minute(noise):
    scene = Scene(noise=noise)
    run = Run(scene)
    log = run.frames(60, where=still(scene))
    assert motion_frames(log) == []
    assert started(log) == [] and run.episodes.count == 0
    assert max(analysis.score for _, analysis, _ in log) < 0.5


def test_auto_noise_follows_a_grainy_night_scene_where_a_fixed_level_sees_motion():
    scene = Scene(noise=50)
    fixed = Run(scene, Tuning(noise=6))
    assert len(motion_frames(fixed.frames(20, where=still(scene)))) > 10  # false alarms
    auto = Run(scene)
    assert motion_frames(auto.frames(20, where=still(scene))) == []
    assert auto.detector.noise > 10  # it learnt the grain
    log = auto.frames(4, where=scene.crossing)  # and still sees a thing crossing
    assert len(motion_frames(log)) >= 5 and len(started(log)) == 1


def test_object_crossing_two_percent_starts_an_event_at_the_second_motion_frame():
    scene = Scene()
    run = Run(scene)
    run.frames(10, where=still(scene))
    log = run.frames(4, where=scene.crossing)
    moving = motion_frames(log)
    assert moving and moving[0] <= log[2][0]  # seen by the second frame of the crossing
    assert len(moving) >= 15  # and on nearly every frame while it moves
    event, = started(log)
    assert event.start == moving[0]  # the event starts at its first motion frame...
    assert event.detected == moving[1]  # ...and is declared at the second
    assert 1.5 < event.peak < 6  # 2% of the picture, and the trail it leaves


def test_object_smaller_than_the_threshold_is_no_motion():
    scene = Scene()
    run = Run(scene, Tuning(threshold=5.0))
    run.frames(10, where=still(scene))
    assert motion_frames(run.frames(4, where=scene.crossing)) == []


@pytest.mark.parametrize("brightness", [1.4, 0.6])
def test_light_switched_on_or_off_relearns_the_scene_and_is_no_motion(brightness):
    scene = Scene()
    run = Run(scene)
    run.frames(10, where=still(scene))
    log = run.frames(30, brightness=lambda t: brightness, where=still(scene))
    assert log[0][1].light and log[0][1].score > 60  # a light change, seen at once
    assert not any(analysis.light for _, analysis, _ in log[1:])
    assert motion_frames(log) == [] and run.episodes.count == 0
    after = run.frames(4, brightness=lambda t: brightness, where=scene.crossing)
    assert len(started(after)) == 1  # the relearnt scene still shows motion


def test_slow_dusk_is_absorbed_by_the_background():
    scene = Scene()
    run = Run(scene, fps=2)  # five minutes from daylight to a third of it
    log = run.frames(300, brightness=lambda t: 1.0 - 0.65 * t / 300, where=still(scene))
    assert motion_frames(log) == [] and not any(a.light for _, a, _ in log)


@pytest.mark.parametrize("seconds", [5, 10])
def test_passing_cloud_is_no_motion(seconds):
    """A third of the light gone within seconds and back: the whole picture darker by
    the same factor, which the detector compares as such."""
    scene = Scene()
    run = Run(scene)
    run.frames(10, where=still(scene))
    shade = lambda t: 1.0 - 0.3 * min(1.0, t / seconds, max(0.0, 2 - t / seconds))  # noqa: E731
    log = run.frames(2 * seconds + 5, brightness=shade, where=still(scene))
    assert motion_frames(log) == [] and run.episodes.count == 0


def test_object_inside_the_mask_is_no_motion_and_outside_it_is(tmp_path):
    scene = Scene()
    # The object crosses half-way down: 40% to 60% of the height holds its path.
    for mask, expected in (((0.0, 40.0, 100.0, 20.0),), False), (((0.0, 0.0, 100.0, 30.0),),
                                                                   True):
        run = Run(scene, Tuning(mask=mask))
        run.frames(10, where=still(scene))
        log = run.frames(4, where=scene.crossing)
        assert bool(started(log)) is expected, mask
    image = np.full((240, 320), 255, np.uint8)
    image[96:144] = 0  # the same band, black in a PNG
    cv2.imwrite(str(tmp_path / "mask.png"), image)
    run = Run(scene, Tuning(mask=str(tmp_path / "mask.png")))
    run.frames(10, where=still(scene))
    assert motion_frames(run.frames(4, where=scene.crossing)) == []


def test_object_that_stops_ends_the_event_after_the_gap():
    scene = Scene()
    run = Run(scene, gap=10.0)
    run.frames(10, where=still(scene))
    crossing = run.frames(3, where=scene.crossing)
    stopped_at = crossing[-1][0]
    stop = scene.crossing(3 - run.step)
    log = run.frames(30, where=lambda t: stop)
    ends = [step.ended for _, _, step in log if step.ended is not None]
    event, = ends
    assert event.last_motion - stopped_at < 10  # it joined the scene within seconds...
    assert 10 <= event.end - event.last_motion < 10 + 1.5 * run.step  # ...then the gap
    assert run.episodes.event is None and run.episodes.count == 1


def test_detector_picture_marks_changed_pixels_red_and_shades_the_mask():
    scene = Scene()
    run = Run(scene, Tuning(mask=((0.0, 0.0, 20.0, 20.0),)))
    assert run.detector.view() is None
    run.frames(10, where=still(scene))
    run.frames(1.2, where=scene.crossing)
    image = run.detector.view()
    assert image.shape[1] >= 320 and image.shape[2] == 3
    red = (image[..., 2] == 255) & (image[..., 1] == 0) & (image[..., 0] == 0)
    assert red.mean() > 0.01  # the moving object's pixels
    corner = image[:image.shape[0] // 6, :image.shape[1] // 6].astype(int)
    assert (corner[..., 0] > corner[..., 2] + 20).all()  # the masked corner is blue


@pytest.mark.parametrize("size,small", [((320, 240), (160, 120)), ((640, 480), (160, 120)),
                                        ((1280, 720), (160, 90)), ((1920, 1080), (160, 90))])
def test_frames_decode_to_a_small_grey_picture(size, small):
    picture = small_grey(Scene(*size, noise=0).jpeg())
    assert picture.dtype == np.uint8 and picture.shape == (small[1], small[0])
    assert small_grey(b"\xff\xd8 not a jpeg") is None


# -- the events alone ------------------------------------------------------------------------

def test_events_start_after_motion_frames_in_a_row_and_not_after_a_broken_run():
    episodes = Episodes(frames=3, gap=5)
    steps = [episodes.frame(t, motion, 2.0) for t, motion in
             [(0, True), (1, True), (2, False), (3, True), (4, True)]]
    assert not any(s.started for s in steps) and episodes.event is None
    step = episodes.frame(5, True, 4.0)
    assert step.started is not None and step.started.start == 3 and step.started.detected == 5
    assert step.motion and episodes.count == 1


def test_event_goes_on_while_motion_comes_back_within_the_gap_and_keeps_its_peak():
    episodes = Episodes(frames=1, gap=5)
    assert episodes.frame(0, True, 2.0).started
    assert episodes.frame(4, False, 0.1).ended is None
    step = episodes.frame(8.9, True, 7.0)  # 4.9 s after the last motion: the same event
    assert step.motion and step.peak and step.started is None
    assert not episodes.frame(9, True, 3.0).peak
    assert episodes.frame(13.8, False, 0).ended is None
    ended = episodes.frame(14.0, False, 0).ended  # 5 s after the last motion frame
    assert ended is not None and (ended.start, ended.last_motion, ended.end) == (0, 9, 14.0)
    assert (ended.peak, ended.peak_time, ended.motion_frames) == (7.0, 8.9, 3)
    assert episodes.last is ended and episodes.count == 1


def test_event_ends_on_a_tick_when_no_frame_comes_and_when_detection_stops():
    episodes = Episodes(frames=1, gap=2)
    episodes.frame(0, True, 2)
    assert episodes.tick(1.9).ended is None
    assert episodes.tick(2.0).ended.end == 2.0
    episodes.frame(10, True, 2)
    assert episodes.stop(10.5).end == 10.5 and episodes.event is None
    assert episodes.stop(11) is None


def test_peak_of_the_run_that_started_an_event_counts():
    episodes = Episodes(frames=2, gap=5)
    assert episodes.frame(0, True, 9.0).peak  # the first of a run is its peak so far
    step = episodes.frame(1, True, 3.0)
    assert step.started.peak == 9.0 and step.started.peak_time == 0 and not step.peak
