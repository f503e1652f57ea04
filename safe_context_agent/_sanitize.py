"""Text that crosses a boundary: lone surrogates repaired, secrets redacted.

Two rules, each applied in one place per boundary (see docs/agent.md, "Limits and failure modes"):

- **Lone surrogates become U+FFFD.** Python strings can hold code points that no UTF-8 encoder
  accepts: ``sys.argv`` decodes invalid bytes to ``\\udc80``-``\\udcff`` (surrogateescape), and
  ``json.loads('"\\ud800"')`` gives a lone surrogate. The openai SDK and every trace sink encode
  UTF-8, so such text would crash the model call and lose the trace. Repair, not refusal: the
  rest of the request is still good, the replacement character marks exactly what was lost, and
  it is the rule Python's own ``errors="replace"`` applies to undecodable bytes.
- **Credentials never leave the process in text.** User-info in URLs
  (``http://user:password@host``), ``Authorization``/``Bearer``/``api_key`` values, and any
  known secret (the configured API key) are replaced by ``***`` in trace fields, log records and
  error messages.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "RedactingFilter",
    "exception_text",
    "redact",
    "redact_url",
    "repair_surrogates",
    "repair_tree",
    "split_url_credentials",
]

REDACTED = "***"

_SURROGATE = re.compile("[\ud800-\udfff]")
# scheme://user-info@ — the user-info may hold anything but '/', '@' and whitespace.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^/@\s]+)@")
_BEARER = re.compile(r"(?i)\b(?P<kind>bearer|basic)\s+(?P<token>[A-Za-z0-9._~+/=-]{4,})")
_KEY_VALUE = re.compile(
    r"(?i)(?P<key>\b(?:authorization|api[_-]?key|x-api-key|access[_-]?token|password)"
    r"[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"',;}]+)"
)
# A command line's flag form, `--api-key SECRET` (vLLM's own flag, logged when `sca serve` starts).
_KEY_FLAG = re.compile(r"(?i)(?P<key>--(?:api[_-]key|token|password)\s+)(?P<value>[^\s-]\S*)")


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in naming its type when the exception's ``__str__`` itself fails
    (the error path must not raise a second, unrelated error)."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: its message could not be read>"


def repair_surrogates(text: str) -> str:
    """``text`` with every lone surrogate (not UTF-8 encodable) replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def repair_tree(value: Any) -> Any:
    """:func:`repair_surrogates` on every string (keys included) of a JSON-like value."""
    if isinstance(value, str):
        return repair_surrogates(value)
    if isinstance(value, dict):
        return {repair_tree(k): repair_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [repair_tree(v) for v in value]
    return value


def split_url_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its user-info, and the (user, password) it held, if any, percent-decoded
    (``p%40ss`` is the password ``p@ss``, as httpx would send it)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    clean = urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (unquote(parts.username or ""), unquote(parts.password or ""))


def redact_url(url: str | None) -> str | None:
    """The URL with its user-info replaced by ``***`` (``http://***@host/v1``)."""
    if url is None:
        return None
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", url)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with URL user-info, bearer/basic tokens, ``key=value`` credentials and each of
    ``secrets`` (values shorter than 4 characters are ignored: too common to mean a secret)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = _BEARER.sub(lambda m: f"{m['kind']} {REDACTED}", text)
    text = _KEY_FLAG.sub(lambda m: f"{m['key']}{REDACTED}", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts every record's final message (httpx logs request URLs,
    user-info included, at INFO level)."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
