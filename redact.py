"""Redaction: no password or token leaves the process in a log line or error message.

`redact(text)` masks the password in every URL's userinfo (`rtsp://user:***@host/`),
the values of password-style query parameters (`?token=***`) and every literal secret
registered with `add_secret` (the Basic-auth password, a Redis password: libraries
sometimes put them bare into their error messages).

`install_log_redaction(logger_or_handler, ...)` puts `RedactingFilter` on log handlers.
Filters on a handler see the records of every logger that propagates to it; filters on
a logger see only that logger's own records, so the filter goes on handlers.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote

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
# x-api-key, ...), the value quoted or not. Over-masking a harmless "monkey=1" is the
# price of never missing one.
_SECRET_PARAM = re.compile(
    r"(?<![\w.-])([\w.-]*?(?:passw(?:or)?d|pass|pwd|token|secret|key|api_key|apikey|auth)=)"
    r"(\"[^\"\n]*\"|'[^'\n]*'|['\"]?[^&\s#;'\"]+)",
    re.IGNORECASE)


def _mask_param(match: re.Match) -> str:
    name, value = match.groups()
    opening = value[0] if value[0] in "'\"" else ""  # keep the quotes, mask inside
    closing = opening if len(value) > 1 and value.endswith(opening) else ""
    return f"{name}{opening}{MASK}{closing}"


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
        text = _SECRET_PARAM.sub(_mask_param, text)
    return text


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
