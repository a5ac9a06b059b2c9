"""structlog (standard-library integration) and loguru (handler as a sink) records arrive with their fields."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler import SupabaseHandler, start_run
from supabase_log_handler.interop import StructlogSupabaseHandler, configure_structlog, loguru_sink


def rows(db: Db, run_id: str) -> list[dict[str, Any]]:
    found = db.fetch(
        "select level, step, message, meta from logs where run_id = %s order by timestamp, id",
        (run_id,),
    )
    return [dict(zip(("level", "step", "message", "meta"), r, strict=True)) for r in found]


@pytest.fixture
def structlog_reset() -> Iterator[None]:
    import structlog

    yield
    structlog.reset_defaults()


def test_structlog_fields_become_meta(
    db: Db, make_handler: Callable[..., SupabaseHandler], structlog_reset: None
) -> None:
    """structlog through render_to_log_kwargs: the event is the message, bound and call fields are meta, step and exceptions work."""
    import structlog

    handler = make_handler()
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    configure_structlog(cache_logger_on_first_use=False)
    log = structlog.get_logger("sync").bind(source="vapi")
    with start_run("structlog-job") as run:
        log.info("fetched calls", count=150, step="FETCH", name="clash", level="ignored")
        log.debug("not stored at INFO")
        log.warning("page %d slow", 3, page_ms=1200)
        try:
            raise KeyError("missing")
        except KeyError:
            log.exception("lookup failed", key="missing")
    assert handler.flush(10)
    got = rows(db, run.id)
    assert [(r["level"], r["step"], r["message"]) for r in got] == [
        ("INFO", "FETCH", "fetched calls"),
        ("WARNING", "LOG", "page 3 slow"),
        ("ERROR", "LOG", "lookup failed"),
    ]
    first = got[0]["meta"]
    assert (
        first["count"] == 150
        and first["source"] == "vapi"
        and first["name_"] == "clash"
        and "level" not in first
    )
    assert first["log"]["logger"] == "sync" and first["log"]["file"].endswith("test_interop.py")
    assert got[1]["meta"]["page_ms"] == 1200
    assert got[2]["meta"]["key"] == "missing" and got[2]["meta"]["exception"]["type"] == "KeyError"


def test_structlog_processor_formatter_setup(
    db: Db, gateway: Gateway, tmp_path: Path, structlog_reset: None
) -> None:
    """structlog with ProcessorFormatter (wrap_for_formatter last): StructlogSupabaseHandler unpacks the event dict into message and meta."""
    import structlog

    handler = StructlogSupabaseHandler(
        url=gateway.url,
        key=gateway.service_key,
        spool_path=str(tmp_path / "spool"),
        capture_uncaught=False,
        install_signal_handlers=False,
        flush_interval_s=0.2,
    )
    console = logging.StreamHandler()
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.dev.ConsoleRenderer(colors=False)]
        )
    )
    logger = logging.getLogger("pf-sync")
    logger.handlers = [console, handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    log = structlog.get_logger("pf-sync")
    with start_run("structlog-pf-job") as run:
        log.info("saved rows", table="calls", inserted=10, step="SAVE")
    assert handler.flush(10)
    (row,) = rows(db, run.id)
    assert (row["level"], row["step"], row["message"]) == ("INFO", "SAVE", "saved rows")
    assert row["meta"]["table"] == "calls" and row["meta"]["inserted"] == 10
    assert not any(k.startswith("_") for k in row["meta"])
    logger.handlers = []
    handler.close(5)


def test_loguru_records_arrive_with_extra_fields(
    db: Db, make_handler: Callable[..., SupabaseHandler]
) -> None:
    """loguru with loguru_sink(handler): levels map, bound/contextualized/keyword fields are meta, step and exceptions kept."""
    from loguru import logger

    handler = make_handler()
    sink_id = logger.add(loguru_sink(handler), level="DEBUG")
    try:
        with start_run("loguru-job") as run:
            bound = logger.bind(source="hubspot")
            bound.info("found {n} contacts", n=150)
            with logger.contextualize(step="UPSERT"):
                bound.warning("retrying batch", batch=2)
            logger.bind(step="SAVE").success("saved")
            logger.trace("below the sink level")
            try:
                _ = 1 / 0
            except ZeroDivisionError:
                logger.exception("division failed")
        assert handler.flush(10)
    finally:
        logger.remove(sink_id)
    got = rows(db, run.id)
    assert [(r["level"], r["step"], r["message"]) for r in got] == [
        ("INFO", "LOG", "found 150 contacts"),
        ("WARNING", "UPSERT", "retrying batch"),
        ("WARNING", "SAVE", "saved"),
        ("ERROR", "LOG", "division failed"),
    ]
    assert got[0]["meta"]["source"] == "hubspot" and got[0]["meta"]["n"] == 150
    assert got[0]["meta"]["log"]["function"] == "test_loguru_records_arrive_with_extra_fields"
    assert got[1]["meta"]["batch"] == 2
    assert got[2]["meta"]["level"] == {"name": "SUCCESS", "no": 25}
    assert got[3]["meta"]["exception"]["type"] == "ZeroDivisionError"
