"""The last-resort copy of a row the database refused: text cleaned and cut, JSON kept as text.

``delivery.py`` retries a refused row once as ``sanitise`` makes it before it
calls the row dead: NUL characters and lone surrogates removed, long text cut,
``meta``/``metadata`` kept as one string, other JSON values (a call's payloads)
as ``{"sanitised": true, "text": ...}``.
"""

from __future__ import annotations

import json
from typing import Any

from . import _jsonsafe
from ._jsonsafe import encode
from .rows import LEVELS

_LEVEL_NAMES = frozenset(name for _, name in LEVELS)


def sanitise(payload: bytes, max_chars: int = 10_000) -> bytes:
    """The last-resort copy of a refused row of any table.

    ``sanitise_row`` fixes a log's text and ``meta`` and a run's ``metadata``; other
    JSON values (a call's request and response payloads) become
    ``{"sanitised": true, "text": <their JSON, cleaned and cut>}`` and other text is
    cleaned, so a payload PostgreSQL refuses (a NUL, say) cannot cost the row itself.
    """
    row = sanitise_row(json.loads(payload), max_chars)
    for key, value in row.items():
        if key in ("meta", "metadata"):
            continue
        if isinstance(value, (dict, list)):
            text = json.dumps(_jsonsafe.to_jsonable(value), ensure_ascii=False)
            row[key] = {"sanitised": True, "text": text[:max_chars]}
        elif isinstance(value, str):
            row[key] = _jsonsafe.clean_text(value)
    return encode(row)


def sanitise_row(row: dict[str, Any], max_chars: int = 10_000) -> dict[str, Any]:
    """A last-resort copy of a refused row: plain text, short, meta as one string."""
    out = dict(row)
    for key in ("message", "step", "level"):
        if key not in row:
            continue
        value = out.get(key)
        text = _jsonsafe.clean_text(_jsonsafe.safe_str(value)) if value is not None else ""
        if len(text) > max_chars:
            text = text[:max_chars] + "... [truncated]"
        out[key] = text
    if "level" in row and out["level"] not in _LEVEL_NAMES:
        out["level"] = "ERROR"
    for key in ("meta", "metadata"):
        value = row.get(key)
        if value is not None:
            text = _jsonsafe.clean_text(json.dumps(value, ensure_ascii=False, default=str))
            out[key] = {"meta_text": text[:max_chars], "sanitised": True}
    for key in ("error_message",):
        if isinstance(row.get(key), str):
            out[key] = _jsonsafe.clean_text(row[key])[:max_chars]
    return out
