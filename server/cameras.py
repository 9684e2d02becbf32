"""The server's cameras: each built by its driver module from its settings, by name.

A driver is the module `camera_<driver>` (the emulated camera is `camera.py`) with a
`Camera` class subclassing BaseCamera. Classic drivers take no constructor argument;
they get their camera's settings all the same.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import inspect
import logging
import pkgutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import base_camera
from base_camera import BaseCamera
from events import EventBus, webhook
from motion import Watches
from recording import Recorders
from stream import Variants

from . import config

HERE = Path(__file__).resolve().parents[1]  # the project folder
log = logging.getLogger(__name__)


def _on_path() -> None:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


def available_drivers() -> list[str]:
    _on_path()
    names = {m.name[len("camera_"):] for m in pkgutil.iter_modules()
             if m.name.startswith("camera_")}
    return ["emulated", *sorted(names)]


def _no_driver(settings: config.CameraSettings) -> config.ConfigError:
    return config.ConfigError(
        f"{config.shown(settings.where('driver'), settings.driver)}: no driver module "
        f"{settings.driver_module}.py on the import path; drivers found: "
        f"{', '.join(available_drivers())}")


def check_drivers(settings: config.Settings) -> None:
    """Every camera's driver module exists (without importing it: a gunicorn master must
    not import drivers before its gevent workers patch the stdlib)."""
    _on_path()
    for camera in settings.cameras:
        if importlib.util.find_spec(camera.driver_module) is None:
            raise _no_driver(camera)


def build(settings: config.CameraSettings) -> BaseCamera:
    """Import the camera's driver module and build its Camera."""
    _on_path()
    name = settings.driver_module
    named = config.shown(settings.where("driver"), settings.driver)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise config.ConfigError(
                f"{named}: {name}.py needs the module {exc.name!r}, which is not installed"
            ) from None
        raise _no_driver(settings) from None
    cls = getattr(module, "Camera", None)
    if not (isinstance(cls, type) and issubclass(cls, BaseCamera)):
        raise config.ConfigError(f"{named}: {module.__file__} has no Camera class subclassing "
                                 "BaseCamera")
    ignored = base_camera.ignored_settings(settings, cls.supports)
    if ignored:  # else a setting seems to do nothing, and nothing says why
        log.warning("camera %s: driver %s ignores %s", settings.name,
                    settings.driver or "emulated", ", ".join(ignored))
    token = base_camera.building.set(settings)
    try:
        # Classic drivers define __init__(self): BaseCamera finds their settings.
        takes_settings = len(inspect.signature(cls).parameters) > 0
        return cls(settings) if takes_settings else cls()
    finally:
        base_camera.building.reset(token)


