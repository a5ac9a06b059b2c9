"""A SIGTERM whose Python handler is due while the main thread sleeps in a wait that does not
watch for signals: the watcher wakes the main thread, the child drains and ends by the signal."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SCRIPTS

pytestmark = pytest.mark.process  # forks, signals or exits: also run on 3.10 and 3.13


def _job(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run ``sigwatch_job.py 60 *args`` on a local store in ``tmp_path``; it must end by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env.update(SUPABASE_LOG_LOCAL_DB=str(tmp_path / "local.db"),
               SUPABASE_LOG_SPOOL=str(tmp_path / "spool"), PYTHONPATH=str(ROOT), **settings)  # fmt: skip
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "sigwatch_job.py"), "60", *args],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out


def _messages(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "local.db") as db:
        return sorted(m for (m,) in db.execute("select message from logs"))


def test_a_fork_child_whose_sigterm_tripped_elsewhere_still_drains_and_ends(tmp_path: Path) -> None:
    """The kernel ran the child's SIGTERM handler on a helper thread while its main thread waited
    on a multiprocessing lock: without a wake-up the handler never runs and the child never ends."""
    out = _job(tmp_path)
    assert f"exitcode {-signal.SIGTERM}" in out.stdout, (out.stdout, out.stderr)
    assert _messages(tmp_path) == ["child waiting", "parent"]  # the child drained before it ended


def test_a_sigterm_whose_handler_already_ran_is_not_delivered_again(tmp_path: Path) -> None:
    """The main thread often runs the handler before the watcher reads the signal's byte: the
    watcher must see that it ran. A second delivery would run the application's handler twice
    (for a ``sys.exit`` handler: an exit raised inside the first one's exit drain)."""
    out = _job(tmp_path, "handled", "20")
    assert "exitcode 0" in out.stdout, (out.stdout, out.stderr)
    assert "calls 20 kicks 0" in out.stdout, (out.stdout, out.stderr)


def test_a_sigterm_during_the_childs_at_fork_hooks_still_ends_it(tmp_path: Path) -> None:
    """A pool worker still starting when ``Pool.terminate()`` signals it: the application's
    ``sys.exit`` handler would run inside an at-fork hook, where CPython ignores its exit, and
    the worker would wait for a task for ever. The signal waits until the exit can propagate."""
    out = _job(tmp_path, "forkhook")
    assert "exitcode 0" in out.stdout, (out.stdout, out.stderr)
    assert "Exception ignored" not in out.stderr, out.stderr


def test_a_pool_worker_signalled_as_it_leaves_still_stores_its_rows(tmp_path: Path) -> None:
    """``Pool.terminate()`` signals a worker that is already in multiprocessing's exit function
    (it got its sentinel): the application's ``sys.exit`` handler raises there, before the
    package's drain, and the exit skips every finalizer left. The rows still in memory must
    be drained before the application's handler runs."""
    out = _job(tmp_path, "exiting", SUPABASE_LOG_FLUSH_INTERVAL_S="60")
    assert "exitcode 0" in out.stdout, (out.stdout, out.stderr)
    assert _messages(tmp_path) == sorted([f"leaving {i}" for i in range(10)] + ["parent"]), out.stderr
