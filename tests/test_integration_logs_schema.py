"""The `integration_logs` migration: fresh, twice, over the original table; cleanup, access, views."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgrest.exceptions import APIError
from stack.fixtures import Db, FreshStack
from test_stack import official_client

from supabase_log_handler.cli import main

MIGRATIONS = sorted((Path(__file__).resolve().parent.parent / "migrations").glob("*.sql"))
ALL_MIGRATIONS_SQL = "\n".join(p.read_text() for p in MIGRATIONS)
SEED_INDEXES = (
    "idx_integration_logs_service_name",
    "idx_integration_logs_status",
    "idx_integration_logs_created_at",
    "idx_integration_logs_related_entity",
    "idx_integration_logs_failed",
    "idx_integration_logs_dashboard",
)

# The table as the original integration-logging document (phase 2) creates it: its 14
# columns, six indexes, two views, cleanup function, RLS and two policies. The grants are
# what older Supabase projects gave every new table and view by default.
SEED_DDL = """
CREATE TABLE IF NOT EXISTS integration_logs (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  service_name TEXT NOT NULL,
  action TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('success', 'failed', 'pending', 'retrying')),
  related_entity_type TEXT,
  related_entity_id UUID,
  request_payload JSONB,
  response_payload JSONB,
  error_message TEXT,
  error_code TEXT,
  duration_ms INTEGER,
  retry_count INTEGER DEFAULT 0,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE INDEX idx_integration_logs_service_name ON integration_logs(service_name);
CREATE INDEX idx_integration_logs_status ON integration_logs(status);
CREATE INDEX idx_integration_logs_created_at ON integration_logs(created_at DESC);
CREATE INDEX idx_integration_logs_related_entity ON integration_logs(related_entity_type, related_entity_id);
CREATE INDEX idx_integration_logs_failed ON integration_logs(service_name, created_at DESC) WHERE status = 'failed';
CREATE INDEX idx_integration_logs_dashboard ON integration_logs(service_name, status, created_at DESC);

CREATE OR REPLACE VIEW integration_stats_hourly AS
SELECT service_name, action, status,
  DATE_TRUNC('hour', created_at) AS hour,
  COUNT(*) AS count,
  AVG(duration_ms) AS avg_duration_ms,
  MAX(duration_ms) AS max_duration_ms,
  COUNT(*) FILTER (WHERE status = 'failed') AS failed_count
FROM integration_logs
WHERE created_at >= NOW() - INTERVAL '24 hours'
GROUP BY service_name, action, status, DATE_TRUNC('hour', created_at)
ORDER BY hour DESC;

CREATE OR REPLACE VIEW integration_stats_daily AS
SELECT service_name, action, status,
  DATE_TRUNC('day', created_at) AS day,
  COUNT(*) AS count,
  AVG(duration_ms) AS avg_duration_ms,
  COUNT(*) FILTER (WHERE status = 'failed') AS failed_count
FROM integration_logs
WHERE created_at >= NOW() - INTERVAL '30 days'
GROUP BY service_name, action, status, DATE_TRUNC('day', created_at)
ORDER BY day DESC;

CREATE OR REPLACE FUNCTION cleanup_old_integration_logs() RETURNS void AS $$
BEGIN
  DELETE FROM integration_logs WHERE status = 'success' AND created_at < NOW() - INTERVAL '90 days';
  DELETE FROM integration_logs WHERE created_at < NOW() - INTERVAL '180 days';
END;
$$ LANGUAGE plpgsql;

ALTER TABLE integration_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Service role full access to integration_logs" ON integration_logs
  FOR ALL USING (auth.role() = 'service_role');
CREATE POLICY "Authenticated users can view integration_logs" ON integration_logs
  FOR SELECT USING (auth.role() = 'authenticated');

GRANT ALL ON integration_logs, integration_stats_hourly, integration_stats_daily
  TO anon, authenticated, service_role;
