"""Unit tests of ``supabase_log_handler.rows``: levels, extras snapshots, row building."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supabase_log_handler._jsonsafe import encode
from supabase_log_handler._redact import MASK, Redactor
from supabase_log_handler.rows import (
    RowBuilder,
    Snapshot,
    iso_timestamp,
    map_level,
)
from supabase_log_handler.sanitise import sanitise_row
from supabase_log_handler.snapshot import STANDARD_ATTRS, extras_of, format_exception


def snapshot_extras(record: logging.LogRecord) -> dict[str, Any] | None:
    return extras_of(record.__dict__)[0]

CREATED = 1_700_000_000.123456  # 2023-11-14T22:13:20.123456Z


def make_snapshot(**changes: Any) -> Snapshot:
    base: dict[str, Any] = {
        "created": CREATED,
        "levelno": logging.INFO,
        "levelname": "INFO",
        "message": "hello",
        "logger": "jobs.sync",
        "pathname": "/srv/jobs/sync.py",
        "lineno": 42,
        "func": "main",
        "thread": "MainThread",
        "process": 1234,
        "exc": None,
        "run_id": "0190c6f1-0000-7000-8000-000000000001",
        "step": None,
        "extras": None,
    }
    base.update(changes)
    return Snapshot(**base)


def make_builder(**changes: Any) -> RowBuilder:
    options: dict[str, Any] = {
        "default_step": "LOG",
        "redactor": Redactor(),
        "max_message_chars": 1000,
        "max_traceback_chars": 1000,
        "max_meta_bytes": 64 * 1024,
    }
    options.update(changes)
    return RowBuilder(**options)


def make_record(
    msg: str = "m", *, extra: dict[str, Any] | None = None, **kw: Any
) -> logging.LogRecord:
    logger = logging.getLogger("test.unit.rows")
    return logger.makeRecord(
        logger.name,
        kw.pop("level", logging.INFO),
        "/srv/x.py",
        7,
        msg,
        (),
        kw.pop("exc_info", None),
        func="f",
        extra=extra,
    )


# -- map_level ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("levelno", "expected"),
    [
        (10, "DEBUG"),
        (20, "INFO"),
        (30, "WARNING"),
        (40, "ERROR"),
        (50, "ERROR"),
        (0, "DEBUG"),
        (5, "DEBUG"),
        (14, "DEBUG"),
        (15, "INFO"),
        (25, "WARNING"),
        (24, "INFO"),
        (35, "ERROR"),
        (45, "ERROR"),
        (60, "ERROR"),
        (-5, "DEBUG"),
    ],
)
def test_map_level(levelno: int, expected: str) -> None:
    """Any level number maps to the nearest of DEBUG/INFO/WARNING/ERROR, ties going up."""
    assert map_level(levelno) == expected


# -- snapshot_extras ----------------------------------------------------------------------
def test_snapshot_extras_none_without_extras() -> None:
    """A record with only standard attributes has no extras."""
    assert snapshot_extras(make_record()) is None


def test_snapshot_extras_only_non_standard_attributes() -> None:
    """Only attributes added through extra= are picked, never the standard ones."""
    record = make_record(extra={"order_id": 17, "meta": {"a": 1}, "step": "load"})
    record.message = record.getMessage()  # set by Formatter.format; still standard
    record.asctime = "now"
    extras = snapshot_extras(record)
    assert extras == {"order_id": 17, "meta": {"a": 1}, "step": "load"}
    assert not set(extras) & STANDARD_ATTRS


def test_snapshot_extras_copies_mutable_values() -> None:
    """Mutating an extra dict after the snapshot does not change the snapshot."""
    payload: dict[str, Any] = {"rows": [1, 2], "nested": {"k": "v"}}
    record = make_record(extra={"meta": payload})
    extras = snapshot_extras(record)
    payload["rows"].append(3)
    payload["nested"]["k"] = "changed"
    payload["new"] = True
    assert extras == {"meta": {"rows": [1, 2], "nested": {"k": "v"}}}


def test_snapshot_extras_makes_values_json_safe() -> None:
    """Extras that are not plain JSON scalars are converted (UUID to text, NaN to a string)."""
    ident = uuid.uuid4()
    extras = snapshot_extras(make_record(extra={"ident": ident, "ratio": float("nan"), "n": 3}))
    assert extras == {"ident": str(ident), "ratio": "NaN", "n": 3}


# -- format_exception ---------------------------------------------------------------------
def test_format_exception_type_message_traceback() -> None:
    """exc_info gives (qualified type, message, traceback text)."""
    try:
        raise KeyError("missing")
    except KeyError:
        record = make_record(exc_info=sys.exc_info())
    result = format_exception(record)
    assert result is not None
    etype, message, tb = result
    assert etype == "KeyError"
    assert message == "'missing'"
    assert tb.startswith("Traceback (most recent call last):")
    assert "KeyError: 'missing'" in tb


def test_format_exception_module_qualified_type() -> None:
    """A non-builtin exception type is named with its module."""
    try:
        json.loads("{")
    except json.JSONDecodeError:
        record = make_record(exc_info=sys.exc_info())
    result = format_exception(record)
    assert result is not None
    assert result[0] == "json.decoder.JSONDecodeError"


def test_format_exception_none_without_exc_info() -> None:
    """A record without exc_info or stack_info has no exception part."""
    assert format_exception(make_record()) is None


# -- RowBuilder.build ---------------------------------------------------------------------
def test_row_columns_and_timestamp() -> None:
    """A row has the logs columns; timestamp is record.created in ISO UTC with microseconds."""
    row = make_builder().build(make_snapshot())
    assert set(row) == {"id", "run_id", "timestamp", "level", "step", "message", "meta"}
    assert row["timestamp"] == "2023-11-14T22:13:20.123456+00:00"
    parsed = dt.datetime.fromisoformat(row["timestamp"])
    assert parsed.tzinfo is not None and parsed.utcoffset() == dt.timedelta(0)
    assert abs(parsed.timestamp() - CREATED) < 1e-6
    assert row["run_id"] == "0190c6f1-0000-7000-8000-000000000001"
    assert row["level"] == "INFO"
    assert row["message"] == "hello"
    assert uuid.UUID(row["id"]).version == 7


def test_each_row_gets_a_new_id() -> None:
    """Building the same snapshot twice gives two different ids."""
    builder, snap = make_builder(), make_snapshot()
    assert builder.build(snap)["id"] != builder.build(snap)["id"]


def test_timestamp_has_microseconds_on_whole_second() -> None:
    """A whole-second created time still renders six fractional digits."""
    assert iso_timestamp(1_700_000_000.0) == "2023-11-14T22:13:20.000000+00:00"


def test_default_step_used_without_step() -> None:
    """Without a run step or extra step, the builder's default step is used."""
    assert make_builder(default_step="MAIN").build(make_snapshot())["step"] == "MAIN"


