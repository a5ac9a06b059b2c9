"""Unit tests of ``supabase_log_handler.spool.Spool``: the SQLite spool shared by processes."""

from __future__ import annotations

import os
import select
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supabase_log_handler.spool import Entry, Spool, SpoolFullError, pid_alive

MAX_BYTES = 64 * 1024 * 1024
PROCESS_DEADLINE_S = 15.0


def log(row_id: str, **fields: Any) -> Entry:
    return Entry("log", "logs", {"id": row_id, "message": f"m-{row_id}", **fields})


def ids(entries: list[Entry]) -> list[str]:
    return [e.row["id"] for e in entries]


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool.sqlite3"


@pytest.fixture
def spool(spool_path: Path) -> Iterator[Spool]:
    s = Spool(spool_path, max_bytes=MAX_BYTES)
    yield s
    s.close()


# -- a forked process holding the same spool file ---------------------------------------
class Holder:
    """A forked child that runs ``action`` on its own Spool, then stays alive until released."""

    def __init__(self, path: Path, action: Callable[[Spool], object]) -> None:
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                os.close(ready_r)
                os.close(go_w)
                child_spool = Spool(path, max_bytes=MAX_BYTES)
                action(child_spool)
                child_spool.close()
                os.write(ready_w, b"ready")
                os.read(go_r, 1)  # until the parent writes or closes its end
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(ready_w)
        os.close(go_r)
        self.pid = pid
        self._go = go_w
        self.exit_code: int | None = None
        try:
            ready, _, _ = select.select([ready_r], [], [], PROCESS_DEADLINE_S)
            assert ready and os.read(ready_r, 5) == b"ready", "child spool process failed"
        except BaseException:
            self.kill()
            raise
        finally:
            os.close(ready_r)

    def release(self) -> int:
        """Let the child exit and reap it (so its pid is really gone); returns its exit code."""
        if self.exit_code is None:
            os.write(self._go, b"x")
            os.close(self._go)
            deadline = time.monotonic() + PROCESS_DEADLINE_S
            while self.exit_code is None:
                done, status = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    self.exit_code = os.waitstatus_to_exitcode(status)
                elif time.monotonic() > deadline:
                    self.kill()
                    pytest.fail("child spool process did not exit in time")
                else:
                    threading.Event().wait(0.01)
        return self.exit_code

    def kill(self) -> None:
        if self.exit_code is None:
            try:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.exit_code = -9


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    made: list[Holder] = []
    yield made
    for h in made:
        h.kill()


# -- basics -------------------------------------------------------------------------------
def test_round_trip_add_claim_ack(spool: Spool) -> None:
    """Added entries are claimed with their rows and seqs, and gone once acked."""
    entries = [
        log("a", n=1),
        log("b", n=2),
        Entry("run_open", "runs", {"id": "r1", "status": "running"}),
    ]
    seqs = spool.add(entries, want_seqs=True)
    assert len(seqs) == 3 and seqs == sorted(seqs)
    assert spool.pending() == 3
    claimed = spool.claim(10, lease_s=60)
    assert [(e.kind, e.target, e.row, e.seq) for e in claimed] == [
        (e.kind, e.target, e.row, s) for e, s in zip(entries, seqs, strict=True)
    ]
    spool.ack([e.seq for e in claimed])
    assert spool.pending() == 0
    assert spool.claim(10, lease_s=60) == []


def test_add_empty_is_noop(spool: Spool) -> None:
    """Adding no entries stores nothing and returns no seqs."""
    assert spool.add([], want_seqs=True) == []
    assert spool.pending() == 0


def test_plain_add_returns_no_seqs_but_stores(spool: Spool) -> None:
    """Without leased or want_seqs, add stores the entries and returns no seqs."""
    assert spool.add([log("a"), log("b")]) == []
    assert spool.pending() == 2


def test_claimed_entries_not_claimed_again_by_same_spool(spool: Spool) -> None:
    """Entries this spool holds are not handed out again until released."""
    spool.add([log("a"), log("b")])
    assert ids(spool.claim(10, lease_s=60)) == ["a", "b"]
    assert spool.claim(10, lease_s=60) == []
    assert spool.pending() == 2


