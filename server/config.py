"""Settings: every environment variable and cameras-file key, validated in one place.

`load()` returns a frozen `Settings` (server-wide) holding one `CameraSettings` per
camera, or raises `ConfigError` whose message is one line naming the variable (or the
file, camera and key) and what it accepts. Entry points turn that into a one-line
message and a non-zero exit, never a traceback.

Without CAMERAS_FILE the server has one camera, set by environment variables. With it,
each `[cameras.<name>]` table of the TOML file is a camera, in file order; a key a camera
leaves out takes the environment's value, then the driver's default.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .redact import display_url


class ConfigError(ValueError):
    """A setting has a value the server cannot use."""


RECORD_MODES = ("off", "continuous", "events")

# motion_mask: rectangles (x, y, w, h) in percent of the picture, or the absolute path
# of an image whose black pixels are ignored (read again by motion/mask.py), or None.
MotionMask = tuple[tuple[float, float, float, float], ...] | str | None


@dataclass(frozen=True)
class CameraSettings:
    """One camera: its driver, the driver's settings, recording and variants."""

    name: str = "camera"
    driver: str = ""  # module camera_<driver>; "" is the emulated camera.py
    source: str = ""  # the driver's source: OpenCV source, Pi camera number; "": default
    resolution: tuple[int, int] | None = None
    fps: float | None = None  # None: the driver's own default
    jpeg_quality: int = 80
    rotation: int = 0
    hflip: bool = False
    vflip: bool = False
    idle_timeout: float = 10.0
    stall_timeout: float = 5.0
    record: str = "off"  # off, continuous or events
    segment: float = 300.0  # seconds per continuous file; the longest manual clip
    pre_event: float = 5.0
    post_event: float = 10.0
    timelapse: float = 0.0  # seconds between stills; 0: off
    keep_days: float | None = None
    keep_gb: float | None = None
    max_variants: int = 4  # size variants made at once
    motion: bool = False  # detect motion on this camera (motion/)
    motion_threshold: float = 1.0  # percent of the picture changed: a motion frame
    motion_noise: int | None = None  # per-pixel change that counts; None: auto
    motion_frames: int = 2  # consecutive motion frames that start an event
    motion_gap: float = 10.0  # seconds without motion that end an event
    motion_fps: float = 5.0  # frames analysed per second at most
    motion_lightswitch: float = 60.0  # percent changed at once: a light change
    motion_mask: MotionMask = None  # areas to ignore: rectangles, or an image's path
    motion_webhook: str | None = None  # URL POSTed on each event start and end
    redis_url: str = "redis://localhost:6379/0"
    channel: str = "camera"  # the Redis channel of this camera's frames
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    origin: str = ""  # where it was configured: "" for the environment, else file and table

    @property
    def driver_module(self) -> str:
        return f"camera_{self.driver}" if self.driver else "camera"

    @property
    def opencv_source(self) -> str:
        return self.source or "0"

    # Names drivers written for the one-camera settings used.
    camera = property(lambda self: self.driver)
    camera_channel = property(lambda self: self.channel)

    def where(self, key: str) -> str:
        """How a user names `key` of this camera in a message."""
        return f"{self.origin} {key}" if self.origin else _ENV_NAMES.get(key, key)


@dataclass(frozen=True)
class Settings:
    """The server: where it listens, who may use it, and its cameras."""

    cameras: tuple[CameraSettings, ...] = (CameraSettings(),)
    camera: str = ""  # CAMERA: the default driver; "redis" serves every camera from Redis
    host: str = "0.0.0.0"
    port: int = 5000
    send_timeout: float = 30.0
    max_clients: int | None = None
    auth_username: str | None = None
    auth_password: str | None = None
    cors_allow_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    redis_url: str = "redis://localhost:6379/0"
    camera_channel: str = "camera"
    cameras_file: str | None = None
    recordings_dir: str = "recordings"
    proxy_hops: int = 0  # reverse proxies in front whose X-Forwarded-* to trust
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides this machine's own
    frame_ancestors: tuple[str, ...] = ()  # origins that may frame the pages
    max_connections_per_client: int | None = 64  # None: no cap (connections.py)

    @property
    def uses_redis(self) -> bool:
        return self.camera == "redis"


# -- parsers: (label, raw) -> value; raw is a string (environment) or a TOML value ------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def shown(label: str, raw: Any) -> str:
    """`NAME='value'` for a variable, `file: [cameras.x] key = value` for a file's key."""
    if " " not in label:  # an environment variable
        return f"{label}={raw!r}"
    return f"{label} = " + ("true" if raw is True else "false" if raw is False else repr(raw))


