"""Secrets by value: one registry of the secret values this process has seen, and redaction.

Ground floor (imports nothing of geodelta). A secret is *registered where it enters* the
process (the LLM annotator reading its API key from the environment variable the config names,
the Planetary Computer signer receiving a SAS token or reading its subscription key) and
*redacted where strings leave* it (quarantine records, log records, the console, the report,
the manifest, the LLM cache). Registration is per process: a worker process that reads a
secret registers it itself, so nothing secret is ever shipped between processes.

* :func:`register_secret` remembers a value (and its URL-encoded and JSON-escaped forms);
  values shorter than :data:`MIN_LENGTH` are ignored (redacting a 3-character "key" would
  redact half of every message). Registering also installs :func:`install_log_redaction`.
* :func:`redact_values` replaces every occurrence of a registered value (overlapping ones
  included: the union of all occurrences becomes one ``<redacted>``).
* :func:`redact_shapes` is the second net, for secrets this process never saw: URL query
  strings, SAS/signature parameters, ``Authorization`` / ``api-key`` style headers, ``Bearer``
  tokens, ``sk-...`` keys and JWTs.
* :func:`redact` applies both; :class:`RedactingFilter` and :func:`install_log_redaction` apply
  it to log records.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus, unquote

__all__ = [
    "MIN_LENGTH",
    "REDACTED",
    "RedactingFilter",
    "install_log_redaction",
    "redact",
    "redact_shapes",
    "redact_values",
    "register_env_secret",
    "register_sas_token",
    "register_secret",
]

#: What a redacted secret reads as.
REDACTED = "<redacted>"
#: Shorter values are not registered: they would match ordinary text.
MIN_LENGTH = 8

#: Query parameters of a SAS token (or a signed URL) whose values are secret; the others
#: (version, start, expiry, permissions) are dates and letters that ordinary text also holds.
_SECRET_QUERY_KEYS = frozenset(
    {"sig", "signature", "token", "x-amz-signature", "x-amz-security-token", "x-goog-signature"}
)

_LOCK = threading.Lock()
_values: tuple[str, ...] = ()  # every registered form, longest first


def _forms(value: str) -> set[str]:
    """The forms a value takes in text: as is, URL-encoded, JSON-escaped, URL-decoded."""
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    decoded = unquote(value)
    if decoded != value:
        forms |= {decoded, json.dumps(decoded)[1:-1]}
    return {f for f in forms if len(f) >= MIN_LENGTH}


def register_secret(value: str | None) -> bool:
    """Redact ``value`` (and its encoded forms) from everything this process writes from now on.

    Returns:
        False (nothing registered) for None, and for values shorter than :data:`MIN_LENGTH`.
    """
    global _values
    if not value or len(value.strip()) < MIN_LENGTH:
        return False
    forms = _forms(value) | _forms(value.strip())
    with _LOCK:
        _values = tuple(sorted(set(_values) | forms, key=lambda v: (-len(v), v)))
    install_log_redaction()
    return True


def register_env_secret(name: str | None) -> str | None:
    """Register the value of environment variable ``name`` (if set); returns the value."""
    if not name:
        return None
    value = os.environ.get(name)
    register_secret(value)
    return value


def register_sas_token(token: str) -> None:
    """Register a SAS token (a query string): the whole of it, and its signature values."""
    register_secret(token)
    register_secret(token.lstrip("?"))
    for part in token.lstrip("?").split("&"):
        key, _, value = part.partition("=")
        if key.lower() in _SECRET_QUERY_KEYS:
            register_secret(value)


def registered() -> int:
    """How many forms of secrets are registered (for tests and diagnostics)."""
    return len(_values)


def _forget_all() -> None:
    """Forget every registered secret (tests only)."""
    global _values
    with _LOCK:
        _values = ()


def redact_values(text: str) -> str:
    """``text`` with every occurrence of a registered secret replaced by ``<redacted>``.

    Overlapping occurrences (of one secret, or of two that share characters) are merged: the
    whole covered span becomes one ``<redacted>``, so no piece of either secret is left.
    """
    values = _values
    if not values or not text:
        return text
    spans: list[tuple[int, int]] = []
    for value in values:
        start = text.find(value)
        while start != -1:
            spans.append((start, start + len(value)))
            start = text.find(value, start + 1)
    if not spans:
        return text
    spans.sort()
    out, pos, cur_start, cur_end = [], 0, spans[0][0], spans[0][1]
    for start, end in spans[1:]:
        if start <= cur_end:
            cur_end = max(cur_end, end)
            continue
        out += [text[pos:cur_start], REDACTED]
        pos, cur_start, cur_end = cur_end, start, end
    out += [text[pos:cur_start], REDACTED, text[cur_end:]]
    return "".join(out)


# --------------------------------------------------------------------------------------------
# the second net: secrets by shape

_URL_QUERY = re.compile(
    r"((?:https?|s3|gs|az|abfs)://[^\s'\"?#<>]+)\?(?!<redacted>)[^\s'\"<>]*", re.IGNORECASE
)
_SECRET_PARAMS = re.compile(
    r"\b(sig|se|st|sp|sv|sr|spr|skoid|sktid|skt|ske|sks|skv|token|signature|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature)=[^&\s'\"<>]+",
    re.IGNORECASE,
)
_SECRET_HEADERS = re.compile(
    r"((?:ocp-apim-subscription-key|authorization|x-api-key|api-key|api_key|apikey)"
    r"['\"]?\s*[:=]\s*['\"]?(?:(?:bearer|basic|token)\s+)?)(?!(?:bearer|basic|token)\s)[^'\"\s,}<]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*")
_SK_KEY = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{6,})")


def redact_shapes(text: str) -> str:
    """``text`` with things shaped like secrets removed: URL query strings, SAS/signature
    parameters, API-key and Authorization headers, Bearer tokens, JWTs, ``sk-...`` keys.

    >>> redact_shapes("open https://a.blob.core.windows.net/c/x.tif?sv=1&sig=abc failed")
    'open https://a.blob.core.windows.net/c/x.tif?<redacted> failed'
    """
    if "sk-" in text:
        text = _SK_KEY.sub("sk-***", text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    if "=" in text or "?" in text or ":" in text:
        text = _URL_QUERY.sub(lambda m: f"{m.group(1)}?{REDACTED}", text)
        text = _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
        text = _SECRET_HEADERS.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return text


def redact(text: str) -> str:
    """``text`` without any registered secret (by value) nor anything shaped like one."""
    return redact_shapes(redact_values(text))


# --------------------------------------------------------------------------------------------
# logs


class RedactingFilter(logging.Filter):
    """A logging filter (for handlers) that redacts secrets from each record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> None:
    """Redact a log record in place: its message, and an exception whose text holds a secret
    (the traceback is dropped then: it would print the secret)."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: leave it to the logging machinery
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        text = str(exc)
        if redact(text) != text:
            record.msg = f"{record.msg} ({type(exc).__name__}: {redact(text)})"
            record.exc_info, record.exc_text = None, None


_INSTALL_LOCK = threading.Lock()
_installed = False


def install_log_redaction() -> None:
    """Redact secrets from every log record created in this process (idempotent).

    Wraps the log-record factory, so records of every logger (rasterio, urllib3, openai,
    Beam) are cleaned before any handler sees them.
    """
    global _installed
    with _INSTALL_LOCK:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
