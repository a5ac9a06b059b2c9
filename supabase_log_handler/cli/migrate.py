"""``supabase-log migrate``: apply the shipped migrations the way the Supabase CLI does.

Owns finding the migration files (``supabase_log_handler/migrations`` in a wheel,
``<repo>/migrations`` in a source checkout), splitting them into statements, and
applying them to ``SUPABASE_DB_URL`` with psycopg 3 (the ``[postgres]`` extra,
imported only here). Each file runs in one transaction together with its row in
the Supabase CLI's own history table,
``supabase_migrations.schema_migrations(version, statements, name)``, under an
advisory lock, so running it again (or twice at once) applies nothing twice and
``supabase db push`` agrees about what is applied. ``--repair`` re-applies every
migration, recorded or not (each is written to be applied again: grants,
policies, functions and missing columns come back). After either, the access
the handler needs is checked (``access.py``) and what is still wrong is named.
``--print`` writes the same SQL, history rows included, for the dashboard's SQL
editor. ``--partitioned`` adds the opt-in migrations of ``migrations/partitioned/``
(``logs`` and ``integration_logs`` partitioned by month, docs/scale.md), which are
never applied otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings, load_settings, read_env_file
from ..errors import ConfigurationError
from . import access
from ._common import CommandError
from .checks import FIX_REPAIR, Check

DB_URL_ENV = "SUPABASE_DB_URL"
INSTALL_HINT = (
    "`supabase-log migrate` and `doctor` talk to PostgreSQL with psycopg 3, which is not installed; "
    "install it with: pip install 'supabase-log-handler[postgres]'"
)
HISTORY_DDL = (
    "create schema if not exists supabase_migrations;\n"
    "create table if not exists supabase_migrations.schema_migrations "
    "(version text not null primary key, statements text[], name text);"
)
LOCK_KEY = 0x5B_106_A7E  # pg_advisory_xact_lock key shared by every `supabase-log migrate`


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path
    sql: str

    @property
    def statements(self) -> list[str]:
        return split_statements(self.sql)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "migrate",
        help="create or update the tables (runs, logs, integration_logs)",
        description=f"Apply the migrations to {DB_URL_ENV} (the database connection string from the "
        "project's Database settings), recording them in supabase_migrations.schema_migrations.",
    )
    p.add_argument("--db-url", help=f"PostgreSQL connection string (default: ${DB_URL_ENV})")
    p.add_argument(
        "--print",
        dest="print_sql",
        action="store_true",
        help="write the SQL for the dashboard's SQL editor instead",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="re-apply every migration, also those already recorded: restores grants, row level "
        "security, policies and functions changed since (and the default read policies)",
    )
    p.add_argument(
        "--dir", help="apply the migrations in this directory instead of the shipped ones"
    )
    p.add_argument(
        "--partitioned",
        action="store_true",
        help="also partition logs and integration_logs by month (opt-in; converts existing "
        "tables, keeping their rows: see docs/scale.md)",
    )
    p.set_defaults(func=cmd_migrate)


def migrations_dir() -> Path:
    shipped = Path(__file__).resolve().parent.parent / "migrations"
    if shipped.is_dir():
        return shipped
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if checkout.is_dir():
        return checkout
    raise CommandError(f"no migrations found (looked in {shipped} and {checkout})")


def partitioned_migrations() -> list[Migration]:
    """The opt-in migrations that partition the log tables (``migrations/partitioned/``)."""
    return load_migrations(migrations_dir() / "partitioned")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """``<version>_<name>.sql`` files in version order, as the Supabase CLI names them."""
    directory = directory or migrations_dir()
    out = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        out.append(Migration(version, name or version, path, path.read_text(encoding="utf-8")))
    if not out:
        raise CommandError(f"no *.sql files in {directory}")
    return out


def split_statements(sql: str) -> list[str]:
    """Statements of a SQL script (quotes, dollar quotes and comments respected)."""
    out: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            buf.append(sql[i:j])
            i = j
        elif c == "/" and sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            buf.append(sql[i:j])
            i = j
        elif c in ("'", '"'):
            j = i + 1
            while j < n:
                if sql[j] == c and sql.startswith(c * 2, j):
                    j += 2
                elif sql[j] == c:
                    j += 1
                    break
                else:
                    j += 1
            buf.append(sql[i:j])
            i = j
        elif c == "$" and (m := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])):
            tag = m.group(0)
            end = sql.find(tag, i + len(tag))
            j = n if end < 0 else end + len(tag)
            buf.append(sql[i:j])
            i = j
        elif c == ";":
            out.append("".join(buf))
            buf = []
            i += 1
        else:
            buf.append(c)
            i += 1
    out.append("".join(buf))
    return [s for s in (_strip_comments_only(x) for x in out) if s]


def _strip_comments_only(statement: str) -> str:
    text = statement.strip()
    bare = re.sub(r"--[^\n]*", "", text).strip()
    return text if bare else ""


def _dollar(text: str) -> str:
    tag = "$slh$"
    k = 0
    while tag in text:
        k += 1
        tag = f"$slh{k}$"
    return f"{tag}{text}{tag}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def printable_sql(migrations: list[Migration]) -> str:
    """One script for the SQL editor: each migration and its history row, in a transaction."""
    parts = [
        "-- supabase-log-handler migrations, for the Supabase dashboard's SQL editor.",
        "-- Safe to run more than once.",
        "begin;",
        HISTORY_DDL,
        "",
    ]
    for m in migrations:
        statements = ", ".join(_dollar(s) for s in m.statements)
        parts += [
            f"-- {m.path.name}",
            m.sql.rstrip(),
            "",
            "insert into supabase_migrations.schema_migrations (version, statements, name)",
            f"values ({_literal(m.version)}, array[{statements}]::text[], {_literal(m.name)})",
            "on conflict (version) do nothing;",
            "",
        ]
    parts.append("commit;")
    return "\n".join(parts) + "\n"


def database_url(explicit: str | None, env_file: str | None) -> str | None:
    return explicit or os.environ.get(DB_URL_ENV) or read_env_file(env_file).get(DB_URL_ENV) or None


def import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise CommandError(INSTALL_HINT) from None
    return psycopg


def apply(
    db_url: str,
    migrations: list[Migration],
    *,
    repair: bool = False,
    settings: Settings | None = None,
) -> tuple[list[tuple[Migration, str]], list[Check]]:
    """Apply what is not yet recorded (with ``repair``, every migration again).

    Returns (migration, "applied" | "re-applied" | "already applied") in order, and the
    failed access checks that remain afterwards (given ``settings``).
    """
    psycopg = import_psycopg()
    results: list[tuple[Migration, str]] = []
    with psycopg.connect(db_url, autocommit=True, connect_timeout=15) as conn:
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            conn.execute(HISTORY_DDL)
        for m in migrations:
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                done = conn.execute(
                    "select 1 from supabase_migrations.schema_migrations where version = %s",
                    (m.version,),
                ).fetchone()
                if done and not repair:
                    results.append((m, "already applied"))
                    continue
                conn.execute(m.sql)
                if done:
                    results.append((m, "re-applied"))
                    continue
                conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, statements, name) values (%s, %s, %s)",
                    (m.version, m.statements, m.name),
                )
                results.append((m, "applied"))
        remaining: list[Check] = []
        if settings is not None:
            found = access.access_checks(conn, settings)
            found += access.function_checks(conn, [m.sql for m in migrations])
            remaining = access.needs_repair(found)
    return results, remaining


def cmd_migrate(args: argparse.Namespace) -> int:
    migrations = load_migrations(Path(args.dir) if args.dir else None)
    if getattr(args, "partitioned", False):
        migrations += partitioned_migrations()
    if args.print_sql:
        sys.stdout.write(printable_sql(migrations))
        sys.stdout.flush()
        return 0
    db_url = database_url(args.db_url, args.env_file)
    if not db_url:
        raise CommandError(
            f"set {DB_URL_ENV} (Project Settings -> Database -> Connection string, URI) or pass --db-url; "
            "or run `supabase-log migrate --print` and paste the SQL into the dashboard's SQL editor"
        )
    psycopg = import_psycopg()
    try:
        s: Settings | None = load_settings({"sink": "local"}, env_file=args.env_file)
    except ConfigurationError:
        s = None  # the tables' names cannot be read: apply, but do not check access
    try:
        results, remaining = apply(db_url, migrations, repair=args.repair, settings=s)
    except psycopg.Error as exc:
        raise CommandError(
            f"migration failed, nothing of it was applied: {str(exc).strip()}", code=1
        ) from None
    for m, done in results:
        print(f"{done}: {m.path.name}")
    fresh = sum(1 for _, done in results if done != "already applied")
    count = f"{len(results)} migration{'s' if len(results) != 1 else ''}"
    _schedule_maintenance(db_url)
    if not remaining:
        print(f"database is up to date ({count}, {fresh} applied now)")
        return 0
    print(
        f"the migrations are recorded ({count}, {fresh} applied now), but the database still differs:"
    )
    for c in remaining:
        print(f"  {c.name}: {c.detail}")
    if args.repair:
        print("`--repair` could not fix this: run `supabase-log doctor` for details")
    else:
        print(f"fix: {FIX_REPAIR}")
    return 1


def _schedule_maintenance(db_url: str) -> None:
    """The reaper and the retention as pg_cron jobs, when pg_cron is installed (watch/maintenance.py)."""
    from ..watch.maintenance import schedule_jobs

    psycopg = import_psycopg()
    try:
        print(schedule_jobs(db_url))
    except psycopg.Error as exc:
        raise CommandError(
            f"scheduling the pg_cron jobs failed: {str(exc).strip()}", code=1
        ) from None