def _fail(label: str, raw: Any, expected: str) -> ConfigError:
    return ConfigError(f"{shown(label, raw)}: expected {expected}")


def number(kind=float, *, above=None, minimum=None, maximum=None, optional=False):
    bounds = [f"> {above:g}"] if above is not None else []
    bounds += [f">= {minimum:g}"] if minimum is not None else []
    bounds += [f"<= {maximum:g}"] if maximum is not None else []
    expected = ("an integer" if kind is int else "a number") + (
        " " + " and ".join(bounds) if bounds else "")

    def parse(label: str, raw: Any):
        if isinstance(raw, str) and not raw.strip() and optional:
            return None
        try:
            if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
                raise ValueError
            value = kind(raw.strip()) if isinstance(raw, str) else raw
            if kind is int and value != int(value):
                raise ValueError
            value = kind(value)
        except (ValueError, OverflowError):
            raise _fail(label, raw, expected) from None
        if not math.isfinite(value) or (
                (above is not None and value <= above) or (minimum is not None and value < minimum)
                or (maximum is not None and value > maximum)):
            raise _fail(label, raw, expected)
        return value
    return parse


def flag(label: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _fail(label, raw, "1/0, true/false, yes/no or on/off")


def text(label: str, raw: Any) -> str:
    if not isinstance(raw, (str, int)) or isinstance(raw, bool):
        raise _fail(label, raw, "a string")
    return str(raw).strip()


def driver_name(label: str, raw: Any) -> str:
    name = text(label, raw)
    if name == "emulated":
        return ""
    if name and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise _fail(label, raw, "a driver name such as opencv or pi (module camera_<name>)")
    return name


def resolution(label: str, raw: Any) -> tuple[int, int] | None:
    value = text(label, raw)
    if not value:
        return None
    match = re.fullmatch(r"(\d{1,5})\s*[xX]\s*(\d{1,5})", value)
    if not match or int(match[1]) < 16 or int(match[2]) < 16:
        raise _fail(label, raw, "WIDTHxHEIGHT, e.g. 1280x720")
    return int(match[1]), int(match[2])


def rotation(label: str, raw: Any) -> int:
    value = number(int)(label, raw)
    if value not in (0, 90, 180, 270):
        raise _fail(label, raw, "0, 90, 180 or 270")
    return value


def record_mode(label: str, raw: Any) -> str:
    value = text(label, raw).lower() or "off"
    if value not in RECORD_MODES:
        raise _fail(label, raw, "off, continuous or events")
    return value


def motion_noise(label: str, raw: Any) -> int | None:
    """motion_noise: `auto` (None: the detector follows the scene's noise) or 1-255."""
    if isinstance(raw, str) and raw.strip().lower() in ("auto", ""):
        return None
    try:
        return number(int, minimum=1, maximum=255)(label, raw)
    except ConfigError:
        raise _fail(label, raw, "auto, or a whole number from 1 to 255 (the per-pixel "
                    "brightness change that counts)") from None


_RECTANGLE = re.compile(r"\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*")
_MASK_EXPECTED = ("rectangles x,y,w,h in percent of the picture, space-separated (e.g. "
                  "'0,0,100,15 70,60,30,40'), or a PNG or PGM file whose black pixels are "
                  "ignored")


def motion_mask(label: str, raw: Any) -> MotionMask:
    """motion_mask: rectangles `x,y,w,h` in percent (a TOML string or list of strings),
    or an image file, read here once so that a missing or unreadable one stops the
    server at start, not the detector later."""
    if isinstance(raw, list) and all(isinstance(r, str) for r in raw):
        value = " ".join(raw).strip()
    elif isinstance(raw, str):
        value = raw.strip()
    else:
        raise _fail(label, raw, _MASK_EXPECTED)
    if not value:
        return None
    words = value.split()
    if all("," in word for word in words):
        rectangles = []
        for word in words:
            match = _RECTANGLE.fullmatch(word)
            try:
                x, y, w, h = (float(n) for n in match.groups()) if match else (0, 0, 0, 0)
            except ValueError:
                x = y = w = h = 0.0
            if not (w > 0 and h > 0 and x + w <= 100 and y + h <= 100):
                raise ConfigError(f"{shown(label, raw)}: {word!r} is not a rectangle inside "
                                  f"the picture: expected {_MASK_EXPECTED}")
            rectangles.append((x, y, w, h))
        return tuple(rectangles)
    path = Path(value)
    try:
        data = path.read_bytes()
    except OSError as exc:
        why = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror
        raise ConfigError(f"{shown(label, raw)}: {why}; expected {_MASK_EXPECTED}") from None
    import cv2  # here: only a mask image needs it, and only at start
    import numpy

    image = cv2.imdecode(numpy.frombuffer(data, numpy.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ConfigError(f"{shown(label, raw)}: not a readable image; expected "
                          f"{_MASK_EXPECTED}")
    if not (image >= 128).any():
        raise ConfigError(f"{shown(label, raw)}: every pixel of the image is black, which "
                          "would ignore the whole picture; white pixels are watched")
    return str(path.resolve())


def webhook_url(label: str, raw: Any) -> str | None:
    """motion_webhook: an http:// or https:// URL (its password never shown)."""
    value = text(label, raw)
    if not value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in value
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{shown(label, display_url(value))}: expected an http:// or "
                          "https:// URL, e.g. http://homeassistant.local:8123/api/webhook/door")
    return value


# Per-camera keys: the cameras-file key, its environment variable, its parser.
CAMERA_KEYS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "driver": ("CAMERA", driver_name),
    "source": ("CAMERA_SOURCE", text),
    "resolution": ("CAMERA_RESOLUTION", resolution),
    "fps": ("CAMERA_FPS", number(above=0, maximum=1000, optional=True)),
    "jpeg_quality": ("JPEG_QUALITY", number(int, minimum=1, maximum=100)),
    "rotation": ("CAMERA_ROTATION", rotation),
    "hflip": ("CAMERA_HFLIP", flag),
    "vflip": ("CAMERA_VFLIP", flag),
    "idle_timeout": ("CAMERA_IDLE_TIMEOUT", number(minimum=0, maximum=86400)),
    "stall_timeout": ("CAMERA_STALL_TIMEOUT", number(above=0, maximum=86400)),
    "record": ("RECORD_MODE", record_mode),
    "segment": ("RECORD_SEGMENT", number(minimum=1, maximum=86400)),
    "pre_event": ("RECORD_PRE_EVENT", number(minimum=0, maximum=120)),
    "post_event": ("RECORD_POST_EVENT", number(minimum=0, maximum=3600)),
    "timelapse": ("RECORD_TIMELAPSE", number(minimum=0, maximum=86400)),
    "keep_days": ("RECORD_KEEP_DAYS", number(above=0, optional=True)),
    "keep_gb": ("RECORD_KEEP_GB", number(above=0, optional=True)),
    "max_variants": ("MAX_VARIANTS", number(int, minimum=1, maximum=16)),
    "motion": ("MOTION", flag),
    "motion_threshold": ("MOTION_THRESHOLD", number(above=0, maximum=100)),
    "motion_noise": ("MOTION_NOISE", motion_noise),
    "motion_frames": ("MOTION_FRAMES", number(int, minimum=1, maximum=100)),
    "motion_gap": ("MOTION_GAP", number(minimum=0, maximum=86400)),
    "motion_fps": ("MOTION_FPS", number(above=0, maximum=30)),
    "motion_lightswitch": ("MOTION_LIGHTSWITCH", number(above=0, maximum=100)),
    "motion_mask": ("MOTION_MASK", motion_mask),
    "motion_webhook": ("MOTION_WEBHOOK", webhook_url),
}
_ENV_NAMES = {key: env for key, (env, _) in CAMERA_KEYS.items()}


def _env_camera_values(env: Mapping[str, str]) -> dict[str, Any]:
    """The per-camera values the environment sets (the defaults of every camera)."""
    values = {}
    for key, (variable, parse) in CAMERA_KEYS.items():
        raw = env.get(variable, "")
        if raw.strip():
            values[key] = parse(variable, raw)
    if "source" not in values and env.get("OPENCV_CAMERA_SOURCE", "").strip():
        values["source"] = env["OPENCV_CAMERA_SOURCE"].strip()  # its older name
    return values


def _cameras_from_file(path: str, defaults: dict[str, Any]) -> tuple[CameraSettings, ...]:
    """Each `[cameras.<name>]` table of the TOML file at `path`, in file order."""
    label = f"CAMERAS_FILE={path!r}"
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    tables = data.get("cameras")
    extra = sorted(set(data) - {"cameras"})
    if extra:
        raise ConfigError(f"{path}: unknown top-level key {extra[0]!r}: expected only "
                          "[cameras.<name>] tables")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}: no cameras: expected at least one [cameras.<name>] table")
    cameras = []
    for name, table in tables.items():
        origin = f"{path}: [cameras.{name}]"
        if not NAME.fullmatch(name):
            raise ConfigError(f"{origin}: camera names are lowercase letters, digits, '-' and "
                              "'_' (at most 64)")
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: expected a table of settings")
        values, options = dict(defaults), {}
        for key, raw in table.items():
            if key in CAMERA_KEYS:
                values[key] = CAMERA_KEYS[key][1](f"{origin} {key}", raw)
            else:
                options[key] = raw  # for the driver (users' own drivers' settings)
        cameras.append(dict(values, name=name, options=MappingProxyType(options),
                            origin=origin))
    return tuple(CameraSettings(**c) for c in cameras)


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(raw.replace(",", " ").split())
    for origin in origins:
        if origin != "*" and not re.fullmatch(
                r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?", origin):
            raise ConfigError(f"CORS_ALLOW_ORIGIN={raw!r}: expected '*' or origins such as "
                              "https://dash.example.org (scheme://host[:port], space-separated)")
    if "*" in origins and len(origins) > 1:
        raise ConfigError(f"CORS_ALLOW_ORIGIN={raw!r}: '*' cannot be combined with origins")
    return origins


def _allowed_hosts(raw: str) -> tuple[str, ...]:
    """ALLOWED_HOSTS: host names (IDN ones in their ASCII form), `*.domain`, or `*`."""
    hosts = []
    for entry in raw.replace(",", " ").split():
        try:
            name = entry.lower().rstrip(".").encode("idna").decode("ascii")
        except UnicodeError:
            name = ""
        if entry != "*" and not re.fullmatch(
                r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*",
                name):
            raise ConfigError(f"ALLOWED_HOSTS={raw!r}: expected host names such as "
                              "camera.example.org or *.example.org (space- or comma-separated, "
                              "no scheme or port), or '*' for any")
        hosts.append(name if entry != "*" else "*")
    if "*" in hosts and len(hosts) > 1:
        raise ConfigError(f"ALLOWED_HOSTS={raw!r}: '*' cannot be combined with names")
    return tuple(hosts)


def _frame_ancestors(raw: str) -> tuple[str, ...]:
    """FRAME_ANCESTORS: origins (scheme://host[:port], `*.` allowed in the host), or `*`."""
    origins = tuple(raw.replace(",", " ").split())
    for origin in origins:
        if origin != "*" and not re.fullmatch(
                r"https?://(\[[0-9A-Fa-f:.]+\]|(\*\.)?[A-Za-z0-9.-]+)(:\d{1,5})?", origin):
            raise ConfigError(f"FRAME_ANCESTORS={raw!r}: expected origins such as "
                              "http://homeassistant.local:8123 (scheme://host[:port], "
                              "space-separated), or '*' for any page")
    return origins


def _connection_cap(raw: str) -> int | None:
    """MAX_CONNECTIONS_PER_CLIENT: a whole number >= 1; off (or 0): no cap."""
    value = raw.strip().lower()
    if not value:
        return Settings.max_connections_per_client
    if value in ("off", "0"):
        return None
    try:
        return number(int, minimum=1)("MAX_CONNECTIONS_PER_CLIENT", raw)
    except ConfigError:
        raise _fail("MAX_CONNECTIONS_PER_CLIENT", raw,
                    "a whole number of connections >= 1, or off (no cap)") from None


def _host(raw: str) -> str:
    host = raw.strip() or Settings.host
    expected = "an IP address of this machine (0.0.0.0: all) or its host name"
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host.strip("[]")
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", host) or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*)", host):
        raise _fail("HOST", raw, expected)
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        raise ConfigError(f"HOST={raw!r}: no such host name: expected {expected}") from None
    return host


