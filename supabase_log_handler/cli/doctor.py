"""``supabase-log doctor``: check that the handler can do its work, and say exactly what to fix.

Owns the order of the checks and how they are shown. Each is ``ok``, ``FAIL``
with its fix, or ``--`` (not checked here, or a note that is not a failure); a
fix shared by several failures is printed once. The checks: the URL; the key's
role (service role vs anon, read from the key itself); that the REST API answers
as PostgREST does; then, through PostgREST (``probe.py``), each table the handler
writes exists, has its columns and takes a real write probe that is deleted
again; given ``SUPABASE_DB_URL`` (psycopg), the grants, row level security,
policies and functions (``access.py``) and the migration history. With
``SUPABASE_ANON_KEY`` set, it also checks that the anon key cannot read the
tables. Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import asdict
from typing import Any

from ..config import FIELDS, Settings, key_role, load_settings, read_env_file
from ..errors import ConfigurationError
from . import access, probe
from ._common import emit_json
from .checks import FIX_MIGRATE, FIX_REPAIR, FIX_SERVICE_KEY, FIX_URL, Check
from .migrate import DB_URL_ENV, INSTALL_HINT, database_url, load_migrations

_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check the setup and say what to fix", description=__doc__)
    p.add_argument("--db-url", help=f"also check the database directly (default: ${DB_URL_ENV})")
    p.add_argument("--json", action="store_true", help="the checks as a JSON array")
    p.set_defaults(func=cmd_doctor)


def _env(name: str, env_file: str | None) -> str | None:
    return os.environ.get(name) or read_env_file(env_file).get(name) or None


def _key_check(key: str | None) -> tuple[Check, str | None]:
    if not key:
        return Check("key", False, "SUPABASE_SERVICE_ROLE_KEY is not set", FIX_SERVICE_KEY), None
    role = key_role(key)
    if role in ("anon", "authenticated"):
        shape = " (a publishable key)" if key.startswith("sb_publishable_") else ""
        detail = f"SUPABASE_SERVICE_ROLE_KEY is the {role} key{shape}, which cannot write logs"
        return Check("key", False, detail, FIX_SERVICE_KEY), role
    if role == "service_role":
        return Check("key", True, "service role key"), role
    detail = "not a Supabase key this version recognises (no role in it)"
    return Check("key", None, detail, FIX_SERVICE_KEY), role


def rest_checks(s: Settings, anon_key: str | None) -> list[Check]:
    import httpx

    assert s.url is not None
    url = s.url.rstrip("/")
    if not _URL.fullmatch(url):
        return [Check("url", False, f"{url!r} is not a URL", FIX_URL)]
    if url.endswith("/rest/v1"):
        return [Check("url", False, f"{url} includes /rest/v1", f"set SUPABASE_URL to {url[:-8]}")]
    checks = [Check("url", True, url)]
    key_check, role = _key_check(s.key)
    checks.append(key_check)
    if not s.key:
        return checks
    headers = {
        "apikey": s.key,
        "Authorization": f"Bearer {s.key}",
        "Accept-Profile": s.schema,
        "Content-Profile": s.schema,
    }
    base = f"{url}/rest/v1"
    with httpx.Client(timeout=10.0, headers=headers) as client:
        reachable = _reachable(client, base, s, role)
        checks.append(reachable)
        if not reachable.ok:
            return checks
        checks.extend(probe.table_checks(client, base, s, role))
    if anon_key:
        checks.append(_anon_check(base, s, anon_key))
    return checks


def _reachable(client: Any, base: str, s: Settings, role: str | None) -> Check:
    """The API root answers; any answer that is not PostgREST's (a 404 page) is a wrong URL."""
    import httpx

    try:
        answer = client.get(f"{base}/")
        if answer.status_code >= 400 and not probe.is_postgrest(answer):
            # Some servers do not serve the API root: ask a table, which PostgREST always answers.
            answer = client.get(f"{base}/{s.runs_table}", params={"select": "id", "limit": "0"})
    except httpx.HTTPError as exc:
        return Check(
            "reachable", False, f"cannot reach {base}: {exc}", FIX_URL + "; check the network"
        )
    if answer.status_code in (401, 403) and role == "service_role":
        detail = f"the API refused the key: {probe.message(answer)}"
        return Check("reachable", False, detail, "copy the service role key of this project again")
    if answer.status_code < 400 or probe.is_postgrest(answer):
        return Check("reachable", True, f"{base} answers as PostgREST (HTTP {answer.status_code})")
    detail = f"{base} answers HTTP {answer.status_code}, not as the Supabase REST API"
    return Check("reachable", False, detail, FIX_URL)


