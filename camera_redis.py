"""The Redis frame bus: one publisher owns the cameras, any number of web workers serve them.

    CAMERA=pi flask --app app publish          # next to the cameras
    CAMERA=redis gunicorn --workers 4 app:app  # on any machine that reaches Redis

Each camera's frames travel on its own channel (CAMERA_CHANNEL, or `<CAMERA_CHANNEL>:<name>`
with a CAMERAS_FILE). The publisher captures a camera only while some web worker
subscribes to its channel (PUBSUB NUMSUB), and publishes each frame as a plain JPEG
whose first segment is a comment carrying the capture time, so any Redis client can use
it and the web workers keep the true capture time. It keeps the newest frame under
`<channel>:latest` for snapshots, and the camera's status under `<channel>:state`. Web
workers report their viewer counts under `<channel>:viewers`, so every worker's /status
shows the camera's true figures. The publisher also records (it owns the cameras): web
workers pass record, stop and event requests to it on `<channel>:control` and wait for
its answer. A frame crosses Redis once per web worker, not once per
viewer: each worker fans frames out to its own viewers. The publisher's events (motion,
recording) go on each camera's `<channel>:events` stream, and every web worker's /events
feed relays them under the publisher's ids, so a browser's Last-Event-ID is the same on
any worker and one that reconnects misses nothing still in the stream.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import redis

from base_camera import DRIVER_SETTINGS, BaseCamera, CameraError, Frame
from capture import native, split_comment, with_comment
from events import HISTORY, FeedClosed
from recording import RecordingError
from server import config
from server.redact import display_url

log = logging.getLogger(__name__)

LATEST_TTL_MS = 5000  # a snapshot from the key is at most this old
STATE_TTL_S = 5  # the publisher's status of a camera, refreshed every POLL
VIEWERS_TTL = 5.0  # a worker's viewer count counts this long after it was reported
POLL = 0.5  # seconds between subscriber counts in the publisher
ANSWER_TIMEOUT = 5  # seconds a web worker waits for the publisher to answer a command
EVENTS_BLOCK_MS = 1000  # a web worker's relay waits this long per read: it sees close()
TIME_TAG = b"capture-time="


def _client(settings) -> redis.Redis:
    try:
        return redis.Redis.from_url(settings.redis_url, socket_timeout=5,
                                    socket_connect_timeout=3, health_check_interval=10)
    except ValueError as exc:
        shown = display_url(settings.redis_url)
        raise config.ConfigError(f"REDIS_URL={shown!r}: {exc}") from None


def pack(frame: Frame) -> bytes:
    """The frame as it goes on the bus: a plain JPEG that carries its capture time."""
    return with_comment(frame.data, TIME_TAG + b"%.6f" % frame.timestamp)


def unpack(message: bytes) -> tuple[bytes, float | None]:
    """The camera's own JPEG and its capture time (None from another publisher)."""
    data, tag = split_comment(message, TIME_TAG)
    return data, float(tag[len(TIME_TAG):]) if tag else None


