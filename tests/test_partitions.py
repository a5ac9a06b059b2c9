"""`migrate --partitioned`: monthly partitions of logs and integration_logs, their maintenance and retention."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from stack.fixtures import Db, FreshStack
from stack.pgbouncer import DirectBackend, PgBouncer

from supabase_log_handler import SupabaseHandler, record_call, start_run
from supabase_log_handler._jsonsafe import encode
from supabase_log_handler.cli import main
from supabase_log_handler.sinks.postgres import PostgresSink
from supabase_log_handler.sinks.rest import SupabaseSink

UTC = dt.timezone.utc
SEED = """
insert into runs (id, script_name, status, started_at)
  select ('00000000-0000-7000-8000-' || lpad(g::text, 12, '0'))::uuid, 'old-job', 'success',
         now() - (g * 20 || ' days')::interval
    from generate_series(1, 12) g;
insert into logs (run_id, "timestamp", level, step, message, meta)
  select ('00000000-0000-7000-8000-' || lpad((1 + g % 12)::text, 12, '0'))::uuid,
         now() - (g || ' hours')::interval * 5, 'INFO', 'SYNC', 'row ' || g, jsonb_build_object('g', g)
    from generate_series(1, 2000) g;
insert into integration_logs (service_name, action, status, created_at, updated_at) values
  ('crm', 'sync_lead', 'success', now() - interval '70 days', now() - interval '70 days'),
  ('crm', 'sync_lead', 'failed', null, now() - interval '3 days'),
  ('sms', 'send', 'pending', null, null);
