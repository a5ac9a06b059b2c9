"""What a ``doctor`` check is, the fixes checks name, and the tables the handler writes.

Shared by ``doctor.py`` (the command), ``probe.py`` (what the key can do through
PostgREST) and ``access.py`` (what the database grants, read with psycopg), and by
``migrate.py``, which re-checks access after it runs. Each fix is one constant, so
a fix that several checks share is printed once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings

FIX_MIGRATE = "run `supabase-log migrate` (or paste `supabase-log migrate --print` into the dashboard's SQL editor)"
FIX_REPAIR = (
    "run `supabase-log migrate --repair`: it re-applies the migrations' grants, row level security, "
    "policies and functions (or paste `supabase-log migrate --print` into the dashboard's SQL editor)"
)
FIX_SERVICE_KEY = (
    "use the service role key: set SUPABASE_SERVICE_ROLE_KEY to the `service_role` (secret) key "
    "from Project Settings -> API, not the anon/publishable key"
)
FIX_URL = "set SUPABASE_URL to the project URL from Project Settings -> API: https://<project>.supabase.co, without a path"
INTEGRATION_LOGS = "integration_logs"  # written through the same pipeline when the table exists
PROBE_SCRIPT = "supabase-log-doctor"  # script_name of doctor's probe run (deleted again)


@dataclass
class Check:
    name: str
    ok: bool | None  # None: could not be checked, or a note that is not a failure
    detail: str
    fix: str | None = None


def handler_tables(s: Settings) -> list[str]:
    """The tables the handler writes, in foreign-key order (a run before its rows)."""
    integration = getattr(s, "integration_logs_table", INTEGRATION_LOGS)
    return [s.runs_table, s.logs_table, str(integration)]


def optional_table(s: Settings, table: str) -> bool:
    """Tables that are checked only when they exist (a later migration adds them)."""
    return table not in (s.runs_table, s.logs_table)