"""

_CATALOG = {
    "columns": """
        select column_name, data_type, is_nullable, column_default,
               col_description('public.integration_logs'::regclass, ordinal_position) is not null
        from information_schema.columns
        where table_schema = 'public' and table_name = 'integration_logs'
        order by ordinal_position""",
    "constraints": """
        select conname, pg_get_constraintdef(oid) from pg_constraint
        where conrelid = 'public.integration_logs'::regclass order by 1""",
    "indexes": """
        select indexname, indexdef from pg_indexes
        where schemaname = 'public' and tablename = 'integration_logs' order by 1""",
    "triggers": """
        select tgname, pg_get_triggerdef(oid) from pg_trigger
        where tgrelid = 'public.integration_logs'::regclass and not tgisinternal order by 1""",
    "policies": """
        select policyname, cmd, roles::text, qual, with_check from pg_policies
        where schemaname = 'public' and tablename = 'integration_logs' order by 1""",
    "relations": """
        select relname, relkind, relrowsecurity, reloptions::text, obj_description(oid) is not null,
               case when relkind = 'v' then pg_get_viewdef(oid) end
        from pg_class
        where relnamespace = 'public'::regnamespace
          and relname in ('integration_logs', 'integration_stats_hourly', 'integration_stats_daily')
        order by 1""",
    "functions": """
        select oid::regprocedure::text, pg_get_function_result(oid), proacl::text,
               obj_description(oid) is not null
        from pg_proc
        where proname in ('cleanup_old_integration_logs', 'integration_logs_set_updated_at',
                          'integration_logs_keep_order')
        order by 1""",
    # The original's `grant all` leaves service_role truncate/references/trigger, which
    # the migration does not take away (as for runs/logs); only these four are compared.
    "grants": """
        select c.relname, a.grantee::regrole::text, a.privilege_type
        from pg_class c, aclexplode(c.relacl) a
        where c.relnamespace = 'public'::regnamespace
          and c.relname in ('integration_logs', 'integration_stats_hourly', 'integration_stats_daily')
          and a.privilege_type in ('SELECT', 'INSERT', 'UPDATE', 'DELETE')
        order by 1, 2, 3""",
}


def catalog(db: Db) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the migration defines for integration_logs, as the catalog describes it."""
    return {name: db.fetch(query) for name, query in _CATALOG.items()}


def test_fresh_table_is_the_original_plus_run_id(
    db: Db, fresh_gateway: Callable[..., FreshStack]
) -> None:
    """A fresh migration gives the original's 14 columns, check and six indexes, identically, plus run_id."""
    _, seed = fresh_gateway(migrations=False, sql=SEED_DDL)
    ours, original = catalog(db), catalog(seed)
    assert len(original["columns"]) == 14
    assert [c[:4] for c in ours["columns"]] == [
        *(c[:4] for c in original["columns"]),
        ("run_id", "uuid", "YES", None),
    ]
    assert all(c[4] for c in ours["columns"]), "every column has a comment"
    status_check = dict(original["constraints"])["integration_logs_status_check"]
    assert dict(ours["constraints"])["integration_logs_status_check"] == status_check
    assert (
        "integration_logs_run_id_fkey",
        "FOREIGN KEY (run_id) REFERENCES runs(id) ON DELETE SET NULL",
    ) in ours["constraints"]
    seed_indexes = {name: text for name, text in original["indexes"] if name in SEED_INDEXES}
    assert len(seed_indexes) == 6
    assert "WHERE (status = 'failed'::text)" in seed_indexes["idx_integration_logs_failed"]
    assert {n: t for n, t in ours["indexes"] if n in SEED_INDEXES} == seed_indexes
    assert {n for n, _ in ours["indexes"]} == {
        *SEED_INDEXES,
        "integration_logs_pkey",
        "idx_integration_logs_run_id",
    }
    assert [t[0] for t in ours["triggers"]] == [
        "integration_logs_set_updated_at",
        "integration_logs_state_order",
    ]
    assert [f[:2] for f in ours["functions"]] == [
        ("cleanup_old_integration_logs(integer,integer)", "integer"),
        ("integration_logs_keep_order()", "trigger"),
        ("integration_logs_set_updated_at()", "trigger"),
    ]
    assert [(r[0], r[2], r[3], r[4]) for r in ours["relations"]] == [
        ("integration_logs", True, None, True),
        ("integration_stats_daily", False, "{security_invoker=true}", True),
        ("integration_stats_hourly", False, "{security_invoker=true}", True),
    ]


def test_migrations_apply_twice_and_over_the_original_table(
    fresh_gateway: Callable[..., FreshStack],
) -> None:
    """Applied again twice, and twice over the original table with a row in it: the same schema as fresh, the row kept."""
    _, fresh = fresh_gateway()
    expected = catalog(fresh)
    fresh.execute(ALL_MIGRATIONS_SQL)
    fresh.execute(ALL_MIGRATIONS_SQL)
    assert catalog(fresh) == expected

    row = "insert into integration_logs (service_name, action, status, duration_ms) values ('amocrm', 'sync_lead', 'success', 234)"
    _, seeded = fresh_gateway(migrations=False, sql=SEED_DDL + row)
    assert seeded.fetchval("select count(*) from pg_policies where tablename = 'integration_logs'")
    seeded.execute(ALL_MIGRATIONS_SQL)
    seeded.execute(ALL_MIGRATIONS_SQL)
    assert catalog(seeded) == expected
    assert seeded.fetch("select service_name, duration_ms, run_id from integration_logs") == [
        ("amocrm", 234, None)
    ]
    assert seeded.fetchval("select cleanup_old_integration_logs()") == 0  # no ambiguous overload