def proxy_warning(settings: Settings) -> str | None:
    """What to warn of when PROXY_HOPS trusts X-Forwarded-For on an address that clients
    can reach without the proxy: each can send its own and pose as any address, so no
    login lockout ever holds it. None when there is nothing to say."""
    if not settings.proxy_hops or _is_loopback(settings.host):
        return None
    return (f"PROXY_HOPS={settings.proxy_hops} trusts X-Forwarded-For, but HOST={settings.host} "
            "lets clients reach the server without the proxy, and one that sends its own "
            "X-Forwarded-For is never locked out; with the proxy on this machine, set "
            "HOST=127.0.0.1")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:  # a name: loopback when every address it has is
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False
    return bool(addresses) and all(
        ipaddress.ip_address(a.partition("%")[0]).is_loopback for a in addresses)


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    username, password = _login(env)
    redis_url = _redis_url(env)
    channel = env.get("CAMERA_CHANNEL", "").strip() or Settings.camera_channel
    driver = _env_camera_values(env).get("driver", "")
    return Settings(
        cameras=_cameras(env, redis_url, channel),
        camera=driver,
        host=_host(env.get("HOST", "")),
        port=number(int, minimum=0, maximum=65535)("PORT", env.get("PORT", "").strip() or "5000"),
        send_timeout=number(above=0, maximum=3600)(
            "STREAM_SEND_TIMEOUT", env.get("STREAM_SEND_TIMEOUT", "").strip() or "30"),
        max_clients=number(int, minimum=1, optional=True)("MAX_CLIENTS",
                                                          env.get("MAX_CLIENTS", "")),
        auth_username=username,
        auth_password=password,
        cors_allow_origins=_origins(env.get("CORS_ALLOW_ORIGIN", "")),
        log_level=_log_level(env),
        redis_url=redis_url,
        camera_channel=channel,
        cameras_file=env.get("CAMERAS_FILE", "").strip() or None,
        recordings_dir=env.get("RECORDINGS_DIR", "").strip() or Settings.recordings_dir,
        proxy_hops=number(int, minimum=0, maximum=10)("PROXY_HOPS",
                                                      env.get("PROXY_HOPS", "").strip() or "0"),
        allowed_hosts=_allowed_hosts(env.get("ALLOWED_HOSTS", "")),
        frame_ancestors=_frame_ancestors(env.get("FRAME_ANCESTORS", "")),
        max_connections_per_client=_connection_cap(env.get("MAX_CONNECTIONS_PER_CLIENT", "")),
    )


