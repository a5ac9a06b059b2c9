"""The worker's side of a record: from a queue item to an encoded ``logs`` row.

``RowBuilder.entry`` makes the id, the timestamp, the level, the step and the
``meta`` layout, masks secrets, caps sizes, and encodes the row as JSON bytes
once: the same bytes are sent, spooled and replayed, never rebuilt::

    meta = {<meta= / extra={"meta": ...} fields>, <other extra fields>,
            "log": {"logger", "file", "line", "function", "thread", "process"},
            "exception": {"type", "message", "traceback"},     # when exc_info was set
            "level": {"name", "no"},                           # when not one of the four
            "truncated": [...]}                                # what was cut

An entry is one flat tuple (``E_*`` below), so batches of them cost the garbage
collector nothing: ``(seq, table, mode, row_id, run_id, levelno, payload)``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any, Final, NamedTuple

from . import _jsonsafe
from ._ids import new_id
from ._jsonsafe import encode, encode_str, fit_text, json_bytes
from ._redact import Redactor
from .snapshot import (
    CREATED,
    EXC,
    EXTRAS,
    FUNC,
    LEVEL,
    LEVELNAME,
    LINENO,
    LOGGER,
    MESSAGE,
    PATHNAME,
    PROCESS,
    RUN_ID,
    SEQ,
    STEP,
    THREAD,
)

E_SEQ: Final = 0
E_TABLE: Final = 1
E_MERGE: Final = 2
E_ID: Final = 3
E_RUN: Final = 4
E_LEVEL: Final = 5
E_PAYLOAD: Final = 6
Entry = tuple[int, str, int, str, "str | None", int, bytes]
# E_MERGE, how a row is written: INSERT keeps a stored row with the same id, MERGE overwrites
# it, ALIVE updates a run that is still running (a heartbeat: never resurrects a finished run).
INSERT, MERGE, ALIVE = 0, 1, 2

LEVELS = ((logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"), (logging.WARNING, "WARNING"),
          (logging.ERROR, "ERROR"))  # fmt: skip
_LEVEL_NAMES = {no: name for no, name in LEVELS}
_RESERVED = ("log", "exception", "level", "truncated")
_REDACT_MARGIN = 4096  # longest secret that is still masked whole where a message is cut
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
    """A log item's payload by name (tests and slow paths; the worker indexes items)."""

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


_second_cache: dict[int, str] = {}


