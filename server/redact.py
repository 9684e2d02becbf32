"""Redaction: no password or token leaves the process in a log line or error message.

`redact(text)` masks the password in every URL's userinfo (`rtsp://user:***@host/`),
the values of password-style query parameters (`?token=***`) and every literal secret
registered with `add_secret` (the Basic-auth password, a Redis password: libraries
sometimes put them bare into their error messages). `display_url(url)` is a URL as a
message may show it: build messages from it, not from the URL.

Every text that leaves the process passes here: log lines (the filter below), response
bodies (access.py's after-request handler) and start-up errors (server.refuse).

`install_log_redaction(logger_or_handler, ...)` puts `RedactingFilter` on log handlers.
Filters on a handler see the records of every logger that propagates to it; filters on
a logger see only that logger's own records, so the filter goes on handlers.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote, urlsplit, urlunsplit

log = logging.getLogger("redact")

MASK = "***"
MIN_SECRET_LENGTH = 4  # masking "ab" everywhere would wreck every log line

# scheme://user:PASSWORD@ with the authority ending at / ? # or whitespace. The password
# is greedy up to the last @ of the authority (as URL parsers read it), so an unencoded
# @ in it is masked too. The scheme starts at a boundary and is bounded, so a long run
# of letters (base64 in a message) costs linear, not quadratic, time.
_URL_PASSWORD = re.compile(r"(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,30}://[^:/?#\s]*:)[^/?#\s]*@",
                           re.IGNORECASE)

# name=VALUE where the name is or ends in a password-style word (token, access_token,
# x-api-key, loginpas as IP cameras' CGI URLs spell it, ...), or is exactly `p` or `pw`,
# the value quoted or not. Over-masking a harmless "monkey=1" is the price of never
# missing one. Found from each "=" (str.find), looking back at most a word's length:
# linear, and 6x faster on a page than one regex trying every word at every letter
# (60 us instead of 290 us for the 2.8 KB viewer page).
_SECRET_WORDS = ("password", "passwd", "passphrase", "pass", "pas", "pwd", "token", "secret",
                 "key", "auth", "credential", "credentials")
_SECRET_WHOLE_NAMES = ("pw", "p")
_LONGEST_WORD = max(map(len, _SECRET_WORDS))
_NAME_CHAR = re.compile(r"[\w.-]")
_VALUE = re.compile(r"\"[^\"\n]*\"|'[^'\n]*'|['\"]?[^&\s#;'\"]+")


def _is_secret_name(text: str, equals: int) -> bool:
    """Whether the parameter name that ends at text[equals] ("=") is a password-style one."""
    tail = text[max(0, equals - _LONGEST_WORD):equals].lower()
    if tail.endswith(_SECRET_WORDS):
        return True
    for whole in _SECRET_WHOLE_NAMES:
        if tail.endswith(whole):  # p=, not step= or map=
            before = equals - len(whole) - 1
            return before < 0 or _NAME_CHAR.match(text, before) is None
    return False


def _mask_params(text: str) -> str:
    parts, copied, position = [], 0, 0
    while (equals := text.find("=", position)) >= 0:
        position = equals + 1
        if not _is_secret_name(text, equals):
            continue
        value = _VALUE.match(text, position)
        if value is None:
            continue
        raw = value.group()
        opening = raw[0] if raw[0] in "'\"" else ""  # keep the quotes, mask inside
        closing = opening if len(raw) > 1 and raw.endswith(opening) else ""
        parts += [text[copied:position], opening, MASK, closing]
        copied = position = value.end()
    return "".join(parts) + text[copied:] if parts else text


_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another goes whole


def add_secret(value: str | None) -> None:
    """Mask `value` (and its URL-encoded form) wherever it appears from now on."""
    global _secrets
    if not value:
        return
    if len(value) < MIN_SECRET_LENGTH:
        log.warning("a secret shorter than %d characters is not masked in logs; "
                    "use a longer password", MIN_SECRET_LENGTH)
        return
    with _lock:
        forms = set(_secrets) | {value, quote(value, safe="")}
        _secrets = tuple(sorted(forms, key=len, reverse=True))  # one atomic swap


def redact(text: str) -> str:
    """`text` with URL passwords, secret query parameters and registered secrets masked."""
    for secret in _secrets:  # literals first: a pattern could split a secret and miss half
        if secret in text:
            text = text.replace(secret, MASK)
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1" + MASK + "@", text)
    if "=" in text:
        text = _mask_params(text)
    return text


def display_url(url: str) -> str:
    """`url` as it may be shown: its password `***`, whatever its user name (none, as in
    `redis://:password@host`, included), and its secret query parameters masked. Build
    messages from this, not from the URL itself."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a port that is not a number: nothing to parse, mask what we can
        return redact(url)
    if password is not None:
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        url = urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
    return redact(url)


class RedactingFilter(logging.Filter):
    """Masks a record's final message, traceback and stack in place, so every handler
    after this one (and every formatter) sees only the masked text."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not carry its arguments past us
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            # Formatters use exc_text when it is set, so the raw traceback never prints.
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_filter = RedactingFilter()


def install_log_redaction(*targets: logging.Logger | logging.Handler) -> None:
    """Put the redacting filter on each handler given and on every handler of each
    logger given (e.g. the root logger and "gunicorn.error"). Handlers added to those
    loggers later are not covered: call this after logging is configured."""
    for target in targets:
        handlers = target.handlers if isinstance(target, logging.Logger) else [target]
        if target is logging.getLogger() and logging.lastResort is not None:
            handlers = [*handlers, logging.lastResort]  # used while root has no handler
        for handler in handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(_filter)
