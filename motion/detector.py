"""The motion detector: a small grey picture and its time in, how much of it changed out.

    picture -> blur -> |picture - background| > noise -> outside the mask -> despeckle
            -> score: percent of the watched pixels changed -> motion when >= threshold

Pure: no threads, no clock and no I/O; the caller (watch.py) decodes frames at 1/4 or
1/8 scale straight to greyscale and passes their capture times, so tests drive it with
pictures they make and times they choose. Every step works on the small picture
(about 160 pixels wide): all of it together costs about 0.05 ms, a tenth of the
cheapest decode (DESIGN.md, "Motion detection: facts").

- Background: a running average (cv2.accumulateWeighted) in which still pixels follow
  the scene within seconds (slow light changes such as clouds and dusk are absorbed)
  and changed pixels more slowly, so a moving thing leaves little trace, while one that
  stops becomes part of the scene.
- Noise: a pixel counts as changed when it differs from the background by more than
  `noise` levels. `auto` follows the scene: a multiple of the mean difference of still
  pixels, averaged over NOISE_TAU seconds of frames without motion.
- Despeckle: an opening (erode, then dilate, 3x3) drops changes smaller than 3 pixels
  of the small picture: sensor noise and JPEG blocks that flicker, not things.
- Light switch: more than `lightswitch` percent changed at once is a light change
  (lights, sun, a camera's IR filter), not motion: the background is learnt again from
  the new picture and the next LIGHT_FRAMES frames while the camera's exposure settles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from capture import jpeg_size

from .mask import watched

if TYPE_CHECKING:
    from server.config import CameraSettings, MotionMask

STILL_TAU = 2.0  # s: the background follows still pixels with this time constant...
CHANGED_TAU = 3.0  # ...and changed ones with this one (a thing that stopped joins in)
NOISE_TAU = 10.0  # s: auto noise follows the scene's noise this fast
MAX_STEP = 2.0  # s: a longer pause between frames counts as this much for the averages
LEARN_FRAMES = 3  # frames that only learn the scene (at start, after a gap or a reset)
LIGHT_FRAMES = 5  # frames after a light change that learn the scene again
NOISE_GAIN = 4.0  # auto noise: this many times the still pixels' mean difference...
NOISE_FLOOR = 3.0  # ...plus this,
AUTO_NOISE = (6, 64)  # ...within these bounds
FIRST_NOISE = 12  # auto noise before the first measurement
GAIN_RANGE = (0.8, 1.25)  # the whole picture this much darker or brighter: a cloud, the
# camera's exposure; compared as if the background were as bright. Beyond: a light switch
WIDTH = 160  # the detector's picture is about this wide
_KERNEL = np.ones((3, 3), np.uint8)
_REDUCED = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
            4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


def reduction(width: int) -> int:
    """libjpeg's scale (1, 2, 4 or 8) that decodes a frame `width` wide to about WIDTH:
    the smallest that reaches it, else 1/8."""
    return next((k for k in (1, 2, 4, 8) if width / k <= WIDTH), 8)


def small_grey(jpeg: bytes) -> np.ndarray | None:
    """A JPEG as the detector's picture: decoded straight to greyscale at 1/2, 1/4 or
    1/8 scale (libjpeg skips most of the work: 1.0 ms for a 1280x720 frame against
    4.4 ms for a full colour decode), then, only if still much wider than WIDTH (a
    1920x1080 frame: 240 wide), averaged down to it. None if it does not decode."""
    size = jpeg_size(jpeg)
    scale = reduction(size[0]) if size else 8
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), _REDUCED[scale])
    if picture is None:
        return None
    height, width = picture.shape
    if width > WIDTH * 5 // 4:
        picture = cv2.resize(picture, (WIDTH, max(1, round(height * WIDTH / width))),
                             interpolation=cv2.INTER_AREA)
    return picture


@dataclass(frozen=True)
class Tuning:
    """A camera's detector settings (config.CameraSettings' motion_*)."""

    threshold: float = 1.0  # percent of the watched picture that must change
    noise: int | None = None  # per-pixel change that counts; None: auto
    lightswitch: float = 60.0  # percent changed at once that is a light change
    mask: MotionMask = None

    @classmethod
    def of(cls, settings: CameraSettings) -> Tuning:
        return cls(settings.motion_threshold, settings.motion_noise,
                   settings.motion_lightswitch, settings.motion_mask)


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the detector made of one picture."""

    score: float  # percent of the watched pixels changed (after despeckle)
    motion: bool  # score >= threshold, and neither learning nor a light change
    noise: int  # the per-pixel level in use for this picture
    light: bool = False  # a light change: the scene is learnt again from this picture
    learning: bool = False  # the scene is being learnt (start, new size, light change)


def _alpha(step: float, tau: float) -> float:
    """The running average's weight for a frame `step` seconds after the last, so that
    the background's pace is in seconds whatever the frame rate."""
    return 1.0 - math.exp(-min(max(step, 0.0), MAX_STEP) / tau)