def iso_timestamp(created: float) -> str:
    """ISO-8601 UTC with microseconds, as PostgreSQL's timestamptz reads it."""
    second = int(created // 1)
    micros = round((created - second) * 1_000_000)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    prefix = _second_cache.get(second)
    if prefix is None:
        if len(_second_cache) > 4096:
            _second_cache.clear()
        prefix = dt.datetime.fromtimestamp(second, _UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache[second] = prefix
    return f"{prefix}.{micros:06d}+00:00"


class RowBuilder:
    """Worker-side conversion of queue items into redacted, size-capped, encoded rows."""

    def __init__(
        self,
        *,
        default_step: str,
        redactor: Redactor,
        max_message_chars: int,
        max_traceback_chars: int,
        max_meta_bytes: int,
        logs_table: str = "logs",
    ) -> None:
        self.default_step = default_step
        self.redactor = redactor
        self.max_message_chars = max_message_chars
        self.max_traceback_chars = max_traceback_chars
        self.max_meta_bytes = max_meta_bytes
        self.logs_table = logs_table
        self._log_blocks: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._log_texts: dict[tuple[Any, ...], str] = {}

    # -- entry points --------------------------------------------------------------------
    def entry(self, item: tuple[Any, ...]) -> Entry:
        """The encoded ``logs`` entry of a log item; never raises."""
        try:
            fast = self._fast(item)
            if fast is not None:
                return fast
            row = self.row(item)
            payload = encode(row)
        except Exception as exc:  # the builder never fails a record: keep a plain row instead
            row = self._fallback_row(item, exc)
            payload = encode(row)
        return (item[SEQ], self.logs_table, False, row["id"], item[RUN_ID], item[LEVEL], payload)

    def _fast(self, item: tuple[Any, ...]) -> Entry | None:
        """The common record, encoded straight to JSON (None when it needs the general path).

        Common: one of the four levels, no exception, a short ASCII message and step,
        and extras that are at most ``meta=`` with short ASCII keys and plain values.
        The bytes equal what the general path makes (a property test holds them equal).
        """
        levelno = item[LEVEL]
        level = _LEVEL_NAMES.get(levelno)
        message = item[MESSAGE]
        step = item[STEP]
        if (level is None or item[EXC] is not None or len(message) > self.max_message_chars
                or not _clean_plain(message)):  # fmt: skip
            return None
        extras = item[EXTRAS]
        meta_json = ""
        if extras:
            if len(extras) != 1:
                return None
            user = extras.get("meta")
            if type(user) is not dict or len(user) > 64:
                return None
            redact = self.redactor
            sensitive = redact.is_sensitive_key
            parts = []
            for k, v in user.items():
                if not _clean_plain(k) or k in _RESERVED:
                    return None
                kind = type(v)
                if kind is str:
                    if not _clean_plain(v) or len(v) > 1000:
                        return None
                    shown = _MASK_JSON if sensitive(k) else _quote(redact.text(v))
                elif kind is int or kind is bool or v is None:
                    shown = _MASK_JSON if sensitive(k) and v is not None else _literal(v)
                elif kind is float and v == v and v not in _INFINITE:
                    shown = _MASK_JSON if sensitive(k) else repr(v)
                else:
                    return None
                parts.append(_quote(k) + ":" + shown)
            meta_json = ",".join(parts)
        if step is None:
            step = self.default_step
        elif type(step) is not str or len(step) > 200 or not _clean_plain(step):
            return None
        log_json = self._log_json(item)
        meta = "{" + meta_json + ("," if meta_json else "") + '"log":' + log_json + "}"
        if len(meta) > self.max_meta_bytes or not meta.isascii():
            return None
        row_id = new_id()
        text = (
            f'{{"id":"{row_id}","run_id":{_quote(item[RUN_ID])},'
            f'"timestamp":"{iso_timestamp(item[CREATED])}","level":"{level}",'
            f'"step":{_quote(step)},"message":{_quote(self.redactor.text(message))},"meta":{meta}}}'
        )
        return (item[SEQ], self.logs_table, False, row_id, item[RUN_ID], levelno, text.encode())

    def _log_json(self, item: tuple[Any, ...]) -> str:
        """The ``log`` block of a call site, encoded once."""
        key = (item[LOGGER], item[PATHNAME], item[LINENO], item[FUNC], item[THREAD], item[PROCESS])
        text = self._log_texts.get(key)
        if text is None:
            text = encode_str(self._log_block(*key))
            if len(self._log_texts) > 4096:
                self._log_texts.clear()
            self._log_texts[key] = text
        return text

    def row(self, item: tuple[Any, ...]) -> dict[str, Any]:
        """The ``logs`` row (a dict) of a log item."""
        return self._row(
            item[LEVEL], item[CREATED], item[LEVELNAME], item[MESSAGE], item[LOGGER],
            item[PATHNAME], item[LINENO], item[FUNC], item[THREAD], item[PROCESS], item[EXC],
            item[RUN_ID], item[STEP], item[EXTRAS],
        )  # fmt: skip

    def build(self, snap: Snapshot) -> dict[str, Any]:
        """The ``logs`` row of a :class:`Snapshot`."""
        return self._row(
            snap.levelno, snap.created, snap.levelname, snap.message, snap.logger, snap.pathname,
            snap.lineno, snap.func, snap.thread, snap.process, snap.exc, snap.run_id, snap.step,
            snap.extras,
        )  # fmt: skip

    # -- the row -------------------------------------------------------------------------
    def _row(
        self, levelno: int, created: float, levelname: str, message: str, logger: str,
        pathname: str, lineno: int, func: str | None, thread: str | None, process: int | None,
        exc: tuple[str, str, str] | None, run_id: str, step: str | None,
        extras: dict[str, Any] | None,
    ) -> dict[str, Any]:  # fmt: skip
        truncated: list[str] = []
        if len(message) <= self.max_message_chars and (message.isascii() and "\x00" not in message):
            message = self.redactor.text(message)
        else:
            message = self._text(message, self.max_message_chars, "message", truncated)
        meta: dict[str, Any]
        if extras:
            meta, extra_step = self._user_meta(extras)
            if step is None and extra_step is not None:
                step = _jsonsafe.safe_str(extra_step)
        else:
            meta = {}
        meta["log"] = self._log_block(logger, pathname, lineno, func, thread, process)
        if exc is not None:
            etype, evalue, tb = exc
            meta["exception"] = {
                "type": _jsonsafe.clean_text(etype),
                "message": self._text(evalue, self.max_message_chars, "exception.message", truncated),
                "traceback": self._text(tb, self.max_traceback_chars, "exception.traceback", truncated),
            }
        level = _LEVEL_NAMES.get(levelno)
        if level is None:
            level = map_level(levelno)
            meta["level"] = {"name": _jsonsafe.clean_text(str(levelname)), "no": levelno}
        if truncated:
            meta["truncated"] = truncated
        if extras or exc is not None:  # only then can meta be large
            meta = self._cap_meta(meta)
        if step is None:
            step = self.default_step
        elif type(step) is not str or not step.isascii() or len(step) > 200 or "\x00" in step:
            step = _jsonsafe.clean_text(_jsonsafe.safe_str(step))[:200] or self.default_step
        return {
            "id": new_id(),
            "run_id": run_id,
            "timestamp": iso_timestamp(created),
            "level": level,
            "step": step,
            "message": message,
            "meta": meta,
        }

    def _user_meta(self, extras: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """The user's part of ``meta`` (redacted, JSON-safe) and a step given as an extra."""
        extras = dict(extras)
        user_meta = extras.pop("meta", None)
        extras.pop("run_id", None)
        extra_step = extras.pop("step", None)
        meta: dict[str, Any] = {}
        if isinstance(user_meta, dict):
            meta.update(user_meta)
        elif user_meta is not None:
            meta["meta"] = user_meta
        meta.update(extras)
        for reserved in _RESERVED:
            if reserved in meta:
                meta[reserved + "_"] = meta.pop(reserved)
        if not all(_clean_plain(k) and (_clean_plain(v) or (_jsonsafe.is_plain(v) and type(v) is not str))
                   for k, v in meta.items()):  # fmt: skip
            meta = _jsonsafe.to_jsonable(meta)
        return self.redactor.value(meta), extra_step

    def _log_block(
        self, logger: str, pathname: str, lineno: int, func: str | None, thread: str | None,
        process: int | None,
    ) -> dict[str, Any]:  # fmt: skip
        """Where the record came from; the same call site gives the same (shared) block."""
        key = (logger, pathname, lineno, func, thread, process)
        block = self._log_blocks.get(key)
        if block is None:
            clean = _jsonsafe.clean_text
            block = {
                "logger": clean(str(logger)),
                "file": clean(str(pathname)),
                "line": lineno if type(lineno) is int else 0,
                "function": clean(str(func)) if func else func,
                "thread": clean(str(thread)) if thread else thread,
                "process": process if process is None or type(process) is int else None,
            }
            if len(self._log_blocks) > 4096:
                self._log_blocks.clear()
            self._log_blocks[key] = block
        return block

    def _text(self, text: str, limit: int, name: str, truncated: list[str]) -> str:
        """Clean, redact, then cut ``text`` to ``limit`` characters, noting the cut.

        Redaction comes before the cut, so a secret crossing the limit is masked
        whole rather than half shown; text far past the limit is dropped first so
        a huge message costs no regex time.
        """
        if type(text) is not str:
            text = _jsonsafe.safe_str(text)
        original = len(text)
        if original > limit + _REDACT_MARGIN:
            text = text[: limit + _REDACT_MARGIN]
        text = self.redactor.text(_jsonsafe.clean_text(text))
        if len(text) > limit or original > limit + _REDACT_MARGIN:
            truncated.append(name)
            dropped = max(original - limit, len(text) - limit)
            return text[:limit] + f"... [truncated {dropped} chars]"
        return text

    def _cap_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Meta whose UTF-8 JSON fits ``max_meta_bytes``: if not, the user part becomes a cut text."""
        cap = self.max_meta_bytes
        if json_bytes(meta) <= cap:
            return meta
        keep: dict[str, Any] = {k: meta[k] for k in ("log", "exception", "level") if k in meta}
        keep["truncated"] = [*meta.get("truncated", []), "meta"]
        text = json.dumps({k: v for k, v in meta.items() if k not in keep}, ensure_ascii=False)
        exc = keep.get("exception")
        while True:
            room = cap - json_bytes({**keep, "meta_text": ""})
            if room >= 0 or not isinstance(exc, dict) or not exc.get("traceback"):
                break
            tb = str(exc["traceback"])  # even the traceback does not fit: keep its end
            exc = {**exc, "traceback": "..." + tb[len(tb) // 2 :] if len(tb) > 64 else ""}
            keep["exception"] = exc
        keep["meta_text"] = fit_text(text, max(room, 0))
        return keep

    def _fallback_row(self, item: tuple[Any, ...], exc: Exception) -> dict[str, Any]:
        created = item[CREATED] if isinstance(item[CREATED], (int, float)) else time.time()
        return {
            "id": new_id(),
            "run_id": str(item[RUN_ID]),
            "timestamp": iso_timestamp(float(created)),
            "level": "ERROR",
            "step": self.default_step,
            "message": "a log record could not be converted",
            "meta": {"error": _jsonsafe.safe_repr(exc)[:1000]},
        }


_quote = json.encoder.encode_basestring
_MASK_JSON = '"[REDACTED]"'
_INFINITE = (float("inf"), float("-inf"))


def _literal(value: int | bool | None) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _clean_plain(value: Any) -> bool:
    """A str PostgreSQL takes as it is (ASCII without NUL); anything else is checked slowly."""
    return type(value) is str and value.isascii() and "\x00" not in value