def test_release_makes_entries_claimable_again(spool: Spool) -> None:
    """Released entries are claimable again, still in their original order."""
    spool.add([log("a"), log("b")])
    claimed = spool.claim(10, lease_s=60)
    spool.release([e.seq for e in claimed])
    assert ids(spool.claim(10, lease_s=60)) == ["a", "b"]


def test_claim_oldest_first_with_limit(spool: Spool) -> None:
    """claim(limit) leases the oldest entries first, at most limit of them."""
    spool.add([log("a"), log("b")])
    spool.add([log("c"), log("d")])
    assert ids(spool.claim(3, lease_s=60)) == ["a", "b", "c"]
    assert ids(spool.claim(3, lease_s=60)) == ["d"]


def test_payload_round_trips_unicode(spool: Spool) -> None:
    """Rows come back exactly as written, non-ASCII text and nested meta included."""
    row = {"id": "u", "message": "café 日本 😀", "meta": {"a": [1, 2.5, None, True]}}
    spool.add([Entry("log", "logs", row)])
    assert spool.claim(1, lease_s=60)[0].row == row


def test_duplicate_returns_seq_of_stored_entry(spool: Spool) -> None:
    """Adding an already stored (kind, row id) with want_seqs returns the stored entry's seq."""
    first = spool.add([log("a", version=1)], want_seqs=True)
    again = spool.add([log("a", version=2)], want_seqs=True)
    assert again == first
    assert spool.pending() == 1


@pytest.mark.parametrize("want_seqs", [False, True], ids=["plain", "want_seqs"])
def test_duplicates_ignored_by_kind_and_row_id(spool: Spool, want_seqs: bool) -> None:
    """Adding an entry with the same (kind, row id) again keeps the first one."""
    spool.add([log("a", version=1)], want_seqs=want_seqs)
    spool.add([log("a", version=2), log("b")], want_seqs=want_seqs)
    spool.add([log("a", version=3)], want_seqs=want_seqs)
    assert spool.pending() == 2
    claimed = spool.claim(10, lease_s=60)
    assert [(e.row["id"], e.row.get("version")) for e in claimed] == [("a", 1), ("b", None)]


@pytest.mark.parametrize("want_seqs", [False, True], ids=["plain", "want_seqs"])
def test_same_row_id_different_kind_kept_apart(spool: Spool, want_seqs: bool) -> None:
    """run_open and run_final of one run are two entries."""
    spool.add([Entry("run_open", "runs", {"id": "r", "status": "running"})], want_seqs=want_seqs)
    spool.add([Entry("run_final", "runs", {"id": "r", "status": "succeeded"})], want_seqs=want_seqs)
    assert spool.pending() == 2


@pytest.mark.parametrize("want_seqs", [False, True], ids=["plain", "want_seqs"])
def test_run_final_replaces_previous_final(spool: Spool, want_seqs: bool) -> None:
    """A newer run_final replaces the stored one for the same run."""
    spool.add([Entry("run_final", "runs", {"id": "r", "status": "running"})], want_seqs=want_seqs)
    spool.add([Entry("run_final", "runs", {"id": "r", "status": "failed"})], want_seqs=want_seqs)
    assert spool.pending() == 1
    assert spool.claim(10, lease_s=60)[0].row["status"] == "failed"


@pytest.mark.parametrize("want_seqs", [False, True], ids=["plain", "want_seqs"])
def test_unserialisable_batch_rolls_back(spool: Spool, want_seqs: bool) -> None:
    """A batch with a row that is not strict JSON is refused whole."""
    with pytest.raises(ValueError):
        spool.add([log("ok"), log("bad", x=float("nan"))], want_seqs=want_seqs)
    assert spool.pending() == 0


