"""The Redis frame bus: one publisher owns the camera, any number of web workers serve it.

    CAMERA=pi flask --app app publish        # next to the camera
    CAMERA=redis gunicorn --workers 4 app:app  # on any machine that reaches Redis

The publisher captures only while someone watches: web workers subscribe to the channel
(CAMERA_CHANNEL, default "camera") while they have viewers, and the publisher counts
subscribers (PUBSUB NUMSUB). It publishes every frame, as plain JPEG bytes, and keeps
the newest one under `<channel>:latest` for a few seconds, for snapshots. A frame
crosses Redis once per web worker, not once per viewer: each worker fans frames out to
its own viewers through the usual per-viewer events.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator

import redis

import config
from base_camera import BaseCamera, CameraError, Frame

log = logging.getLogger(__name__)

LATEST_TTL_MS = 5000  # a snapshot from the key is at most this old
POLL = 0.5  # seconds between subscriber counts in the publisher


def _client(settings: config.Settings) -> redis.Redis:
    try:
        return redis.Redis.from_url(settings.redis_url, socket_timeout=5,
                                    socket_connect_timeout=3, health_check_interval=10)
    except ValueError as exc:
        raise config.ConfigError(f"REDIS_URL={settings.redis_url!r}: {exc}") from None


class Camera(BaseCamera):
    """CAMERA=redis: frames from the publisher, through a Redis channel."""

    def __init__(self, settings: config.Settings | None = None) -> None:
        super().__init__(settings)
        self._redis = _client(self.settings)  # a bad REDIS_URL stops the server at start
        self._latest_key = f"{self.settings.camera_channel}:latest"

    def frames(self) -> Iterator[bytes]:
        client = _client(self.settings)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.settings.camera_channel)
            log.info("redis: subscribed to %r", self.settings.camera_channel)
            while True:
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    yield message["data"]
        except redis.RedisError as exc:
            raise CameraError(f"Redis at {self.settings.redis_url}: {exc}") from None
        finally:
            pubsub.close()  # the publisher's subscriber count drops: it may stop the camera
            client.close()

    def snapshot(self, timeout: float) -> Frame | None:
        """The publisher's newest frame if it is fresh, else the next one off the bus."""
        try:
            data = self._redis.get(self._latest_key)
        except redis.RedisError:
            data = None
        if data:
            return Frame(data, time.time(), 0)
        return super().snapshot(timeout)


def publish(camera: BaseCamera) -> None:
    """Run the publisher until SIGTERM or SIGINT (`flask --app app publish`)."""
    settings = camera.settings
    if isinstance(camera, Camera):
        raise SystemExit("error: the publisher needs a real camera: set CAMERA to its "
                         "driver (e.g. pi or opencv), not redis")
    channel, latest = settings.camera_channel, f"{settings.camera_channel}:latest"
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    client = _client(settings)
    log.info("publishing %s to %r on %s", type(camera).__module__, channel, settings.redis_url)
    viewer, backoff = None, 0.5
    try:
        while not stop.is_set():
            try:
                watching = client.pubsub_numsub(channel)[0][1]
                if watching and viewer is None:
                    log.info("%d web worker(s) watching: capturing", watching)
                    viewer = camera.subscribe()
                elif not watching and viewer is not None:
                    log.info("nobody watching: the camera stops in %g s", settings.idle_timeout)
                    viewer.close()
                    viewer = None
                if viewer is None:
                    stop.wait(POLL)
                else:
                    _forward(viewer, client, channel, latest, time.monotonic() + POLL, stop)
                backoff = 0.5
            except redis.RedisError as exc:
                log.warning("Redis at %s: %s; retrying in %g s", settings.redis_url, exc, backoff)
                if viewer is not None:  # nobody can watch now; a quick reconnect comes
                    viewer.close()      # back before the idle timeout stops the camera
                    viewer = None
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
    finally:
        if viewer is not None:
            viewer.close()
        camera.close()
        log.info("publisher stopped")


def _forward(viewer, client: redis.Redis, channel: str, latest: str, until: float,
             stop: threading.Event) -> None:
    """Publish the camera's live frames until `until`."""
    while not stop.is_set() and (remaining := until - time.monotonic()) > 0:
        frame = viewer.next_frame(timeout=remaining)
        if frame is None or not frame.live:
            continue  # web workers show their own placeholder when frames stop
        pipe = client.pipeline(transaction=False)
        pipe.publish(channel, frame.data)
        pipe.set(latest, frame.data, px=LATEST_TTL_MS)
        pipe.execute()
