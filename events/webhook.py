"""Motion webhooks: a camera's `motion_webhook` URL gets a POST of JSON on each motion
event's start and end.

    EventBus --subscription (its camera's events)--> pending (at most QUEUE) --> POST

One native thread per webhook follows the bus like any other subscriber, so the detector,
the recorder and the viewers never wait for a receiver: a slow or dead one only makes
this thread's queue grow, and past QUEUE events the oldest is dropped (counted). Each
POST has TIMEOUT seconds per step (connect, each read); a connection error, a timeout, a
5xx, 408 or 429 is tried again after each of BACKOFF's delays, another answer is final.
The URL's user and password are sent as Basic auth, never shown: /status and the log
show `server/redact.py`'s display_url.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

from capture import native
from server import redact

from .bus import Event, EventBus, FeedClosed

log = logging.getLogger("events")

TIMEOUT = 5.0  # seconds per step of one POST
BACKOFF = (1.0, 2.0)  # seconds before the second and third tries
QUEUE = 100  # events waiting for a slow receiver; beyond, the oldest is dropped
RETRIED = {408, 429}  # and every 5xx: the receiver may answer the next try


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected POST would be repeated as a GET without its body: report it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def payload(event: Event) -> dict:
    """What the receiver gets for a motion event."""
    data = event.data
    return {"camera": data.get("camera"), "event": f"motion_{data.get('state')}",
            "time": data.get("time"), "score": data.get("score"), "clip": data.get("clip"),
            "snapshot": data.get("snapshot")}


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its user:password, and the Authorization header they make."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, {}
    host = parts.netloc.rpartition("@")[2]
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}


class Webhook:
    """One camera's webhook: its thread, its queue and its figures for /status."""

    def __init__(self, camera: str, url: str, bus: EventBus, *, timeout: float = TIMEOUT,
                 backoff: tuple[float, ...] = BACKOFF, queue: int = QUEUE) -> None:
        self.camera = camera
        self.shown = redact.display_url(url)
        redact.add_secret(urlsplit(url).password)  # a library's message may quote it
        self._url, self._auth = split_credentials(url)
        self.timeout, self.backoff, self.queue = timeout, backoff, queue
        self.sent = self.failed = self.dropped = 0
        self.last_error: str | None = None
        self._pending: deque[dict] = deque()
        self._missed = 0
        self._closing = False
        self._done = native.Flag()
        # Subscribed here, before the thread runs: no event after this one is missed.
        self._feed = bus.subscribe(camera=camera, native_thread=True)

    def start(self) -> Webhook:
        native.start_thread(self._run, ())
        return self

    def status(self) -> dict:
        return {"url": self.shown, "sent": self.sent, "failed": self.failed,
                "dropped": self.dropped, "queued": len(self._pending),
                "last_error": self.last_error}

    def close(self, wait: float = 0.0) -> None:
        """Stop following the bus (within a second); what is queued gets one more try
        each. Waits up to `wait` seconds for that."""
        self._closing = True
        self._feed.close()
        self._done.wait(wait)

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            # Idle waits end each second to see close(): closing a subscription does not
            # wake its wait (closing the bus, at shutdown, does).
            while self._take(1.0):
                while self._pending and not self._closing:
                    self._deliver(self._pending.popleft(), self.backoff)
            while self._pending:  # closing: one try each, no waits
                self._deliver(self._pending.popleft(), ())
        except Exception:  # noqa: BLE001 - the webhook stops, nothing else does
            log.exception("camera %s: the motion webhook %s failed", self.camera, self.shown)
        finally:
            native.destroy_thread_hub()  # first: once done, the process may be exiting
            self._done.set()

    def _take(self, timeout: float | None) -> bool:
        """Queue the camera's motion events that came, waiting up to `timeout` seconds
        for some; False once closing (the bus closed, or close())."""
        if self._closing:
            return False
        try:
            events = self._feed.next_events(timeout)
        except FeedClosed:
            self._closing = True
            return False
        self.dropped += self._feed.missed - self._missed  # the bus's history ran past us
        self._missed = self._feed.missed
        for event in events:
            if event.kind == "motion":
                self._pending.append(payload(event))
                if len(self._pending) > self.queue:
                    self._pending.popleft()
                    self.dropped += 1
        return True

    def _wait(self, seconds: float) -> bool:
        """Wait `seconds` before a retry, queueing what comes meanwhile; False: closing."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._take(remaining):
                return False
        return True

    def _deliver(self, body: dict, delays: tuple[float, ...]) -> None:
        """POST `body`, again after each of `delays` while the failure may pass."""
        for attempt, delay in enumerate((*delays, None)):
            error, again = self._post(body)
            if error is None:
                if self.last_error is not None:
                    log.info("camera %s: motion webhook %s answers again", self.camera,
                             self.shown)
                self.sent, self.last_error = self.sent + 1, None
                return
            if not again or delay is None or not self._wait(delay):
                break
        self.failed += 1
        tries = attempt + 1
        text = redact.redact(f"{error} ({tries} {'try' if tries == 1 else 'tries'})")
        # The first failure of a run of them is a warning; the rest are in the status.
        level = logging.WARNING if self.last_error is None else logging.DEBUG
        log.log(level, "camera %s: motion webhook %s: %s not delivered: %s", self.camera,
                self.shown, body["event"], text)
        self.last_error = text

    def _post(self, body: dict) -> tuple[str | None, bool]:
        """One POST: (None, _) if the receiver took it, else (why, worth another try)."""
        request = urllib.request.Request(
            self._url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "camera-server",
                     **self._auth})
        try:
            with _opener.open(request, timeout=self.timeout) as response:
                response.read(65536)  # the answer does not matter
            return None, False
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code} {exc.reason}"
            if 300 <= exc.code < 400:
                why += " (redirects are not followed: give the URL it redirects to)"
            return why, exc.code >= 500 or exc.code in RETRIED
        except urllib.error.URLError as exc:  # no connection: refused, no such host, TLS
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                return f"no answer within {self.timeout:g} s", True
            return (reason.strerror or str(reason)) if isinstance(reason, OSError) \
                else str(reason), True
        except TimeoutError:
            return f"no answer within {self.timeout:g} s", True
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}", True


def for_cameras(cameras: Mapping, bus: EventBus) -> dict[str, Webhook]:
    """A started Webhook for each camera whose settings name a `motion_webhook`."""
    hooks = {}
    for name, camera in cameras.items():
        url = getattr(camera.settings, "motion_webhook", None)
        if url:
            hooks[name] = Webhook(name, url, bus).start()
    return hooks
