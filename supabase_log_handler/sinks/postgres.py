"""The direct sink: rows go straight to PostgreSQL with COPY, through a transaction pooler.

Selected with ``sink="postgres"`` and ``db_url`` (``SUPABASE_DB_URL``), for
volumes PostgREST carries slowly. One write is one short transaction, in three
round trips::

    begin; set local statement_timeout = ...;
        create temp table if not exists _slh_<table> (r jsonb) on commit delete rows
    copy _slh_<table> (r) from stdin          -- the rows' JSON, exactly as the worker encoded them
    insert into <table> (<columns>) select ... from _slh_<table>, jsonb_populate_record(...)
        on conflict (<primary key>) do nothing | do update set <columns> = excluded...; commit

so a retry after a timeout, a replay or a second push stores nothing twice,
and an all-or-nothing refusal lets ``delivery.py`` halve the group around a bad
row (the errors are mapped by ``pgclassify.py``). Nothing a later
transaction relies on outlives one: no server-side prepared statements
(``prepare_threshold=None``), no ``SET`` but ``SET LOCAL``, and the staging
table, made on first use in whichever server connection the transaction got
(not made and dropped in every transaction), is emptied at every commit; so
it works through PgBouncer or Supavisor in transaction mode (port 6543), which
lend a server connection for one transaction only. The arbiter of ``on
conflict`` is the table's primary key, read once per table: ``(id)``, or
``(id, timestamp)`` on a partitioned table (``migrations/partitioned/``); a
merge that lacks a key column updates by ``id`` first.

A heartbeat is one ``update ... where id = <run> and status = 'running'``.

One connection, opened on first use, by the one thread that uses the sink.
Every call has a deadline: ``statement_timeout`` on the server, and a watchdog
that shuts the socket down when the network itself hangs. A forked child never
touches its parent's connection (closing it would end the parent's session):
it is set aside in the child and a new one is opened. psycopg 3 (the
``postgres`` extra) is imported in ``prepare`` or on first use, never by the
handler's import.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from ..errors import SetupError
from . import DictRows, Filter
from .pgclassify import classify_pg
from .pgurl import describe

APPLICATION_NAME = "supabase-log-handler"
_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_ESCAPES = ((b"\\", b"\\\\"), (b"\n", b"\\n"), (b"\r", b"\\r"), (b"\t", b"\\t"))
INSTALL_HINT = "the direct sink needs psycopg 3: pip install 'supabase-log-handler[postgres]'"


class PostgresSink(DictRows):
    """Writes with COPY and reads with SQL, one short transaction per call."""

    name = "postgres"

    def __init__(
        self, db_url: str, *, schema: str = "public", request_timeout_s: float = 10.0
    ) -> None:
        self._db_url = db_url
        self._schema = schema
        self._timeout_s = request_timeout_s
        self._conn: Any = None
        self._pid = os.getpid()
        self._keys: dict[str, tuple[str, ...]] = {}
        _sinks.add(self)

    # -- connection -----------------------------------------------------------------
    def prepare(self) -> None:
        _psycopg()

    def _connection(self, timeout_s: float) -> Any:
        if self._pid != os.getpid():
            self._after_fork()
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken):
            self._drop()
            conn = None
        if conn is None:
            psycopg = _psycopg()
            try:
                conn = psycopg.connect(
                    self._db_url,
                    autocommit=True,
                    prepare_threshold=None,  # transaction poolers cannot keep prepared statements
                    connect_timeout=max(2, int(timeout_s + 0.999)),
                    application_name=APPLICATION_NAME,
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                )
            except Exception as exc:
                raise _hide_url(classify_pg(exc), self._db_url) from None
            self._conn = conn
        return conn

    def _after_fork(self) -> None:
        """In a forked child: set the parent's connection aside, untouched, for good."""
        if self._conn is not None:
            _inherited.append(self._conn)  # never closed here: that would end the parent's session
        self._conn = None
        self._pid = os.getpid()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        self._drop()

    # -- one call under a deadline -------------------------------------------------------
    def _call(self, timeout_s: float | None, work: Any) -> Any:
        timeout_s = self._timeout_s if timeout_s is None else max(min(timeout_s, self._timeout_s), 0.05)
        conn = self._connection(timeout_s)
        dog = _Watchdog(conn, timeout_s * 1.25 + 0.1)  # the server's own timeout fires first if it can
        try:
            with dog:
                return work(conn, int(timeout_s * 1000))
        except Exception as exc:
            error = classify_pg(exc, timed_out=dog.fired)
            if dog.fired or conn.closed or conn.broken:
                self._drop()
            else:
                self._rollback(conn)
            raise _hide_url(error, self._db_url) from None

    def _rollback(self, conn: Any) -> None:
        psycopg = _psycopg()
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return
        try:
            with _Watchdog(conn, 2.0):
                conn.execute("rollback")
        except Exception:
            self._drop()

    # -- writing -------------------------------------------------------------------------
    def write(
        self,
        table: str,
        rows: Sequence[bytes],
        *,
        merge: bool,
        columns: Sequence[str],
        timeout_s: float | None = None,
    ) -> None:
        """COPY the rows into a staging table, then insert or merge them by key; one transaction."""
        if not rows:
            return
        data = b"".join(_copy_line(r) for r in rows)

        def work(conn: Any, timeout_ms: int) -> None:
            target = self._target(table)
            key = self._key(conn, table, target)
            stage = f'"_slh_{table}"'
            conn.execute(
                f"begin; set local statement_timeout = {timeout_ms}; "
                "set local client_min_messages = warning; "  # no notice when it exists
                f"create temp table if not exists {stage} (r jsonb) on commit delete rows"
            )
            with conn.cursor().copy(f"copy {stage} (r) from stdin") as copy:
                copy.write(data)
            conn.execute(_upsert_sql(target, stage, tuple(columns), key, merge) + "; commit")

        self._call(timeout_s, work)

    def update(
        self,
        table: str,
        row_id: str,
        values: bytes,
        *,
        only_if: tuple[str, str],
        timeout_s: float | None = None,
    ) -> None:
        """Set ``values`` on row ``row_id`` while its ``only_if`` column has that value."""
        row = {k: v for k, v in json.loads(values).items() if k != "id"}
        if not row:
            return
        column, value = only_if
        target = self._target(table)
        sets = ", ".join(f"{_ident(c)} = x.{_ident(c)}" for c in row)
        sql = (f"update {target} t set {sets} from json_populate_record(null::{target}, %s::json) x"
               f" where t.id = %s and t.{_ident(column)} = %s")  # fmt: skip

        def work(conn: Any, timeout_ms: int) -> None:
            conn.execute(f"begin; set local statement_timeout = {timeout_ms}")
            conn.execute(sql, (json.dumps(row), row_id, value))
            conn.execute("commit")

        self._call(timeout_s, work)

    def _target(self, table: str) -> str:
        return f'"{self._schema}"."{table}"'

    def _key(self, conn: Any, table: str, target: str) -> tuple[str, ...]:
        """The table's primary key columns (read once): the arbiter of ``on conflict``."""
        key = self._keys.get(table)
        if key is None:
            rows = conn.execute(
                "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid"
                " and a.attnum = any(i.indkey) where i.indrelid = to_regclass(%s) and i.indisprimary"
                " order by array_position(i.indkey, a.attnum)",
                (target,),
            ).fetchall()
            if not rows and conn.execute("select to_regclass(%s)", (target,)).fetchone()[0] is None:
                from .classify import FIX_MIGRATIONS

                raise SetupError(f"the table {self._schema}.{table} is missing", fix=FIX_MIGRATIONS,
                                 code="42P01")  # fmt: skip
            key = self._keys[table] = tuple(r[0] for r in rows) or ("id",)
        return key

    # -- reading -------------------------------------------------------------------------
    def select(
        self,
        table: str,
        *,
        filters: list[Filter] | None = None,
        order: list[tuple[str, bool]] | None = None,
        limit: int | None = None,
        columns: str = "*",
    ) -> list[dict[str, Any]]:
        """Rows as PostgREST gives them (JSON values: timestamps and ids as text)."""
        where, params = _where(filters or [])
        cols = "*" if columns.strip() == "*" else ", ".join(_ident(c.strip()) for c in columns.split(","))
        sql = f"select {cols} from {self._target(table)} t{where}"
        if order:
            sql += " order by " + ", ".join(f"{_ident(c)} {'desc' if d else 'asc'}" for c, d in order)
        if limit is not None:
            sql += f" limit {int(limit)}"
        query = f"select coalesce(json_agg(q), '[]')::text from ({sql}) q"

        def work(conn: Any, timeout_ms: int) -> list[dict[str, Any]]:
            conn.execute(f"begin; set local statement_timeout = {timeout_ms}")
            text = conn.execute(query, params).fetchone()[0]
            conn.execute("commit")
            return list(json.loads(text))

        result: list[dict[str, Any]] = self._call(None, work)
        return result

    def __repr__(self) -> str:
        return f"<PostgresSink {describe(self._db_url)}>"