def _login(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """BASIC_AUTH_USERNAME and BASIC_AUTH_PASSWORD: both or neither."""
    username = env.get("BASIC_AUTH_USERNAME") or None
    password = env.get("BASIC_AUTH_PASSWORD") or None
    if (username is None) != (password is None):
        missing = "BASIC_AUTH_PASSWORD" if password is None else "BASIC_AUTH_USERNAME"
        raise ConfigError(f"{missing} is not set: set both BASIC_AUTH_USERNAME and "
                          "BASIC_AUTH_PASSWORD, or neither")
    if username is not None and ":" in username:
        raise ConfigError("BASIC_AUTH_USERNAME must not contain ':' (HTTP Basic auth "
                          "splits on the first one)")
    return username, password


def _log_level(env: Mapping[str, str]) -> str:
    level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"LOG_LEVEL={level!r}: expected DEBUG, INFO, WARNING or ERROR")
    return level


def _redis_url(env: Mapping[str, str]) -> str:
    redis_url = env.get("REDIS_URL", "").strip() or Settings.redis_url
    try:
        urlsplit(redis_url).port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        redis_url = ""
    if not re.fullmatch(r"(redis|rediss|unix)://\S*", redis_url):
        shown = display_url(env.get("REDIS_URL", "").strip())  # never the password
        raise ConfigError(f"REDIS_URL={shown!r}: expected redis://[:password@]host[:port]"
                          "[/db], rediss://... or unix:///path")
    return redis_url


