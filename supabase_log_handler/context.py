"""Which run and step a record belongs to, and the process's registry of runs.

The current run and step live in context variables, so asyncio tasks and
threads started with a copied context keep their own. Records from threads that
know nothing of the run (a library's thread pool, a callback thread) fall back to
the process-wide run and that run's latest step.

The registry holds the runs that are open in this process (opened here, joined
through ``SUPABASE_LOG_RUN_ID``, or inherited through ``fork``), so the sender
can create a run's row before its first logs. A finished run is released: only
its opening row stays, in a bounded list of recent ones, for rows that arrive
late. Everything here is safe to call from a signal handler: reads take no lock,
and writes are single dictionary operations.
"""

from __future__ import annotations

import contextvars
import os
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ._types import RunLike as Run

RECENT_RUNS_KEPT = 1024

_run_var: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "supabase_log_handler_run", default=None
)
_step_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "supabase_log_handler_step", default=None
)

_state: dict[str, Any] = {"process_run": None, "implicit": None}
_listeners: weakref.WeakSet[Any] = weakref.WeakSet()  # handlers, told as runs open and finish


def listen(handler: Any) -> None:
    """``handler`` is told about runs as they open and finish (see handler.py)."""
    _listeners.add(handler)


def listeners() -> list[Any]:
    return list(_listeners)


def provide_installer(install: Callable[..., Any]) -> None:
    """``install()`` (installer.py) registers itself here: runs, pools and calls need a
    handler when the job made none, and must not import the handler to get one."""
    _state["installer"] = install


def install(**settings: Any) -> Any:
    """The handler ``install()`` attaches to the root logger (made once)."""
    return _state["installer"](**settings)  # the package's __init__ imported installer
_registry: dict[str, Run] = {}
_recent: OrderedDict[str, dict[str, Any]] = OrderedDict()


def current_run() -> Run | None:
    """The run of this context, else the process-wide run, else None."""
    run = _run_var.get()
    if run is not None and not run.finished:
        return run
    fallback: Run | None = _state["process_run"]
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
    current: Run | None = _state["process_run"]
    if current is None or current.finished:
        _state["process_run"] = run


def release_process_run(run: Run) -> None:
    if _state["process_run"] is run:
        _state["process_run"] = None


def process_run() -> Run | None:
    run: Run | None = _state["process_run"]
    return run


def implicit_run(make: Callable[[], Run]) -> Run:
    """The one run per process for records logged outside ``start_run``.

    Made without a lock: if a signal handler (or another thread) makes one at the
    same moment, one of the two wins (an atomic ``setdefault``) and the other is
    cancelled unused.
    """
    run: Run | None = _state["implicit"]
    if run is not None and not (run.finished and run.owned):
        return run
    candidate = make()
    key = f"implicit after {id(run)}"
    winner: Run = _state.setdefault(key, candidate)
    if winner is not candidate:
        candidate.cancel()
        return winner
    _state["implicit"] = candidate
    candidate.activate()
    return candidate


def last_implicit_run() -> Run | None:
    """The implicit run made last, finished or not."""
    run: Run | None = _state["implicit"]
    return run


def register(run: Run) -> None:
    _registry[run.id] = run


def open_runs() -> list[Run]:
    """The runs open in this process (opened here, joined, or inherited)."""
    return list(_registry.values())


def lookup(run_id: str) -> Run | None:
    return _registry.get(run_id)


def open_row(run_id: str) -> dict[str, Any] | None:
    """The row that creates run ``run_id``, from an open run or a recently finished one."""
    run = _registry.get(run_id)
    if run is not None:
        return run.open_row()
    return _recent.get(run_id)


def release(run: Run) -> None:
    """Forget a finished run, keeping only its opening row among the recent ones."""
    _registry.pop(run.id, None)
    row = run.open_row()
    if row is not None:
        _recent[run.id] = row
        while len(_recent) > RECENT_RUNS_KEPT:
            try:
                _recent.popitem(last=False)
            except KeyError:
                break
    if _state["implicit"] is run:
        for key in [k for k in _state if k.startswith("implicit after")]:
            _state.pop(key, None)


def forget(run_id: str) -> None:
    _registry.pop(run_id, None)


def sizes() -> tuple[int, int]:
    """(open runs, recent runs) held: both stay bounded in a long-lived process."""
    return len(_registry), len(_recent)


def reset() -> None:
    """Forget every run (for tests, and for a process that starts over)."""
    _state.update(process_run=None, implicit=None)
    _registry.clear()
    _recent.clear()
    _run_var.set(None)  # in the calling context; others end with their tasks and threads
    _step_var.set(None)


def _after_fork_in_child() -> None:
    pass  # runs inherited from the parent stay current; the parent finishes them


os.register_at_fork(after_in_child=_after_fork_in_child)
