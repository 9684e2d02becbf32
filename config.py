"""Settings: every environment variable the server reads, validated in one place.

`load()` returns a frozen `Settings` or raises `ConfigError` whose message is one line
naming the variable and what it accepts. Entry points (app.py, gunicorn.conf.py) turn
that into a one-line message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(ValueError):
    """A setting has a value the server cannot use."""


@dataclass(frozen=True)
class Settings:
    camera: str = ""  # driver module camera_<name>; "" is the emulated camera.py
    host: str = "0.0.0.0"
    port: int = 5000
    fps: float | None = None  # None: the driver's own default
    resolution: tuple[int, int] | None = None
    jpeg_quality: int = 80
    rotation: int = 0
    hflip: bool = False
    vflip: bool = False
    source: str = ""  # the driver's source (Pi: camera number); "" is the driver's default
    opencv_source: str = "0"
    idle_timeout: float = 10.0
    stall_timeout: float = 5.0
    send_timeout: float = 30.0
    max_clients: int | None = None
    auth_username: str | None = None
    auth_password: str | None = None
    cors_allow_origin: str | None = None
    log_level: str = "INFO"
    redis_url: str = "redis://localhost:6379/0"
    camera_channel: str = "camera"

    @property
    def driver_module(self) -> str:
        return f"camera_{self.camera}" if self.camera else "camera"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _number(env: Mapping[str, str], name: str, default, *, kind=float, minimum=None,
            maximum=None, above=None):
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    bounds = []
    if above is not None:
        bounds.append(f"> {above:g}")
    if minimum is not None:
        bounds.append(f">= {minimum:g}")
    if maximum is not None:
        bounds.append(f"<= {maximum:g}")
    what = ("an integer" if kind is int else "a number") + (
        " " + " and ".join(bounds) if bounds else "")
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected {what}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name}={raw!r}: expected {what}")
    if ((above is not None and value <= above) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)):
        raise ConfigError(f"{name}={raw!r}: expected {what}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={env[name]!r}: expected 1/0, true/false, yes/no or on/off")


def _resolution(env: Mapping[str, str]) -> tuple[int, int] | None:
    raw = env.get("CAMERA_RESOLUTION", "").strip()
    if not raw:
        return None
    match = re.fullmatch(r"(\d{1,5})\s*[xX]\s*(\d{1,5})", raw)
    if not match or int(match[1]) < 16 or int(match[2]) < 16:
        raise ConfigError(f"CAMERA_RESOLUTION={raw!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
    return int(match[1]), int(match[2])


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings from `env` (default: the process environment)."""
    env = os.environ if env is None else env

    camera = env.get("CAMERA", "").strip()
    if camera == "emulated":
        camera = ""
    if camera and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", camera):
        raise ConfigError(f"CAMERA={camera!r}: expected a driver name such as opencv or pi "
                          "(module camera_<name>)")

    rotation = _number(env, "CAMERA_ROTATION", 0, kind=int)
    if rotation not in (0, 90, 180, 270):
        raise ConfigError(f"CAMERA_ROTATION={rotation}: expected 0, 90, 180 or 270")

    username = env.get("BASIC_AUTH_USERNAME") or None
    password = env.get("BASIC_AUTH_PASSWORD") or None
    if (username is None) != (password is None):
        missing = "BASIC_AUTH_PASSWORD" if password is None else "BASIC_AUTH_USERNAME"
        raise ConfigError(f"{missing} is not set: set both BASIC_AUTH_USERNAME and "
                          "BASIC_AUTH_PASSWORD, or neither")
    if username is not None and ":" in username:
        raise ConfigError("BASIC_AUTH_USERNAME must not contain ':' (HTTP Basic auth "
                          "splits on the first one)")

    level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"LOG_LEVEL={level!r}: expected DEBUG, INFO, WARNING or ERROR")

    redis_url = env.get("REDIS_URL", "").strip() or Settings.redis_url
    if not re.fullmatch(r"(redis|rediss|unix)://\S*", redis_url):
        raise ConfigError(f"REDIS_URL={redis_url!r}: expected redis://[:password@]host[:port][/db],"
                          " rediss://... or unix:///path")
    channel = env.get("CAMERA_CHANNEL", "").strip() or Settings.camera_channel

    return Settings(
        camera=camera,
        host=env.get("HOST", "").strip() or Settings.host,
        port=_number(env, "PORT", Settings.port, kind=int, minimum=0, maximum=65535),
        fps=_number(env, "CAMERA_FPS", None, above=0, maximum=1000),
        resolution=_resolution(env),
        jpeg_quality=_number(env, "JPEG_QUALITY", 80, kind=int, minimum=1, maximum=100),
        rotation=rotation,
        hflip=_flag(env, "CAMERA_HFLIP"),
        vflip=_flag(env, "CAMERA_VFLIP"),
        source=env.get("CAMERA_SOURCE", "").strip(),
        opencv_source=env.get("OPENCV_CAMERA_SOURCE", "").strip() or "0",
        idle_timeout=_number(env, "CAMERA_IDLE_TIMEOUT", 10.0, minimum=0),
        stall_timeout=_number(env, "CAMERA_STALL_TIMEOUT", 5.0, above=0),
        send_timeout=_number(env, "STREAM_SEND_TIMEOUT", 30.0, above=0),
        max_clients=_number(env, "MAX_CLIENTS", None, kind=int, minimum=1),
        auth_username=username,
        auth_password=password,
        cors_allow_origin=env.get("CORS_ALLOW_ORIGIN", "").strip() or None,
        log_level=level,
        redis_url=redis_url,
        camera_channel=channel,
    )
