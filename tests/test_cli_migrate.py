"""`supabase-log migrate` and `doctor` against real, fresh PostgreSQL databases behind the gateway."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from stack.fixtures import Db, FreshStack
from stack.gateway import Gateway

from supabase_log_handler.cli import main
from supabase_log_handler.cli.migrate import load_migrations, split_statements

MIGRATIONS = sorted((Path(__file__).resolve().parent.parent / "migrations").glob("*.sql"))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def point_at(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    gw: Gateway | None,
    db: Db | None,
    key: str | None = None,
) -> None:
    monkeypatch.chdir(tmp_path)
    if gw is not None:
        monkeypatch.setenv("SUPABASE_URL", gw.url)
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", key or gw.service_key)
    if db is not None:
        monkeypatch.setenv("SUPABASE_DB_URL", db.dsn)


def schema_state(db: Db) -> tuple[int, int, int, list[tuple[str, str]]]:
    tables = db.fetchval(
        "select count(*) from pg_tables where schemaname = 'public' and tablename in ('runs', 'logs')"
    )
    policies = db.fetchval(
        "select count(*) from pg_policies where schemaname = 'public' and tablename in ('runs', 'logs')"
    )
    rls = db.fetchval(
        "select count(*) from pg_class where relname in ('runs', 'logs') and relrowsecurity"
    )
    history = db.fetch(
        "select version, name from supabase_migrations.schema_migrations order by version"
    )
    return tables, policies, rls, history


def test_migrate_empty_database_three_times_then_doctor_passes(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """migrate on an empty database, then twice more: tables, policies and one history row per file, once; doctor then passes."""
    gw, db = fresh_gateway(migrations=False)
    point_at(monkeypatch, tmp_path, gw, db)
    assert db.fetchval("select to_regclass('public.runs')") is None
    code, out, _ = cli(capsys, "migrate")
    assert code == 0 and f"applied: {MIGRATIONS[0].name}" in out
    expected = [(p.stem.split("_", 1)[0], p.stem.split("_", 1)[1]) for p in MIGRATIONS]
    assert schema_state(db) == (2, 4, 2, expected)
    statements = db.fetchval(
        "select statements from supabase_migrations.schema_migrations order by version limit 1"
    )
    assert statements == split_statements(MIGRATIONS[0].read_text())
    assert "create table if not exists public.runs" in statements[0] and len(statements) > 10
    for _ in range(2):
        code, out, _ = cli(capsys, "migrate")
        assert (
            code == 0 and f"already applied: {MIGRATIONS[0].name}" in out and "0 applied now" in out
        )
        assert schema_state(db) == (2, 4, 2, expected)
    code, out, _ = cli(capsys, "doctor")
    assert code == 0, out
    assert "FAIL" not in out and out.rstrip().endswith("all checks passed")
    for name in (
        "key",
        "reachable",
        "table runs",
        "columns logs",
        "rls runs",
        "rls logs",
        "migrations",
    ):
        assert any(
            line.split()[:1] == ["ok"] and f"  {name}  " in line + "  " for line in out.splitlines()
        ), (name, out)


def test_doctor_names_missing_table_column_and_rls(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A missing table, a missing column and RLS turned off are each named with the command that fixes them."""
    gw, db = fresh_gateway(migrations=False)
    point_at(monkeypatch, tmp_path, gw, None)
    code, out, _ = cli(capsys, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(out)}
    assert code == 1
    assert checks["table runs"] == {
        "name": "table runs",
        "ok": False,
        "detail": "public.runs does not exist",
        "fix": "run `supabase-log migrate` (or paste `supabase-log migrate --print` into the dashboard's SQL editor)",
    }
    assert checks["table logs"]["ok"] is False
    assert checks["rls"]["ok"] is None and "SUPABASE_DB_URL" in checks["rls"]["detail"]

    gw, db = fresh_gateway()  # migrated by the stack, so not recorded in the CLI's history
    db.execute(  # cascade: the statistics view reads api_cost
        "alter table runs drop column api_cost cascade; alter table runs disable row level security"
    )
    point_at(monkeypatch, tmp_path, gw, db)
    code, out, _ = cli(capsys, "doctor")
    assert code == 1
    assert "FAIL  columns runs" in out and "public.runs lacks column(s): api_cost" in out
    assert "FAIL  rls runs" in out and "row level security is off on public.runs" in out
    assert out.count("fix: ") == 1  # nothing recorded yet: one fix for all, a plain migrate
    assert "fix: run `supabase-log migrate`" in out
    assert "ok    rls logs" in out
    assert "FAIL  migrations" in out and "not recorded as applied" in out
    code, out, _ = cli(capsys, "migrate")
    assert code == 0
    code, out, _ = cli(capsys, "doctor")
    assert code == 0, out


def test_migrate_print_is_the_same_migration_for_the_sql_editor(
    fresh_gateway: Callable[..., FreshStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`migrate --print` SQL, pasted into an empty database twice, creates the same tables and history that `migrate` then accepts."""
    _, db = fresh_gateway(migrations=False)
    point_at(monkeypatch, tmp_path, None, db)
    code, sql, _ = cli(capsys, "migrate", "--print")
    assert code == 0 and sql.startswith("--")
    for path in MIGRATIONS:
        assert path.read_text().strip() in sql
    db.execute(sql)
    db.execute(sql)
    expected = [(m.version, m.name) for m in load_migrations()]
    assert schema_state(db) == (2, 4, 2, expected)
    code, out, _ = cli(capsys, "migrate")
    assert code == 0 and "0 applied now" in out


def test_migrate_needs_a_url_and_psycopg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without SUPABASE_DB_URL, or without psycopg, migrate exits 2 saying exactly what to set or install."""
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "migrate")
    assert code == 2 and "set SUPABASE_DB_URL" in err and "migrate --print" in err
    monkeypatch.setitem(sys.modules, "psycopg", None)
    code, _, err = cli(capsys, "migrate", "--db-url", "postgresql://nobody@127.0.0.1:1/none")
    assert code == 2 and "pip install 'supabase-log-handler[postgres]'" in err


def test_statement_splitter_respects_quotes_comments_and_dollar_quotes() -> None:
    """Semicolons inside strings, identifiers, comments and dollar-quoted bodies do not split statements."""
    sql = """
    -- a comment; with a semicolon
    create table "a;b" (x text default 'it''s; fine');
    /* block; /* nested; */ still */ select 1;
    create function f() returns int language sql as $fn$ select 1; $fn$;
    do $$ begin perform 1; end $$;
    """
    assert [s.splitlines()[-1].strip()[:20] for s in split_statements(sql)] == [
        'create table "a;b" (',
        "/* block; /* nested;",
        "create function f() ",
        "do $$ begin perform ",
    ]
