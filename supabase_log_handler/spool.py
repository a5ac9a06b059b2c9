"""The durable spool: a SQLite file (WAL) of everything not yet delivered.

What the sender cannot deliver (backend down, retries exhausted, exit deadline)
is written here with its row ids, and replayed oldest first when the backend
answers again, by this process or by any later one using the same file. Rows the
database refused for good stay here as dead letters, with the server's error.

Several processes may share one file. A process claims entries by writing its
owner token and a lease; others skip them until the lease ends or the owner's
pid is gone, so nothing is sent twice at once (and if it were, ids make the
upsert a no-op). With ``durability="disk"`` the worker writes every batch here
before sending and deletes it after, so a killed process loses nothing the
worker had taken.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import sqlite3

KINDS = ("run_open", "log", "run_final")
_SCHEMA = """
create table if not exists entries (
  seq integer primary key autoincrement,
  kind text not null,
  target text not null,
  row_id text not null,
  payload text not null,
  state text not null default 'pending',
  owner text,
  owner_pid integer,
  lease_until real not null default 0,
  error_code text,
  error text,
  created real not null,
  dest text not null default ''
);
create unique index if not exists entries_kind_row on entries (kind, row_id);
create index if not exists entries_pending on entries (state, seq);
"""
_MIGRATE = "alter table entries add column dest text not null default ''"  # files made before dest
_BUSY_TIMEOUT_S = 2.0
FOREVER = 1e18


class Entry(NamedTuple):
    """One thing to deliver: a log row, or a run's open or final state (``seq``: its spool entry)."""

    kind: str  # run_open | log | run_final
    target: str  # table name
    row: dict[str, Any]
    seq: int = 0


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Owner tokens of the Spool objects alive in this process: with them, a lease held by
# this very pid is told apart from a lease left by a dead process whose pid was reused.
_local_owners: set[str] = set()


def _owner_alive(owner: str, pid: int) -> bool:
    if pid == os.getpid():
        return owner in _local_owners
    return pid_alive(pid)


class SpoolFullError(Exception):
    """The spool reached ``max_bytes``."""