def test_step_from_extras() -> None:
    """extra={"step": ...} sets the step when the snapshot has none."""
    row = make_builder().build(make_snapshot(extras={"step": "extract"}))
    assert row["step"] == "extract"
    assert "step" not in row["meta"]


def test_snapshot_step_beats_extra_step() -> None:
    """The run's current step (snapshot.step) wins over extra={"step": ...}."""
    row = make_builder().build(make_snapshot(step="load", extras={"step": "extract"}))
    assert row["step"] == "load"


def test_step_is_cleaned_and_capped() -> None:
    """The step loses NUL characters and is cut to 200 characters."""
    row = make_builder().build(make_snapshot(step="s\x00" + "x" * 500))
    assert row["step"] == "s" + "x" * 199


def test_meta_layout() -> None:
    """User meta is merged at the top, other extras beside it, then the "log" block."""
    snap = make_snapshot(extras={"meta": {"rows": 10, "table": "t"}, "order_id": 5, "run_id": "x"})
    meta = make_builder().build(snap)["meta"]
    assert meta == {
        "rows": 10,
        "table": "t",
        "order_id": 5,
        "log": {
            "logger": "jobs.sync",
            "file": "/srv/jobs/sync.py",
            "line": 42,
            "function": "main",
            "thread": "MainThread",
            "process": 1234,
        },
    }


def test_non_dict_user_meta_kept_under_meta() -> None:
    """A user meta that is not a dict is kept under meta["meta"]."""
    meta = make_builder().build(make_snapshot(extras={"meta": [1, 2]}))["meta"]
    assert meta["meta"] == [1, 2]


def test_exception_block() -> None:
    """An exception snapshot adds meta["exception"] with type, message and traceback."""
    snap = make_snapshot(exc=("ValueError", "bad value", "Traceback ...\nValueError: bad value"))
    meta = make_builder().build(snap)["meta"]
    assert meta["exception"] == {
        "type": "ValueError",
        "message": "bad value",
        "traceback": "Traceback ...\nValueError: bad value",
    }


def test_no_level_block_for_standard_levels() -> None:
    """The four standard levels add no "level" block."""
    builder = make_builder()
    for no, name in ((10, "DEBUG"), (20, "INFO"), (30, "WARNING"), (40, "ERROR")):
        assert "level" not in builder.build(make_snapshot(levelno=no, levelname=name))["meta"]