def _copy_line(row: bytes) -> bytes:
    """One row in COPY's text format: the JSON object on one line, backslashes doubled."""
    for raw, escaped in _ESCAPES:
        if raw in row:
            row = row.replace(raw, escaped)
    return row + b"\n"


def _ident(name: str) -> str:
    if not name.replace("_", "a").isalnum():
        raise ValueError(f"not a plain column name: {name!r}")
    return f'"{name}"'


def _upsert_sql(
    target: str, stage: str, columns: tuple[str, ...], key: tuple[str, ...], merge: bool
) -> str:
    cols = ", ".join(_ident(c) for c in columns)
    picked = ", ".join(f"x.{_ident(c)}" for c in columns)
    source = f"from {stage} s cross join lateral jsonb_populate_record(null::{target}, s.r) x"
    rest = [c for c in columns if c not in key]
    if set(key) <= set(columns):
        conflict = f"on conflict ({', '.join(_ident(c) for c in key)})"
        if merge and rest:
            sets = ", ".join(f"{_ident(c)} = excluded.{_ident(c)}" for c in rest)
            return f"insert into {target} ({cols}) select {picked} {source} {conflict} do update set {sets}"
        return f"insert into {target} ({cols}) select {picked} {source} {conflict} do nothing"
    # A partitioned table keyed (id, <time>) and rows without the time column: by id alone.
    exists = f"exists (select 1 from {target} t where t.id = x.id)"
    insert = f"insert into {target} ({cols}) select {picked} {source} where not {exists} on conflict do nothing"
    if not merge or not rest:
        return insert
    sets = ", ".join(f"{_ident(c)} = x.{_ident(c)}" for c in rest)
    return f"update {target} t set {sets} {source} where t.id = x.id; {insert}"