class Spool:
    """Thread-safe access to one spool file; one SQLite connection per thread."""

    def __init__(
        self, path: str | os.PathLike[str], *, max_bytes: int, destination: str | None = None
    ) -> None:
        """``destination`` names where the rows go (project URL and schema, or the local
        store): entries are claimed only by spools of the same destination, so jobs of
        several projects can share one file. None reads every destination (inspection)."""
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.destination = destination
        self.owner = f"{os.getpid()}:{os.urandom(6).hex()}"
        self.owner_pid = os.getpid()
        _local_owners.add(self.owner)
        self._local = threading.local()
        self._ready = False
        self._ready_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            import sqlite3  # here, on the worker: it is not needed to start logging

            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=normal")
            with self._ready_lock:
                if not self._ready:
                    conn.executescript(_SCHEMA)
                    columns = {row[1] for row in conn.execute("pragma table_info(entries)")}
                    if "dest" not in columns:
                        conn.execute(_MIGRATE)
                    self._ready = True
            self._local.conn = conn
        return conn

    def size_bytes(self) -> int:
        conn = self._conn()
        pages = conn.execute("pragma page_count").fetchone()[0]
        page_size = conn.execute("pragma page_size").fetchone()[0]
        free = conn.execute("pragma freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    # -- writing -----------------------------------------------------------------------
    def add(
        self, entries: Sequence[Entry], *, leased: bool = False, want_seqs: bool = False
    ) -> list[int]:
        """Store entries (ignoring ones already stored).

        ``leased`` keeps them owned by this process (write-ahead of a send in
        flight) and returns their sequence numbers, as does ``want_seqs``.
        Raises SpoolFullError when the file is at its size cap.
        """
        if not entries:
            return []
        if self.size_bytes() >= self.max_bytes:
            raise SpoolFullError(f"spool {self.path} is full ({self.max_bytes} bytes)")
        now = time.time()
        owner, pid, lease = (self.owner, self.owner_pid, FOREVER) if leased else (None, None, 0.0)
        conn = self._conn()
        seqs: list[int] = []
        dest = self.destination or ""
        if not (leased or want_seqs):
            self._add_many(conn, entries, now, dest)
            return seqs
        conn.execute("begin immediate")
        try:
            for e in entries:
                row_id = str(e.row.get("id"))
                payload = json.dumps(e.row, ensure_ascii=False, allow_nan=False)
                verb = "insert or replace" if e.kind == "run_final" else "insert or ignore"
                cur = conn.execute(
                    f"{verb} into entries (kind, target, row_id, payload, owner, owner_pid,"
                    " lease_until, created, dest) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (e.kind, e.target, row_id, payload, owner, pid, lease, now, dest),
                )
                if cur.rowcount:
                    seqs.append(int(cur.lastrowid or 0))
                else:  # already there: report its seq so the caller can ack it
                    found = conn.execute(
                        "select seq from entries where kind = ? and row_id = ?", (e.kind, row_id)
                    ).fetchone()
                    if found:
                        seqs.append(int(found[0]))
            conn.execute("commit")
        except BaseException:
            conn.execute("rollback")
            raise
        return seqs

    @staticmethod
    def _add_many(
        conn: sqlite3.Connection, entries: Sequence[Entry], now: float, dest: str
    ) -> None:
        dumps = json.dumps
        params = [
            (
                e.kind,
                e.target,
                str(e.row.get("id")),
                dumps(e.row, ensure_ascii=False, allow_nan=False),
                now,
                dest,
            )
            for e in entries
        ]
        finals = [p for p, e in zip(params, entries, strict=False) if e.kind == "run_final"]
        others = [p for p, e in zip(params, entries, strict=False) if e.kind != "run_final"]
        conn.execute("begin immediate")
        try:
            sql = " into entries (kind, target, row_id, payload, created, dest) values (?, ?, ?, ?, ?, ?)"
            if others:
                conn.executemany("insert or ignore" + sql, others)
            if finals:
                conn.executemany("insert or replace" + sql, finals)
            conn.execute("commit")
        except BaseException:
            conn.execute("rollback")
            raise

    def ack(self, seqs: Iterable[int]) -> None:
        """Forget delivered entries."""
        ids = [(s,) for s in seqs]
        if ids:
            self._conn().executemany("delete from entries where seq = ? and state = 'pending'", ids)

    def release(self, seqs: Iterable[int]) -> None:
        """Give claimed entries back, to be replayed later."""
        ids = [(s,) for s in seqs]
        if ids:
            self._conn().executemany(
                "update entries set owner = null, owner_pid = null, lease_until = 0 where seq = ?",
                ids,
            )

    def dead_letter(self, seq: int, code: str | None, error: str) -> None:
        """Keep a refused entry for inspection; it is never replayed."""
        self._conn().execute(
            "update entries set state = 'dead', error_code = ?, error = ?, owner = null,"
            " lease_until = 0 where seq = ?",
            (code, error[:2000], seq),
        )

    # -- replay ------------------------------------------------------------------------
    def claim(self, limit: int, lease_s: float) -> list[Entry]:
        """Lease up to ``limit`` pending entries, oldest first, that nobody alive holds."""
        conn = self._conn()
        now = time.time()
        conn.execute("begin immediate")
        try:
            holders = conn.execute(
                "select distinct owner, owner_pid from entries"
                " where state = 'pending' and owner is not null and owner != ? and lease_until > ?",
                (self.owner, now),
            ).fetchall()
            gone = [owner for owner, pid in holders if not _owner_alive(owner, int(pid or 0))]
            marks = ", ".join("?" for _ in gone)
            stale = f" or owner in ({marks})" if gone else ""
            mine, dest = self._dest()
            rows = conn.execute(
                "select seq, kind, target, payload from entries where state = 'pending'"
                f" and (owner is null or (owner != ? and (lease_until <= ?{stale}))){mine}"
                " order by seq limit ?",
                (self.owner, now, *gone, *dest, limit),
            ).fetchall()
            conn.executemany(
                "update entries set owner = ?, owner_pid = ?, lease_until = ? where seq = ?",
                [(self.owner, self.owner_pid, now + lease_s, r[0]) for r in rows],
            )
            conn.execute("commit")
        except BaseException:
            conn.execute("rollback")
            raise
        return [
            Entry(kind, target, json.loads(payload), seq) for seq, kind, target, payload in rows
        ]

    def _dest(self) -> tuple[str, tuple[str, ...]]:
        """SQL condition and parameters that keep a query to this spool's destination."""
        if self.destination is None:
            return "", ()
        return " and dest = ?", (self.destination,)

    def find_run(self, run_id: str) -> dict[str, Any] | None:
        """The newest spooled state of a run (final before open), if any."""
        mine, dest = self._dest()
        found = (
            self._conn()
            .execute(
                "select payload from entries where row_id = ? and kind in ('run_final', 'run_open')"
                f"{mine} order by kind = 'run_final' desc, seq desc limit 1",
                (run_id, *dest),
            )
            .fetchone()
        )
        return json.loads(found[0]) if found else None

    def pending(self) -> int:
        """Entries waiting to be delivered (by anyone) to this spool's destination."""
        mine, dest = self._dest()
        return int(
            self._conn()
            .execute(f"select count(*) from entries where state = 'pending'{mine}", dest)
            .fetchone()[0]
        )

    def dead(self) -> list[dict[str, Any]]:
        """Dead letters, oldest first."""
        rows = (
            self._conn()
            .execute(
                "select seq, kind, target, payload, error_code, error, created from entries"
                " where state = 'dead' order by seq"
            )
            .fetchall()
        )
        return [
            {
                "seq": s,
                "kind": k,
                "target": t,
                "row": json.loads(p),
                "error_code": c,
                "error": e,
                "created": cr,
            }
            for s, k, t, p, c, e, cr in rows
        ]

    def close(self) -> None:
        _local_owners.discard(self.owner)
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                conn.close()
            finally:
                self._local.conn = None
