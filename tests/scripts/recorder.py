"""A second handler for server tests: every record a process logs, one JSON line in a file.

Configured beside ``SupabaseHandler`` on the same loggers (``"class":
"recorder.JsonLinesHandler"`` in a dictConfig), it is the test's record of what
was really logged, so the rows in PostgreSQL can be compared with it line for
line. Forked children (a pre-fork server's workers) share the file: each record
is one ``O_APPEND`` write, so lines of different processes never interleave.
"""

from __future__ import annotations

import json
import logging
import os


class JsonLinesHandler(logging.Handler):
    def __init__(self, filename: str, level: int | str = logging.NOTSET) -> None:
        super().__init__(level)
        self.fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = {
                "pid": record.process,
                "logger": record.name,
                "level": record.levelname,
                "message": record.getMessage(),
            }
            os.write(self.fd, (json.dumps(line) + "\n").encode())
        except Exception:
            self.handleError(record)


def read(filename: str) -> list[dict[str, object]]:
    """Every line written so far (a line still being written is left out)."""
    try:
        with open(filename, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]