def _where(filters: list[Filter]) -> tuple[str, list[Any]]:
    """SQL conditions for filters; values go as text of unknown type, which the server reads
    as the column's type (as PostgREST does with ``eq.<value>``)."""
    parts: list[str] = []
    params: list[Any] = []
    for column, op, value in filters:
        col = _ident(column)
        if op == "not_null":
            parts.append(f"{col} is not null")
        elif op == "in":
            parts.append(f"{col}::text = any(%s)")
            params.append([_text(v) for v in value])
        elif op in _OPS:
            parts.append(f"{col} {_OPS[op]} %s")
            params.append(_text(value))
        else:
            raise ValueError(f"unknown filter operator {op!r}")
    return (" where " + " and ".join(parts)) if parts else "", params


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _hide_url(error: Any, db_url: str) -> Any:
    """No password from the connection string in a message that may be shown or stored."""
    from .pgurl import parts

    secret = db_url.split("@", 1)[0].rsplit(":", 1)[-1] if "://" in db_url and "@" in db_url else ""
    if secret and secret not in parts(db_url).values() and secret in error.message:
        error.message = error.message.replace(secret, "***")
        error.args = (error.message,)
    return error


class _Watchdog:
    """Shuts a connection's socket down if the call inside takes longer than ``timeout_s``.

    libpq waits for the server without a deadline of its own; the server's
    ``statement_timeout`` cannot help when the network or the pooler hangs.
    """

    def __init__(self, conn: Any, timeout_s: float) -> None:
        self.conn = conn
        self.timeout_s = timeout_s
        self.fired = False
        self._lock = threading.Lock()
        self._armed = False
        self._timer: threading.Timer | None = None

    def __enter__(self) -> _Watchdog:
        self._armed = True
        self._timer = threading.Timer(self.timeout_s, self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._armed = False
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if not self._armed:
                return
            self.fired = True
            with contextlib.suppress(Exception):
                fd = self.conn.pgconn.socket
                sock = socket.socket(fileno=os.dup(fd))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise SetupError("psycopg 3 is not installed", fix=INSTALL_HINT, code="psycopg") from None
    return psycopg


_sinks: weakref.WeakSet[PostgresSink] = weakref.WeakSet()
_inherited: list[Any] = []  # connections a forked child got from its parent: kept, never used


def _after_fork_in_child() -> None:
    for sink in list(_sinks):
        sink._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
