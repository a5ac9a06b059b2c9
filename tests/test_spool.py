"""The segment spool, with real processes: shared replay, torn frames, a full disk, file modes.

Killed writers (``scripts/many_job.py --hold`` with ``durability=disk`` and the
backend down, then SIGKILL) leave segments behind. Several ``supabase-log push``
processes started at the same instant replay them: every whole entry reaches
PostgreSQL once (the gateway's request log shows none sent twice), each
replayer gets some of the work, and a frame torn by a writer killed mid-write
is skipped while the rest is delivered. On a full disk (a tmpfs the test
mounts) a job's spool writes fail with "disk full at PATH" and the fix, its
rows stay counted (in memory, then dropped as ``spool_failed`` at exit), and the
segments already on that disk still drain, in place. Under umask 022 every
file the package creates is 0600 and every directory 0700, the local store's
``-wal`` and ``-shm`` included.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_identity, last_json_line, run_script, wait_until
from jobprocs import Job, Proc, fresh_spool, push, reaped
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler.spool_files import pending_entries, pending_segments

WRITERS = 8
WRITER_ROWS = 1_000
REPLAYERS = 4
SLOW_ANSWER_S = 0.2  # each replayer's request takes this long: a segment is several requests
FIX = "point SUPABASE_LOG_SPOOL at a directory on another disk"
LOST = re.compile(r"(\d+) rows (?:could not be kept|lost at exit): .*")

# A replayer that has imported everything, then waits for the word to run `push`: so
# all of them start replaying at the same instant, whatever the machine is doing.
REPLAYER = """
import json, sys
from supabase_log_handler.cli import main
import supabase_log_handler.cli.push, supabase_log_handler.sinks.rest, httpx
print(json.dumps({"ready": True}), flush=True)
sys.stdin.readline()
sys.exit(main(["push", "--json"]))
"""


@pytest.fixture
def jobs() -> Iterator[list[Proc]]:
    """The processes a test starts; any still running at the end is killed."""
    yield from reaped()


def killed_writers(env: dict[str, str], tag: str, count: int, rows: int, jobs: list[Proc]) -> None:
    """``count`` writers log ``rows`` each into their segments (backend down), then are killed."""
    writers = [Job({**env, "SUPABASE_LOG_DURABILITY": "disk"}, tag, i, rows, "--hold")
               for i in range(count)]  # fmt: skip
    jobs.extend(writers)
    wait_until(lambda: all(w.said("held") or w.proc.poll() is not None for w in writers), 120,
               "every writer's rows in its segment")  # fmt: skip
    for w in writers:
        held = w.said("held")
        assert held is not None, w.stderr
        stats = held["held"]
        assert stats["in_memory"] == 0 and stats["spooled_pending"] == stats["accepted"], stats
        assert stats["by_table"]["logs"]["accepted"] == rows, stats
        w.proc.send_signal(signal.SIGKILL)
        assert w.finish() == -signal.SIGKILL


def frames(path: Path) -> list[tuple[int, int, str, dict[str, Any]]]:
    """(offset, length, table, row) of each whole frame of a segment, by its documented layout:
    ``MAGIC(8) | progress u64 | header length u32 | header | frames``, a frame being
    ``length u32 | crc32 u32 | merge u8 | level u16 | 3 x u8 lengths | table | run id | id | JSON``."""
    data = path.read_bytes()
    (hlen,) = struct.unpack_from("<I", data, 16)
    pos = 20 + hlen
    out = []
    while pos + 8 <= len(data):
        length, _crc = struct.unpack_from("<II", data, pos)
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length:
            break
        _merge, _level, tlen, rlen, ilen = struct.unpack_from("<BHBBB", body, 0)
        table = body[6 : 6 + tlen].decode()
        payload = body[6 + tlen + rlen + ilen :]
        out.append((pos, 8 + length, table, json.loads(payload)))
        pos += 8 + length
    return out


def stored_messages(db: Db, tag: str) -> list[str]:
    return [
        r[0]
        for r in db.fetch(
            "select l.message from logs l join runs r on r.id = l.run_id where r.script_name = %s",
            (f"many-{tag}",),
        )
    ]


@pytest.mark.process
def test_replayers_at_once_share_killed_writers_segments_and_skip_a_torn_frame(
    gateway_faults: Gateway, db: Db, tmp_path: Path, jobs: list[Proc]
) -> None:
    """Four pushes at once over eight killed writers' segments (one torn mid-frame): every whole entry once, each push works."""
    spool, tag, env = fresh_spool(gateway_faults, tmp_path, "rp")
    gateway_faults.stop()
    killed_writers(env, tag, WRITERS, WRITER_ROWS, jobs)
    segments = pending_segments(spool)
    assert len(segments) == WRITERS

    # A writer killed in the middle of writing a log row leaves half a frame at the end of
    # its segment (and nothing after it).
    torn_segment = segments[0]
    offset, length, _, torn_row = [f for f in frames(torn_segment) if f[2] == "logs"][-1]
    assert torn_row["message"].startswith(tag), torn_row
    os.truncate(torn_segment, offset + length // 2)
    waiting = pending_entries(spool)
    expected = {f"{tag} p{i} row {n}" for i in range(WRITERS) for n in range(WRITER_ROWS)}
    expected.discard(torn_row["message"])
    assert waiting["logs"] == len(expected)

    replayers = [Proc([sys.executable, "-c", REPLAYER], env) for _ in range(REPLAYERS)]
    jobs.extend(replayers)
    wait_until(lambda: all(r.said("ready") or r.proc.poll() is not None for r in replayers), 60,
               "the replayers' imports")  # fmt: skip
    gateway_faults.start()
    gateway_faults.delay_response_s = SLOW_ANSWER_S
    gateway_faults.reset_log()
    for r in replayers:
        r.tell("go")
    results = []
    for r in replayers:
        code = r.finish()
        counts = json.loads(r.text.split("\n", 1)[1])
        # A push that finds the rest held by the others says so and exits 1: run it again.
        assert code == 0 or (code == 1 and counts["spool_pending"] > 0), (code, r.text, r.stderr)
        results.append(counts["spool_delivered"])
    assert all(n > 0 for n in results), results  # nobody starved
    assert sum(results) == sum(waiting.values()), (results, waiting)  # nothing replayed twice
    assert pending_segments(spool) == []
    sent = sum(
        q.rows for q in gateway_faults.requests if q.method == "POST" and q.path.endswith("/logs")
    )
    assert sent == waiting["logs"]  # no log row went over the wire twice
    stored = stored_messages(db, tag)
    assert len(stored) == len(set(stored)) and set(stored) == expected


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (the tests run as root); unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(disk)],
                           capture_output=True, text=True)  # fmt: skip
    if mount.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test (run the tests as root): "
                    f"{mount.stderr.strip()}")  # fmt: skip
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> None:
    """Take every byte left on ``disk``."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = 1 << 16
        while chunk:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                chunk //= 2
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0


FULL_DISK_JOB = """
import atexit, json, logging, sys, time
_handler = []
atexit.register(lambda: print(json.dumps({"final": _handler[0].stats()}), flush=True))
from supabase_log_handler import SupabaseHandler
handler = SupabaseHandler(script_name="full-disk-" + sys.argv[1], durability="disk")
_handler.append(handler)
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
for i in range(200):
    logging.getLogger("job").info("%s on a full disk %d", sys.argv[1], i)
