"""The caller's side of a record: what ``emit`` must do before it returns.

Only what cannot wait happens here, on the logging thread: the message is
rendered, the exception formatted, mutable extras copied, and the whole item
sized (message, extras and traceback), so the queue's byte bound covers what it
really holds. Everything else (ids, JSON, redaction, the ``meta`` layout) is the
worker's job (``rows.py``).

A queue item is one flat tuple of plain values, so the garbage collector stops
tracking it at its first pass. Its layout is defined here, once::

    (seq, size_bytes, levelno, kind, *payload)
    kind LOG:       created, levelname, message, logger, pathname, lineno, func,
                    thread, process, exc, run_id, step, extras
    kind RUN_OPEN:  run                      (the Run; its row is read when taken)
    kind ROW:       table_key, row, merge    (a finished row for another table,
                                              e.g. a run's final state)
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from . import _jsonsafe

LOG, RUN_OPEN, ROW = 0, 1, 2
SEQ, SIZE, LEVEL, KIND = 0, 1, 2, 3
(CREATED, LEVELNAME, MESSAGE, LOGGER, PATHNAME, LINENO, FUNC, THREAD, PROCESS, EXC, RUN_ID,
 STEP, EXTRAS) = range(4, 17)  # fmt: skip
ROW_TABLE, ROW_DATA, ROW_MERGE = 4, 5, 6
RUN = 4
CONTROL_LEVEL = 1_000  # above every logging level: run rows are never shed

ITEM_OVERHEAD_BYTES = 400  # a queued item besides its message, extras and traceback (measured)
CONTROL_BYTES = 600

# Attributes every LogRecord has; anything else on a record came from ``extra``.
STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "taskName", "stack_info", "exc_text"}
)
_BASE_LEN = len(vars(logging.LogRecord("", 0, "", 0, "", (), None)))
_PLAIN = (str, int, bool, type(None))


def extras_of(d: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
    """The record's non-standard attributes, mutable values copied, and their size in bytes."""
    if len(d) <= _BASE_LEN:
        return None, 0
    names = d.keys() - STANDARD_ATTRS
    if not names:
        return None, 0
    out: dict[str, Any] = {}
    size = 64
    for name in names:
        value, n = copy_value(d[name])
        out[name] = value
        size += n + len(name) + 32
    return out, size


def copy_value(value: Any) -> tuple[Any, int]:
    """An immutable-enough copy of a value from ``extra``, and its size estimate in bytes."""
    kind = type(value)
    if kind is str:
        return value, len(value) + 49
    if kind in _PLAIN:
        return value, 28
    if kind is float:
        return (value, 24) if value == value and value not in _INFINITE else (_jsonsafe.to_jsonable(value), 24)
    if kind is dict:
        size = 232
        for k, v in value.items():
            vk = type(v)
            if type(k) is not str or not (vk is str or vk in _PLAIN or (vk is float and v == v and v not in _INFINITE)):
                break
            size += len(k) + 80 + (len(v) if vk is str else 0)
        else:
            return dict(value), size
    copied = _jsonsafe.to_jsonable(value)
    return copied, estimate_bytes(copied)


_INFINITE = (float("inf"), float("-inf"))


def estimate_bytes(value: Any, budget: int = 10_000) -> int:
    """Roughly what a JSON-like value costs in memory (walks at most ``budget`` nodes)."""
    total = 0
    stack = [value]
    while stack and budget > 0:
        budget -= 1
        v = stack.pop()
        if isinstance(v, str):
            total += len(v) + 49
        elif isinstance(v, dict):
            total += 232 + 40 * len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            total += 56 + 8 * len(v)
            stack.extend(v)
        else:
            total += 28
    return total + 64 * len(stack)  # whatever the budget did not reach


def format_exception(record: logging.LogRecord) -> tuple[str, str, str] | None:
    """(type, message, traceback text) of the record's exception (or stack), or None."""
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


def message_of(record: logging.LogRecord) -> str:
    """The rendered message; a record whose formatting fails still gets a readable one."""
    try:
        return record.getMessage()
    except Exception as error:  # "%d" with a str, a __str__ that raises...: keep the row
        return (
            f"{_jsonsafe.safe_str(getattr(record, 'msg', ''))} [message formatting failed: "
            f"{_jsonsafe.safe_repr(error)}; args: {_jsonsafe.safe_repr(getattr(record, 'args', None))}]"
        )


def log_item(
    seq: int, record: logging.LogRecord, run_id: str, step: str | None
) -> tuple[Any, ...]:
    """The queue item for ``record`` (tolerates hand-made records missing attributes)."""
    d = record.__dict__
    try:
        message = record.getMessage()
    except Exception:
        message = message_of(record)
    exc = format_exception(record) if (d.get("exc_info") or d.get("stack_info")) else None
    extras, extras_size = extras_of(d)
    size = ITEM_OVERHEAD_BYTES + len(message) + extras_size + (len(exc[2]) if exc else 0)
    get = d.get
    levelno = get("levelno", logging.INFO)
    if type(levelno) is not int:
        levelno = logging.INFO
    return (
        seq,
        size,
        levelno,
        LOG,
        get("created") or 0.0,
        get("levelname") or logging.getLevelName(levelno),
        message,
        str(get("name") or "root"),
        get("pathname") or "",
        get("lineno") or 0,
        get("funcName"),
        get("threadName"),
        get("process"),
        exc,
        run_id,
        step,
        extras,
    )
