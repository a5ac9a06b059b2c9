"""Turning arbitrary Python values into JSON that PostgreSQL accepts.

PostgreSQL's ``text`` and ``jsonb`` reject NUL characters, JSON has no NaN or
Infinity, lone surrogates cannot be encoded as UTF-8, and user objects can be
cyclic, deep, huge, or have a ``__repr__`` that raises. ``to_jsonable`` never
raises: whatever it cannot represent faithfully it replaces with a readable
marker string. ``encode`` turns a row into compact UTF-8 JSON (orjson when the
``fast`` extra is installed), ``fit_text`` cuts a text to a JSON byte budget.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

MAX_DEPTH = 8
_MAX_INT_BITS = 13_000  # about 3900 decimal digits
MAX_ITEMS = 1000

_PRIMITIVE = (str, int, float, bool, type(None))


def clean_text(text: str) -> str:
    """Remove NUL characters and replace lone surrogates, so PostgreSQL accepts the text."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def safe_repr(value: object) -> str:
    """``repr(value)``, or a marker naming the type when ``__repr__`` itself fails."""
    try:
        return clean_text(repr(value))
    except Exception:
        try:
            name = type(value).__qualname__
        except Exception:
            name = "object"
        return f"<unrepresentable {name}>"


def safe_str(value: object) -> str:
    """``str(value)``, falling back to :func:`safe_repr`."""
    try:
        return clean_text(str(value))
    except Exception:
        return safe_repr(value)


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _decimal(value: Any) -> float | str:
    if value.is_nan():
        return "NaN"
    if not value.is_finite():
        return "Infinity" if value > 0 else "-Infinity"
    as_float = float(value)
    # Keep it a JSON number when that loses nothing; otherwise keep every digit as text.
    if type(value)(repr(as_float)) == value:
        return as_float
    return str(value)


def to_jsonable(value: Any, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> Any:
    """A JSON-safe copy of ``value``; never raises."""
    try:
        return _convert(value, max_depth, max_items, set())
    except RecursionError:
        return "<max depth>"
    except Exception:
        return safe_repr(value)


def _convert_one(value: Any, depth: int, max_items: int, seen: set[int]) -> Any:
    """One member of a container: a failure replaces this value only, not its siblings."""
    try:
        return _convert(value, depth, max_items, seen)
    except RecursionError:
        return "<max depth>"
    except Exception:
        return safe_repr(value)


def _convert(value: Any, depth: int, max_items: int, seen: set[int]) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, (bool, int)):
        if isinstance(value, enum.Enum):
            return _convert(value.value, depth, max_items, seen)
        if type(value) is not bool and value is not None and value.bit_length() > _MAX_INT_BITS:
            return f"<int of {value.bit_length()} bits>"  # JSON cannot carry it (CPython's 4300-digit limit)
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, enum.Enum):
        return _convert(value.value, depth, max_items, seen)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if type(value).__name__ == "UUID" and type(value).__module__ == "uuid":
        return str(value)
    if type(value).__name__ == "Decimal" and type(value).__module__ in (
        "decimal",
        "_decimal",
        "_pydecimal",
    ):
        return _decimal(value)
    if isinstance(value, PurePath):
        return clean_text(str(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return clean_text(bytes(value).decode("utf-8", "backslashreplace"))
    if depth <= 0:
        return "<max depth>"
    marker = id(value)
    if marker in seen:
        return "<cycle>"
    if isinstance(value, Mapping):
        seen.add(marker)
        try:
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(value.items()):
                if i >= max_items:
                    out["<truncated>"] = f"{len(value) - max_items} more items"
                    break
                key = clean_text(k) if isinstance(k, str) else safe_str(k)
                out[key] = _convert_one(v, depth - 1, max_items, seen)
            return out
        finally:
            seen.discard(marker)
    if isinstance(value, (list, tuple, set, frozenset)):
        seen.add(marker)
        try:
            items: Any = value
            if isinstance(value, (set, frozenset)):
                try:
                    items = sorted(value)
                except Exception:
                    items = list(value)
            out_list = []
            for i, item in enumerate(items):
                if i >= max_items:
                    out_list.append(f"<{len(value) - max_items} more items>")
                    break
                out_list.append(_convert_one(item, depth - 1, max_items, seen))
            return out_list
        finally:
            seen.discard(marker)
    fields = getattr(type(value), "__dataclass_fields__", None)  # a dataclass instance
    if fields is not None and not isinstance(value, type):
        seen.add(marker)
        try:
            return {
                f.name: _convert_one(getattr(value, f.name, None), depth - 1, max_items, seen)
                for f in fields.values()
                if getattr(f, "_field_type", None) is None or str(f._field_type) == "_FIELD"
            }
        finally:
            seen.discard(marker)
    return safe_repr(value)


def is_plain(value: object) -> bool:
    """True when ``value`` is an immutable JSON scalar that needs no conversion."""
    if type(value) is float:
        return math.isfinite(value)
    return type(value) in _PRIMITIVE_TYPES


_PRIMITIVE_TYPES = frozenset(_PRIMITIVE)


# -- encoding rows ----------------------------------------------------------------------
encode_str = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
try:  # optional (the "fast" extra): several times quicker, same output for our rows
    import orjson

    _orjson_dumps: Any = orjson.dumps
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_dumps = None


def encode(row: dict[str, Any]) -> bytes:
    """A row as compact UTF-8 JSON (orjson when installed, else the standard library)."""
    if _orjson_dumps is not None:
        try:
            # orjson 3.11+ leaves its output in a buffer several times its length (4 KiB for
            # a short row): the copy is what the queue's and the spool's byte counts assume.
            return bytes(memoryview(_orjson_dumps(row)))
        except (TypeError, ValueError):  # e.g. an int beyond 64 bits: the stdlib can
            pass
    return encode_str(row).encode("utf-8")


def json_bytes(value: Any) -> int:
    """The length of ``value`` as UTF-8 JSON."""
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def fit_text(text: str, room_bytes: int) -> str:
    """The longest prefix of ``text`` whose JSON string encoding fits ``room_bytes``."""

    def encoded(t: str) -> int:
        return len(json.dumps(t, ensure_ascii=False).encode("utf-8")) - 2

    if encoded(text) <= room_bytes:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # binary search on characters; escapes and UTF-8 make bytes uneven
        mid = (lo + hi + 1) // 2
        if encoded(text[:mid]) <= room_bytes:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]
