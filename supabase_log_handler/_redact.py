"""Masking secrets before a row leaves the process (database, spool or stderr).

Two rules: values stored under sensitive keys (``password``, ``api_key``,
``access_token`` ... but not ``max_tokens``) are replaced whole, and text is
scanned for known secret shapes (JWTs, ``sb_secret_...``, ``sk-...``, Bearer
tokens, ``password=...`` pairs, credentials in URLs) and for literal secrets such
as the configured Supabase key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"

# A key is sensitive when its last word is one of these ("db_password", "access_token") ...
_SENSITIVE_LAST_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "jwt",
    }
)
# ... or when it is one of these whole ("api_key", "x-api-key").
_SENSITIVE_KEYS = frozenset(
    {
        "api_key",
        "x_api_key",
        "access_key",
        "secret_key",
        "private_key",
        "service_role_key",
        "set_cookie",
        "session",
        "session_id",
        "sessionid",
        "auth",
        "client_secret",
    }
)

_KEY_WORDS = (
    r"password|passwd|pwd|passphrase|secret|token|api[_-]?key|apikey|authorization|cookie"
    r"|access[_-]?token|refresh[_-]?token|client[_-]?secret|private[_-]?key|service[_-]?role[_-]?key"
)


def _mask_value(match: re.Match[str]) -> str:
    prefix, value = match.group(1), match.group(0)[len(match.group(1)) :]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{prefix}{quote}{MASK}{quote}"


_PATTERNS: tuple[tuple[re.Pattern[str], Any], ...] = (
    # JSON web tokens: header.payload.signature, both first parts base64url of "{".
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"\bsb_secret_[A-Za-z0-9_-]{6,}"), MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MASK),
    # key=value, key: value, "key": "value", 'key': 'value' (a quoted value is masked whole)
    (
        re.compile(
            r"(?i)([\"']?\b(?:[a-z0-9]+[_-])*(?:" + _KEY_WORDS + r")\b[\"']?\s*[:=]\s*)"
            r"(?:\"[^\"]*\"|'[^']*'|(?!\[REDACTED\])[^\s\"',;&}\]]+)"
        ),
        _mask_value,
    ),
    # scheme://user:password@host
    (
        re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]+:)[^@\s/]+(@)", re.IGNORECASE),
        r"\1" + MASK + r"\2",
    ),
)


# One cheap search decides whether the full patterns need to run at all.
_MAYBE_SECRET = re.compile(
    r"eyJ|sb_secret_|sk-|bearer|basic |://|pass|pwd|secret|token|api[_-]?key|authoriz|cookie|private",
    re.IGNORECASE,
)


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _normalise(key: str) -> str:
    """``accessToken``, ``Access-Token`` and ``access token`` all become ``access_token``."""
    return _CAMEL.sub("_", key.strip()).lower().replace("-", "_").replace(" ", "_")


class Redactor:
    """Masks secrets in text and in JSON-like structures; never raises."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        extra_keys: Iterable[str] = (),
        literals: Iterable[str | None] = (),
    ) -> None:
        self.enabled = enabled
        self._keys = _SENSITIVE_KEYS | {_normalise(k) for k in extra_keys if k.strip()}
        # Longest first, so a literal that contains another is masked whole.
        self._literals = sorted({s for s in literals if s and len(s) >= 8}, key=len, reverse=True)
        self._key_cache: dict[str, bool] = {}

    def is_sensitive_key(self, key: str) -> bool:
        """True when values stored under ``key`` must be masked."""
        known = self._key_cache.get(key)
        if known is not None:
            return known
        norm = _normalise(key)
        sensitive = norm in self._keys or norm.rsplit("_", 1)[-1] in _SENSITIVE_LAST_WORDS
        if len(self._key_cache) > 10_000:
            self._key_cache.clear()
        self._key_cache[key] = sensitive
        return sensitive

    def text(self, text: str) -> str:
        """``text`` with every secret shape and literal secret masked."""
        if not self.enabled or not text:
            return text
        for literal in self._literals:
            if literal in text:
                text = text.replace(literal, MASK)
        if _MAYBE_SECRET.search(text) is None:
            return text
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def value(self, value: Any) -> Any:
        """A copy of a JSON-like ``value`` with sensitive keys and secret text masked."""
        if not self.enabled:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            sensitive = self.is_sensitive_key
            return {
                k: (MASK if v is not None and sensitive(k) else self.value(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value
