"""The motion mask at the detector's picture size: which pixels are watched.

config.py checked the setting at start (rectangles in percent, or an image file whose
black pixels are ignored); here it becomes a picture of the detector's size, made again
only when that size changes (a camera restarted at another resolution).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from server.config import MotionMask


class MaskError(Exception):
    """The mask image can no longer be read (it was there at start)."""


def watched(mask: MotionMask, width: int, height: int) -> np.ndarray | None:
    """255 where pixels are watched, 0 where ignored (uint8, height x width); None when
    everything is watched."""
    if not mask:
        return None
    if isinstance(mask, str):
        return _from_image(mask, width, height)
    out = np.full((height, width), 255, np.uint8)
    for x, y, w, h in mask:
        # A pixel is ignored when its centre lies in the rectangle.
        left, right = round(x * width / 100), round((x + w) * width / 100)
        top, bottom = round(y * height / 100), round((y + h) * height / 100)
        out[top:bottom, left:right] = 0
    return out


def _from_image(path: str, width: int, height: int) -> np.ndarray:
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise MaskError(f"motion_mask {Path(path).name}: {exc.strerror}") from None
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise MaskError(f"motion_mask {Path(path).name}: not a readable image any more")
    # INTER_AREA: each small pixel is the mean of the mask pixels it covers; it is
    # ignored when most of them are black.
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return np.where(small >= 128, 255, 0).astype(np.uint8)
