"""The fault matrix: backend state x how the process ends x its shape, generated, not picked.

Every pair of values of any two dimensions is covered (a greedy pairwise covering
array over all 160 combinations); ``SUPABASE_LOG_FULL_MATRIX=1`` runs them all.
For each case a real process (``scripts/matrix_job.py``) logs against the
session gateway while the gateway is up, down, slow (it commits, then answers
after the client's timeout) or flapping, and ends its way. Then the backend is
made healthy, ``supabase-log push`` replays the spool, and PostgreSQL must hold
every record exactly once, the run its final status, and the spool nothing;
where the process could report, its ledger must add up, with nothing left in
memory.

A fourth dimension, the sink, is in the same pairwise covering: ``rest`` (the
gateway) or ``postgres`` (the direct sink: COPY through PgBouncer in transaction
mode, stopped, slowed or flapping the same way behind its FaultLink).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SCRIPTS, abort_tree, assert_identity, wait_until_asleep
from stack.fixtures import Db
from stack.gateway import Gateway
from stack.pgbouncer import DirectBackend

from supabase_log_handler.rows import E_MERGE, E_TABLE
from supabase_log_handler.spool import _open_segment
from supabase_log_handler.spool_files import pending_entries, pending_segments
from supabase_log_handler.spool_frames import parse_frame

BACKENDS = ("up", "down", "slow", "flapping")
ENDINGS = ("script_ends", "sys_exit", "uncaught", "close", "logging_shutdown",
           "sigterm_app_handler", "sigterm_default", "sigkill_disk")  # fmt: skip
SHAPES = ("main", "threads8", "fork_pool_logged", "fork_pool_silent", "spawn_pool")
SINKS = ("rest", "postgres")  # the REST gateway, or the direct sink through PgBouncer
EXTRA_ROWS = {"sys_exit": 1, "uncaught": 1, "close": 1, "logging_shutdown": 1}
STATUS = {
    "script_ends": ("success", None),
    "sys_exit": ("error", "exited with code 3"),
    "uncaught": ("error", "RuntimeError: "),
    "close": ("success", None),
    "logging_shutdown": ("success", None),
    "sigterm_app_handler": ("success", None),
    "sigterm_default": ("error", "terminated by SIGTERM"),
    "sigkill_disk": ("running", None),  # nobody can write the end of a killed process
}


def pairwise(*dims: tuple[str, ...]) -> list[tuple[str, ...]]:
    """A small list of combinations in which every pair of values of two dimensions occurs."""
    uncovered = {
        (i, a, j, b)
        for i, j in itertools.combinations(range(len(dims)), 2)
        for a in dims[i]
        for b in dims[j]
    }
    every = list(itertools.product(*dims))
    chosen: list[tuple[str, ...]] = []

    def gain(case: tuple[str, ...]) -> int:
        return sum(
            (i, case[i], j, case[j]) in uncovered
            for i, j in itertools.combinations(range(len(dims)), 2)
        )

    while uncovered:
        best = max(every, key=gain)
        chosen.append(best)
        for i, j in itertools.combinations(range(len(dims)), 2):
            uncovered.discard((i, best[i], j, best[j]))
    return chosen


CASES = (
    list(itertools.product(BACKENDS, ENDINGS, SHAPES, SINKS))
    if os.environ.get("SUPABASE_LOG_FULL_MATRIX")
    else pairwise(BACKENDS, ENDINGS, SHAPES, SINKS)
)


@pytest.fixture
def target(sink: str, gateway_faults: Gateway, request: pytest.FixtureRequest) -> Any:
    """What the case's backend state applies to: the gateway, or PgBouncer behind its FaultLink."""
    return gateway_faults if sink == "rest" else request.getfixturevalue("direct_faults")


@pytest.fixture
def backend(target: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """Put the session gateway in the case's state; a flapping one toggles until the case ends."""
    state: str = request.param
    stop = threading.Event()
    flapper: threading.Thread | None = None
    if state == "down":
        target.stop()
    elif state == "slow":
        target.delay_response_s = 1.0
    elif state == "flapping":

        def flap() -> None:
            while not stop.wait(0.25):
                target.stop()
                if stop.wait(0.25):
                    break
                target.start()

        flapper = threading.Thread(target=flap, daemon=True)
        flapper.start()
    yield state
    stop.set()
    if flapper is not None:
        flapper.join(10)
    target.clear_faults()
    target.start()


def pending_entries_by_mode(path: Path) -> Counter[str]:
    """A segment's entries not yet replayed, as ``table:mode`` (0 insert, 1 merge, 2 heartbeat)."""
    counts: Counter[str] = Counter()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return counts
    try:
        seg = _open_segment(path, fd, "runs")
        buf = os.pread(fd, seg.end - seg.progress, seg.progress) if seg is not None else b""
    finally:
        os.close(fd)
    pos = 0
    while (parsed := parse_frame(buf, pos)) is not None:
        entry, pos = parsed
        counts[f"{entry[E_TABLE]}:{entry[E_MERGE]}"] += 1
    return counts


def _env(gateway: Any, spool: Path, ending: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    if isinstance(gateway, DirectBackend):
        env.update(gateway.env)
    else:
        env.update(SUPABASE_URL=gateway.url, SUPABASE_SERVICE_ROLE_KEY=gateway.service_key)
    env.update(
        SUPABASE_LOG_SPOOL=str(spool),
        SUPABASE_LOG_SHUTDOWN_TIMEOUT_S="2",
        SUPABASE_LOG_FLUSH_INTERVAL_S="0.1",
        SUPABASE_LOG_REQUEST_TIMEOUT_S="0.4",
        SUPABASE_LOG_RETRY_DEADLINE_S="0.6",
        SUPABASE_LOG_PROBE_INTERVAL_S="0.2",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(SCRIPTS)]),
        PYTHONFAULTHANDLER="1",
    )
    if ending == "sigkill_disk":
        env["SUPABASE_LOG_DURABILITY"] = "disk"
    return env


