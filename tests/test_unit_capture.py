"""Unit tests of ``supabase_log_handler.capture``: print() lines become records, nothing else changes."""

from __future__ import annotations

import io
import logging
import sys
import threading

import pytest

from supabase_log_handler import capture


class Collect(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Broken(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        raise RuntimeError("handler is broken")


def test_lines_become_records_and_output_is_unchanged() -> None:
    """Complete lines (joined across writes, after a \\r) are INFO records at the print() call; the text passes through."""
    out, handler = io.StringIO(), Collect()
    stream = capture.LineCapture(out, "stdout", handler)
    print("fetched 3", file=stream)
    print("partial", end="", file=stream)
    print(" line", file=stream)
    print("10%", end="\r", file=stream)
    print("100%", file=stream)
    print("   ", file=stream)
    print("unfinished", end="", file=stream)
    assert out.getvalue() == "fetched 3\npartial line\n10%\r100%\n   \nunfinished"
    assert [(r.levelno, r.name, r.getMessage()) for r in handler.records] == [
        (logging.INFO, "print", "fetched 3"),
        (logging.INFO, "print", "partial line"),
        (logging.INFO, "print", "100%"),
    ]
    assert handler.records[0].__dict__["meta"] == {"stream": "stdout"}
    assert handler.records[0].pathname == __file__ and handler.records[0].funcName == (
        "test_lines_become_records_and_output_is_unchanged"
    )
    stream.flush_partial()
    assert handler.records[-1].getMessage() == "unfinished"


def test_writes_from_logging_handlers_are_not_captured() -> None:
    """A StreamHandler writing to the captured stream adds no record; a print beside it does."""
    out, handler = io.StringIO(), Collect()
    stream = capture.LineCapture(out, "stdout", handler)
    logger = logging.Logger("unit-capture")
    logger.addHandler(logging.StreamHandler(stream))
    logger.warning("from logging")
    print("from print", file=stream)
    assert out.getvalue() == "from logging\nfrom print\n"
    assert [r.getMessage() for r in handler.records] == ["from print"]


def test_threads_keep_their_own_unfinished_lines() -> None:
    """Two threads writing halves of lines at once still give whole lines."""
    out, handler = io.StringIO(), Collect()
    stream = capture.LineCapture(out, "stdout", handler)
    first_half = threading.Event()
    other_done = threading.Event()

    def other() -> None:
        first_half.wait(10)
        print("other line", file=stream)
        other_done.set()

    worker = threading.Thread(target=other)
    worker.start()
    stream.write("main ")
    first_half.set()
    other_done.wait(10)
    stream.write("line\n")
    worker.join(10)
    assert sorted(r.getMessage() for r in handler.records) == ["main line", "other line"]


def test_a_failing_handler_never_breaks_print() -> None:
    """print() returns normally and writes its text even when the handler raises."""
    out = io.StringIO()
    stream = capture.LineCapture(out, "stderr", Broken())
    assert stream.write("still printed\n") == len("still printed\n")
    print("and again", file=stream)
    assert out.getvalue() == "still printed\nand again\n"


def test_install_and_uninstall(monkeypatch: pytest.MonkeyPatch) -> None:
    """install() wraps stdout, stderr and the excepthook once; uninstall() restores them; the variable turns it off."""
    out, err, hook = io.StringIO(), io.StringIO(), sys.excepthook
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv(capture.ENV_CAPTURE_PRINT, "false")
    assert capture.install(Collect()) is False and sys.stdout is out
    monkeypatch.setenv(capture.ENV_CAPTURE_PRINT, "true")
    try:
        assert capture.install(Collect()) is True and capture.install(Collect()) is False
        assert isinstance(sys.stdout, capture.LineCapture) and sys.stdout.wrapped is out
        assert isinstance(sys.stderr, capture.LineCapture) and sys.excepthook is not hook
    finally:
        capture.uninstall()
    assert sys.stdout is out and sys.stderr is err and sys.excepthook is hook