@pytest.mark.parametrize(
    ("levelno", "levelname", "column"),
    [(25, "NOTICE", "WARNING"), (50, "CRITICAL", "ERROR"), (5, "TRACE", "DEBUG")],
)
def test_level_block_for_non_standard_levels(levelno: int, levelname: str, column: str) -> None:
    """Other levels map to the nearest column value and keep their name and number in meta."""
    row = make_builder().build(make_snapshot(levelno=levelno, levelname=levelname))
    assert row["level"] == column
    assert row["meta"]["level"] == {"name": levelname, "no": levelno}


@pytest.mark.parametrize("key", ["log", "exception", "level", "truncated"])
def test_reserved_key_collision_moved(key: str) -> None:
    """A user key equal to a reserved meta key is moved to "<key>_"."""
    snap = make_snapshot(
        extras={"meta": {key: "mine"}}, exc=("E", "m", "tb"), levelno=25, levelname="N"
    )
    meta = make_builder(max_message_chars=1).build(snap)["meta"]
    assert meta[key + "_"] == "mine"
    assert meta[key] != "mine"


def test_message_truncation_marked() -> None:
    """A message over the limit is cut, says how much was cut, and meta["truncated"] names it."""
    row = make_builder(max_message_chars=10).build(make_snapshot(message="0123456789abcdefghij"))
    assert row["message"] == "0123456789... [truncated 10 chars]"
    assert row["meta"]["truncated"] == ["message"]


def test_traceback_truncation_marked() -> None:
    """A traceback over its limit is cut and meta["truncated"] names it."""
    snap = make_snapshot(exc=("E", "m", "t" * 50))
    meta = make_builder(max_traceback_chars=20).build(snap)["meta"]
    assert meta["exception"]["traceback"] == "t" * 20 + "... [truncated 30 chars]"
    assert meta["truncated"] == ["exception.traceback"]


def test_no_truncated_key_when_nothing_cut() -> None:
    """meta has no "truncated" entry when nothing was cut."""
    assert "truncated" not in make_builder().build(make_snapshot())["meta"]


def test_meta_size_cap_replaces_meta_with_text() -> None:
    """Meta over max_meta_bytes becomes {"log", "meta_text", "truncated": [..., "meta"]}."""
    extras = {f"field_{i}": "v" * 50 for i in range(200)}
    meta = make_builder(max_meta_bytes=4000).build(make_snapshot(extras=extras))["meta"]
    assert set(meta) == {"log", "meta_text", "truncated"}
    assert meta["truncated"] == ["meta"]
    assert meta["meta_text"].startswith('{"field_0": "vvv')
    assert len(meta["meta_text"]) < 4000
    assert meta["log"]["line"] == 42


def test_meta_size_cap_keeps_exception() -> None:
    """When meta is capped, the exception block is kept whole."""
    extras = {f"field_{i}": "v" * 50 for i in range(200)}
    snap = make_snapshot(extras=extras, exc=("E", "boom", "tb"))
    meta = make_builder(max_meta_bytes=4000).build(snap)["meta"]
    assert meta["exception"] == {"type": "E", "message": "boom", "traceback": "tb"}


@pytest.mark.parametrize("value", ['say "hi" \\ ok', "日本語のテキスト"])
def test_capped_meta_fits_max_meta_bytes(value: str) -> None:
    """The capped meta, encoded as UTF-8 JSON, is no larger than max_meta_bytes."""
    extras = {f"k{i}": value * 3 for i in range(400)}
    meta = make_builder(max_meta_bytes=3000).build(make_snapshot(extras=extras))["meta"]
    assert "meta_text" in meta
    assert len(json.dumps(meta, ensure_ascii=False).encode("utf-8")) <= 3000


def test_redaction_applied_to_message_and_meta() -> None:
    """Secrets are masked in the message, in meta values under sensitive keys and in tracebacks."""
    snap = make_snapshot(
        message="connecting with password=hunter2",
        extras={"meta": {"api_key": "k-123", "note": "Bearer abcdefghijklmnop"}, "token": "t"},
        exc=("E", "bad password=hunter2", 'File "x"\n  db_password=hunter2'),
    )
    row = make_builder().build(snap)
    assert row["message"] == f"connecting with password={MASK}"
    meta = row["meta"]
    assert meta["api_key"] == MASK
    assert meta["token"] == MASK
    assert meta["note"] == f"Bearer {MASK}"
    assert "hunter2" not in json.dumps(meta)


def test_redaction_of_configured_literal() -> None:
    """A configured literal secret is masked in the message."""
    secret = "literal-secret-value-123"
    row = make_builder(redactor=Redactor(literals=[secret])).build(
        make_snapshot(message=f"key {secret}")
    )
    assert row["message"] == f"key {MASK}"