def _lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _read_until_ready(proc: subprocess.Popen[str], into: list[str]) -> None:
    assert proc.stdout is not None
    for line in iter(proc.stdout.readline, ""):
        into.append(line)
        if '"ready"' in line:
            return


def _run_case(env: dict[str, str], shape: str, ending: str, tag: str) -> tuple[list[dict[str, Any]], str, int]:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "matrix_job.py"), shape, ending, tag],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if ending.startswith("sig"):
            assert proc.stdout is not None
            seen: list[dict[str, Any]] = []
            first: list[str] = []
            reader = threading.Thread(  # read up to "ready", so the wait has a deadline
                target=_read_until_ready, args=(proc, first), daemon=True
            )
            reader.start()
            reader.join(120)
            if reader.is_alive():
                masks = abort_tree(proc.pid)  # say where each process is stuck (faulthandler)
                pytest.fail(f"the job never got ready; {masks}\nits stderr:\n"
                            f"{proc.communicate(timeout=30)[1][-20000:]}")  # fmt: skip
            for line in first:
                seen.extend(_lines(line))
            assert any("ready" in r for r in seen), (
                f"the job ended before it was ready: {proc.stderr.read() if proc.stderr else ''}")
            wait_until_asleep(proc.pid)
            proc.send_signal(signal.SIGKILL if ending == "sigkill_disk" else signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
            return seen + _lines(out), err, proc.returncode
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # say where each process is stuck (faulthandler)
            masks = abort_tree(proc.pid)
            pytest.fail(f"the job did not end; {masks}\nits stderr:\n{proc.communicate(timeout=30)[1][-20000:]}")
        return _lines(out), err, proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


EXPECTED_CODE = {"sys_exit": 3, "uncaught": 1, "sigterm_default": -signal.SIGTERM,
                 "sigkill_disk": -signal.SIGKILL}  # fmt: skip


@pytest.mark.process
@pytest.mark.parametrize(
    ("backend", "ending", "shape", "sink"),
    CASES,
    indirect=["backend"],
    ids=["-".join(c) for c in CASES],
)
def test_every_record_ends_in_postgresql_exactly_once(
    backend: str, ending: str, shape: str, sink: str, target: Any, db: Db, tmp_path: Path
) -> None:
    """Whatever the backend did and however the process ended, after replay every record is stored once."""
    spool = tmp_path / "spool"
    tag = f"m{uuid.uuid4().hex[:10]}"
    env = _env(target, spool, ending)
    lines, err, code = _run_case(env, shape, ending, tag)
    assert code == EXPECTED_CODE.get(ending, 0), err
    head = next(r for r in lines if "run_id" in r)
    run_id, logged = head["run_id"], head["logged"]
    report = [r["stats"] for r in lines if "stats" in r]
    if report:  # the process ended by itself: its own ledger adds up, nothing left in memory
        stats = report[-1]
        assert_identity(stats)
        assert stats["in_memory"] == 0, stats
        assert stats["dropped_total"] == 0, stats

    before_push = {path.name: dict(pending_entries_by_mode(path)) for path in pending_segments(spool)}
    # The backend is healthy again; a later process replays what was spooled.
    target.clear_faults()
    target.start()
    push = subprocess.run(
        [sys.executable, "-m", "supabase_log_handler", "push", "--json"],
        env={**env, "SUPABASE_LOG_REQUEST_TIMEOUT_S": "10", "SUPABASE_LOG_RETRY_DEADLINE_S": "15"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert push.returncode == 0, push.stdout + push.stderr
    assert sum(pending_entries(spool).values()) == 0

    expected = logged + EXTRA_ROWS.get(ending, 0)
    total, distinct = db.fetch(
        "select count(*), count(distinct id) from logs where run_id = %s", (run_id,)
    )[0]
    tagged = db.fetchval(
        "select count(distinct message) from logs where run_id = %s and message like %s",
        (run_id, tag + " %"),
    )
    run_rows = db.fetch("select status, coalesce(error_message, '') from runs where id = %s", (run_id,))

    def explain() -> str:  # where a missing row or state could be
        others = db.fetch(
            "select level, message from logs where run_id = %s and message not like %s",
            (run_id, tag + " %"),
        )
        logged_requests = target.requests if isinstance(target, Gateway) else []
        runs_requests = [r for r in logged_requests if "/runs" in r.path]
        return (f"{total} rows ({distinct} distinct) of {expected}; run {run_rows}; untagged "
                f"{others}; ledger {report[-1] if report else None}; spool before push "
                f"{before_push}; push {push.stdout[-2000:]}{push.stderr[-2000:]}; runs requests "
                f"{runs_requests[-40:]}; job stderr {err[-3000:]}")  # fmt: skip

    assert (total, distinct) == (expected, expected), explain()
    assert tagged == logged + (1 if ending in ("close", "logging_shutdown") else 0)
    status, message = db.fetch(
        "select status, coalesce(error_message, '') from runs where id = %s", (run_id,)
    )[0]
    want_status, want_message = STATUS[ending]
    assert status == want_status, explain()
    if want_message:
        assert message.startswith(want_message), message
