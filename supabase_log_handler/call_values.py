"""What goes into a call's row: error codes and messages, HTTP statuses, capped payloads, entity ids.

Pure functions of their arguments, used by ``integrations.Call`` and the HTTP
instrumentation (``integrations_http.py``). None of them raises on odd input: an
exception whose ``str`` fails, a response whose body was never read, a payload of
any size or shape all give something PostgreSQL stores.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from typing import Any

from . import _jsonsafe
from ._jsonsafe import fit_text

MAX_TEXT_CHARS = 2000  # error_message, and service/action/code names at 200
ENTITY_NAMESPACE = uuid.UUID("5b1e0c9a-7f3d-4c8e-9a61-2d4f8b0e6c13")
_INT_MAX = 2**31 - 1
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"<>]+)\?[^\s#'\"<>]*", re.IGNORECASE)


def entity_uuid(entity_type: str, entity_id: Any) -> str:
    """The ``related_entity_id`` stored for ``entity_id`` of ``entity_type``.

    A UUID is stored as it is; any other id (a CRM's numeric lead id) becomes the
    name-based UUID ``uuid5(ENTITY_NAMESPACE, "<type>:<id>")``, so the column stays a
    uuid and every call about that record can still be found by it.
    """
    if isinstance(entity_id, uuid.UUID):
        return str(entity_id)
    text = _jsonsafe.safe_str(entity_id)
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return str(uuid.uuid5(ENTITY_NAMESPACE, f"{entity_type}:{text}"))


def describe_error(error: BaseException | str) -> tuple[str | None, str]:
    """(error_code, error_message) of an exception or a text.

    The code is the HTTP status of the exception's response, else its ``status_code``,
    ``code`` or ``error_code``, else its type's name; tenacity's ``RetryError`` is
    described by the last attempt's exception. Query strings in URLs are dropped from
    the message (they may carry keys).
    """
    if isinstance(error, str):
        return None, text_of(error)
    exc = error
    last = getattr(exc, "last_attempt", None)  # tenacity.RetryError
    if last is not None:
        with contextlib.suppress(Exception):
            exc = last.exception() or exc
    code: str | None = None
    status = http_status(getattr(exc, "response", None))
    if status is not None:
        code = str(status)
    else:
        for attr in ("status_code", "code", "error_code"):
            value = getattr(exc, attr, None)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
                code = code_of(value)
                break
    name = type(exc).__qualname__
    text = _jsonsafe.safe_str(exc)
    return code or name_of(name), text_of(f"{name}: {text}" if text else name)


def http_status(value: Any) -> int | None:
    """The HTTP status of a response object (httpx, requests, aiohttp ...), else None."""
    if value is None or isinstance(value, (dict, list, str, bytes, int, float)):
        return None
    for attr in ("status_code", "status"):
        try:
            status = getattr(value, attr, None)
        except Exception:
            continue
        if type(status) is int and 100 <= status < 600:
            return status
    return None


def http_payload(response: Any) -> dict[str, Any]:
    """``{"status": n, "body": ...}`` of an HTTP response object; the body only if already read."""
    out: dict[str, Any] = {"status": http_status(response)}
    body = _read_body(response)
    if body is not None:
        out["body"] = body
    return out


def _read_body(response: Any) -> Any:
    if getattr(response, "_content", None) is False:  # requests, stream=True, not read: leave it
        return None
    try:
        content = response.content  # httpx raises ResponseNotRead for an unread stream
    except Exception:
        return None
    if not isinstance(content, (bytes, bytearray)) or not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return bytes(content).decode("utf-8", "replace")


def reason_of(response: Any) -> str:
    for attr in ("reason_phrase", "reason"):
        value = getattr(response, attr, None)
        if isinstance(value, str):
            return value
    return ""


def cap_payload(value: Any, max_bytes: int) -> Any:
    """``value`` if its JSON fits ``max_bytes``, else ``{"truncated": true, "bytes": n,
    "text": <the start of its JSON>}`` (the marker itself fits ``max_bytes`` too)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode("utf-8"))
    if size <= max_bytes:
        return value
    overhead = len(json.dumps({"truncated": True, "bytes": size, "text": ""}).encode("utf-8"))
    return {"truncated": True, "bytes": size, "text": fit_text(text, max(max_bytes - overhead, 0))}


def entity_of(entity: tuple[str, Any] | str | None) -> tuple[str | None, str | None]:
    if entity is None:
        return None, None
    if isinstance(entity, str):
        return name_of(entity), None
    try:
        kind, ident = entity
    except (TypeError, ValueError):
        raise ValueError("record_call: entity must be ('lead', lead_id) or 'lead'") from None
    kind = name_of(str(kind))
    return kind, None if ident is None else entity_uuid(kind, ident)


def name_of(text: str) -> str:
    return _jsonsafe.clean_text(text.strip())[:200]


def code_of(value: str | int) -> str:
    return name_of(str(value))


def text_of(text: str) -> str:
    text = _URL_QUERY.sub(r"\1?[query]", _jsonsafe.clean_text(text))
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "... [truncated]"


def clamp_int(value: int) -> int:
    return max(0, min(int(value), _INT_MAX))


def prepared_payload(
    cache: dict[Any, Any], which: str, value: Any, redactor: Any, max_bytes: int
) -> Any:
    """``value`` masked by ``redactor`` and capped, made once per (payload, redactor) in ``cache``."""
    if value is None:
        return None
    key = (which, id(redactor))
    prepared = cache.get(key, cache)  # the cache itself stands for "not made yet"
    if prepared is cache:
        masked = redactor.value(value) if redactor is not None else value
        prepared = cache[key] = cap_payload(masked, max_bytes)
    return prepared
