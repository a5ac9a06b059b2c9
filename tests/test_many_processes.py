"""Many processes ending together share one spool and lose nothing.

Twenty real jobs (``scripts/many_job.py``), each attaching the handler to the
root logger and logging 5,000 rows, share one spool directory while the backend
is healthy, slow (it commits, then answers a second late), or down for the
first half of their rows (stopped; started again while they wait half way).
Each exits by itself with code 0 and within its deadline plus one second
(``exitclock``: the machine's run-queue delay taken out); its ledger adds up
with nothing dropped and nothing in memory, and nothing on stderr speaks of
rows lost or a locked spool. A later ``supabase-log push`` then leaves exactly
100,000 distinct rows in PostgreSQL and an empty spool.

A job whose spool directory is locked by another process (every file in it and
the directory itself, ``flock`` and ``lockf``, for longer than the job's whole
exit deadline) still loses nothing: its rows wait in its own segment, a push
cannot take the held segments while the locks last, and delivers all of them
once they are gone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import exitclock
import pytest
from conftest import SCRIPTS, assert_identity, wait_until
from jobprocs import Job, Proc, fresh_spool, job_env, push, reaped
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler.spool_files import pending_entries, pending_segments

PROCESSES = 20
ROWS = 5_000
DEADLINE_S = 5.0  # the default shutdown_timeout_s, which the jobs keep
SLOW_ANSWER_S = 1.0  # the slow backend commits, then answers this late


@pytest.fixture
def jobs() -> Iterator[list[Proc]]:
    """The processes a test starts; any still running at the end is killed."""
    yield from reaped()


def check_exit(job: Proc, code: int) -> dict[str, Any]:
    """The job ended by itself, in time, with a ledger that adds up and nothing lost."""
    assert code == 0, job.stderr[-3000:]
    clock = job.said("exit_s")
    assert clock is not None, (job.lines, job.stderr[-3000:])
    assert exitclock.within(clock, DEADLINE_S), clock
    report = job.said("stats")
    assert report is not None, job.stderr[-3000:]
    stats: dict[str, Any] = report["stats"]
    assert_identity(stats)
    assert stats["in_memory"] == 0, stats
    assert stats["dropped_total"] == 0, stats
    assert "lost" not in job.stderr and "locked" not in job.stderr, job.stderr[-3000:]
    return stats


def stored(db: Db, tag: str) -> tuple[list[str], tuple[int, int, int]]:
    """The runs' statuses and (rows, distinct ids, distinct messages) of the jobs tagged ``tag``."""
    statuses = [
        r[0] for r in db.fetch("select status from runs where script_name = %s", (f"many-{tag}",))
    ]
    counts = db.fetch(
        "select count(*), count(distinct l.id), count(distinct l.message) from logs l"
        " join runs r on r.id = l.run_id where r.script_name = %s and l.message like %s",
        (f"many-{tag}", tag + " p%"),
    )[0]
    return statuses, (int(counts[0]), int(counts[1]), int(counts[2]))