def test_secret_straddling_truncation_not_leaked() -> None:
    """A literal secret cut by message truncation leaves no part of itself in the row."""
    secret = "literal-secret-value-123"
    builder = make_builder(redactor=Redactor(literals=[secret]), max_message_chars=100)
    row = builder.build(make_snapshot(message="a" * 90 + secret))
    assert secret[:10] not in row["message"]


def test_disabled_redactor_leaves_secrets() -> None:
    """With redaction disabled the row keeps the text as logged."""
    row = make_builder(redactor=Redactor(enabled=False)).build(
        make_snapshot(message="password=hunter2")
    )
    assert row["message"] == "password=hunter2"


def test_row_is_strict_json_and_clean() -> None:
    """NUL, lone surrogates and NaN in message and extras still give strict, NUL-free JSON."""
    snap = make_snapshot(message="a\x00b\udc80", extras={"x": float("nan"), "k\x00": "v\x00"})
    row = make_builder().build(snap)
    text = json.dumps(row, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert "\\u0000" not in text
    assert row["meta"]["x"] == "NaN"


# -- sanitise_row -------------------------------------------------------------------------
def test_sanitise_row() -> None:
    """sanitise_row makes text columns plain and short and meta one string, marked sanitised."""
    row = {
        "id": "i",
        "run_id": "r",
        "timestamp": "2024-01-01T00:00:00+00:00",
        "level": "CRITICAL",
        "step": "s\x00",
        "message": "m" * 50,
        "meta": {"a": 1, "b": "é"},
    }
    out = sanitise_row(row, max_chars=20)
    assert out == {
        "id": "i",
        "run_id": "r",
        "timestamp": "2024-01-01T00:00:00+00:00",
        "level": "ERROR",
        "step": "s",
        "message": "m" * 20 + "... [truncated]",
        "meta": {"meta_text": '{"a": 1, "b": "é"}', "sanitised": True},
    }
    assert row["message"] == "m" * 50  # the input is not modified


def test_sanitise_row_keeps_valid_level() -> None:
    """A valid level is kept as it is."""
    assert sanitise_row({"level": "WARNING", "message": "x"})["level"] == "WARNING"


# -- the fast path ----------------------------------------------------------------------
_ascii = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=40)
_plain = st.one_of(
    _ascii,
    st.text(max_size=40),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.booleans(),
    st.none(),
)


@given(
    message=st.one_of(_ascii, st.text(max_size=80)),
    meta=st.one_of(st.none(), st.dictionaries(st.one_of(_ascii, st.text(max_size=12)), _plain, max_size=6)),
    step=st.one_of(st.none(), _ascii, st.text(max_size=30)),
    levelno=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, 25]),
)
@settings(max_examples=300, deadline=None)
def test_encoded_entry_equals_the_row_it_describes(
    message: str, meta: dict[str, Any] | None, step: str | None, levelno: int
) -> None:
    """Whatever path encodes a record, its JSON is the row the general builder makes (id apart)."""
    from supabase_log_handler import snapshot

    builder = make_builder(redactor=Redactor(literals=["sb_secret_0123456789abcdef"]))
    record = logging.LogRecord("jobs.sync", levelno, "/srv/jobs/sync.py", 42, message, None, None, func="main")
    if meta is not None:
        record.meta = meta
    item = snapshot.log_item(7, record, "0190c6f1-0000-7000-8000-000000000001", step)
    entry = builder.entry(item)
    encoded = json.loads(entry[6])
    expected = builder.row(item)
    assert entry[3] == encoded.pop("id") and expected.pop("id")
    assert encoded == json.loads(json.dumps(expected))


def test_fast_path_masks_sensitive_keys_and_secret_text() -> None:
    """The encoded common record masks a password field and a JWT in a value, as the general path does."""
    from supabase_log_handler import snapshot

    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    record = logging.LogRecord("a", logging.INFO, "f.py", 1, "token %s", (jwt,), None)
    record.meta = {"password": "hunter2", "note": f"bearer {jwt}", "n": 3}
    entry = make_builder().entry(snapshot.log_item(1, record, "r", None))
    text = entry[6].decode()
    assert "hunter2" not in text and jwt not in text and text.count(MASK) >= 3
    assert make_builder()._fast(snapshot.log_item(1, record, "r", None)) is not None  # the fast one


@pytest.mark.parametrize("size", [10, 5_000, 200_000])
def test_an_encoded_row_takes_the_memory_its_length_says(size: int) -> None:
    """The queue and the spool count a row by its length: encode() must not hand back a
    buffer several times larger (as orjson 3.11+ does for its own output)."""
    import tracemalloc

    row = {"message": "m", "meta": {"blob": "x" * size}}
    tracemalloc.start()
    try:
        payload = encode(row)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held <= sys.getsizeof(payload) + 256, (held, len(payload))
