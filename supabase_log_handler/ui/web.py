"""What every page handler shares: the store, the Jinja2 templates and request helpers.

``Web`` renders templates with autoescaping on for every value (log lines are
untrusted input) and the filters of ``format.py``; ``fragment`` tells a request
from htmx (which gets the part of the page it swaps) from a plain one (which gets
the whole page, so every URL also works without JavaScript).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..cli._common import first_line
from . import format as fmt
from .store import Store

HERE = Path(__file__).resolve().parent
MAX_PARAM_CHARS = 200
READ_THREADS = 8
# Reads of one page that do not depend on each other go out together: each thread has
# its own connection (stores keep one per thread), so a page waits for its slowest read,
# not for the sum of them.
_reads = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="supabase-log-ui-read")


def parallel(*calls: Callable[[], Any]) -> list[Any]:
    """The results of ``calls``, run at the same time; the first exception is raised."""
    if len(calls) < 2:
        return [call() for call in calls]
    futures = [_reads.submit(call) for call in calls]
    return [future.result() for future in futures]


def traceback_lines(text: str) -> list[tuple[str, str]]:
    """Each line of a Python traceback with its kind: head, frame, code, or the exception."""
    lines = text.rstrip("\n").splitlines()
    out = []
    for i, line in enumerate(lines):
        if (
            line.startswith("Traceback ")
            or line.startswith("During handling")
            or line.startswith("The above exception")
        ):
            kind = "head"
        elif line.lstrip().startswith('File "'):
            kind = "frame"
        elif line.startswith(" "):
            kind = "code"
        else:
            kind = "exc" if i == len(lines) - 1 or not lines[i + 1].startswith(" ") else "code"
        out.append((kind, line))
    return out


class Web:
    """What every page handler shares: the store, the templates, the settings of the page."""

    def __init__(self, store: Store, *, token: str | None, poll_interval_s: float) -> None:
        self.store = store
        self.token = token
        self.poll_s = f"{poll_interval_s:g}"
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(
            show_time=fmt.show_time,
            log_time=fmt.log_time,
            show_duration=fmt.show_duration,
            cost=fmt.cost,
            records=fmt.records,
            meta_json=fmt.meta_json,
            traceback_of=fmt.traceback_of,
            traceback_lines=traceback_lines,
            first_line=first_line,
        )
        env.globals.update(elapsed=fmt.elapsed_ms, poll_s=self.poll_s, source=store.description)
        self.env = env

    def render(self, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status)

    def message(self, title: str, message: str, status: int) -> HTMLResponse:
        return self.render("message.html", status=status, title=title, message=message, nav="")


def fragment(request: Request) -> bool:
    """True when htmx asks for the part of the page it swaps."""
    return "hx-request" in request.headers and "hx-history-restore-request" not in request.headers


def param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value[:MAX_PARAM_CHARS] or None


def url(path: str, **params: Any) -> str:
    """``path`` with the given non-empty query parameters."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urlencode(kept) if kept else "")


def day_param(request: Request, name: str) -> dt.date | None:
    value = param(request, name)
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None
