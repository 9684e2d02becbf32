"""Numbered JPEGs for the test drivers, and a log of capture starts and stops."""

import os
from pathlib import Path

BASE = (Path(__file__).resolve().parents[2] / "static" / "emulated" / "1.jpg").read_bytes()


def _comment(text: bytes) -> bytes:
    return b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text


def numbered(n: int, pad: int = 0) -> bytes:
    """A valid JPEG carrying `frame=n;` in a comment segment right after SOI, made about
    `pad` bytes bigger with more comment segments (to fill socket buffers quickly)."""
    padding = b"".join(_comment(b"\0" * min(60000, pad - i)) for i in range(0, pad, 60000))
    return b"\xff\xd8" + _comment(b"frame=%d;" % n) + padding + BASE[2:]


def record(event: str) -> None:
    """Append `event` to the file named by DRIVER_EVENTS, if set."""
    path = os.environ.get("DRIVER_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(event + "\n")