@pytest.mark.process
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["healthy", "slow", "down_first_half"])
def test_twenty_processes_sharing_one_spool_store_every_row_once(
    backend: str, gateway_faults: Gateway, db: Db, tmp_path: Path, jobs: list[Proc]
) -> None:
    """20 x 5,000 rows through one spool, backend healthy, slow or down for the first half: 100,000 rows once, exits in time."""
    spool, tag, env = fresh_spool(gateway_faults, tmp_path, "mp")
    pause = backend == "down_first_half"
    if backend == "slow":
        gateway_faults.delay_response_s = SLOW_ANSWER_S
    elif pause:
        gateway_faults.stop()
    started = time.monotonic()
    flags = ["--pause"] if pause else []
    jobs.extend(Job(env, tag, i, ROWS, *flags) for i in range(PROCESSES))
    if pause:
        wait_until(lambda: all(j.said("half") or j.proc.poll() is not None for j in jobs), 120,
                   "every job half way")  # fmt: skip
        for job in jobs:  # each one's sender met the backend down before it came back
            half = job.said("half")
            assert half is not None and (half["half"]["retries"] or half["half"]["breaker_open"])
        gateway_faults.start()
        for job in jobs:
            job.tell("go")
    codes = [job.finish() for job in jobs]
    ended = time.monotonic()
    spooled = 0
    for job, code in zip(jobs, codes, strict=True):
        stats = check_exit(job, code)
        assert stats["by_table"]["logs"]["accepted"] == ROWS, stats
        spooled += stats["spooled_pending"]
    clocks = [job.said("exit_s") or {} for job in jobs]
    slowest = max(c["exit_s"] for c in clocks)
    slowest_net = max(c["exit_s"] - c["machine_busy_s"] for c in clocks)

    gateway_faults.clear_faults()
    code, counts, output = push(env)
    assert code == 0, output
    assert sum(pending_entries(spool).values()) == 0
    statuses, (rows, ids, messages) = stored(db, tag)
    assert statuses == ["success"] * PROCESSES, statuses
    assert (rows, ids, messages) == (PROCESSES * ROWS,) * 3
    sys.stderr.write(  # shown with -s: what the suite's time and the exits were
        f"\n[{backend}] {PROCESSES} jobs ended in {ended - started:.1f}s; slowest exit "
        f"{slowest:.2f}s ({slowest_net:.2f}s without the machine's delay); {spooled} rows "
        f"spooled at exit, {counts.get('spool_delivered')} entries replayed; whole test "
        f"{time.monotonic() - started:.1f}s\n"
    )


@pytest.mark.process
def test_a_spool_locked_longer_than_the_exit_deadline_loses_nothing(
    gateway_faults: Gateway, db: Db, tmp_path: Path, jobs: list[Proc]
) -> None:
    """Every file of the spool and the directory locked by another process through the job's exit: a later replay delivers all."""
    spool, tag, env = fresh_spool(gateway_faults, tmp_path, "lk")
    gateway_faults.stop()
    # Earlier jobs left their rows in the spool: segments the locker will hold.
    earlier_env = job_env(gateway_faults, spool, SUPABASE_LOG_SHUTDOWN_TIMEOUT_S="1")
    earlier = [Job(earlier_env, tag, i, 500) for i in (1, 2)]
    jobs.extend(earlier)
    for job in earlier:
        assert job.finish() == 0, job.stderr
    before = pending_segments(spool)
    assert len(before) == 2 and pending_entries(spool)["logs"] == 2 * 500

    locker = Proc([sys.executable, str(SCRIPTS / "spool_locker.py"), str(spool)])
    jobs.append(locker)
    wait_until(lambda: locker.said("locked") is not None, 60, "the locker")
    assert locker.said("locked") == {"locked": 2}
    job = Job(env, tag, 0, ROWS)
    jobs.append(job)
    stats = check_exit(job, job.finish())
    assert stats["spooled_pending"] == stats["accepted"], stats  # run rows too: all kept
    assert stats["by_table"]["logs"]["accepted"] == ROWS, stats

    # The job's own segment is held too now (the locker takes every file that appears).
    def all_held() -> bool:
        names = {r["got"] for r in locker.lines if "got" in r} | {p.name for p in before}
        return {p.name for p in pending_segments(spool)} <= names

    wait_until(all_held, 30, "the locker holding every segment")
    gateway_faults.start()
    code, counts, output = push(env)  # the locks still held: nothing is taken, nothing lost
    assert code == 1 and counts["spool_delivered"] == 0 and counts["spool_pending"] == 3, output
    locker.tell("stop")
    assert locker.finish() == 0, locker.stderr

    waiting = sum(pending_entries(spool).values())  # segments repeat the run rows they need
    assert pending_entries(spool)["logs"] == ROWS + 2 * 500  # runs repeat where segments need them
    code, counts, output = push(env)
    assert code == 0, output
    assert counts["spool_delivered"] == waiting, counts
    assert sum(pending_entries(spool).values()) == 0
    statuses, (rows, ids, messages) = stored(db, tag)
    assert sorted(statuses) == ["success"] * 3, statuses
    assert (rows, ids, messages) == (ROWS + 2 * 500,) * 3
