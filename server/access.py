"""Access: who may do what. Basic auth, a lockout after failed logins, CORS, a refusal of
state changes that pages on other sites send with the user's browser, of Host names this
server is not for (DNS rebinding), and of framing by other sites (clickjacking).

`install(app, ...)` registers one before-request and one after-request handler. Each
request passes, in order:

0. a Host (after a trusted proxy's X-Forwarded-Host) that is not one this server is for
   gets 400: an IP address, localhost, the machine's own names, names only the local
   network resolves (.local, .lan, .home.arpa, .internal), or one of `allowed_hosts`. A
   page on a rebinding name (attacker.example resolving to this box) is the same origin
   as this server to the browser: only the Host it sends gives it away;
1. a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered
   at once with 204: it carries no credentials and changes nothing;
2. a POST, PUT, PATCH or DELETE from a page on another origin not listed by name in
   `cors_origins` is refused with 403, and so is a login such a page sends itself (a
   fetch() with an Authorization header, possible with "*"): before any login is tried,
   so a hostile page can neither act with the user's cached login nor make a guess
   count against the user's address;
3. an address with `failures` failed logins within `window` seconds gets 429 with
   Retry-After, whatever it sends, until the oldest of them is `window` old;
4. without valid Basic credentials, 401. Each failure is counted (in the `limits`
   storage: memory, or Redis shared by several workers) and logged as one line for
   fail2ban: "failed login from 203.0.113.7 (user 'admin')".

Every response, errors included, then has any secret in its text masked (redact.py: the
last line of defence for a message that was built from a secret), pages get
`Content-Security-Policy: frame-ancestors 'self'` (plus `frame_ancestors`), so no other
site can frame the viewer and steer a click, and all get the CORS headers their Origin is
entitled to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import socket
import threading
import time
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request
from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from . import redact

log = logging.getLogger("access")

REALM = 'Basic realm="camera", charset="UTF-8"'
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
ALLOW_METHODS = "GET, HEAD, POST, DELETE, OPTIONS"
EXPOSE_HEADERS = "Retry-After, X-Timestamp"  # 429's wait and the snapshot's capture time
PREFLIGHT_MAX_AGE = "600"  # seconds a browser may reuse a preflight's answer
LOG_LINES_PER_WINDOW = 50  # lines of each kind per window from all addresses together
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")  # an RFC 9110 token
# Names only the local network resolves: mDNS (.local), and the names RFC 8375, ICANN
# (2024) and home routers (OpenWrt's .lan) keep out of public DNS, where a rebinding
# attacker would have to control them.
LOCAL_HOSTS = ("localhost", "*.localhost", "*.local", "*.lan", "*.home.arpa", "*.internal")
# A Host header's value: [IPv6] or a name or IPv4, then an optional port.
_HOST = re.compile(r"(?:\[(?P<ip6>[0-9a-z:.%]+)\]|(?P<name>[a-z0-9_.-]+))(?::\d{0,5})?")
TEXT_TYPES = {"text/plain", "text/html", "application/json"}  # bodies that are masked


def install(app: Flask, *, username: str | None, password: str | None,
            cors_origins: tuple[str, ...] = (), limiter_storage: str = "memory://",
            failures: int = 10, window: float = 60.0, allowed_hosts: tuple[str, ...] = (),
            frame_ancestors: tuple[str, ...] = ()) -> None:
    """Guard every route of `app`. Call it right after creating the app, so these
    handlers run before any other before-request handler (and its after-request
    handler last, on the final response).

    username None: no login (the cross-site refusal and CORS still apply). cors_origins:
    exact origins ("https://dash.example") or ("*",); empty sends no CORS headers.
    limiter_storage: a `limits` storage URI; "redis://host:6379/0" shares the lockout
    between workers and machines. window: whole seconds. The password, and the storage
    URI's, are registered with `redact.add_secret`. allowed_hosts: Host names served
    besides the default ones ("camera.example.org", "*.example.org"; "*": any Host).
    frame_ancestors: origins whose pages may frame this server's pages, besides its own.
    """
    guard = _Guard(username, password, cors_origins, limiter_storage, failures, window,
                   allowed_hosts, frame_ancestors)
    app.before_request(guard.before_request)
    app.after_request(guard.after_request)
    app.extensions["access"] = guard


def _origin(value: str) -> str:
    """An origin as browsers send it: lower case, no default port, no trailing slash."""
    value = value.strip().rstrip("/").lower()
    for default in ("http://", ":80"), ("https://", ":443"):
        if value.startswith(default[0]) and value.endswith(default[1]):
            value = value[:-len(default[1])]
    return value


def _parse_basic(header: str) -> tuple[bytes, bytes] | None:
    """(user, password) bytes of a Basic Authorization header; None if it is anything
    else. Bytes, not text: comparing bytes needs no decoding, which could fail."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII character in the token
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def _digest(value: bytes) -> bytes:
    # Compare digests, so the comparison's time does not tell the secret's length either.
    return hashlib.sha256(value).digest()


