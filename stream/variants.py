"""Size variants: smaller streams and snapshots, made once per frame and shared.

    camera Fanout -> maker thread: decode once (reduced), resize + encode each variant
                  -> one Fanout per variant -> each of its viewers

`?width=W`, `?height=H` and `?quality=Q` ask for the picture scaled down to fit that
box (aspect kept, never up) at that JPEG quality. Sizes snap down to a small ladder
(WIDTHS, HEIGHTS) or to the source's own size, so viewers asking for odd sizes share a
handful of variants. A variant is a Fanout like the camera's: the maker publishes each
scaled frame into it once and every viewer takes it from there (their multipart parts
are built once per frame too, by mjpeg.py).

One maker per camera, a native OS thread (never the capture thread nor the event loop),
runs while any variant exists. For each camera frame it decodes the JPEG once, at the
smallest libjpeg DCT scale (1/2, 1/4, 1/8: 2-3x faster than full size) that still covers
the largest variant due, then resizes (see `interpolation`) and encodes each variant due. A
variant is due at every frame, or no faster than its fastest viewer's ?fps= cap. The
maker takes the newest camera frame each time: when it cannot keep up it skips frames
(counted in status()), it never queues. Placeholders ("camera unavailable") pass
through unscaled. A variant nobody watches lingers LINGER seconds (thumbnails polled as
snapshots reuse it), then goes; the thread ends when none is left.

At most `max_variants` variants per camera at once: beyond that a request gets the
nearest one being made (see `Variants.nearest`), or the full stream if that is nearer.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from capture import CameraClosed, Fanout, Frame, Viewer, jpeg_size, native

from .mjpeg import rate_cap

log = logging.getLogger(__name__)

WIDTHS = (160, 320, 480, 640, 960, 1280, 1920)
HEIGHTS = (120, 180, 240, 360, 480, 540, 720, 1080)
MAX_PIXELS = 10000  # the largest width or height a query may name
LINGER = 5.0  # seconds a variant nobody watches is kept
TICK = 0.5  # seconds the maker waits for a frame before it looks at its variants again
REDUCTIONS = (8, 4, 2)  # libjpeg's scaled decodes, largest first

_cv2 = None


def cv2():
    """OpenCV, imported on first use (it adds ~17 MB to a server that never scales)."""
    global _cv2
    if _cv2 is None:
        import cv2 as module
        _cv2 = module
    return _cv2


# -- the query --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Spec:
    """What a request asked for: a box (None: no limit that way) and a JPEG quality
    (None: the camera's). Kept as asked: the ladder and the source's own size are applied
    by `Variants.key`, which knows the source's size."""

    width: int | None = None
    height: int | None = None
    quality: int | None = None


def _accepted(name: str) -> str:
    if name == "quality":
        return "quality must be a whole number from 1 to 100 (JPEG quality)"
    ladder = WIDTHS if name == "width" else HEIGHTS
    return (f"{name} must be a whole number of pixels from 1 to {MAX_PIXELS}; it snaps down "
            f"to {', '.join(map(str, ladder))} or the camera's own {name}, never up")


def _whole(args: Mapping[str, str], name: str, top: int) -> int | None:
    raw = args.get(name)
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= top:
        raise ValueError(f"{_accepted(name)}, not {raw!r}")
    return int(text)


def parse_request(args: Mapping[str, str]) -> Spec | None:
    """The size and quality a request's query asks for; None when it names none.

    Raises ValueError with a message saying what is accepted (a 400 for the client).
    """
    spec = Spec(_whole(args, "width", MAX_PIXELS), _whole(args, "height", MAX_PIXELS),
                _whole(args, "quality", 100))
    return None if spec == Spec() else spec


def snap(value: int | None, ladder: tuple[int, ...], own: int | None) -> int | None:
    """`value` snapped down to the ladder (its first rung when smaller); None (no limit)
    when it is at least the source's own size `own`."""
    if value is None or (own is not None and value >= own):
        return None
    rung = max((r for r in ladder if r <= value), default=ladder[0])
    return None if own is not None and rung >= own else rung


def fit(source: tuple[int, int], box: tuple[int | None, int | None]) -> tuple[int, int]:
    """The size of `source` scaled down to fit `box`, aspect kept, never up."""
    sw, sh = source
    bw, bh = box
    scale = min(1.0, bw / sw if bw else 1.0, bh / sh if bh else 1.0)
    if scale >= 1.0:
        return sw, sh
    width = bw if bw and bw / sw == scale else round(sw * scale)
    height = bh if bh and bh / sh == scale else round(sh * scale)
    return max(1, width), max(1, height)


def reduction(source: tuple[int, int], largest: tuple[int, int]) -> int:
    """The largest libjpeg decode scale divisor whose picture still covers `largest`."""
    sw, sh = source
    for r in REDUCTIONS:
        if -(-sw // r) >= largest[0] and -(-sh // r) >= largest[1]:
            return r
    return 1


def interpolation(factor: float) -> int:
    """INTER_AREA (a box filter: no aliasing) from twice the size or more, and for whole
    factors (its fast path); INTER_LINEAR for what is left after a reduced decode (less
    than 2x): 5x faster there than OpenCV's fractional INTER_AREA, within 1 dB of it."""
    cv = cv2()
    return cv.INTER_AREA if factor >= 2 or float(factor).is_integer() else cv.INTER_LINEAR


def scale_jpeg(data: bytes, targets: list[tuple[tuple[int, int], int]],
               reduced: bool = True) -> tuple[list[bytes], int, float, list[float]] | None:
    """Decode `data` once and encode it at each ((width, height), quality) of `targets`.

    Returns (jpegs, the decode's scale divisor, decode seconds, seconds per target), or
    None when the data does not decode. `reduced=False` always decodes at full size (for
    the benchmark). OpenCV releases the GIL in all three steps.
    """
    cv = cv2()
    import numpy  # comes with OpenCV

    source = jpeg_size(data)
    if source is None:
        return None
    r = reduction(source, (max(s[0] for s, _ in targets), max(s[1] for s, _ in targets))) \
        if reduced else 1
    flag = {1: cv.IMREAD_COLOR, 2: cv.IMREAD_REDUCED_COLOR_2, 4: cv.IMREAD_REDUCED_COLOR_4,
            8: cv.IMREAD_REDUCED_COLOR_8}[r]
    t0 = time.perf_counter()
    image = cv.imdecode(numpy.frombuffer(data, numpy.uint8), flag)
    decoded = time.perf_counter()
    if image is None:
        return None
    jpegs, costs = [], []
    for (w, h), quality in targets:
        start = time.perf_counter()
        scaled = image if image.shape[1] == w and image.shape[0] == h else cv.resize(
            image, (w, h), interpolation=interpolation(image.shape[1] / w))
        ok, encoded = cv.imencode(".jpg", scaled, [cv.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            return None
        jpegs.append(encoded.tobytes())
        costs.append(time.perf_counter() - start)
    return jpegs, r, decoded - t0, costs


# -- one variant ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Key:
    """A variant: the snapped box (None: no limit that way) and the JPEG quality asked
    for (None: the camera's JPEG_QUALITY; asking for that one is the same variant)."""

    width: int | None
    height: int | None
    quality: int | None


class _Variant:
    """One size being made: its Fanout, its viewers' caps, its schedule and figures."""

    def __init__(self, key: Key, fanout: Fanout, quality: int) -> None:
        self.key = key
        self.quality = quality  # what it is encoded at
        self.fanout = fanout
        self.dropped = False
        self.caps: dict[Viewer, float | None] = {}  # subscriber -> its ?fps= cap
        self.cap: float | None = None  # the fastest any subscriber needs (None: every frame)
        self._seen = -1  # fanout.subscribers when `cap` was last worked out
        self.due = 0.0  # capture time from which the next frame is due (with a cap)
        self.size: tuple[int, int] | None = None  # of the newest frame made
        self.frame_bytes: int | None = None
        self.decode_scale: int | None = None
        self.encodes = 0
        self.skipped = 0
        self.made: deque[float] = deque(maxlen=30)  # monotonic times frames were published
        self.costs: deque[float] = deque(maxlen=30)  # seconds per frame, decode share included

    def refresh_cap(self) -> None:
        """Forget closed subscribers and work out the cap again (under the lock)."""
        if self.fanout.subscribers == self._seen:
            return
        self.caps = {v: cap for v, cap in self.caps.items() if not v.closed}
        self._seen = self.fanout.subscribers
        caps = list(self.caps.values())
        self.cap = None if not caps or None in caps else max(caps)

    def take(self, timestamp: float, missed: int) -> bool:
        """Is the frame captured at `timestamp` due? `missed`: camera frames the maker
        skipped just before it (they count as skipped for a variant wanting every one)."""
        cap = self.cap
        if cap is None:
            self.skipped += missed
            return True
        interval = 1.0 / cap
        due, wanted = rate_cap(timestamp, self.due, interval)
        if wanted and self.due and timestamp >= self.due + interval:
            self.skipped += int((timestamp - self.due) / interval)  # whole slots gone by
        self.due = due
        return wanted

    def status(self) -> dict:
        made, costs = list(self.made), list(self.costs)  # copies: the maker appends
        now = time.monotonic()
        fps = None
        if len(made) >= 2 and now - made[-1] < 2.0 + (1.0 / self.cap if self.cap else 0):
            span = made[-1] - made[0]
            fps = round((len(made) - 1) / span, 2) if span > 0 else None
        ms = round(1000 * sum(costs) / len(costs), 2) if costs else None
        return {
            "width": self.size[0] if self.size else None,
            "height": self.size[1] if self.size else None,
            "box": [self.key.width, self.key.height],
            "quality": self.quality,
            "viewers": self.fanout.viewers,
            "subscribers": self.fanout.subscribers,
            "fps_cap": self.cap,
            "fps": fps,
            "encodes": self.encodes,
            "skipped": self.skipped,
            "ms_per_frame": ms,
            "cpu_percent": round(ms * fps / 10, 1) if ms is not None and fps else 0.0,
            "decode_scale": f"1/{self.decode_scale}" if self.decode_scale else None,
            "frame_bytes": self.frame_bytes,
            "kbit_s": round(self.frame_bytes * 8 * fps / 1000) if self.frame_bytes and fps
            else None,
        }


# -- a camera's variants ----------------------------------------------------------------

class Variants:
    """The size variants of one camera and the thread that makes them."""

    def __init__(self, camera, linger: float = LINGER, max_variants: int | None = None) -> None:
        self.camera = camera
        self.linger = linger
        self.max_variants = max_variants or getattr(camera.settings, "max_variants", 4)
        self._lock = native.allocate_lock()
        self._variants: dict[Key, _Variant] = {}
        # Every Fanout is made here, in the thread that builds the app (the event loop's
        # under gevent): one made in the maker would wake greenlets through the wrong hub.
        # A dropped variant's Fanout is cleared and reused by the next.
        self._spare = [Fanout() for _ in range(self.max_variants)]
        self._maker = False  # a maker thread is running
        self._closed = False
        self._source: tuple[int, int] | None = None  # the camera's frame size, when known
        self.maker_runs = 0  # maker threads started (tests: one while variants are watched)
        self.errors = 0  # frames the maker failed on (logged)

    # -- what app.py calls ------------------------------------------------------------

    def subscribe(self, spec: Spec, counted: bool = True, fps: float | None = None) -> Viewer:
        """Join the variant `spec` asks for (the camera itself when that is the full
        size), starting its maker. `fps`: this viewer's own cap; the variant is made no
        faster than its fastest viewer needs. Raises CameraClosed."""
        return self._join(spec, counted, fps)[0]

    def snapshot(self, spec: Spec, timeout: float) -> Frame | None:
        """One scaled live JPEG: the variant's newest if it was made from the camera's
        newest frame, else the next one made; None if none came within `timeout`."""
        deadline = time.monotonic() + timeout
        viewer, variant = self._join(spec, False, None)
        if variant is None:
            viewer.close()
            return self.camera.snapshot(max(0.0, deadline - time.monotonic()))
        with viewer:
            newest, latest = variant.fanout.newest, self.camera.fanout.newest
            if (newest is not None and newest.live and latest is not None
                    and newest.timestamp == latest.timestamp and self.camera.delivering):
                return newest
            viewer.last_seq = newest.seq if newest is not None else 0
            while (remaining := deadline - time.monotonic()) > 0:
                frame = viewer.next_frame(remaining)
                if frame is not None and frame.live:
                    return frame
        return None

    @property
    def viewers(self) -> int:
        """Counted viewers of every variant (the full-size ones are the camera's)."""
        with self._lock:
            return sum(v.fanout.viewers for v in self._variants.values())

    def status(self) -> list[dict]:
        """Per variant being made: size, quality, viewers, fps, encodes, skipped, cost."""
        with self._lock:
            variants = list(self._variants.values())
        rows = [v.status() for v in variants]
        return sorted(rows, key=lambda r: (r["width"] or r["box"][0] or 0, r["quality"] or 0))

    def close(self) -> None:
        """End every variant's viewers (shutdown) and stop the maker."""
        with self._lock:
            self._closed = True
            fanouts = [v.fanout for v in self._variants.values()] + self._spare
        for fanout in fanouts:
            fanout.close()

    # -- keys, the ladder and the nearest rule ------------------------------------------

    def source_size(self) -> tuple[int, int] | None:
        """The camera's frame size: its newest live frame's, the last the maker saw, or
        CAMERA_RESOLUTION as a hint (None before any of them is known)."""
        newest = self.camera.fanout.newest
        if newest is not None and newest.live:
            size = jpeg_size(newest.data)
            if size:
                return size
        if self._source:
            return self._source
        resolution = getattr(self.camera.settings, "resolution", None)
        if resolution and getattr(self.camera.settings, "rotation", 0) in (90, 270):
            resolution = resolution[::-1]
        return resolution

    def key(self, spec: Spec, source: tuple[int, int] | None = None) -> Key | None:
        """The variant `spec` names: its box snapped to the ladders; None when that is the
        camera's own frames (a box at least the source's size and no quality asked)."""
        source = source or self.source_size()
        sw, sh = source if source else (None, None)
        width, height = snap(spec.width, WIDTHS, sw), snap(spec.height, HEIGHTS, sh)
        if source and width and height:  # keep only the side that binds
            if width / sw <= height / sh:
                height = None
            else:
                width = None
        quality = None if spec.quality == self.camera.settings.jpeg_quality else spec.quality
        if width is None and height is None and quality is None:
            return None
        return Key(width, height, quality)

    def _scale(self, key: Key | None, source: tuple[int, int]) -> float:
        if key is None or (key.width is None and key.height is None):
            return 1.0
        w, _ = fit(source, (key.width, key.height))
        return w / source[0]

    def nearest(self, key: Key, source: tuple[int, int] | None) -> Key | None:
        """The variant being made (or the full stream: None) nearest `key`: the least
        |log(scale / wanted scale)| (a half and a double are as far), then the nearer
        quality, then the larger picture."""
        source = source or (1280, 720)
        wanted = self._scale(key, source)
        own = self.camera.settings.jpeg_quality
        candidates = [None, *self._variants]

        def distance(candidate: Key | None):
            scale = self._scale(candidate, source)
            quality = candidate.quality if candidate and candidate.quality else own
            return (round(abs(math.log(scale / wanted)), 6),
                    abs(quality - (key.quality or own)), -scale)

        return min(candidates, key=distance)

    def _join(self, spec: Spec, counted: bool, fps: float | None
              ) -> tuple[Viewer, _Variant | None]:
        source = self.source_size()
        key = self.key(spec, source)
        variant = None
        with self._lock:
            if self._closed:
                raise CameraClosed()
            if key is not None:
                variant = self._variants.get(key) or self._add(key, source)
            if variant is not None:
                viewer = variant.fanout.subscribe(counted)
                variant.caps[viewer] = fps
                variant._seen = -1
                if not self._maker:
                    self._maker = True
                    self.maker_runs += 1
                    native.start_thread(self._make_loop, ())
        if variant is None:
            return self.camera.subscribe(counted), None
        return viewer, variant

    def _add(self, key: Key, source) -> _Variant | None:
        """A new variant, in a spare Fanout or in the one an idle variant leaves; past
        max_variants the nearest one being made (None: the full stream). Under the lock."""
        if not self._spare:
            idle = [v for v in self._variants.values() if not v.fanout.subscribers]
            if not idle:
                near = self.nearest(key, source)
                return None if near is None else self._variants[near]
            self._drop(min(idle, key=lambda v: v.fanout.idle_since or 0))
        variant = _Variant(key, self._spare.pop(),
                           key.quality or self.camera.settings.jpeg_quality)
        self._variants[key] = variant
        return variant

    def _drop(self, variant: _Variant) -> None:
        variant.dropped = True
        del self._variants[variant.key]
        variant.fanout.clear()
        self._spare.append(variant.fanout)

    # -- the maker thread -----------------------------------------------------------------

    def _make_loop(self) -> None:
        viewer = None
        try:
            viewer = self.camera.subscribe(counted=False, native_thread=True)
            last_seq = 0
            while True:
                frame = viewer.next_frame(TICK)
                now = time.monotonic()
                with self._lock:
                    for variant in list(self._variants.values()):
                        idle = variant.fanout.idle_since
                        if idle is not None and now - idle >= self.linger:
                            self._drop(variant)
                    if not self._variants or self._closed:
                        self._maker = False
                        return
                    active = [v for v in self._variants.values() if v.fanout.subscribers]
                    for variant in active:
                        variant.refresh_cap()
                if frame is None:
                    continue
                missed = frame.seq - last_seq - 1 if last_seq else 0
                last_seq = frame.seq
                if not frame.live:  # the placeholder, as it is
                    for variant in active:
                        variant.skipped += missed if variant.cap is None else 0
                        self._publish(variant, frame.data, frame.timestamp, False)
                    continue
                due = [v for v in active if v.take(frame.timestamp, missed)]
                if due:
                    try:
                        self._make(frame, due)
                    except Exception:
                        self.errors += 1
                        if self.errors == 1 or self.errors % 1000 == 0:
                            log.exception("%s: making a size variant failed (%d times)",
                                          self.camera.name, self.errors)
        except CameraClosed:
            with self._lock:
                self._closed = True
                self._maker = False
                fanouts = [v.fanout for v in self._variants.values()] + self._spare
            for fanout in fanouts:
                fanout.close()
        except BaseException:
            with self._lock:
                self._maker = False
            raise
        finally:
            if viewer is not None:
                viewer.close()
            native.destroy_thread_hub()

    def _make(self, frame: Frame, due: list[_Variant]) -> None:
        """Decode `frame` once and publish it at each due variant's size."""
        source = jpeg_size(frame.data)
        if source is None:
            return
        self._source = source
        jobs: list[tuple[_Variant, tuple[int, int], int]] = []
        for variant in due:
            size = fit(source, (variant.key.width, variant.key.height))
            if size == source and variant.key.quality is None:  # only before the size
                variant.size = source                          # was known
                self._count(variant, len(frame.data), 0.0, None)
                self._publish(variant, frame.data, frame.timestamp, True)
            else:
                jobs.append((variant, size, variant.quality))
        if not jobs:
            return
        made = scale_jpeg(frame.data, [(size, q) for _, size, q in jobs])
        if made is None:
            return
        jpegs, scale, decode, costs = made
        share = decode / len(jobs)
        for (variant, size, _), data, cost in zip(jobs, jpegs, costs):
            variant.size = size
            variant.encodes += 1
            self._count(variant, len(data), share + cost, scale)
            self._publish(variant, data, frame.timestamp, True)

    @staticmethod
    def _count(variant: _Variant, nbytes: int, cost: float, scale: int | None) -> None:
        variant.frame_bytes = nbytes
        variant.decode_scale = scale
        variant.costs.append(cost)
        variant.made.append(time.monotonic())

    def _publish(self, variant: _Variant, data: bytes, timestamp: float, live: bool) -> None:
        with self._lock:  # a variant dropped meanwhile must not publish into its old Fanout
            if not variant.dropped:
                variant.fanout.publish(data, timestamp, live)
