"""Process pools whose workers start a fresh interpreter (spawn, forkserver).

A forked worker inherits the parent's handler and run. A spawned one starts with
neither, so ``multiprocessing.Pool(4, **pool_options())`` (or the same keywords
for ``concurrent.futures.ProcessPoolExecutor``) gives each worker an
initializer that attaches a handler and joins the parent's run, the way
``supabase-log run`` does for every Python process it starts
(``joined_run_from_env``: the run a parent hands down through the environment).
"""

from __future__ import annotations

import os
from typing import Any

from . import context, runs
from ._types import RunLike

__all__ = ["join_run", "pool_options"]


def pool_options(**settings: Any) -> dict[str, Any]:
    """Keywords for a process pool (``initializer``, ``initargs``) so its workers log into this run.

    ``settings`` are handler settings for the workers (the environment and
    ``.env`` are read there as usual). Opens the implicit run if none is current.
    """
    run = context.current_run()
    if run is None:
        handler = context.install(console=False)
        run = handler.open_implicit_run()
    if run is None:
        raise RuntimeError("no run to join: implicit runs are disabled and no run is open")
    return {"initializer": join_run, "initargs": (run.id, run.script_name, dict(settings))}


def join_run(run_id: str, script_name: str, settings: dict[str, Any] | None = None) -> None:
    """In a pool worker: attach a handler to the root logger and log into run ``run_id``."""
    os.environ[runs.ENV_RUN_ID] = run_id
    os.environ[runs.ENV_RUN_SCRIPT] = script_name
    context.install(console=False, **(settings or {}))
    joined_run_from_env()


def joined_run_from_env() -> RunLike | None:
    """The run a parent process handed down through ``SUPABASE_LOG_RUN_ID``, if any."""
    run_id = os.environ.get(runs.ENV_RUN_ID)
    if not run_id:
        return None
    existing = context.lookup(run_id)
    if existing is not None:
        return existing
    run = runs.Run(os.environ.get(runs.ENV_RUN_SCRIPT) or "unknown", run_id=run_id, owned=False)
    context.register(run)
    context.claim_process_run(run)
    return run
