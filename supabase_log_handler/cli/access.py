"""What the database grants on the handler's tables, read with psycopg (``SUPABASE_DB_URL``).

For ``runs``, ``logs`` and (when it exists) ``integration_logs``, in the terms of the
migration: ``service_role`` holds select, insert, update and delete (and may use
the sequences behind ``runs``' defaults), ``anon`` holds nothing, ``authenticated``
at most select; row level security is on; the migration's policies are there; the
functions the migrations create exist. Used by ``doctor`` and by ``migrate``, which
says what is still wrong after it ran. Only the connection is given: nothing here
imports psycopg.
"""

from __future__ import annotations

import re
from typing import Any

from ..config import Settings
from .checks import FIX_MIGRATE, FIX_REPAIR, Check, handler_tables, optional_table

SERVICE_PRIVILEGES = ("select", "insert", "update", "delete")
WRITE_PRIVILEGES = ("insert", "update", "delete", "truncate")
_FUNCTION = re.compile(
    r"create\s+(?:or\s+replace\s+)?function\s+((?:\"?\w+\"?\.)?\"?\w+\"?)\s*\(", re.IGNORECASE
)


def _rls(conn: Any, schema: str, table: str) -> bool | None:
    """Whether row level security is on for a table; None when the table does not exist."""
    row = conn.execute(
        "select c.relrowsecurity from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')",
        (schema, table),
    ).fetchone()
    return None if row is None else bool(row[0])


def _privileges(conn: Any, role: str, name: str, wanted: tuple[str, ...]) -> list[str]:
    """Which of ``wanted`` the role holds on table ``name`` (nothing when the role is missing)."""
    found = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
    if found is None:
        return []
    return [
        p
        for p in wanted
        if conn.execute("select has_table_privilege(%s, %s, %s)", (role, name, p)).fetchone()[0]
    ]


def _sequences_without_usage(conn: Any, name: str) -> list[str]:
    """Sequences that defaults of ``name`` call, which service_role may not use."""
    rows = conn.execute(
        "select c.oid::regclass::text from pg_attrdef a"
        " join pg_depend d on d.objid = a.oid and d.classid = 'pg_attrdef'::regclass"
        " and d.refclassid = 'pg_class'::regclass"
        " join pg_class c on c.oid = d.refobjid and c.relkind = 'S'"
        " where a.adrelid = %s::regclass",
        (name,),
    ).fetchall()
    return [
        str(r[0])
        for r in rows
        if not conn.execute(
            "select has_sequence_privilege('service_role', %s, 'usage')", (r[0],)
        ).fetchone()[0]
    ]


def table_access(conn: Any, s: Settings, table: str) -> list[Check]:
    """Grants, row level security and policies of one table."""
    name = f"{s.schema}.{table}"
    rls = _rls(conn, s.schema, table)
    if rls is None:
        if optional_table(s, table):
            return []
        return [Check(f"rls {table}", False, f"{name} does not exist", FIX_MIGRATE)]
    checks: list[Check] = []
    if rls:
        checks.append(Check(f"rls {table}", True, f"row level security is on for {name}"))
    else:
        checks.append(
            Check(
                f"rls {table}",
                False,
                f"row level security is off on {name}: a leaked anon key could read or change it",
                FIX_REPAIR,
            )
        )
    checks.append(_grants(conn, name, table))
    checks.append(_policies(conn, s.schema, table))
    return checks


def _grants(conn: Any, name: str, table: str) -> Check:
    held = _privileges(conn, "service_role", name, SERVICE_PRIVILEGES)
    missing = [p.upper() for p in SERVICE_PRIVILEGES if p not in held]
    anon = _privileges(conn, "anon", name, (*WRITE_PRIVILEGES, "select"))
    signed_in = _privileges(conn, "authenticated", name, (*WRITE_PRIVILEGES, "select"))
    sequences = _sequences_without_usage(conn, name)
    problems = []
    if missing:
        problems.append(f"service_role lacks {', '.join(missing)} on {name}")
    if sequences:
        problems.append(f"service_role may not use the sequence(s) {', '.join(sequences)}")
    if anon:
        problems.append(f"anon holds {', '.join(p.upper() for p in anon)} on {name}")
    writes = [p.upper() for p in signed_in if p != "select"]
    if writes:
        problems.append(f"authenticated (any signed-in user) holds {', '.join(writes)} on {name}")
    if problems:
        return Check(f"grants {table}", False, "; ".join(problems), FIX_REPAIR)
    reads = "select" if "select" in signed_in else "none"
    return Check(
        f"grants {table}",
        True,
        f"service_role: {', '.join(SERVICE_PRIVILEGES)}; authenticated: {reads}; anon: none",
    )


def _policies(conn: Any, schema: str, table: str) -> Check:
    rows = conn.execute(
        "select policyname, roles::text[], cmd from pg_policies where schemaname = %s and tablename = %s",
        (schema, table),
    ).fetchall()
    bypass = conn.execute(
        "select coalesce(bool_or(rolbypassrls), false) from pg_roles where rolname = 'service_role'"
    ).fetchone()[0]

    def covers(role: str, command: str) -> list[str]:
        return [
            str(p)
            for p, roles, cmd in rows
            if (role in roles or "public" in roles) and cmd in (command, "ALL")
        ]

    service = covers("service_role", "ALL")
    if not bypass and not service:
        return Check(
            f"policies {table}",
            False,
            f"service_role does not bypass row level security and no policy lets it write {schema}.{table}",
            FIX_REPAIR,
        )
    readers = covers("authenticated", "SELECT")
    if not readers:
        return Check(
            f"policies {table}",
            None,
            f"no policy lets signed-in users read {schema}.{table} (fine if you meant it; "
            "`supabase-log migrate --repair` re-creates the default one)",
        )
    return Check(f"policies {table}", True, ", ".join(sorted({*service, *readers})))


def access_checks(conn: Any, s: Settings) -> list[Check]:
    """Every table's access checks, then the functions the migrations define."""
    checks: list[Check] = []
    for table in handler_tables(s):
        checks.extend(table_access(conn, s, table))
    return checks


def function_checks(conn: Any, sql_texts: list[str]) -> list[Check]:
    """One check for the functions the migrations create (none when they create none)."""
    names: list[str] = []
    for text in sql_texts:
        for match in _FUNCTION.finditer(text):
            name = match.group(1).replace('"', "")
            if name not in names:
                names.append(name)
    if not names:
        return []
    missing = []
    for name in names:
        schema, _, fn = name.rpartition(".")
        found = conn.execute(
            "select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = %s and p.proname = %s",
            (schema or "public", fn),
        ).fetchone()
        if found is None:
            missing.append(name)
    if missing:
        return [Check("functions", False, f"missing: {', '.join(missing)}", FIX_REPAIR)]
    return [Check("functions", True, f"{len(names)} present: {', '.join(names)}")]


def needs_repair(checks: list[Check]) -> list[Check]:
    """The failed checks that ``migrate --repair`` fixes."""
    return [c for c in checks if c.ok is False and c.fix in (FIX_REPAIR, FIX_MIGRATE)]