"""


def months_between(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """First instants (UTC) of the months from ``start``'s to ``end``'s, inclusive."""
    m = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    out = []
    while m <= end:
        out.append(m)
        m = (m + dt.timedelta(days=32)).replace(day=1)
    return out


def migrate_partitioned(db: Db, capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["migrate", "--partitioned", "--db-url", db.dsn])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


@pytest.fixture
def partitioned(fresh_gateway: Callable[..., FreshStack], capsys: pytest.CaptureFixture[str],
                monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FreshStack:  # fmt: skip
    """A fresh database with the default migrations, then `migrate --partitioned`."""
    monkeypatch.chdir(tmp_path)
    stack = fresh_gateway()
    migrate_partitioned(stack.db, capsys)
    return stack


def test_migrate_partitioned_converts_a_copy_keeping_rows_keys_views_and_access(
    fresh_gateway: Callable[..., FreshStack], pg_cluster: Any,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    """An unpartitioned database with rows is copied, the copy migrated: same rows, monthly partitions, FK cascade, views and RLS kept."""
    monkeypatch.chdir(tmp_path)
    _, original = fresh_gateway(migrations=True)
    original.execute(SEED)
    copy_name = f"copy_{uuid.uuid4().hex[:12]}"
    pg_cluster.execute("postgres", f'create database "{copy_name}" template "{original.name}"')
    copy = Db(pg_cluster, copy_name)
    try:
        out = migrate_partitioned(copy, capsys)
        assert "applied: 20261215000000_partition_logs.sql" in out
        migrate_partitioned(copy, capsys)  # a second time changes nothing
        rows = "select id, run_id, \"timestamp\", level, step, message, meta from logs order by id"
        assert copy.fetch(rows) == original.fetch(rows) and len(copy.fetch(rows)) == 2000
        calls = "select id, service_name, status, created_at is null from integration_logs order by id"
        assert [r[:3] for r in copy.fetch(calls)] == [r[:3] for r in original.fetch(calls)]
        assert copy.fetchval("select count(*) from integration_logs where created_at is null") == 0
        kinds = copy.fetch("select relname, relkind from pg_class where relname in ('logs', 'integration_logs') order by 1")
        assert kinds == [("integration_logs", "p"), ("logs", "p")]
        now = dt.datetime.now(UTC)
        oldest = copy.fetchval("select min(\"timestamp\") from logs")
        ahead = months_between(now, now + dt.timedelta(days=130))[3]  # this month and the 3 after it
        expected = {f"logs_p{m:%Y_%m}" for m in months_between(oldest, ahead)}
        made = {r[0] for r in copy.fetch("select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
                                         "where i.inhparent = 'logs'::regclass")}  # fmt: skip
        assert expected | {"logs_default"} <= made
        assert copy.fetchval("select count(*) from logs_default") == 0
        key = copy.fetchval("select pg_get_constraintdef(oid) from pg_constraint where conname = 'logs_pkey'")
        assert key == 'PRIMARY KEY (id, "timestamp")'
        victim = "00000000-0000-7000-8000-000000000003"
        before = copy.fetchval("select count(*) from logs where run_id = %s", (victim,))
        copy.execute("delete from runs where id = %s", (victim,))  # the foreign key still cascades
        assert before > 0 and copy.fetchval("select count(*) from logs where run_id = %s", (victim,)) == 0
        assert copy.fetchval("select count(*) from log_volume_hourly") > 0  # the view was made again
        assert copy.fetchval("select count(*) from pg_policies where tablename = 'logs'") == 2
        assert copy.fetchval("select has_table_privilege('anon', 'logs', 'select')") is False
        assert copy.fetchval("select has_table_privilege('authenticated', 'logs_default', 'select')") is False
        assert original.fetchval("select relkind from pg_class where relname = 'logs'") == "r"
    finally:
        pg_cluster.drop_database(copy_name)


def test_direct_sink_writes_partitioned_tables_once_and_keeps_a_row_outside_every_partition(
    partitioned: FreshStack, pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    """Through PgBouncer: rows land once (a repeat stores nothing), a 1999 record lands in the default partition, a call's status moves in place."""
    backend = DirectBackend(pgbouncer, partitioned.db.name)
    pdb = partitioned.db
    handler = SupabaseHandler(spool_path=str(tmp_path / "spool"), install_signal_handlers=False,
                              capture_uncaught=False, **backend.settings)  # fmt: skip
    log = logging.getLogger(f"partitioned.{uuid.uuid4().hex}")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    with start_run("partitioned-job") as run:
        for i in range(300):
            log.info("now %d", i)
        old = log.makeRecord(log.name, logging.WARNING, __file__, 1, "from 1999", (), None)
        old.created = dt.datetime(1999, 12, 31, 23, 59, tzinfo=UTC).timestamp()
        log.handle(old)
    assert handler.flush(30)
    stats = handler.stats()
    assert stats["dead_lettered"] == 0 and stats["by_table"]["logs"]["delivered"] == 301
    assert pdb.fetchval("select count(*) from logs where run_id = %s", (run.id,)) == 301
    assert pdb.fetch("select tableoid::regclass::text, message from logs where \"timestamp\" < '2000-01-01'") == [
        ("logs_default", "from 1999")
    ]
    sink = PostgresSink(backend.db_url)
    try:
        rows = pdb.fetch("select id, run_id, \"timestamp\", level, step, message from logs where run_id = %s", (run.id,))
        again = [encode({"id": str(r[0]), "run_id": str(r[1]), "timestamp": r[2].isoformat(), "level": r[3],
                         "step": r[4], "message": r[5], "meta": {}}) for r in rows]  # fmt: skip
        sink.write("logs", again, merge=False, columns=("id", "run_id", "timestamp", "level", "step", "message", "meta"))
        assert pdb.fetchval("select count(*) from logs where run_id = %s", (run.id,)) == 301
        call_id = str(uuid.uuid4())
        first = {"id": call_id, "service_name": "crm", "action": "sync_lead", "status": "pending"}
        sink.write("integration_logs", [encode(first)], merge=True, columns=tuple(first))
        moved = {**first, "status": "success", "duration_ms": 120}  # no created_at: merged by id
        sink.write("integration_logs", [encode(moved)], merge=True, columns=tuple(moved))
        assert pdb.fetch("select status, duration_ms from integration_logs where id = %s", (call_id,)) == [("success", 120)]
    finally:
        sink.close()
        handler.close()


