"""From ``logging.LogRecord`` to a ``logs`` row, in two halves.

``snapshot`` runs on the caller's thread and does only what cannot wait: it
renders the message, formats the exception, copies mutable extras and reads the
current run and step, so the record can be dropped at once. ``build_row`` runs
on the worker: ids, timestamps, level mapping, size limits, redaction and the
``meta`` layout::

    meta = {<meta= / extra={"meta": ...} fields>, <other extra fields>,
            "log": {"logger", "file", "line", "function", "thread", "process"},
            "exception": {"type", "message", "traceback"},     # when exc_info was set
            "level": {"name", "no"},                           # when not one of the four
            "truncated": [...]}                                # what was cut
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import traceback
from typing import Any, NamedTuple

from . import _jsonsafe
from ._ids import new_id
from ._redact import Redactor

LEVELS = (
    (logging.DEBUG, "DEBUG"),
    (logging.INFO, "INFO"),
    (logging.WARNING, "WARNING"),
    (logging.ERROR, "ERROR"),
)
_LEVEL_NAMES = {no: name for no, name in LEVELS}

# Attributes every LogRecord has; anything else on a record came from ``extra``.
STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "taskName", "stack_info", "exc_text"}
)
ADAPTER_KEYS = frozenset({"meta", "step", "run_id"})
_UTC = dt.timezone.utc


def map_level(levelno: int) -> str:
    """One of DEBUG/INFO/WARNING/ERROR: the nearest standard level, ties going up."""
    name = _LEVEL_NAMES.get(levelno)
    if name is not None:
        return name
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno <= logging.DEBUG:
        return "DEBUG"
    lower = (levelno // 10) * 10
    return _LEVEL_NAMES[lower + 10 if levelno - lower >= 5 else lower]


class Snapshot(NamedTuple):
    """What the worker needs of a record; built on the caller's thread."""

    created: float
    levelno: int
    levelname: str
    message: str
    logger: str
    pathname: str
    lineno: int
    func: str | None
    thread: str | None
    process: int | None
    exc: tuple[str, str, str] | None
    run_id: str
    step: str | None
    extras: dict[str, Any] | None


def snapshot_extras(record: logging.LogRecord) -> dict[str, Any] | None:
    """The record's non-standard attributes, with mutable values copied JSON-safe."""
    names = record.__dict__.keys() - STANDARD_ATTRS
    if not names:
        return None
    out: dict[str, Any] = {}
    for name in names:
        value = record.__dict__[name]
        out[name] = value if _jsonsafe.is_plain(value) else _jsonsafe.to_jsonable(value)
    return out


def format_exception(record: logging.LogRecord) -> tuple[str, str, str] | None:
    """(type, message, traceback text) of the record's exception, or None."""
    exc_info = record.exc_info
    if not exc_info or exc_info is True or exc_info[0] is None:  # type: ignore[comparison-overlap]
        if record.stack_info:
            return ("", "", _jsonsafe.safe_str(record.stack_info))
        return None
    etype, evalue, tb = exc_info
    try:
        text = record.exc_text or "".join(traceback.format_exception(etype, evalue, tb))
    except Exception:
        text = _jsonsafe.safe_repr(evalue)
    if record.stack_info:
        text += "\n" + _jsonsafe.safe_str(record.stack_info)
    name = getattr(etype, "__qualname__", None) or _jsonsafe.safe_str(etype)
    module = getattr(etype, "__module__", None)
    if module and module != "builtins":
        name = f"{module}.{name}"
    return (name, _jsonsafe.safe_str(evalue), text)