def test_migrate_and_doctor_over_the_original_table(
    fresh_gateway: Callable[..., FreshStack],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Over the original table doctor names the missing run_id without failing on it; `migrate` applies and records both files; --print holds both."""
    gw, seeded = fresh_gateway(migrations=False, sql=SEED_DDL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPABASE_URL", gw.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", gw.service_key)

    def doctor() -> dict[str, dict[str, Any]]:
        main(["doctor", "--json"])
        return {c["name"]: c for c in json.loads(capsys.readouterr().out)}

    checks = doctor()
    assert checks["table integration_logs"]["ok"] is True
    assert checks["columns integration_logs"] == {
        "name": "columns integration_logs",
        "ok": None,
        "detail": "public.integration_logs lacks column(s): run_id; `supabase-log migrate` adds it",
        "fix": None,
    }
    assert main(["migrate", "--db-url", seeded.dsn]) == 0
    out = capsys.readouterr().out
    assert all(f"applied: {p.name}" in out for p in MIGRATIONS)
    assert f"{len(MIGRATIONS)} migrations, {len(MIGRATIONS)} applied now" in out
    assert seeded.fetch(
        "select version, name from supabase_migrations.schema_migrations order by 1"
    ) == [tuple(p.stem.split("_", 1)) for p in MIGRATIONS]
    checks = doctor()
    assert checks["columns integration_logs"]["ok"] is True
    assert [c["name"] for c in checks.values() if c["ok"] is False] == []

    assert main(["migrate", "--print"]) == 0
    printed = capsys.readouterr().out
    for path in MIGRATIONS:
        version, name = path.stem.split("_", 1)
        assert f"-- {path.name}\n{path.read_text().rstrip()}" in printed
        assert f"values ('{version}', array[" in printed and f"'{name}')" in printed


def test_the_original_verification_queries_pass(
    db: Db, fresh_gateway: Callable[..., FreshStack]
) -> None:
    """The original document's checks: empty table, six indexes, both views, a test insert and its delete."""
    _, seeded = fresh_gateway(migrations=True, sql=SEED_DDL)
    _, fresh = fresh_gateway()
    for target in (fresh, seeded):
        assert target.fetchval("SELECT COUNT(*) FROM integration_logs") == 0
        names = {
            r[0]
            for r in target.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'integration_logs'"
            )
        }
        assert set(SEED_INDEXES) <= names
        assert target.fetch("SELECT * FROM integration_stats_hourly LIMIT 5") == []
        assert target.fetch("SELECT * FROM integration_stats_daily LIMIT 5") == []
        with target.connect() as conn:
            cur = conn.execute(
                "INSERT INTO integration_logs (service_name, action, status, duration_ms)"
                " VALUES ('test', 'migration_verification', 'success', 1) RETURNING *"
            )
            assert cur.description is not None
            inserted = dict(
                zip([d.name for d in cur.description], cur.fetchone() or (), strict=True)
            )
            assert isinstance(inserted["id"], uuid.UUID)
            assert inserted["retry_count"] == 0 and inserted["run_id"] is None
            assert inserted["created_at"] is not None
            assert inserted["updated_at"] == inserted["created_at"]
            assert conn.execute(
                "SELECT count FROM integration_stats_hourly WHERE action = 'migration_verification'"
            ).fetchall() == [(1,)]
            deleted = conn.execute(
                "DELETE FROM integration_logs WHERE action = 'migration_verification'"
            )
            assert deleted.rowcount == 1
        assert target.fetchval("SELECT COUNT(*) FROM integration_logs") == 0


def _insert_aged(db: Db, rows: list[tuple[str, str, float | None]]) -> None:
    """Rows (action, status, days ago); ``None`` days: no created_at."""
    for action, status, days in rows:
        db.execute(
            "insert into integration_logs (service_name, action, status, created_at)"
            " values ('svc', %s, %s, case when %s::float8 is null then null"
            " else now() - make_interval(secs => %s::float8 * 86400) end)",
            (action, status, days, days),
        )


def _actions(db: Db) -> list[str]:
    return [r[0] for r in db.fetch("select action from integration_logs order by action")]


