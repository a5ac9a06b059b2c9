"""Which run and step a record belongs to.

The current run and step live in context variables, so asyncio tasks and
threads started with a copied context keep their own. Records from threads that
know nothing of the run (a library's thread pool, a callback thread) fall back to
the process-wide run and that run's latest step. The registry keeps every run this
process has opened, so the sender can create a run's row before its first logs.
"""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runs import Run

_run_var: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "supabase_log_handler_run", default=None
)
_step_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "supabase_log_handler_step", default=None
)

_lock = threading.RLock()
_process_run: Run | None = None
_registry: dict[str, Run] = {}


def current_run() -> Run | None:
    """The run of this context, else the process-wide run, else None."""
    run = _run_var.get()
    if run is not None and not run.finished:
        return run
    fallback = _process_run
    if fallback is not None and not fallback.finished:
        return fallback
    return None


def current_step(run: Run | None) -> str | None:
    """The step of this context, else the run's latest step."""
    step = _step_var.get()
    if step is not None:
        return step
    return run.current_step if run is not None else None


def set_run(run: Run | None) -> contextvars.Token[Run | None]:
    return _run_var.set(run)


def reset_run(token: contextvars.Token[Run | None]) -> None:
    try:
        _run_var.reset(token)
    except ValueError:  # reset from another context (e.g. a generator finished elsewhere)
        _run_var.set(None)


def set_step(step: str | None) -> contextvars.Token[str | None]:
    return _step_var.set(step)


def reset_step(token: contextvars.Token[str | None]) -> None:
    try:
        _step_var.reset(token)
    except ValueError:
        _step_var.set(None)


def claim_process_run(run: Run) -> None:
    """Make ``run`` the fallback of threads that have no run of their own, if none is."""
    global _process_run
    with _lock:
        if _process_run is None or _process_run.finished:
            _process_run = run


def release_process_run(run: Run) -> None:
    global _process_run
    with _lock:
        if _process_run is run:
            _process_run = None


def process_run() -> Run | None:
    return _process_run


def register(run: Run) -> None:
    with _lock:
        _registry[run.id] = run


def lookup(run_id: str) -> Run | None:
    return _registry.get(run_id)


def forget(run_id: str) -> None:
    with _lock:
        _registry.pop(run_id, None)


def _reinit_after_fork() -> None:
    global _lock
    _lock = threading.RLock()


import os  # noqa: E402

os.register_at_fork(after_in_child=_reinit_after_fork)