def _text(response: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(response, status, headers, mimetype="text/plain")


def machine_hosts() -> tuple[str, ...]:
    """The names this machine answers to without ALLOWED_HOSTS: LOCAL_HOSTS and its own
    host names (`raspberrypi`, and its full name if DNS or /etc/hosts gives one)."""
    names = [socket.gethostname(), socket.getfqdn()]  # from /etc/hosts: 17 us here
    return LOCAL_HOSTS + tuple(n.lower().rstrip(".") for n in names if n)


class HostRule:
    """Which Host header values a server answers to: IP literals always (a rebinding
    name is never one), and names matching `patterns`: "name", "*.domain" (the names
    under domain) or "*" (any Host at all).

    Not werkzeug's `host_is_trusted`: it compares names case-sensitively, cuts
    `[::1]:5000` at its first colon and refuses `_`, which Docker's container names have.
    """

    def __init__(self, patterns: tuple[str, ...]) -> None:
        patterns = tuple(p.strip().lower().rstrip(".") for p in patterns if p.strip())
        self.any = "*" in patterns
        self.names = frozenset(p for p in patterns if not p.startswith("*"))
        self.suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))  # ".domain"

    def allows(self, host: str) -> bool:
        """True when the Host header value `host` ("name:port", "[v6]:port", ...) is one
        this server answers to."""
        if self.any:
            return True
        match = _HOST.fullmatch(host.lower())
        if match is None:
            return False
        if match["ip6"] is not None:
            return _is_ip(match["ip6"], version=6)
        name = match["name"].removesuffix(".")  # "localhost." is localhost
        if name.startswith(".") or ".." in name:  # an empty label: no host's name
            return False
        return _is_ip(name, version=4) or name in self.names or name.endswith(self.suffixes)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