class Camera(BaseCamera):
    """CAMERA=redis: frames from the publisher, through the camera's Redis channel."""

    # The publisher's driver applies them (and says which it ignores).
    supports = frozenset(DRIVER_SETTINGS)

    def __init__(self, settings: config.CameraSettings | None = None) -> None:
        super().__init__(settings)
        self._redis = _client(self.settings)  # a bad REDIS_URL stops the server at start
        self._worker = f"{socket.gethostname()}:{os.getpid()}"
        self._where = f"Redis at {display_url(self.settings.redis_url)}"  # for messages

    def frames(self) -> Iterator[tuple[bytes, float | None]]:
        channel = self.settings.channel
        client = _client(self.settings)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        reported = 0.0
        try:
            pubsub.subscribe(channel)
            log.info("redis: subscribed to %r", channel)
            while True:
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    yield unpack(message["data"])
                if time.monotonic() - reported >= 1.0:
                    reported = time.monotonic()
                    client.hset(f"{channel}:viewers", self._worker,
                                f"{self.viewers} {time.time() + VIEWERS_TTL:.3f}")
        except redis.RedisError as exc:
            raise CameraError(f"{self._where}: {exc}") from None
        finally:
            pubsub.close()  # the publisher's subscriber count drops: it may stop the camera
            try:
                client.hdel(f"{channel}:viewers", self._worker)
            except redis.RedisError:
                pass
            client.close()

    def snapshot(self, timeout: float) -> Frame | None:
        """The publisher's newest frame if it is fresh, else the next one off the bus."""
        try:
            message = self._redis.get(f"{self.settings.channel}:latest")
        except redis.RedisError:
            message = None
        if message:
            data, timestamp = unpack(message)
            return Frame(data, timestamp or time.time(), 0)
        return super().snapshot(timeout)

    def forward(self, camera: str, command: str, args: dict) -> dict:
        """A recording or motion command ("record", "stop", "event", "motion",
        "motion.jpg") for the publisher, which owns the camera: sent on the camera's
        control channel; its answer is returned."""
        channel = self.settings.channel
        answer_key = f"{channel}:answer:{uuid.uuid4().hex}"
        try:
            listening = self._redis.publish(f"{channel}:control", json.dumps(
                {"command": command, "args": args, "answer": answer_key}))
            if not listening:
                raise RecordingError(f"no publisher is running for camera {camera!r}: "
                                     "recording is done by 'flask --app app publish'")
            answer = self._redis.blpop([answer_key], timeout=ANSWER_TIMEOUT)
        except redis.RedisError as exc:
            raise RecordingError(f"{self._where}: {exc}") from None
        if answer is None:
            raise RecordingError(f"the publisher did not answer within {ANSWER_TIMEOUT} s")
        answer = json.loads(answer[1])
        if "error" in answer:
            raise RecordingError(answer["error"])
        return answer["result"]

    def relay_events(self, cameras, bus) -> EventRelay:
        """Follow the publisher's events of every camera into this worker's `bus` (built
        with `first_id=1`), in a native thread; `close()` the answer to stop."""
        return EventRelay(self.settings, [camera.settings.channel for camera in
                                          cameras.values() if isinstance(camera, Camera)],
                          bus).start()

    def status(self) -> dict:
        """The publisher's figures for the camera, with the viewers of every worker."""
        status = super().status()
        channel = self.settings.channel
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(f"{channel}:state")
            pipe.hgetall(f"{channel}:viewers")
            state, counts = pipe.execute()
        except redis.RedisError as exc:
            status["error"] = status["error"] or f"{self._where}: {exc}"
            return status
        now, viewers = time.time(), 0
        for worker, value in counts.items():
            count, _, expires = value.decode().partition(" ")
            if worker.decode() == self._worker:
                continue  # this worker's own count is live, not the last report
            if float(expires or 0) > now:
                viewers += int(count)
        if state:
            status.update({k: v for k, v in json.loads(state).items()
                           if k in ("running", "fps", "frame_size", "frame_bytes", "error",
                                    "frames_captured", "stuck", "recording", "recorder",
                                    "webhook", "motion")})
        status["viewers"] = self.viewers + viewers
        return status


def publish(cameras) -> None:
    """Run the publisher until SIGTERM or SIGINT (`flask --app app publish`)."""
    if any(isinstance(camera, Camera) for camera in cameras.values()):
        raise SystemExit("error: the publisher needs real cameras: set CAMERA to their "
                         "driver (e.g. pi or opencv), not redis")
    settings = cameras.first.settings
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    client = _client(settings)
    forwarders = [_Forwarder(camera, client, stop) for camera in cameras.values()]
    threading.Thread(target=_answer_commands, args=(cameras, settings, stop), daemon=True,
                     name="recording-commands").start()
    threading.Thread(target=_publish_events, args=(cameras, settings, stop), daemon=True,
                     name="events").start()
    channels = [camera.settings.channel for camera in cameras.values()]
    shown_url = display_url(settings.redis_url)
    log.info("publishing %s to %s on %s",
             ", ".join(f"{c.name} ({type(c).__module__})" for c in cameras.values()),
             ", ".join(repr(c) for c in channels), shown_url)
    backoff = 0.5
    try:
        while not stop.is_set():
            try:
                watching = dict(client.pubsub_numsub(*channels))
                pipe = client.pipeline(transaction=False)
                for forwarder in forwarders:
                    forwarder.watch(watching.get(forwarder.channel.encode(), 0))
                    pipe.set(f"{forwarder.channel}:state",
                             json.dumps(cameras.status(forwarder.camera.name)), ex=STATE_TTL_S)
                pipe.execute()
                backoff = 0.5
                stop.wait(POLL)
            except redis.RedisError as exc:
                log.warning("Redis at %s: %s; retrying in %g s", shown_url, exc, backoff)
                for forwarder in forwarders:  # nobody can watch now; a quick reconnect
                    forwarder.watch(0)        # comes back before the idle timeout
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
    finally:
        for forwarder in forwarders:
            forwarder.watch(0)
        cameras.close()
        log.info("publisher stopped")


def _answer_commands(cameras, settings, stop: threading.Event) -> None:
    """The publisher's side of `Camera.forward`: run each recording command a web worker
    sends and push the answer where it waits for it."""
    control = {f"{camera.settings.channel}:control": name for name, camera in cameras.items()}
    while not stop.is_set():
        client = _client(settings)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(*control)
            while not stop.is_set():
                message = pubsub.get_message(timeout=POLL)
                if message is None or message["type"] != "message":
                    continue
                request = json.loads(message["data"])
                try:
                    answer = {"result": cameras.command(
                        control[message["channel"].decode()], request["command"],
                        request.get("args"))}
                except (RecordingError, ValueError, KeyError) as exc:
                    answer = {"error": str(exc)}
                pipe = client.pipeline(transaction=False)
                pipe.rpush(request["answer"], json.dumps(answer))
                pipe.expire(request["answer"], ANSWER_TIMEOUT * 2)
                pipe.execute()
        except redis.RedisError as exc:
            log.debug("recording commands: Redis: %s", exc)
            stop.wait(1.0)  # the main loop logs Redis outages; reconnect quietly
        finally:
            pubsub.close()
            client.close()