def test_find_run(spool: Spool) -> None:
    """find_run prefers the spooled final state over the open one, and is None when unknown."""
    assert spool.find_run("r") is None
    spool.add([Entry("run_open", "runs", {"id": "r", "status": "running"})])
    assert spool.find_run("r") == {"id": "r", "status": "running"}
    spool.add([Entry("run_final", "runs", {"id": "r", "status": "succeeded"})])
    assert spool.find_run("r") == {"id": "r", "status": "succeeded"}
    spool.add([log("r")])  # a log row with the same id is not a run state
    assert spool.find_run("r") == {"id": "r", "status": "succeeded"}


# -- dead letters -------------------------------------------------------------------------
def test_dead_letter_excluded_from_claim_and_listed(spool: Spool) -> None:
    """A dead-lettered entry is never claimed again, survives ack, and is listed by dead()."""
    spool.add([log("a"), log("b")])
    first = spool.claim(1, lease_s=60)[0]
    spool.dead_letter(first.seq, "23502", "null value in column")
    spool.ack([first.seq])
    assert spool.pending() == 1
    other = Spool(spool.path, max_bytes=MAX_BYTES)
    try:
        assert ids(other.claim(10, lease_s=60)) == ["b"]
    finally:
        other.close()
    dead = spool.dead()
    assert len(dead) == 1
    assert {k: dead[0][k] for k in ("seq", "kind", "target", "row", "error_code", "error")} == {
        "seq": first.seq,
        "kind": "log",
        "target": "logs",
        "row": first.row,
        "error_code": "23502",
        "error": "null value in column",
    }
    assert isinstance(dead[0]["created"], float)


def test_dead_letter_error_text_capped(spool: Spool) -> None:
    """A dead letter keeps at most 2000 characters of the error text."""
    seq = spool.add([log("a")], want_seqs=True)[0]
    spool.dead_letter(seq, None, "e" * 5000)
    assert spool.dead()[0]["error"] == "e" * 2000


# -- size cap -----------------------------------------------------------------------------
def test_size_cap_raises_spool_full(spool_path: Path) -> None:
    """Once the file reaches max_bytes, add raises SpoolFullError and stores nothing more."""
    small = Spool(spool_path, max_bytes=64 * 1024)
    try:
        stored = 0
        with pytest.raises(SpoolFullError):
            for i in range(1000):
                small.add([log(f"r{i}-{j}", pad="x" * 1000) for j in range(4)])
                stored += 4
        assert 0 < stored < 4000
        assert small.pending() == stored
        assert small.size_bytes() >= 64 * 1024
    finally:
        small.close()