class _Guard:
    def __init__(self, username: str | None, password: str | None,
                 cors_origins: tuple[str, ...], limiter_storage: str, failures: int,
                 window: float, allowed_hosts: tuple[str, ...] = (),
                 frame_ancestors: tuple[str, ...] = ()) -> None:
        if username is not None and password is None:
            raise ValueError("a password is required with a username")
        if failures < 1:
            raise ValueError(f"failures must be at least 1, not {failures}")
        if window < 1 or window != int(window):
            raise ValueError(f"window must be a whole number of seconds >= 1, not {window}")
        self.window = int(window)
        self.username = username
        self._user = _digest(username.encode()) if username is not None else b""
        self._password = _digest(password.encode()) if password is not None else b""
        redact.add_secret(password)
        redact.add_secret(urlsplit(limiter_storage).password)

        origins = {_origin(o) for o in cors_origins if o.strip()}
        self.any_origin = "*" in origins
        self.origins = origins - {"*"}  # only origins listed by name may change state
        self.hosts = HostRule(("*",) if "*" in allowed_hosts
                              else machine_hosts() + tuple(allowed_hosts))
        self.frame_policy = " ".join(("frame-ancestors 'self'", *frame_ancestors))

        # The log budget is per process: each process writes its own log. (Its memory
        # storage runs a 10 ms expiry timer thread at creation and after each hit.)
        self.lines = FixedWindowRateLimiter(storage_from_string("memory://"))
        self.lines_limit = RateLimitItemPerSecond(LOG_LINES_PER_WINDOW, self.window, "log")
        self.storage_error_limit = RateLimitItemPerSecond(1, self.window, "log-storage")
        self.unlogged: dict[str, int] = {}  # lines left out, by kind
        self.unlogged_lock = threading.Lock()

        if username is None:
            return  # nothing to count: the limiters (and their storage's threads) are not made
        options = {}
        if urlsplit(limiter_storage).scheme in ("redis", "rediss", "redis+unix"):
            # A Redis that hangs must not hang every request for long.
            options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
        # Moving window: an address gets `failures` attempts in any `window` seconds.
        self.failed = MovingWindowRateLimiter(
            storage_from_string(limiter_storage, wrap_exceptions=True, **options))
        self.failed_limit = RateLimitItemPerSecond(failures, self.window, "camera-login")

    # -- the request's way in -----------------------------------------------------------

    def before_request(self) -> Response | None:
        refused = self._refused_host()
        if refused is not None:
            return refused
        if self._preflight():
            return _text("", 204)
        if request.method in UNSAFE_METHODS and self._foreign_page():
            return _text("403 Forbidden: pages on other sites may not change anything "
                         "here\n", 403)
        # A page's own login attempt (fetch() with an Authorization header) carries
        # Origin; <img> embeds, which may carry the user's cached login, do not.
        if (self.username is not None and "Authorization" in request.headers
                and "Origin" in request.headers and self._foreign_page()):
            return _text("403 Forbidden: pages on other sites may not log in here\n", 403)
        if self.username is None:
            return None
        address = request.remote_addr or "unknown"
        key = self._key(address)
        locked_for = self._locked_for(key)
        if locked_for:
            return _text(f"429 Too Many Requests: too many failed logins from this address; "
                         f"try again in {locked_for} s\n", 429,
                         {"Retry-After": str(locked_for)})
        header = request.headers.get("Authorization")
        if header is None:
            # A browser's first request, before it shows the login dialog: no failure.
            return self._unauthorized()
        credentials = _parse_basic(header)
        user, password = credentials or (b"", b"")
        # Compare both, always, in constant time: no early exit tells which was wrong.
        ok_user = hmac.compare_digest(_digest(user), self._user)
        ok_password = hmac.compare_digest(_digest(password), self._password)
        if ok_user and ok_password and credentials is not None:
            return None
        self._failure(address, key, user if credentials else None)
        return self._unauthorized()

    def _refused_host(self) -> Response | None:
        """400 for a Host this server is not for, naming it and the setting."""
        # The header as sent (ProxyFix has put a trusted proxy's X-Forwarded-Host there);
        # none (HTTP/1.0) falls back to the server's own address: nothing to refuse.
        host = request.environ.get("HTTP_HOST")
        if host is None or self.hosts.allows(host):
            return None
        name = host.strip()
        match = _HOST.fullmatch(name.lower())
        if match is not None and match["name"] is not None:
            name = match["name"]  # as ALLOWED_HOSTS takes it: without the port
        shown = repr(name[:100]) + ("..." if len(name) > 100 else "")
        self._log("refused hosts", "refused Host %s from %s: not in ALLOWED_HOSTS", shown,
                  _address_for_log(request.remote_addr or "unknown"))
        return _text(f"400 Bad Request: Host {shown} is not one this server answers to; add "
                     "it to ALLOWED_HOSTS\n", 400)

    def _preflight(self) -> bool:
        return (request.method == "OPTIONS" and "Origin" in request.headers
                and "Access-Control-Request-Method" in request.headers)

    def _foreign_page(self) -> bool:
        """True when a browser sent this request from a page on an origin that is neither
        this server's nor listed by name in cors_origins. Clients that are not browsers
        (curl, Home Assistant, scripts) send neither header: not foreign."""
        site = request.headers.get("Sec-Fetch-Site")
        if site in ("same-origin", "none"):
            # The browser's own verdict, which pages cannot forge; right also behind a
            # TLS proxy, where this server may not know its public scheme and host.
            return False
        origin = request.headers.get("Origin")
        if origin is not None:
            origin = _origin(origin)
            return origin not in self.origins and origin != _origin(request.host_url)
        return site in ("cross-site", "same-site")

    def _key(self, address: str) -> str:
        """The lockout's key: the address, or for IPv6 its /64, which one host owns."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        if ip.version == 6 and ip.ipv4_mapped is None:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)

    def _locked_for(self, key: str) -> int:
        """Whole seconds until `key` may try again; 0 when it may now."""
        try:
            reset, remaining = self.failed.get_window_stats(self.failed_limit, key)
        except StorageError as exc:
            self._storage_error(exc)
            return 0
        if remaining > 0:
            return 0
        return max(1, math.ceil(reset - time.time()))

    def _failure(self, address: str, key: str, user: bytes | None) -> None:
        try:
            counted = self.failed.hit(self.failed_limit, key)
        except StorageError as exc:
            self._storage_error(exc)
            counted = False
        # Not counted: a concurrent request locked the address first and said so.
        locked_for = self._locked_for(key) if counted else 0
        shown = _address_for_log(address)
        if user is None:
            self._log("failed logins", "failed login from %s (bad Authorization header)",
                      shown)
        else:
            name = user.decode("utf-8", "backslashreplace")
            # repr: quotes and escapes, so a name cannot forge or break log lines.
            self._log("failed logins", "failed login from %s (user %s)", shown,
                      repr(name[:64]) + ("..." if len(name) > 64 else ""))
        if locked_for:
            self._log("failed logins", "too many failed logins from %s: locked out for %d s",
                      shown, locked_for)

    def _storage_error(self, exc: StorageError) -> None:
        # Fail open: logins are still checked, only the lockout is missing meanwhile.
        # One line per window, however many requests meet the error.
        if self.lines.hit(self.storage_error_limit, "storage"):
            log.warning("login lockout unavailable, storage error: %s",
                        redact.redact(str(exc.storage_error)))

    def _log(self, kind: str, message: str, *args: object) -> None:
        """One warning, within the budget of LOG_LINES_PER_WINDOW lines of its `kind`
        ("failed logins") per window, so a flood cannot fill the disk; what was left out
        is counted and said."""
        if not self.lines.hit(self.lines_limit, kind):
            with self.unlogged_lock:
                self.unlogged[kind] = self.unlogged.get(kind, 0) + 1
            return
        with self.unlogged_lock:
            unlogged = self.unlogged.pop(kind, 0)
        if unlogged:
            log.warning("%d more %s not logged in the last %d s", unlogged, kind, self.window)
        log.warning(message, *args)

    @staticmethod
    def _unauthorized() -> Response:
        return _text("401 Unauthorized: log in to see this camera\n", 401,
                     {"WWW-Authenticate": REALM})

    # -- the response's way out ---------------------------------------------------------

    def after_request(self, response: Response) -> Response:
        """Every response, errors included: secrets masked, the framing policy on pages,
        and CORS headers, so a dashboard on an allowed origin can read a 401, 429 or 503
        too."""
        _redact_body(response)
        if response.mimetype == "text/html":
            # Pages only: streams and snapshots stay embeddable in any page's <img>.
            response.headers.setdefault("Content-Security-Policy", self.frame_policy)
        return self._cors(response)

    def _cors(self, response: Response) -> Response:
        if self.any_origin:
            allowed = "*"  # no credentials with "*": browsers refuse that pair anyway
        elif self.origins:
            response.vary.add("Origin")  # caches: the answer depends on Origin
            origin = request.headers.get("Origin")
            allowed = origin if origin is not None and _origin(origin) in self.origins else None
        else:
            return response
        if allowed is None:
            return response
        headers = response.headers
        headers["Access-Control-Allow-Origin"] = allowed
        if allowed != "*":
            headers["Access-Control-Allow-Credentials"] = "true"
        if self._preflight():
            headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            # Authorization, and whatever else the page asked for that is a header name.
            names = {"authorization": "Authorization"}
            for name in request.headers.get("Access-Control-Request-Headers", "").split(","):
                if _HEADER_NAME.fullmatch(name := name.strip()):
                    names.setdefault(name.lower(), name)
            headers["Access-Control-Allow-Headers"] = ", ".join(names.values())
            headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        else:
            headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return response


def _redact_body(response: Response) -> None:
    """Mask secrets in a response's text (pages, plain-text errors, JSON), whatever built
    it. Streams and files pass untouched. Costs 1 us for /status, 60 us for the viewer
    page (a fifth of serving it)."""
    if (response.direct_passthrough or response.is_streamed
            or response.mimetype not in TEXT_TYPES):
        return
    text = response.get_data(as_text=True)
    masked = redact.redact(text)
    if masked == text:
        return
    if response.mimetype == "application/json":
        try:  # mask inside each string, so the JSON stays JSON whatever the secret was
            masked = current_app.json.dumps(_redact_json(json.loads(text))) + "\n"
        except ValueError:
            pass
    response.set_data(masked)


def _redact_json(value: object) -> object:
    if isinstance(value, str):
        return redact.redact(value)
    if isinstance(value, list):
        return [_redact_json(v) for v in value]
    if isinstance(value, dict):
        return {redact.redact(k): _redact_json(v) for k, v in value.items()}
    return value


def _address_for_log(address: str) -> str:
    """The address as is when it is one (fail2ban's <HOST>), else quoted and escaped."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return repr(address)