def test_cleanup_removes_exactly_the_rows_the_rule_names(
    fresh_gateway: Callable[..., FreshStack],
) -> None:
    """Successes older than 90 days and everything older than 180 go; the windows are arguments; bad windows are refused."""
    _, db = fresh_gateway()
    _insert_aged(
        db,
        [
            ("success-89d", "success", 89),
            ("success-91d", "success", 91),
            ("failed-91d", "failed", 91),
            ("pending-179d", "pending", 179),
            ("retrying-179d", "retrying", 179),
            ("failed-181d", "failed", 181),
            ("pending-181d", "pending", 181),
            ("success-200d", "success", 200),
            ("success-now", "success", 0),
            ("success-undated", "success", None),
        ],
    )
    assert db.fetchval("select cleanup_old_integration_logs()") == 4
    assert _actions(db) == [
        "failed-91d",
        "pending-179d",
        "retrying-179d",
        "success-89d",
        "success-now",
        "success-undated",
    ]
    assert db.fetchval("select cleanup_old_integration_logs()") == 0

    db.execute("delete from integration_logs")
    _insert_aged(
        db,
        [
            ("success-6d", "success", 6),
            ("success-8d", "success", 8),
            ("failed-8d", "failed", 8),
            ("retrying-29d", "retrying", 29),
            ("failed-31d", "failed", 31),
            ("pending-31d", "pending", 31),
        ],
    )
    assert db.fetchval("select cleanup_old_integration_logs(7, 30)") == 3
    assert _actions(db) == ["failed-8d", "retrying-29d", "success-6d"]
    assert db.fetchval("select cleanup_old_integration_logs(keep_all_days => 10)") == 1
    assert _actions(db) == ["failed-8d", "success-6d"]
    for bad in ("-1, 30", "7, null"):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="days >= 0"):
            db.execute(f"select cleanup_old_integration_logs({bad})")
    assert _actions(db) == ["failed-8d", "success-6d"]


def test_updated_at_is_kept_by_the_trigger(fresh_gateway: Callable[..., FreshStack]) -> None:
    """An update sets updated_at to the transaction's time, whatever the update itself says."""
    _, db = fresh_gateway()
    db.execute(
        "insert into integration_logs (service_name, action, status, created_at, updated_at)"
        " values ('amocrm', 'sync_lead', 'pending', now() - interval '1 day', now() - interval '1 day')"
    )
    with db.connect() as conn:
        updated, now, created = (
            conn.execute(
                "update integration_logs set status = 'success', updated_at = '2001-01-01'"
                " returning updated_at, now(), created_at"
            ).fetchone()
            or ()
        )
    assert updated == now and created < now - dt.timedelta(hours=23)


def test_access_service_role_writes_authenticated_reads_anon_nothing(
    fresh_gateway: Callable[..., FreshStack],
) -> None:
    """Through the gateway: service_role inserts and upserts one call's row in place; authenticated reads; anon nothing."""
    gw, db = fresh_gateway()
    call_id = str(uuid.uuid4())
    row: dict[str, Any] = {
        "id": call_id,
        "service_name": "mobizon",
        "action": "send_sms",
        "status": "pending",
        "request_payload": {"recipient": "+77001234567"},
        "retry_count": 0,
    }
    stamps = []
    with official_client(gw, gw.service_key) as (service, _):
        service.table("integration_logs").insert(row).execute()
        stamps.append(db.fetchval("select updated_at from integration_logs"))
        for status, retries in (("retrying", 2), ("success", 2)):
            answer = (
                service.table("integration_logs")
                .upsert({**row, "status": status, "retry_count": retries}, on_conflict="id")
                .execute()
            )
            assert [r["status"] for r in answer.data] == [status]
            stamps.append(db.fetchval("select updated_at from integration_logs"))
        answer = (
            service.table("integration_logs")
            .upsert(
                {
                    "id": call_id,
                    "service_name": "mobizon",
                    "action": "send_sms",
                    "status": "success",
                    "response_payload": {"message_id": 42},
                },
                on_conflict="id",
            )
            .execute()
        )
        assert [(r["request_payload"], r["retry_count"]) for r in answer.data] == [
            (row["request_payload"], 2)
        ]
        assert service.rpc("cleanup_old_integration_logs", {}).execute().data == 0
        daily = service.table("integration_stats_daily").select("*").execute().data
        assert [(r["status"], r["count"]) for r in daily] == [("success", 1)]
    assert db.fetch("select id::text, status, retry_count from integration_logs") == [
        (call_id, "success", 2)
    ]
    assert stamps[0] < stamps[1] < stamps[2]

    with official_client(gw, gw.authenticated_key) as (reader, _):
        assert [r["id"] for r in reader.table("integration_logs").select("id").execute().data] == [
            call_id
        ]
        hourly = reader.table("integration_stats_hourly").select("*").execute().data
        assert [(r["service_name"], r["status"], r["count"]) for r in hourly] == [
            ("mobizon", "success", 1)
        ]
        for denied in (
            lambda: reader.table("integration_logs").insert({**row, "id": str(uuid.uuid4())}),
            lambda: reader.table("integration_logs").update({"status": "failed"}).eq("id", call_id),
            lambda: reader.rpc("cleanup_old_integration_logs", {}),
        ):
            with pytest.raises(APIError) as excinfo:
                denied().execute()
            assert excinfo.value.code == "42501"

    with official_client(gw, gw.anon_key) as (anon, _):
        for relation in ("integration_logs", "integration_stats_hourly", "integration_stats_daily"):
            with pytest.raises(APIError) as excinfo:
                anon.table(relation).select("*").execute()
            assert excinfo.value.code == "42501"
    assert db.fetchval("select status from integration_logs") == "success"