# -- concurrency within one process -----------------------------------------------------
def test_threads_of_one_spool_never_claim_the_same_entry(spool: Spool) -> None:
    """Threads claiming from one Spool together get every entry exactly once."""
    spool.add([log(f"r{i:03d}") for i in range(200)])
    got: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(len(got))

    def worker(out: list[str]) -> None:
        start.wait(timeout=10)
        while batch := spool.claim(7, lease_s=60):
            out.extend(ids(batch))

    threads = [threading.Thread(target=worker, args=(out,)) for out in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    everything = [i for out in got for i in out]
    assert sorted(everything) == [f"r{i:03d}" for i in range(200)]


def test_leased_add_not_claimable_by_its_own_spool(spool: Spool) -> None:
    """Entries added with leased=True (write-ahead of a send) are not replayed by the same spool."""
    spool.add([log("a")], leased=True)
    assert spool.claim(10, lease_s=60) == []
    assert spool.pending() == 1


def test_same_pid_live_spool_lease_is_respected_until_it_closes(spool_path: Path) -> None:
    """A second Spool in the same process leaves a live first one's leases alone, and takes them once it closes."""
    first = Spool(spool_path, max_bytes=MAX_BYTES)
    second = Spool(spool_path, max_bytes=MAX_BYTES)
    try:
        assert first.owner != second.owner and first.owner_pid == second.owner_pid
        first.add([log("a"), log("b")], leased=True)
        assert second.claim(10, lease_s=60) == []  # first is alive in this process
        first.close()  # its owner token is gone: as if a process with this pid had died
        assert ids(second.claim(10, lease_s=60)) == ["a", "b"]
        assert second.claim(10, lease_s=60) == []  # its own lease keeps it from re-claiming
    finally:
        first.close()
        second.close()


def test_pid_alive() -> None:
    """pid_alive is true for this process and false for non-positive pids."""
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(-1)


def test_live_process_lease_respected_dead_process_lease_claimable(
    spool_path: Path, holders: list[Holder]
) -> None:
    """Entries leased by a live process are skipped; once that process is gone they are claimable."""
    holder = Holder(spool_path, lambda s: s.add([log("a"), log("b")], leased=True))
    holders.append(holder)
    spool = Spool(spool_path, max_bytes=MAX_BYTES)
    try:
        assert spool.pending() == 2
        assert spool.claim(10, lease_s=60) == []
        assert holder.release() == 0
        assert not pid_alive(holder.pid)
        assert ids(spool.claim(10, lease_s=60)) == ["a", "b"]
    finally:
        spool.close()


def test_expired_lease_of_live_process_claimable(spool_path: Path, holders: list[Holder]) -> None:
    """An entry whose lease has ended is claimable even while its owner is alive."""
    seed = Spool(spool_path, max_bytes=MAX_BYTES)
    seed.add([log("short"), log("long")])
    seed.close()

    def claim_two(s: Spool) -> None:
        assert ids(s.claim(1, lease_s=-1.0)) == ["short"]  # a lease that has already ended
        assert ids(s.claim(1, lease_s=3600.0)) == ["long"]

    holder = Holder(spool_path, claim_two)
    holders.append(holder)
    spool = Spool(spool_path, max_bytes=MAX_BYTES)
    try:
        assert ids(spool.claim(10, lease_s=60)) == ["short"]
    finally:
        spool.close()
        assert holder.release() == 0


def test_claim_by_other_process_excludes_our_copy(spool_path: Path, holders: list[Holder]) -> None:
    """Entries claimed by a live process are not claimed by us; the rest are."""
    seed = Spool(spool_path, max_bytes=MAX_BYTES)
    seed.add([log("a"), log("b"), log("c")])
    seed.close()

    def claim_first_two(s: Spool) -> None:
        assert ids(s.claim(2, lease_s=3600)) == ["a", "b"]

    holder = Holder(spool_path, claim_first_two)
    holders.append(holder)
    spool = Spool(spool_path, max_bytes=MAX_BYTES)
    try:
        assert ids(spool.claim(10, lease_s=60)) == ["c"]
    finally:
        spool.close()
        assert holder.release() == 0


def test_claim_not_starved_by_many_live_leases(spool_path: Path, holders: list[Holder]) -> None:
    """Free entries are claimable even when many older entries are leased by a live process."""
    holder = Holder(spool_path, lambda s: s.add([log(f"held{i}") for i in range(8)], leased=True))
    holders.append(holder)
    spool = Spool(spool_path, max_bytes=MAX_BYTES)
    try:
        spool.add([log("free")])
        assert ids(spool.claim(2, lease_s=60)) == ["free"]
    finally:
        spool.close()
        assert holder.release() == 0


def test_entries_are_only_claimed_for_their_own_destination(spool_path: Path) -> None:
    """Two projects sharing one spool file never replay each other's rows."""
    project_a = Spool(
        spool_path, max_bytes=MAX_BYTES, destination="supabase:https://a.supabase.co|public"
    )
    project_b = Spool(
        spool_path, max_bytes=MAX_BYTES, destination="supabase:https://b.supabase.co|public"
    )
    try:
        project_a.add([log("for-a")])
        project_b.add([log("for-b")])
        assert project_a.pending() == 1 and project_b.pending() == 1
        assert ids(project_b.claim(10, lease_s=60)) == ["for-b"]
        assert ids(project_a.claim(10, lease_s=60)) == ["for-a"]
        assert Spool(spool_path, max_bytes=MAX_BYTES).pending() == 2  # no destination: sees all
    finally:
        project_a.close()
        project_b.close()