def _publish_events(cameras, settings, stop: threading.Event) -> None:
    """The publisher's side of EventRelay: each event of its bus onto its camera's
    `<channel>:events` stream, under the bus's id. While Redis is away the newest HISTORY
    wait for it (a web worker keeps no more)."""
    streams = {name: f"{camera.settings.channel}:events" for name, camera in cameras.items()}
    client, pending = _client(settings), []
    bus = cameras.events
    try:  # from the bus's first event: those of the start-up are not lost
        with bus.subscribe(last_id=bus.first_id - 1, native_thread=True) as feed:
            while not stop.is_set():
                pending = (pending + feed.next_events(timeout=POLL))[-HISTORY:]
                if not pending:
                    continue
                try:
                    pipe = client.pipeline(transaction=False)
                    for event in pending:
                        pipe.xadd(streams.get(event.camera, next(iter(streams.values()))),
                                  {"id": event.id, "kind": event.kind,
                                   "data": json.dumps(event.data, default=str)},
                                  maxlen=HISTORY, approximate=True)
                    pipe.execute()
                    pending = []
                except redis.RedisError as exc:
                    log.debug("events: Redis: %s", exc)  # the main loop logs outages
                    stop.wait(1.0)
    except FeedClosed:
        pass  # the publisher stops
    finally:
        client.close()


class EventRelay:
    """A web worker's copy of the publisher's event feed: reads the cameras' event
    streams (oldest kept first, then each new one) and relays each event into the bus."""

    def __init__(self, settings, channels: list[str], bus) -> None:
        self._settings, self._bus = settings, bus
        self._streams = [f"{channel}:events" for channel in channels]
        self._stop, self._done = native.Flag(), native.Flag()

    def start(self) -> EventRelay:
        native.start_thread(self._run, ())  # off the event loop: XREAD blocks
        return self

    def close(self, wait: float = 0.0) -> None:
        self._stop.set()
        self._done.wait(wait)

    def _run(self) -> None:
        client = _client(self._settings)
        try:
            last = None  # stream positions; None until the history was read
            while not self._stop.is_set():
                try:
                    last = self._relay(client, last)
                except redis.RedisError as exc:
                    log.debug("events: Redis: %s", exc)  # the frames' reader logs outages
                    self._stop.wait(1.0)
        finally:
            client.close()
            native.destroy_thread_hub()
            self._done.set()

    def _relay(self, client: redis.Redis, last: dict | None) -> dict:
        """Relay what came after `last` (the streams' ids read up to), or at first the
        whole history; the new positions."""
        if last is None:
            last, batch = {}, []
            for stream in self._streams:
                entries = client.xrange(stream)
                last[stream] = entries[-1][0] if entries else b"0-0"  # never "$": a gap
                batch += entries
        else:
            answer = client.xread(last, block=EVENTS_BLOCK_MS) or []
            batch = [entry for stream, entries in answer for entry in entries]
            last.update({stream: entries[-1][0] for stream, entries in answer})
        events = []
        for _, fields in batch:
            try:
                events.append((int(fields[b"id"]), fields[b"kind"].decode(),
                               json.loads(fields[b"data"])))
            except (KeyError, ValueError):
                log.debug("events: an entry that is no event: %r", fields)
        for event in sorted(events, key=lambda e: e[0]):  # the cameras' streams interleave
            self._bus.relay(*event)
        return last


class _Forwarder:
    """One camera's frames onto its channel, in a thread, while workers watch it."""

    def __init__(self, camera: BaseCamera, client: redis.Redis, stop: threading.Event) -> None:
        self.camera, self.client, self.stop = camera, client, stop
        self.channel = camera.settings.channel
        self._thread: threading.Thread | None = None
        self._watched = threading.Event()

    def watch(self, workers: int) -> None:
        if workers and self._thread is None:
            log.info("%s: %d web worker(s) watching: capturing", self.camera.name, workers)
            self._watched.set()
            self._thread = threading.Thread(target=self._run, name=f"forward-{self.channel}",
                                            daemon=True)
            self._thread.start()
        elif not workers and self._thread is not None:
            log.info("%s: nobody watching: the camera stops in %g s", self.camera.name,
                     self.camera.settings.idle_timeout)
            self._watched.clear()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        latest = f"{self.channel}:latest"
        with self.camera.subscribe(counted=False) as viewer:
            while self._watched.is_set() and not self.stop.is_set():
                frame = viewer.next_frame(timeout=POLL)
                if frame is None or not frame.live:
                    continue  # web workers show their own placeholder when frames stop
                message = pack(frame)
                try:
                    pipe = self.client.pipeline(transaction=False)
                    pipe.publish(self.channel, message)
                    pipe.set(latest, message, px=LATEST_TTL_MS)
                    pipe.execute()
                except redis.RedisError as exc:
                    log.debug("%s: frame not published: %s", self.camera.name, exc)