class RowBuilder:
    """Worker-side conversion of snapshots into JSON-safe, redacted, size-capped rows."""

    def __init__(
        self,
        *,
        default_step: str,
        redactor: Redactor,
        max_message_chars: int,
        max_traceback_chars: int,
        max_meta_bytes: int,
    ) -> None:
        self.default_step = default_step
        self.redactor = redactor
        self.max_message_chars = max_message_chars
        self.max_traceback_chars = max_traceback_chars
        self.max_meta_bytes = max_meta_bytes

    def build(self, snap: Snapshot) -> dict[str, Any]:
        """The ``logs`` row for one snapshot; never raises."""
        truncated: list[str] = []
        redact = self.redactor
        message = self._text(
            snap.message, self.max_message_chars, "message", truncated, redact=True
        )
        meta: dict[str, Any] = {}
        step = snap.step
        if snap.extras:
            extras = dict(snap.extras)
            user_meta = extras.pop("meta", None)
            extras.pop("run_id", None)
            extra_step = extras.pop("step", None)
            if step is None and extra_step is not None:
                step = _jsonsafe.safe_str(extra_step)
            if isinstance(user_meta, dict):
                meta.update(user_meta)
            elif user_meta is not None:
                meta["meta"] = user_meta
            meta.update(extras)
            for reserved in ("log", "exception", "level", "truncated"):
                if reserved in meta:
                    meta[reserved + "_"] = meta.pop(reserved)
            # User data: made JSON-safe and redacted. What follows comes from code, not data.
            meta = redact.value(_jsonsafe.to_jsonable(meta))
        clean = _jsonsafe.clean_text
        meta["log"] = {
            "logger": clean(snap.logger),
            "file": clean(snap.pathname),
            "line": snap.lineno,
            "function": clean(snap.func) if snap.func else snap.func,
            "thread": clean(snap.thread) if snap.thread else snap.thread,
            "process": snap.process,
        }
        if snap.exc is not None:
            etype, evalue, tb = snap.exc
            meta["exception"] = {
                "type": clean(etype),
                "message": self._text(
                    evalue, self.max_message_chars, "exception.message", truncated, redact=True
                ),
                "traceback": self._text(
                    tb, self.max_traceback_chars, "exception.traceback", truncated, redact=True
                ),
            }
        level = map_level(snap.levelno)
        if _LEVEL_NAMES.get(snap.levelno) != level:
            meta["level"] = {"name": clean(snap.levelname), "no": snap.levelno}
        if truncated:
            meta["truncated"] = truncated
        if snap.extras or snap.exc is not None:  # only then can meta be large
            meta = self._cap_meta(meta)
        return {
            "id": new_id(),
            "run_id": snap.run_id,
            "timestamp": iso_timestamp(snap.created),
            "level": level,
            "step": clean(step or self.default_step)[:200] or self.default_step,
            "message": message,
            "meta": meta,
        }

    def _text(
        self, text: str, limit: int, name: str, truncated: list[str], *, redact: bool = False
    ) -> str:
        """Clean, (redact,) then cut ``text`` to ``limit`` characters, noting the cut.

        Redaction comes before the cut, so a secret crossing the limit is masked
        whole rather than half shown; text far past the limit is dropped first so
        a huge message costs no regex time.
        """
        original = len(text)
        if original > limit + _REDACT_MARGIN:
            text = text[: limit + _REDACT_MARGIN]
        text = _jsonsafe.clean_text(text)
        if redact:
            text = self.redactor.text(text)
        if len(text) > limit or original > limit + _REDACT_MARGIN:
            truncated.append(name)
            dropped = max(original - limit, len(text) - limit)
            return text[:limit] + f"... [truncated {dropped} chars]"
        return text

    def _cap_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Meta whose UTF-8 JSON fits ``max_meta_bytes``: if not, the user part becomes a cut text."""
        cap = self.max_meta_bytes
        if _json_bytes(meta) <= cap:
            return meta
        keep: dict[str, Any] = {k: meta[k] for k in ("log", "exception", "level") if k in meta}
        keep["truncated"] = [*meta.get("truncated", []), "meta"]
        text = json.dumps({k: v for k, v in meta.items() if k not in keep}, ensure_ascii=False)
        exc = keep.get("exception")
        while True:
            room = cap - _json_bytes({**keep, "meta_text": ""})
            if room >= 0 or not isinstance(exc, dict) or not exc.get("traceback"):
                break
            tb = str(exc["traceback"])  # even the traceback does not fit: keep its end
            exc = {**exc, "traceback": "..." + tb[len(tb) // 2 :] if len(tb) > 64 else ""}
            keep["exception"] = exc
        keep["meta_text"] = _fit_text(text, max(room, 0))
        return keep


_REDACT_MARGIN = 4096  # longest secret that is still masked whole where a message is cut


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _fit_text(text: str, room_bytes: int) -> str:
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


def iso_timestamp(created: float) -> str:
    """ISO-8601 UTC with microseconds, as PostgreSQL's timestamptz reads it."""
    return dt.datetime.fromtimestamp(created, _UTC).isoformat(timespec="microseconds")


def sanitise_row(row: dict[str, Any], max_chars: int = 10_000) -> dict[str, Any]:
    """A last-resort copy of a refused row: plain text, short, meta as one string."""
    out = dict(row)
    for key in ("message", "step", "level"):
        value = out.get(key)
        text = _jsonsafe.clean_text(_jsonsafe.safe_str(value)) if value is not None else ""
        if len(text) > max_chars:
            text = text[:max_chars] + "... [truncated]"
        out[key] = text
    if "level" in row and out["level"] not in _LEVEL_NAMES.values():
        out["level"] = "ERROR"
    meta = row.get("meta")
    if meta is not None:
        text = _jsonsafe.clean_text(json.dumps(meta, ensure_ascii=False, default=str))
        out["meta"] = {"meta_text": text[:max_chars], "sanitised": True}
    return out