deadline = time.monotonic() + 60
while "disk full" not in str(handler.stats()["last_error"]) and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"while_running": handler.stats()}), flush=True)
"""


@pytest.mark.process
def test_a_full_disk_is_named_rows_stay_counted_and_its_segments_still_drain(
    gateway_faults: Gateway, db: Db, small_disk: Path, jobs: list[Proc]
) -> None:
    """On a full disk: "disk full at PATH" and the fix, rows in memory then dropped as spool_failed, old segments drain in place."""
    spool, tag, env = fresh_spool(gateway_faults, small_disk, "fd")
    gateway_faults.stop()
    killed_writers(env, tag, 1, 2_000, jobs)
    [segment] = pending_segments(spool)
    fill(small_disk)

    job = subprocess.run([sys.executable, "-c", FULL_DISK_JOB, tag], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert job.returncode == 0, job.stderr
    lines = [json.loads(line) for line in job.stdout.splitlines()]
    running = next(r["while_running"] for r in lines if "while_running" in r)
    final = next(r["final"] for r in lines if "final" in r)
    assert f"disk full at {spool}" in str(running["last_error"]), running
    assert f"disk full at {spool}" in job.stderr and FIX in job.stderr, job.stderr
    assert running["dropped_total"] == 0 and running["in_memory"] == running["accepted"], running
    assert_identity(running)
    assert_identity(final)  # at exit nothing could be kept: each row counted, none silently
    assert final["in_memory"] == 0 and final["spooled_pending"] == 0, final
    assert set(final["dropped"]) == {"spool_failed"}, final  # the rows and their run's rows
    assert final["dropped"]["spool_failed"]["INFO"] == 200, final
    assert final["dropped_total"] == final["accepted"], final
    assert LOST.search(job.stderr) and f"disk full at {spool}" in LOST.search(job.stderr)[0]

    # The disk is still full: the old segment drains all the same (progress is written in
    # place, then the file is deleted).
    assert os.statvfs(small_disk).f_bavail == 0
    waiting = sum(pending_entries(spool).values())
    gateway_faults.start()
    code, counts, output = push(env)
    assert code == 0 and counts["spool_delivered"] == waiting, output
    assert not segment.exists() and pending_segments(spool) == []
    stored = stored_messages(db, tag)
    assert sorted(stored) == sorted(f"{tag} p0 row {n}" for n in range(2_000))


MODES_JOB = """
import json, logging, os
os.umask(0o022)
from supabase_log_handler import SupabaseHandler
data = os.path.join(os.environ["XDG_DATA_HOME"], "supabase-log-handler")
log = logging.getLogger("modes")
log.setLevel(logging.INFO)
# Supabase down: rows go to the spool (its default place, created first).
key = os.environ["MODES_KEY"]
down = SupabaseHandler(url="http://127.0.0.1:9", key=key, durability="disk", retry_deadline_s=0.5,
                       shutdown_timeout_s=1)
