"""JPEG bytes: the placeholder picture, the size from the header, comment segments.

Nothing here decodes pixels: these are the byte-level facts the server needs per frame.
"""

from __future__ import annotations

from pathlib import Path

PLACEHOLDER_JPEG = (Path(__file__).resolve().parents[1] / "static" / "unavailable.jpg").read_bytes()


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame marker, or None."""
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return width, height
        i += 2 + length
    return None


def with_comment(data: bytes, text: bytes) -> bytes:
    """`data` with a comment segment carrying `text` right after its SOI marker: still a
    plain JPEG for any reader."""
    return data[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + data[2:]


def split_comment(data: bytes, prefix: bytes) -> tuple[bytes, bytes | None]:
    """Undo `with_comment` for a comment starting with `prefix`: (original, text), or
    (data, None) when the first segment is not such a comment."""
    if data[2:4] != b"\xff\xfe" or data[6:6 + len(prefix)] != prefix:
        return data, None
    end = 4 + int.from_bytes(data[4:6], "big")
    return data[:2] + data[end:], data[6:end]
