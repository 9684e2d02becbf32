"""The stream generator on its own: both wire formats byte for byte, the ?fps= cap, a
departed client noticed in silence, shutdown, and the release of what a response holds.
A scripted viewer and clock stand in for the camera and time: milliseconds, no server."""

from __future__ import annotations

import socket

import pytest

from capture import CameraClosed, Frame
from stream import mjpeg


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedViewer:
    """next_frame() hands out the script: a Frame, None (nothing within the timeout:
    time moves on by it), or CameraClosed (the camera closed)."""

    def __init__(self, script: list, clock: Clock) -> None:
        self.script, self.clock, self.closed = list(script), clock, False

    def next_frame(self, timeout: float | None = None) -> Frame | None:
        if not self.script:
            raise AssertionError("the stream asked for more than the script has")
        item = self.script.pop(0)
        if item is CameraClosed:
            raise CameraClosed()
        if item is None:
            self.clock.now += timeout
        return item

    def close(self) -> None:
        self.closed = True


def frames(count: int, fps: float = 30.0, start: float = 1700000000.0,
           jitter: float = 0.0) -> list[Frame]:
    return [Frame(b"\xff\xd8jpeg-%d\xff\xd9" % n,
                  start + n / fps + (jitter if n % 2 else -jitter), n + 1)
            for n in range(count)]


def run(script: list, advance: bool = False, fps: float | None = None,
        sock=None) -> tuple[list[bytes], ScriptedViewer]:
    clock = Clock()
    viewer = ScriptedViewer(script + [CameraClosed], clock)
    return list(mjpeg.stream(viewer, advance, fps, sock, clock=clock)), viewer


def test_tools_get_each_frame_with_its_length_and_capture_time_then_the_boundary():
    shown = frames(2)
    body, viewer = run(shown)
    assert body[0] == b"--frame\r\n"
    for frame, part in zip(shown, body[1:], strict=True):
        assert part == (b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n"
                        b"X-Timestamp: %.6f\r\n\r\n%s\r\n--frame\r\n"
                        % (len(frame.data), frame.timestamp, frame.data))
    assert viewer.closed


def test_browsers_get_the_next_parts_headers_right_after_each_frame():
    """Chrome draws a part once it has the next part's headers: they come with it."""
    shown = frames(2)
    body, _ = run(shown, advance=True)
    assert body[0] == b"--frame\r\nContent-Type: image/jpeg\r\n\r\n"
    for frame, part in zip(shown, body[1:], strict=True):
        assert part == frame.data + b"\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n"


def test_a_part_is_built_once_per_frame_and_shared_by_every_viewer():
    [frame] = frames(1)
    assert mjpeg.exact_part(frame) is mjpeg.exact_part(frame)
    assert mjpeg.browser_part(frame) is mjpeg.browser_part(frame)
    first, _ = run([frame])
    second, _ = run([frame])
    assert first[1] is second[1]


@pytest.mark.parametrize("camera_fps,cap,jitter,expected", [
    (30, 5, 0.0, 15),     # 3 s of a 30 fps camera at ?fps=5: 15 frames
    (30, 5, 0.003, 15),   # capture jitter within the slack changes nothing
    (30, 7, 0.0, 21),     # a cap that does not divide the camera's rate still averages
    (30, 30, 0.0, 90),    # a cap at the camera's rate passes every frame
    (2, 5, 0.0, 6),       # a camera slower than the cap: every frame
])
def test_the_fps_cap_averages_the_asked_rate_over_capture_times(camera_fps, cap, jitter,
                                                                 expected):
    shown = frames(int(3 * camera_fps), camera_fps, jitter=jitter)
    body, _ = run(shown, fps=cap)
    assert len(body) - 1 == expected


def test_a_viewer_that_fell_behind_restarts_the_schedule_instead_of_bursting():
    due, sent = 0.0, []
    for ts in [0.0, 0.2, 0.4, 3.0, 3.04, 3.08, 3.2]:  # a 2.6 s hole, then 25 fps again
        due, wanted = mjpeg.rate_cap(ts, due, 0.2)
        sent += [ts] if wanted else []
    assert sent == [0.0, 0.2, 0.4, 3.0, 3.2]


def test_a_client_gone_while_nothing_is_sent_is_noticed_within_check_every():
    server_end, client_end = socket.socketpair()
    client_end.close()
    try:
        silence = [None] * 10  # a silent camera (or ?fps=0.01): nothing to write
        clock = Clock()
        viewer = ScriptedViewer(silence, clock)
        body = list(mjpeg.stream(viewer, False, None, server_end, clock=clock))
        assert body == [b"--frame\r\n"] and viewer.closed
        assert len(silence) - len(viewer.script) == 1  # one quiet wait: CHECK_EVERY
    finally:
        server_end.close()


def test_a_client_still_there_keeps_its_stream_through_silence():
    server_end, client_end = socket.socketpair()
    try:
        body, viewer = run([None, None, None] + frames(1), sock=server_end)
        assert len(body) == 2 and viewer.script == []
    finally:
        server_end.close()
        client_end.close()


def test_shutdown_ends_the_stream_and_closes_the_reading_side():
    server_end, client_end = socket.socketpair()
    try:
        body, viewer = run(frames(1), sock=server_end)  # the script ends in CameraClosed
        assert len(body) == 2 and viewer.closed
        # SHUT_RD: the server's next keep-alive read sees EOF at once (without it, no
        # data yet would raise BlockingIOError here).
        assert server_end.recv(1, socket.MSG_DONTWAIT) == b""
    finally:
        server_end.close()
        client_end.close()


@pytest.mark.parametrize("how", ["finished", "closed early", "closed unstarted",
                                 "send failed"])
def test_a_stream_response_releases_what_it_holds_however_its_client_goes(how):
    released = []

    def body():
        yield b"a"
        yield b"b"

    response = mjpeg.stream_response(body(), lambda: released.append(True))
    assert response.headers["Content-Type"] == mjpeg.MIMETYPE
    assert response.headers["Cache-Control"] == mjpeg.NO_CACHE["Cache-Control"]
    parts = response.response
    if how == "finished":
        assert list(parts) == [b"a", b"b"]
    elif how == "closed early":
        next(iter(parts))
        parts.close()
    elif how == "closed unstarted":
        parts.close()
    else:
        with pytest.raises(BrokenPipeError):
            next(iter(parts))
            parts.throw(BrokenPipeError())
    assert released == [True]