def _anon_check(base: str, s: Settings, anon_key: str) -> Check:
    import httpx

    headers = {
        "apikey": anon_key,
        "Authorization": f"Bearer {anon_key}",
        "Accept-Profile": s.schema,
    }
    open_tables = []
    with httpx.Client(timeout=10.0, headers=headers) as client:
        for table in (s.runs_table, s.logs_table):
            answer = client.get(f"{base}/{table}", params={"select": "id", "limit": "1"})
            if answer.status_code < 300 and answer.json():
                open_tables.append(table)
    if open_tables:
        return Check(
            "anon access",
            False,
            f"the anon key can read {', '.join(open_tables)}",
            FIX_REPAIR,
        )
    return Check("anon access", True, "the anon key cannot read runs or logs")


def db_checks(db_url: str, s: Settings) -> tuple[list[Check], bool]:
    """The database's side, and whether no shipped migration is recorded yet."""
    try:
        import psycopg
    except ImportError:
        return [Check("database", None, "psycopg is not installed", INSTALL_HINT)], False
    try:
        conn = psycopg.connect(db_url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        detail = f"cannot connect: {str(exc).strip()}"
        return [Check("database", False, detail, f"check {DB_URL_ENV}")], False
    migrations = load_migrations()
    with conn:
        checks = [Check("database", True, "connected")]
        checks.extend(access.access_checks(conn, s))
        checks.extend(access.function_checks(conn, [m.sql for m in migrations]))
        history, recorded = history_check(conn, migrations)
        checks.append(history)
        checks.append(maintenance_jobs_check(conn))
    return checks, recorded == 0


def history_check(conn: Any, migrations: list[Any]) -> tuple[Check, int]:
    """Every shipped migration is recorded in the Supabase CLI's history table (and how many are)."""
    history = conn.execute(
        "select to_regclass('supabase_migrations.schema_migrations') is not null"
    ).fetchone()
    recorded: set[str] = set()
    if history and history[0]:
        rows = conn.execute("select version from supabase_migrations.schema_migrations")
        recorded = {str(r[0]) for r in rows.fetchall()}
    missing = [m.path.name for m in migrations if m.version not in recorded]
    count = len(migrations) - len(missing)
    if missing:
        detail = f"not recorded as applied: {', '.join(missing)}"
        return Check("migrations", False, detail, FIX_MIGRATE), count
    detail = "every migration is recorded in supabase_migrations.schema_migrations"
    return Check("migrations", True, detail), count


# -- watch: the pg_cron jobs of the watch migration (supabase_log_handler/watch/maintenance.py)
def maintenance_jobs_check(conn: Any) -> Check:
    """Whether pg_cron runs the reaper and the retention ("--" when pg_cron is not installed)."""
    from ..watch.maintenance import cron_status

    try:
        ok, detail, fix = cron_status(conn)
    except Exception as exc:  # e.g. no access to the cron schema
        return Check("pg_cron jobs", None, f"not checked: {str(exc).strip()}")
    if ok is None and fix:  # a note, not a failure: its advice is part of what it says
        return Check("pg_cron jobs", None, f"{detail}; {fix}")
    return Check("pg_cron jobs", ok, detail, fix)


def run_checks(env_file: str | None, db_url: str | None) -> list[Check]:
    try:
        s = load_settings({"sink": "local"}, env_file=env_file)  # every check but the key's role
    except ConfigurationError as exc:
        return [Check("configuration", False, str(exc), "fix the setting named above")]
    checks: list[Check] = []
    if not s.url:
        checks.append(
            Check(
                "url",
                None,
                f"SUPABASE_URL is not set: runs and logs go to the local store {s.resolved_local_path}",
                f"to write to Supabase, set {FIELDS['url'].env} and {FIELDS['key'].env} (then `supabase-log push` uploads the local store)",
            )
        )
    else:
        checks.extend(rest_checks(s, _env("SUPABASE_ANON_KEY", env_file)))
    if db_url:
        found, fresh = db_checks(db_url, s)
        checks.extend(found)
        if fresh:  # nothing recorded yet: a plain `migrate` applies (and so repairs) everything
            for c in checks:
                c.fix = FIX_MIGRATE if c.fix == FIX_REPAIR else c.fix
    else:
        detail = (
            f"not checked: set {DB_URL_ENV} to check grants, row level security and the migrations"
        )
        checks.append(Check("rls", None, detail))
    return checks


def show(checks: list[Check]) -> None:
    """One line per check; a fix under the first failure that needs it, not again."""
    width = max(len(c.name) for c in checks)
    given: set[str] = set()
    for c in checks:
        mark = "ok" if c.ok else "FAIL" if c.ok is False else "--"
        print(f"  {mark:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.ok is not True and c.fix not in given:
            given.add(c.fix)
            print(f"  {'':<4}  {'':<{width}}  fix: {c.fix}")


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.env_file, database_url(args.db_url, args.env_file))
    failed = [c for c in checks if c.ok is False]
    if args.json:
        emit_json([asdict(c) for c in checks])
        return 1 if failed else 0
    show(checks)
    fixes = len({c.fix for c in failed if c.fix})
    if not failed:
        print("all checks passed")
    else:
        print(
            f"{len(failed)} check{'s' if len(failed) != 1 else ''} failed; "
            f"{fixes} fix{'es' if fixes != 1 else ''} above"
        )
    return 1 if failed else 0
