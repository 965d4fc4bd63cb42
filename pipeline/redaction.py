"""Secrets out of everything a caller or a log sees: one `redact` for every adapter, and a logging
filter that applies it to each record.

    redact("GET https://bob:p@ss@host/x?token=abc", settings)  # 'GET https://[redacted]@host/x?token=[redacted]'
    install_log_redaction(settings)   # once the handlers exist (the MCP server and adapters do it)

What is removed: credentials inside URLs of any scheme (`user:password@`, the password may hold
"@"), Authorization headers, Bearer and Basic credentials, key/value secrets (api_key, apikey,
token, password, secret, ... in JSON, Python reprs, query strings and `key=value` text), OpenAI
`sk-...` keys, Hugging Face `hf_...` tokens, and the secrets configured in Settings (the API key,
credentials and tokens inside its URLs). Over-redacting a harmless word is the accepted cost.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    from lensgraph.pipeline.settings import Settings

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4
"""Configured secrets shorter than this are not replaced everywhere (they would blank out common
substrings); the patterns below still remove them where they appear as credentials."""

# a scheme starts a word and is short: no quadratic scan of long base64 or hex runs
_SCHEME = r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://"
# user:password@ in a URL of any scheme; greedy, so the last "@" before the host ends the credentials
_URL_CREDENTIALS = re.compile(rf"({_SCHEME})[^\s/?#\"'<>]*@")
# a password holding "/", "?" or "#" (invalid in a URL, but typed so): up to the token's last "@";
# "host:8000/..." is a port, not a password
_URL_ODD_PASSWORD = re.compile(rf"({_SCHEME})[^\s/?#@\"'<>]*:(?!\d+(?:[/?#\s\"'<>]|$))[^\s\"'<>]*@")
_AUTH_HEADER = re.compile(
    r"(?i)(?<![\w-])((?:proxy-)?authorization(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?)(?:[A-Za-z]+\s+)?[^\s\"',;\\]+"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;\\]+")
# Basic credentials: base64 that looks like it (a digit, +, /, = or an inner capital), not "basic English"
_BASIC = re.compile(r"\b((?i:basic)\s+)(?=[A-Za-z0-9+/]*(?:[0-9+/=]|[a-z][A-Z]))[A-Za-z0-9+/]{6,}={0,2}(?![\w+/=])")
_SECRET_KEY = (
    r"(?:[A-Za-z0-9]+[_-])*"  # a prefix: OPENAI_API_KEY, x-api-key, hf_token, client_secret
    r"(?:api[_-]?key|apikey|access[_-]?key|secret[_-]?key|private[_-]?key|token|password|passwd|secret|credentials?)"
)
# "api_key": "...", 'token': '...', api_key=..., ?token=...&, password: ..., and JSON escaped inside JSON
_KEY_VALUE = re.compile(
    rf"(?i)(?<![A-Za-z0-9_\-])((?:\\?[\"'])?-*{_SECRET_KEY}(?:\\?[\"'])?\s*[:=]\s*)"
    r"(?:(\\\")(?:.*?)\\\"|(\")(?:[^\"\\]|\\.)*\"|(')(?:[^'\\]|\\.)*'|(?!(?:null|none|true|false)\b)[^\s&#,;\"'<>(){}\[\]\\]+)"
)
# `--api-key VALUE`, "api_key sk-..." : a key-like value after a space
_API_KEY_WORD = re.compile(r"(?i)(?<![A-Za-z0-9_])((?:api[_-]?key|apikey)\s+)(?=\S*\d)[A-Za-z0-9_\-.]{8,}")
_OPENAI_KEY = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{6,}")
_HF_TOKEN = re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{20,}")
_SECRET_QUERY_KEY = re.compile(rf"(?i)^{_SECRET_KEY}$")


def _key_value(match: re.Match[str]) -> str:
    quote = match.group(2) or match.group(3) or match.group(4) or ""  # keep the value's quotes
    return f"{match.group(1)}{quote}{REDACTED}{quote}"


def configured_secrets(settings: Settings | None) -> set[str]:
    """The secret strings a Settings holds: every SecretStr field, and the password, `user:password`
    and secret-looking query values of every URL field (raw and percent-decoded)."""
    if settings is None:
        return set()
    found: set[str] = set()
    for name in getattr(type(settings), "model_fields", {}):
        value = getattr(settings, name, None)
        if hasattr(value, "get_secret_value"):
            found.add(str(value.get_secret_value()))
        elif isinstance(value, str) and "://" in value:
            found.update(_url_secrets(value))
    return {s for s in found if len(s) >= MIN_SECRET_CHARS}


def _url_secrets(url: str) -> set[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    found: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        user, _, password = userinfo.partition(":")
        found.update({userinfo, unquote(userinfo)} if password else {user, unquote(user)})  # a lone user is a token
        if password:
            found.update({password, unquote(password)})
    found.update(v for k, v in parse_qsl(parts.query) if _SECRET_QUERY_KEY.match(k) and v)
    return found


def redact(text: str, settings: Settings | None = None, *, secrets: Iterable[str] = ()) -> str:
    """`text` without secrets: the patterns above, plus the secrets configured in `settings` and
    any `secrets` given (exact strings, longest first so one inside another cannot survive)."""
    text = str(text)
    known = configured_secrets(settings) | {s for s in secrets if len(s) >= MIN_SECRET_CHARS}
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _URL_CREDENTIALS.sub(rf"\1{REDACTED}@", text)
    text = _URL_ODD_PASSWORD.sub(rf"\1{REDACTED}@", text)
    text = _AUTH_HEADER.sub(rf"\1{REDACTED}", text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    text = _BASIC.sub(rf"\1{REDACTED}", text)
    text = _KEY_VALUE.sub(_key_value, text)
    text = _API_KEY_WORD.sub(rf"\1{REDACTED}", text)
    text = _OPENAI_KEY.sub(REDACTED, text)
    return _HF_TOKEN.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Redacts each record before a handler formats it: the message with its arguments, the
    exception text and the stack. Put on handlers (not loggers), so it sees every logger's records."""

    def __init__(self, settings: Settings | None = None):
        super().__init__()
        self.secrets: frozenset[str] = frozenset(configured_secrets(settings))

    def remember(self, settings: Settings) -> None:
        """Also redact the secrets of `settings` (rebinding, so a concurrent filter call is safe)."""
        self.secrets = self.secrets | configured_secrets(settings)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: still show (redacted) what was logged
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = redact(message, secrets=secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets=secrets)
        # formatters print exc_text; some (rich) would render exc_info themselves, locals and all
        record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets=secrets)
        return True


_FILTER = RedactingFilter()


def install_log_redaction(settings: Settings | None = None) -> RedactingFilter:
    """Put the shared RedactingFilter on the handlers of the "lensgraph" logger, of the root logger
    and on logging's last-resort handler, and teach it the secrets of `settings`. Idempotent; call
    it after logging is configured (handlers added later do not have it)."""
    handlers = [*logging.getLogger("lensgraph").handlers, *logging.getLogger().handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    if settings is not None:
        _FILTER.remember(settings)
    return _FILTER
