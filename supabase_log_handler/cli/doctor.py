"""``supabase-log doctor``: check the setup and say exactly what to fix.

Owns the checks, each reported ``ok``/``FAIL`` (or ``--`` when it cannot be
made) with the fix: the URL; the key's role (service role vs anon, read from the
key itself); reachability of the REST API; that ``runs`` and ``logs`` exist, are
readable with the key and have every column (``integration_logs`` too, reported
but not failed while it is missing or lacks a column); and, given ``SUPABASE_DB_URL``,
row level security, anon's privileges and the migration history (psycopg). With
``SUPABASE_ANON_KEY`` set, it also checks that the anon key cannot read logs.
Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..config import FIELDS, Settings, key_role, load_settings, read_env_file
from ..errors import ConfigurationError
from ..local_integration import CALL_COLUMNS
from ..local_integration import TABLE as CALLS_TABLE
from ..sinks.local import LOG_COLUMNS, RUN_COLUMNS
from ._common import emit_json
from .migrate import DB_URL_ENV, INSTALL_HINT, database_url, load_migrations

FIX_MIGRATE = "run `supabase-log migrate` (or paste `supabase-log migrate --print` into the dashboard's SQL editor)"
FIX_SERVICE_KEY = (
    "use the service role key: set SUPABASE_SERVICE_ROLE_KEY to the `service_role` (secret) key "
    "from Project Settings -> API, not the anon/publishable key"
)
_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")


@dataclass
class Check:
    name: str
    ok: bool | None  # None: could not be checked, or reported without failing
    detail: str
    fix: str | None = None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check the setup and say what to fix", description=__doc__)
    p.add_argument("--db-url", help=f"also check the database directly (default: ${DB_URL_ENV})")
    p.add_argument("--json", action="store_true", help="the checks as a JSON array")
    p.set_defaults(func=cmd_doctor)


def _env(name: str, env_file: str | None) -> str | None:
    return os.environ.get(name) or read_env_file(env_file).get(name) or None


def rest_checks(s: Settings, anon_key: str | None) -> list[Check]:
    import httpx

    assert s.url is not None
    checks: list[Check] = []
    url = s.url.rstrip("/")
    if not _URL.fullmatch(url):
        return [
            Check(
                "url",
                False,
                f"{url!r} is not a URL",
                "set SUPABASE_URL to https://<project>.supabase.co",
            )
        ]
    if url.endswith("/rest/v1"):
        return [
            Check(
                "url",
                False,
                f"{url} includes /rest/v1",
                f"set SUPABASE_URL to {url[: -len('/rest/v1')]}",
            )
        ]
    checks.append(Check("url", True, url))
    role = key_role(s.key) if s.key else None
    if not s.key:
        checks.append(Check("key", False, "SUPABASE_SERVICE_ROLE_KEY is not set", FIX_SERVICE_KEY))
        return checks
    if role in ("anon", "authenticated"):
        checks.append(
            Check(
                "key",
                False,
                f"SUPABASE_SERVICE_ROLE_KEY is the {role} key, which cannot write logs",
                FIX_SERVICE_KEY,
            )
        )
    elif role == "service_role":
        checks.append(Check("key", True, "service role key"))
    else:
        checks.append(
            Check(
                "key",
                None,
                "not a Supabase key this version recognises (no role in it)",
                FIX_SERVICE_KEY,
            )
        )
    headers = {"apikey": s.key, "Authorization": f"Bearer {s.key}", "Accept-Profile": s.schema}
    with httpx.Client(timeout=10.0, headers=headers) as client:
        try:
            answer = client.get(f"{url}/rest/v1/")
        except httpx.HTTPError as exc:
            checks.append(
                Check(
                    "reachable",
                    False,
                    f"cannot reach {url}: {exc}",
                    "check SUPABASE_URL and the network",
                )
            )
            return checks
        if answer.status_code in (401, 403) and role == "service_role":
            checks.append(
                Check(
                    "reachable",
                    False,
                    f"the API refused the key: {_message(answer)}",
                    "copy the service role key of this project again",
                )
            )
            return checks
        checks.append(
            Check("reachable", True, f"{url}/rest/v1 answers (HTTP {answer.status_code})")
        )
        for table, columns in ((s.runs_table, RUN_COLUMNS), (s.logs_table, LOG_COLUMNS)):
            checks.extend(_table_checks(client, url, s.schema, table, columns, role))
        # Jobs that record no external calls need no integration_logs: say what is missing, pass.
        for check in _table_checks(client, url, s.schema, CALLS_TABLE, CALL_COLUMNS, role):
            checks.append(check if check.ok else replace(check, ok=None))
    if anon_key:
        checks.append(_anon_check(url, s, anon_key))
    return checks


def _message(answer: Any) -> str:
    try:
        body = answer.json()
        return f"{body.get('code')}: {body.get('message')}"
    except Exception:
        return f"HTTP {answer.status_code}"


def _code(answer: Any) -> str:
    try:
        return str(answer.json().get("code") or "")
    except Exception:
        return ""


def _table_checks(
    client: Any, url: str, schema: str, table: str, columns: tuple[str, ...], role: str | None
) -> list[Check]:
    name = f"{schema}.{table}"
    answer = client.get(f"{url}/rest/v1/{table}", params={"select": "id", "limit": "1"})
    code = _code(answer)
    if answer.status_code == 404 or code in ("PGRST205", "42P01"):
        return [Check(f"table {table}", False, f"{name} does not exist", FIX_MIGRATE)]
    if answer.status_code in (401, 403) or code == "42501":
        fix = (
            FIX_SERVICE_KEY
            if role != "service_role"
            else "run `supabase-log migrate` (it grants service_role access)"
        )
        return [
            Check(f"table {table}", False, f"permission denied on {name} ({_message(answer)})", fix)
        ]
    if code == "PGRST106":
        return [
            Check(
                f"table {table}",
                False,
                f"schema {schema} is not exposed",
                "add it under Project Settings -> API -> Exposed schemas, or set SUPABASE_LOG_SCHEMA",
            )
        ]
    if answer.status_code >= 300:
        return [Check(f"table {table}", False, f"{name}: {_message(answer)}", FIX_MIGRATE)]
    checks = [Check(f"table {table}", True, f"{name} exists and the key can read it")]
    answer = client.get(
        f"{url}/rest/v1/{table}", params={"select": ",".join(columns), "limit": "0"}
    )
    if answer.status_code < 300:
        checks.append(Check(f"columns {table}", True, f"all {len(columns)} columns present"))
        return checks
    missing = [
        c
        for c in columns
        if client.get(f"{url}/rest/v1/{table}", params={"select": c, "limit": "0"}).status_code
        >= 300
    ]
    detail = (
        f"{name} lacks column(s): {', '.join(missing)}"
        if missing
        else f"{name}: {_message(answer)}"
    )
    checks.append(
        Check(f"columns {table}", False, detail, FIX_MIGRATE + " (it adds missing columns)")
    )
    return checks


def _anon_check(url: str, s: Settings, anon_key: str) -> Check:
    import httpx

    headers = {
        "apikey": anon_key,
        "Authorization": f"Bearer {anon_key}",
        "Accept-Profile": s.schema,
    }
    open_tables = []
    with httpx.Client(timeout=10.0, headers=headers) as client:
        for table in (s.runs_table, s.logs_table):
            answer = client.get(f"{url}/rest/v1/{table}", params={"select": "id", "limit": "1"})
            if answer.status_code < 300 and answer.json():
                open_tables.append(table)
    if open_tables:
        return Check(
            "anon access",
            False,
            f"the anon key can read {', '.join(open_tables)}",
            "enable row level security: " + FIX_MIGRATE,
        )
    return Check("anon access", True, "the anon key cannot read runs or logs")


def db_checks(db_url: str, s: Settings) -> list[Check]:
    try:
        import psycopg
    except ImportError:
        return [Check("database", None, "psycopg is not installed", INSTALL_HINT)]
    checks: list[Check] = []
    try:
        conn = psycopg.connect(db_url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        return [
            Check("database", False, f"cannot connect: {str(exc).strip()}", f"check {DB_URL_ENV}")
        ]
    with conn:
        checks.append(Check("database", True, "connected"))
        for table in (s.runs_table, s.logs_table):
            name = f"{s.schema}.{table}"
            row = conn.execute(
                "select c.relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')",
                (s.schema, table),
            ).fetchone()
            if row is None:
                checks.append(Check(f"rls {table}", False, f"{name} does not exist", FIX_MIGRATE))
                continue
            if not row[0]:
                checks.append(
                    Check(
                        f"rls {table}",
                        False,
                        f"row level security is off on {name}: a leaked anon key could read or change it",
                        f"{FIX_MIGRATE}; or in the SQL editor: alter table {name} enable row level security;",
                    )
                )
            else:
                checks.append(Check(f"rls {table}", True, f"row level security is on for {name}"))
            anon = conn.execute(
                "select exists (select 1 from pg_roles where rolname = 'anon')"
                " and (has_table_privilege('anon', %s, 'select') or has_table_privilege('anon', %s, 'insert')"
                " or has_table_privilege('anon', %s, 'update') or has_table_privilege('anon', %s, 'delete'))",
                (name, name, name, name),
            ).fetchone()
            if anon and anon[0]:
                checks.append(
                    Check(
                        f"grants {table}",
                        False,
                        f"the anon role has privileges on {name}",
                        FIX_MIGRATE + " (it revokes them)",
                    )
                )
        history = conn.execute(
            "select to_regclass('supabase_migrations.schema_migrations') is not null"
        ).fetchone()
        recorded: set[str] = set()
        if history and history[0]:
            recorded = {
                str(r[0])
                for r in conn.execute(
                    "select version from supabase_migrations.schema_migrations"
                ).fetchall()
            }
        missing = [m.path.name for m in load_migrations() if m.version not in recorded]
        if missing:
            checks.append(
                Check(
                    "migrations",
                    False,
                    f"not recorded as applied: {', '.join(missing)}",
                    FIX_MIGRATE,
                )
            )
        else:
            checks.append(
                Check(
                    "migrations",
                    True,
                    "every migration is recorded in supabase_migrations.schema_migrations",
                )
            )
    return checks


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
        checks.extend(db_checks(db_url, s))
    else:
        checks.append(
            Check(
                "rls",
                None,
                f"not checked: set {DB_URL_ENV} to check row level security and the migrations",
            )
        )
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.env_file, database_url(args.db_url, args.env_file))
    failed = [c for c in checks if c.ok is False]
    if args.json:
        emit_json([asdict(c) for c in checks])
        return 1 if failed else 0
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok" if c.ok else "FAIL" if c.ok is False else "--"
        print(f"  {mark:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.ok is not True:
            print(f"  {'':<4}  {'':<{width}}  fix: {c.fix}")
    print(
        "all checks passed"
        if not failed
        else f"{len(failed)} problem{'s' if len(failed) != 1 else ''} found",
        file=sys.stdout,
    )
    return 1 if failed else 0