class Detector:
    """One camera's detector: its background, noise level and last result."""

    def __init__(self, tuning: Tuning = Tuning()) -> None:
        self.tuning = tuning
        self.noise = tuning.noise if tuning.noise is not None else FIRST_NOISE
        self._mean_still: float | None = None  # auto noise's average
        self._background: np.ndarray | None = None  # float32, the blurred picture's size
        self._watched: np.ndarray | None = None  # 255: watched, 0: masked; None: all
        self._watched_count = 0
        self._time: float | None = None
        self._learn = LEARN_FRAMES
        self._light = 0
        # For view(): the last blurred picture and its changed pixels, replaced whole.
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        """Learn the scene again from the next picture (the camera restarted or showed
        its placeholder: what comes next may be another scene)."""
        self._background = None

    def analyse(self, picture: np.ndarray, now: float) -> Analysis:
        """Score one greyscale picture (uint8, height x width) captured at `now`."""
        grey = cv2.GaussianBlur(picture, (3, 3), 0)
        step = 0.0 if self._time is None else now - self._time
        self._time = now
        if self._background is None or self._background.shape != grey.shape:
            self._start(grey)
            return Analysis(0.0, False, self.noise, learning=True)
        background = self._background
        gain = self._gain(grey, background)
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(background, alpha=gain))
        _, raw = cv2.threshold(diff, self.noise, 255, cv2.THRESH_BINARY)
        if self._watched is not None:
            raw = cv2.bitwise_and(raw, self._watched)
        changed = cv2.morphologyEx(raw, cv2.MORPH_OPEN, _KERNEL)
        score = 100.0 * cv2.countNonZero(changed) / self._watched_count
        self.last = (grey, changed)
        light = score > self.tuning.lightswitch
        if light:
            self._light = LIGHT_FRAMES  # a light change: learn from this picture...
        if self._light:
            self._light -= 1  # ...and the next few, while the exposure settles
            background[:] = grey
            return Analysis(score, False, self.noise, light=light, learning=True)
        still = cv2.bitwise_not(raw)
        if self._watched is not None:
            still = cv2.bitwise_and(still, self._watched)
        cv2.accumulateWeighted(grey, background, _alpha(step, STILL_TAU), still)
        cv2.accumulateWeighted(grey, background, _alpha(step, CHANGED_TAU), raw)
        learning = self._learn > 0
        motion = not learning and score >= self.tuning.threshold
        if self.tuning.noise is None and not motion:
            self._follow_noise(cv2.mean(diff, still)[0], step, learning)
        self._learn -= learning
        return Analysis(score, motion, self.noise, learning=learning)

    def _gain(self, grey: np.ndarray, background: np.ndarray) -> float:
        """How much brighter the whole picture is than the background: the median of
        their ratio over a sparse grid (a thing covering less than half the picture
        does not move it), 1 when it is near 1 or beyond GAIN_RANGE (a light switch)."""
        sample = grey[::4, ::4].astype(np.float32)
        reference = background[::4, ::4] + 1.0
        if self._watched is not None:
            keep = self._watched[::4, ::4] > 0
            sample, reference = sample[keep], reference[keep]
        gain = float(np.median((sample + 1.0) / reference))
        low, high = GAIN_RANGE
        return gain if low <= gain <= high and abs(gain - 1.0) > 0.01 else 1.0

    def _start(self, grey: np.ndarray) -> None:
        height, width = grey.shape
        self._background = grey.astype(np.float32)
        self._watched = watched(self.tuning.mask, width, height)
        self._watched_count = (width * height if self._watched is None
                               else max(1, cv2.countNonZero(self._watched)))
        self._learn = LEARN_FRAMES - 1  # this one learnt already
        self._light = 0
        self.last = None

    def _follow_noise(self, mean_still: float, step: float, learning: bool) -> None:
        """Auto noise: NOISE_GAIN times the still pixels' mean difference (about 3.2
        standard deviations of Gaussian noise) plus NOISE_FLOOR, averaged over time; the
        first measurement counts whole."""
        if self._mean_still is None or (learning and self._learn == LEARN_FRAMES - 1):
            self._mean_still = mean_still
        else:
            weight = _alpha(step, NOISE_TAU)
            self._mean_still += weight * (mean_still - self._mean_still)
        low, high = AUTO_NOISE
        self.noise = int(min(high, max(low, round(NOISE_FLOOR + NOISE_GAIN * self._mean_still))))

    def view(self) -> np.ndarray | None:
        """What the detector sees, for tuning (motion.jpg): its grey picture, masked
        areas shaded blue, changed pixels red; scaled up (each pixel a square) to at
        least 320 pixels wide. None before the first comparison."""
        last = self.last
        if last is None:
            return None
        grey, changed = last
        image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        if self._watched is not None and self._watched.shape == grey.shape:
            masked = self._watched == 0
            image[masked] = (image[masked] * 0.4 + np.array([110, 40, 0]) * 0.6).astype(
                np.uint8)
        image[changed > 0] = (0, 0, 255)
        scale = max(1, math.ceil(320 / grey.shape[1]))
        if scale > 1:
            image = cv2.resize(image, None, fx=scale, fy=scale,
                               interpolation=cv2.INTER_NEAREST)
        return image