def _cameras(env: Mapping[str, str], redis_url: str,
             channel: str) -> tuple[CameraSettings, ...]:
    """The cameras of CAMERAS_FILE, or the one camera of the environment."""
    defaults = _env_camera_values(env)
    cameras_file = env.get("CAMERAS_FILE", "").strip() or None
    if cameras_file:
        cameras = _cameras_from_file(cameras_file, defaults)
        # Each camera's frames travel on their own channel.
        cameras = tuple(replace(c, channel=f"{channel}:{c.name}") for c in cameras)
    else:
        name = env.get("CAMERA_NAME", "").strip() or CameraSettings.name
        if not NAME.fullmatch(name):
            raise ConfigError(f"CAMERA_NAME={name!r}: expected lowercase letters, digits, "
                              "'-' and '_'")
        cameras = (CameraSettings(**defaults, name=name, channel=channel),)
    if defaults.get("driver", "") == "redis":  # web workers: every camera from the publisher
        cameras = tuple(replace(c, driver="redis") for c in cameras)
    for camera in cameras:
        _check_motion(camera)
    return tuple(replace(c, redis_url=redis_url) for c in cameras)


def _check_motion(camera: CameraSettings) -> None:
    """The motion settings that only make sense together."""
    if camera.motion_lightswitch <= camera.motion_threshold:
        raise ConfigError(
            f"{shown(camera.where('motion_lightswitch'), camera.motion_lightswitch)}: "
            f"expected more than motion_threshold ({camera.motion_threshold:g}): a frame "
            "with more changed than this is a light change, not motion")