def test_maintenance_makes_next_month_and_retention_drops_exactly_the_expired_months(
    partitioned: FreshStack,
) -> None:
    """ensure_log_partitions makes the missing next month (moving its waiting rows out of the default partition); drop_expired_log_partitions drops only months wholly past the window."""
    pdb = partitioned.db
    now = pdb.fetchval("select now()")
    next_month = months_between(now, now + dt.timedelta(days=31))[1]
    name = f"logs_p{next_month:%Y_%m}"
    pdb.execute(f"drop table {name}")
    pdb.execute("insert into runs (id, script_name, status) values ('00000000-0000-7000-8000-00000000000a', 'm', 'running')")
    pdb.execute("insert into logs (run_id, \"timestamp\", level, step, message) values "
                "('00000000-0000-7000-8000-00000000000a', %s, 'INFO', 'S', 'early bird')", (next_month + dt.timedelta(days=2),))  # fmt: skip
    assert pdb.fetchval("select tableoid::regclass::text from logs where message = 'early bird'") == "logs_default"
    made = pdb.fetchval("select public.ensure_log_partitions(1)")
    assert made == [name]
    assert pdb.fetchval("select tableoid::regclass::text from logs where message = 'early bird'") == name

    past = now - dt.timedelta(days=8 * 31)
    pdb.execute("select public.ensure_log_partitions(9, %s)", (past,))
    months = months_between(past, now)
    for m in months:
        pdb.execute("insert into logs (run_id, \"timestamp\", level, step, message) values "
                    "('00000000-0000-7000-8000-00000000000a', %s, 'INFO', 'S', 'aged')", (m + dt.timedelta(days=1),))  # fmt: skip
    cutoff = now - dt.timedelta(days=100)
    expired = [f"logs_p{m:%Y_%m}" for m in months if (m + dt.timedelta(days=32)).replace(day=1) <= cutoff]
    assert len(expired) >= 4
    dropped = pdb.fetchval("select public.drop_expired_log_partitions(100, null)")
    assert sorted(dropped) == sorted(expired)
    assert pdb.fetchval("select count(*) from logs where message = 'aged'") == len(months) - len(expired)
    assert pdb.fetchval("select count(*) from integration_logs_default") is not None  # calls: null window keeps all


def test_check_makes_missing_partitions_through_the_api(
    partitioned: FreshStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`supabase-log check` calls ensure_log_partitions through PostgREST: a dropped next month comes back."""
    gw, pdb = partitioned
    now = pdb.fetchval("select now()")
    name = f"logs_p{months_between(now, now + dt.timedelta(days=31))[1]:%Y_%m}"
    pdb.execute(f"drop table {name}")
    monkeypatch.setenv("SUPABASE_URL", gw.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", gw.service_key)
    code = main(["check", "--json", "--no-alerts"])
    out, err = capsys.readouterr()
    assert code in (0, 1), out + err
    assert f"partitions created: {name}" in json.loads(out)["notes"]
    assert pdb.fetchval("select to_regclass(%s) is not null", (f"public.{name}",))
    reader = SupabaseSink(gw.url, gw.service_key)  # reads through the API work on the partitioned table
    try:
        assert reader.select("logs", limit=1) == []
    finally:
        reader.close()


def test_rest_sink_learns_the_partitioned_key_and_writes_once(
    partitioned: FreshStack, tmp_path: Path
) -> None:
    """Through the API: the first write meets 42P10, the sink names (id, timestamp) or
    (id, created_at) from then on; logs and a call's moving state land once, nothing is refused."""
    gw, pdb = partitioned
    handler = SupabaseHandler(url=gw.url, key=gw.service_key, spool_path=str(tmp_path / "spool"),
                              install_signal_handlers=False, capture_uncaught=False)  # fmt: skip
    log = logging.getLogger(f"partitioned.{uuid.uuid4().hex}")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    with start_run("partitioned-rest") as run:
        for i in range(300):
            log.info("now %d", i)
        with record_call("crm", "sync_lead", handler=handler) as call:
            assert handler.flush(30)  # its pending state is stored before it moves on
    assert handler.flush(30)
    stats = handler.stats()
    assert stats["dead_lettered"] == 0 and stats["by_table"]["logs"]["delivered"] == 300
    assert pdb.fetchval("select count(*) from logs where run_id = %s", (run.id,)) == 300
    assert pdb.fetch("select status from integration_logs where id = %s", (call.id,)) == [("success",)]
    conflicts = {r.on_conflict for r in gw.requests if r.method == "POST" and r.status < 300
                 and r.path.endswith(("/logs", "/integration_logs"))}  # fmt: skip
    assert conflicts == {"id,timestamp", "id,created_at"}

    sink = SupabaseSink(gw.url, gw.service_key)
    try:
        rows = pdb.fetch("select id, run_id, \"timestamp\", level, step, message from logs where run_id = %s", (run.id,))
        again = [encode({"id": str(r[0]), "run_id": str(r[1]), "timestamp": r[2].isoformat(), "level": r[3],
                         "step": r[4], "message": r[5], "meta": {}}) for r in rows]  # fmt: skip
        sink.write("logs", again, merge=False, columns=("id", "run_id", "timestamp", "level", "step", "message", "meta"))
        assert pdb.fetchval("select count(*) from logs where run_id = %s", (run.id,)) == 300
    finally:
        sink.close()
        handler.close()
