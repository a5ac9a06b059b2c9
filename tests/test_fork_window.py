"""A child signalled while it runs its at-fork hooks never touches the parent's spool.

The parent's open segment has been fully replayed when it forks (so it is empty and
looks finished to anyone holding it), and the child gets SIGTERM before the
package's at-fork hooks have reset the state it copied. Its handler must run only
once that copy is reset: a drain of the parent's copy would close (and delete) the
parent's live segment, and every row the parent spooled after the fork would go to a
file nobody can find.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SCRIPTS
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler.spool_files import pending_entries

pytestmark = pytest.mark.process  # forks, signals or exits: also run on 3.10 and 3.13


def _next(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.communicate(timeout=60)[1]
    return json.loads(line)  # type: ignore[no-any-return]


def _go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def test_a_child_signalled_in_its_fork_hooks_leaves_the_parents_spool_alone(
    gateway_faults: Gateway, db: Db, tmp_path: Path
) -> None:
    gateway = gateway_faults
    spool = tmp_path / "spool"
    tag = f"w{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env.update(SUPABASE_URL=gateway.url, SUPABASE_SERVICE_ROLE_KEY=gateway.service_key,
               SUPABASE_LOG_SPOOL=str(spool), SUPABASE_LOG_REQUEST_TIMEOUT_S="1",
               SUPABASE_LOG_RETRY_DEADLINE_S="0.5", SUPABASE_LOG_PROBE_INTERVAL_S="0.1",
               SUPABASE_LOG_SHUTDOWN_TIMEOUT_S="2", PYTHONPATH=str(ROOT),
               PYTHONFAULTHANDLER="1")  # fmt: skip
    gateway.stop()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "fork_window_job.py"), tag], env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        head = _next(proc)
        assert head["spooled"] > 0, head  # the rows (and the run) wait in the parent's segment
        assert _next(proc) == {"step": "spooled"}
        gateway.start()
        _go(proc)
        assert _next(proc) == {"replayed": 0}  # the open segment is empty now
        assert _next(proc) == {"step": "replayed"}
        gateway.stop()
        _go(proc)
        assert _next(proc) == {"child": -signal.SIGTERM}  # ended by its handler, not os._exit
        stats = _next(proc)["stats"]
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert stats["dropped_total"] == 0, stats
    gateway.start()
    push = subprocess.run([sys.executable, "-m", "supabase_log_handler", "push", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert push.returncode == 0, push.stdout + push.stderr
    assert sum(pending_entries(spool).values()) == 0
    run_id = head["run_id"]
    rows = db.fetch("select message from logs where run_id = %s", (run_id,))
    messages = sorted(m for (m,) in rows)
    want = sorted([f"{tag} before {i}" for i in range(50)] + [f"{tag} after {i}" for i in range(50)])
    assert messages == want, (len(messages), err[-3000:], push.stdout)
    status = db.fetchval("select status from runs where id = %s", (run_id,))
    assert status == "success", (status, err[-3000:])