def test_views_aggregate_known_rows(fresh_gateway: Callable[..., FreshStack]) -> None:
    """Hourly and daily views: counts, rounded averages, maxima and failures per bucket; rows outside the windows left out."""
    _, db = fresh_gateway()
    hour = db.fetchval("select date_trunc('hour', now(), 'UTC')")
    rows = [  # service, action, status, created_at, duration_ms
        ("amocrm", "sync_lead", "success", hour - dt.timedelta(minutes=115), 100),
        ("amocrm", "sync_lead", "success", hour - dt.timedelta(minutes=110), 201),
        ("amocrm", "sync_lead", "failed", hour - dt.timedelta(minutes=100), 50),
        ("resend", "send_email", "success", hour - dt.timedelta(hours=5), None),
        ("mobizon", "send_sms", "retrying", hour - dt.timedelta(hours=30), 3456),
        ("telegram", "send_telegram", "success", hour - dt.timedelta(days=40), 10),
    ]
    for service, action, status, created, duration in rows:
        db.execute(
            "insert into integration_logs (service_name, action, status, created_at, duration_ms)"
            " values (%s, %s, %s, %s, %s)",
            (service, action, status, created, duration),
        )
    two_hours_ago = hour - dt.timedelta(hours=2)
    assert db.fetch(
        "select service_name, action, status, hour, count, avg_duration_ms, max_duration_ms, failed_count"
        " from integration_stats_hourly order by hour desc, service_name, status"
    ) == [
        ("amocrm", "sync_lead", "failed", two_hours_ago, 1, 50, 50, 1),
        ("amocrm", "sync_lead", "success", two_hours_ago, 2, 151, 201, 0),
        ("resend", "send_email", "success", hour - dt.timedelta(hours=5), 1, None, None, 0),
    ]

    def day(when: dt.datetime) -> dt.datetime:
        return when.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)

    expected: dict[tuple[Any, ...], list[int | None]] = {}
    for service, action, status, created, duration in rows[:5]:
        expected.setdefault((service, action, status, day(created)), []).append(duration)
    daily = db.fetch(
        "select service_name, action, status, day, count, avg_duration_ms, failed_count"
        " from integration_stats_daily order by service_name, action, status, day"
    )
    assert daily == [
        (*key, len(values), _rounded_avg(values), len(values) if key[2] == "failed" else 0)
        for key, values in sorted(expected.items())
    ]
    assert ("mobizon", "send_sms", "retrying", day(rows[4][3]), 1, 3456, 0) in daily


def _rounded_avg(values: list[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return int(sum(present) / len(present) + 0.5)


def test_row_size_measurement_runs(fresh_gateway: Callable[..., FreshStack]) -> None:
    """benchmarks/integration_size.py measures every payload shape on a migrated database and leaves it empty."""
    _, db = fresh_gateway()
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "integration_size.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--rows", "300", "--json", "--dsn", db.dsn],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sizes = {k: v["bytes_per_row"] for k, v in json.loads(proc.stdout)["shapes"].items()}
    assert len(sizes) == 5 and all(size > 0 for size in sizes.values())
    assert sizes["crm sync, ~3 KB response"] > sizes["crm sync (original example 1)"]
    assert sizes["crm sync (original example 1)"] > sizes["no payloads"]
    assert db.fetchval("select count(*) from integration_logs") == 0