# Supabase refusing every row: dead letters beside the segments.
refused = SupabaseHandler(url=os.environ["MODES_URL"], key=key)
# No Supabase at all: the local store (SQLite in WAL mode: -wal and -shm while open).
local = SupabaseHandler(sink="local")
for handler in (down, refused, local):
    log.handlers = [handler]
    log.info("a row")
    handler.flush(2)
modes = {}
for where, dirs, files in os.walk(data):
    for name in dirs + files:
        path = os.path.join(where, name)
        mode = os.stat(path).st_mode
        modes[os.path.relpath(path, data)] = ("dir " if name in dirs else "file ") + oct(mode & 0o777)
modes["."] = "dir " + oct(os.stat(data).st_mode & 0o777)
print(json.dumps(modes))
"""


@pytest.mark.process
def test_spool_and_local_store_are_private_under_umask_022(
    gateway_faults: Gateway, tmp_path: Path
) -> None:
    """Under umask 022 every directory the package makes is 0700 and every file 0600 (-wal, -shm, .dead included)."""
    xdg = tmp_path / "xdg"  # the user's data home exists; everything below it is the package's
    xdg.mkdir(mode=0o755)
    gateway_faults.fail_next(1000, 400, code="22P02", message="invalid input syntax")
    env = {"XDG_DATA_HOME": str(xdg), "HOME": str(tmp_path),
           "MODES_KEY": gateway_faults.service_key, "MODES_URL": gateway_faults.url}  # fmt: skip
    out = run_script(MODES_JOB, env=env)
    modes: dict[str, str] = last_json_line(out.stdout)
    names = set(modes)
    assert {".", "spool", "local.sqlite3", "local.sqlite3-wal", "local.sqlite3-shm"} <= names, modes
    assert any(n.endswith(".seg") for n in names) and any(n.endswith(".dead") for n in names), modes
    for name, mode in modes.items():
        assert mode in ("dir 0o700", "file 0o600"), (name, mode)


LOST_AT_EXIT_JOB = """
import atexit, json, logging, os, time
_handler = []
atexit.register(lambda: print(json.dumps(_handler[0].stats()), flush=True))
from supabase_log_handler import SupabaseHandler
handler = SupabaseHandler(url="http://127.0.0.1:9", key="k", spool_path=os.environ["SPOOL"],
                          max_spool_bytes=100, durability="disk", retry_deadline_s=0.3,
                          shutdown_timeout_s=1)
_handler.append(handler)
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
for i in range(10):
    logging.info("row %d", i)
while not handler.stats()["dropped_total"]:  # the first rows are given up before the exit
    time.sleep(0.01)
"""


@pytest.mark.process
def test_every_row_given_up_is_on_stderr_before_the_process_ends(tmp_path: Path) -> None:
    """Rows given up while running and at exit (a spool that cannot take them): stderr's counts add up to stats()."""
    out = run_script(LOST_AT_EXIT_JOB, env={"SPOOL": str(tmp_path / "spool")})
    stats = last_json_line(out.stdout)
    assert_identity(stats)
    assert set(stats["dropped"]) == {"spool_failed"}, stats
    assert (
        stats["dropped_total"] == stats["accepted"] and stats["by_table"]["logs"]["dropped"] == 10
    )
    said = sum(int(m[1]) for m in LOST.finditer(out.stderr))
    assert said == stats["dropped_total"], out.stderr