class Cameras(Mapping[str, BaseCamera]):
    """The cameras by name, in the order the user listed them, with their size variants
    and recorders: everything a camera's frames feed, started and stopped in one place.

    Build it in the thread that serves requests (under gevent, the event loop's): the
    frame buffers made here wake their viewers through that thread's hub.
    """

    def __init__(self, cameras: list[BaseCamera], recordings_dir: str = "recordings",
                 records: bool = True) -> None:
        self._by_name = {camera.name: camera for camera in cameras}
        self.variants = {camera.name: Variants(camera) for camera in cameras}
        # CAMERA=redis web workers relay the publisher's events, under its ids.
        self._relay_events = None if records else getattr(cameras[0], "relay_events", None)
        self._relay = None
        self.events = EventBus(first_id=1 if self._relay_events else None)  # /events, hooks
        # `records`: this process owns the cameras (not a CAMERA=redis web worker).
        self.started = False  # start() ran: recording and detection are on
        self.recorders = Recorders(self, recordings_dir, active=records,
                                   on_file=lambda file: self.events.publish("recording", file))
        for name, camera in self._by_name.items():
            forward = getattr(camera, "forward", None)  # CAMERA=redis: the publisher records
            if forward is not None:
                self.recorders[name].forward = forward
        # Where the cameras are owned (detected, recorded), motion events are POSTed.
        self.webhooks = webhook.for_cameras(self, self.events) if records else {}
        self.motion = Watches(self, self.recorders, publish=self.events.publish,
                              active=records)
        for name, camera in self._by_name.items():
            self.motion[name].forward = getattr(camera, "forward", None)

    @classmethod
    def build(cls, settings: config.Settings) -> Cameras:
        return cls([build(camera) for camera in settings.cameras], settings.recordings_dir,
                   records=not settings.uses_redis)

    def command(self, camera: str, command: str, args: dict | None = None):
        """Apply a command a CAMERA=redis web worker forwarded (the owner's side of
        `forward`): recording's (Recorders.command), or motion's: "motion" (args:
        enabled) answers the status, "motion.jpg" the picture in base64 (or None)."""
        if command == "motion":
            watch = self.motion[camera]
            watch.set_enabled(bool((args or {}).get("enabled")))
            return watch.status()
        if command == "motion.jpg":
            jpeg = self.motion[camera].picture() if self.motion[camera].enabled else None
            return None if jpeg is None else base64.b64encode(jpeg).decode("ascii")
        return self.recorders.command(camera, command, args)

    def start(self) -> None:
        """Start what runs without viewers: continuous and event recording, timelapse,
        motion detection; on a CAMERA=redis web worker, the relay of the publisher's
        events."""
        self.started = True
        self.recorders.start()
        self.motion.start()
        if self._relay_events is not None:
            self._relay = self._relay_events(self, self.events)

    def __getitem__(self, name: str) -> BaseCamera:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def first(self) -> BaseCamera:
        return next(iter(self._by_name.values()))

    def at(self, index: int) -> BaseCamera | None:
        """The camera at `index` in file order (mjpg-streamer's input number)."""
        cameras = list(self._by_name.values())
        return cameras[index] if 0 <= index < len(cameras) else None

    @property
    def viewers(self) -> int:
        """Stream viewers of every camera, full size and size variants."""
        return sum(camera.viewers + self.variants[name].viewers
                   for name, camera in self._by_name.items())

    def status(self, name: str) -> dict:
        """A camera's figures for /status, its variants' with them."""
        status, variants = self._by_name[name].status(), self.variants[name]
        hook, motion = self.webhooks.get(name), self.motion[name]
        return {**status, "viewers": status["viewers"] + variants.viewers,
                "variants": variants.status(), **self.recorders[name].status(),
                # CAMERA=redis web workers: the publisher's, from the camera's status
                "motion": motion.status() if motion.active else status.get("motion"),
                "webhook": hook.status() if hook is not None else status.get("webhook")}

    def close(self, wait: float = 2.0) -> None:
        """Shut down: finish the open recordings, end every stream and stop every camera,
        all at once first, then waiting up to `wait` seconds for files and drivers."""
        self.motion.close(wait=0)  # no new event clips from here on
        self.recorders.close(wait=0)  # finish the files while their cameras still run
        for hook in self.webhooks.values():
            hook.close(wait=0)  # what it has queued gets one more try, in its own thread
        if self._relay is not None:
            self._relay.close(wait=0)
        self.events.close()  # the event feeds end
        for name, camera in self._by_name.items():
            self.variants[name].close()
            camera.close(wait=0)
        began = time.monotonic()
        deadline = began + wait
        for camera in self._by_name.values():
            camera.close(wait=max(0.01, deadline - time.monotonic()), since=began)
        self.recorders.close(wait=max(0.01, deadline - time.monotonic()))
        self.motion.close(wait=max(0.01, deadline - time.monotonic()))
        for hook in self.webhooks.values():
            hook.close(wait=max(0.01, deadline - time.monotonic()))
        if self._relay is not None:
            self._relay.close(wait=max(0.01, deadline - time.monotonic()))
