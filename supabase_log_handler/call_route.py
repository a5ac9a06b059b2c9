"""Where a call's rows go: the handlers to write through, the run to link, the submission.

A call writes through the handler it was given, else every live handler (closed
ones still settle what they are given at exit), else the one ``install()`` makes,
so a script that only records calls still gets its rows. Its run is the one
given, else the current run, else the implicit run of a handler; that run's row
is announced to each handler first, so the call's ``run_id`` has a row to point at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import context

if TYPE_CHECKING:
    from ._redact import Redactor
    from ._types import RunLike
    from .handler import SupabaseHandler


def targets(handler: SupabaseHandler | None) -> list[SupabaseHandler]:
    if handler is not None:
        return [handler]
    every = context.listeners()
    live = [h for h in every if not h.closed]
    if live:
        return live
    if every:
        return every
    return [context.install()]


def link_run(run: RunLike | str | None, handlers: list[SupabaseHandler]) -> str | None:
    """The id of the run a call belongs to (see the module docstring)."""
    if isinstance(run, str):
        return run
    if run is None:  # as log records do: the current run, else the implicit one
        run = context.current_run()
        for h in handlers:
            if run is None and not h.closed:
                with contextlib.suppress(Exception):
                    run = h.open_implicit_run()
    if run is not None and not run.finished:
        for h in handlers:  # its row travels ahead of the call's (once per handler)
            with contextlib.suppress(Exception):
                h.run_opened(run)
    return None if run is None else run.id


def submit(
    handlers: list[SupabaseHandler],
    table_key: str,
    row: Callable[[Redactor | None], dict[str, Any]],
    *,
    merge: bool,
    what: str,
) -> None:
    """Queue the call's row, masked by each handler's redactor; never raises into the job."""
    for h in handlers:
        try:
            h.submit_row(table_key, row(h.redactor), merge=merge, hurry=False)
        except Exception as exc:
            with contextlib.suppress(Exception):
                h.diagnostics.report("call", f"could not record a call to {what}: {exc!r}")
