"""``doctor``'s checks through PostgREST: what the key can do to each table the handler writes.

For ``runs``, ``logs`` and (when it exists) ``integration_logs``: the table answers,
has every column the handler writes, and the key can do what the handler does,
shown by a real write probe made the way the handler writes: an upsert that ignores
duplicates (INSERT ... ON CONFLICT DO NOTHING, which needs SELECT and INSERT), a
read back, and for rows the handler updates in place an upsert that merges (which
needs UPDATE). The probe run (``script_name`` ``supabase-log-doctor``) and its rows
are deleted afterwards; a key that may not delete is reported, with what was left.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..config import Settings
from ..local_integration import CALL_COLUMNS
from ..sinks.local import LOG_COLUMNS, RUN_COLUMNS
from .checks import (
    FIX_MIGRATE,
    FIX_REPAIR,
    FIX_SERVICE_KEY,
    PROBE_SCRIPT,
    Check,
    handler_tables,
    optional_table,
)

_IGNORE = "return=minimal,resolution=ignore-duplicates"
_MERGE = "return=minimal,resolution=merge-duplicates"
FIX_ROW = (
    "compare the table with docs/schema.md: the handler writes only the documented columns, "
    "so any other NOT NULL column needs a default"
)


def message(answer: Any) -> str:
    """``code: message`` of a PostgREST error answer (or its HTTP status)."""
    try:
        body = answer.json()
        return f"{body.get('code')}: {body.get('message')}"
    except Exception:
        return f"HTTP {answer.status_code}"


def code(answer: Any) -> str:
    try:
        return str(answer.json().get("code") or "")
    except Exception:
        return ""


def is_postgrest(answer: Any) -> bool:
    """Did PostgREST (or a gateway speaking its protocol) write this answer?"""
    if "postgrest" in answer.headers.get("proxy-status", "").lower():
        return True
    try:
        body = answer.json()
    except Exception:
        return False
    return isinstance(body, dict) and "code" in body and "message" in body


def _denied(answer: Any) -> bool:
    return code(answer) == "42501" or answer.status_code in (401, 403)


def table_checks(client: Any, base: str, s: Settings, role: str | None) -> list[Check]:
    """Existence and columns of each table, then the write probe when every table answers."""
    checks: list[Check] = []
    present: list[str] = []
    columns = {s.runs_table: RUN_COLUMNS, s.logs_table: LOG_COLUMNS}
    for table in handler_tables(s):
        found = _exists(client, base, s, table, role)
        if found is None:
            continue  # an optional table that is not there
        checks.append(found)
        if found.ok and table in columns:
            checks.append(_columns(client, base, s, table, columns[table]))
        elif found.ok:  # integration_logs: what it lacks (the original's run_id) is noted, not failed
            check = _columns(client, base, s, table, CALL_COLUMNS)
            if check.ok is False:
                check = Check(check.name, None, f"{check.detail}; `supabase-log migrate` adds it")
            checks.append(check)
        if found.ok:
            present.append(table)
    required_ok = s.runs_table in present and s.logs_table in present
    if required_ok and role not in ("anon", "authenticated"):
        checks.extend(WriteProbe(client, base, s, role, present).run())
    return checks


def _exists(client: Any, base: str, s: Settings, table: str, role: str | None) -> Check | None:
    name = f"{s.schema}.{table}"
    answer = client.get(f"{base}/{table}", params={"select": "id", "limit": "1"})
    got = code(answer)
    if answer.status_code == 404 or got in ("PGRST205", "42P01"):
        if optional_table(s, table):
            return None
        return Check(f"table {table}", False, f"{name} does not exist", FIX_MIGRATE)
    if _denied(answer):
        who = "service_role" if role == "service_role" else "this key"
        fix = FIX_REPAIR if role == "service_role" else FIX_SERVICE_KEY
        return Check(
            f"table {table}", False, f"{who} may not SELECT from {name} ({message(answer)})", fix
        )
    if got == "PGRST106":
        return Check(
            f"table {table}",
            False,
            f"schema {s.schema} is not exposed",
            "add it under Project Settings -> API -> Exposed schemas, or set SUPABASE_LOG_SCHEMA",
        )
    if answer.status_code >= 300:
        return Check(f"table {table}", False, f"{name}: {message(answer)}", FIX_MIGRATE)
    return Check(f"table {table}", True, f"{name} exists and the key can read it")


def _columns(client: Any, base: str, s: Settings, table: str, columns: tuple[str, ...]) -> Check:
    name = f"{s.schema}.{table}"
    answer = client.get(f"{base}/{table}", params={"select": ",".join(columns), "limit": "0"})
    if answer.status_code < 300:
        return Check(f"columns {table}", True, f"all {len(columns)} columns present")
    missing = [
        c
        for c in columns
        if client.get(f"{base}/{table}", params={"select": c, "limit": "0"}).status_code >= 300
    ]
    detail = (
        f"{name} lacks column(s): {', '.join(missing)}" if missing else f"{name}: {message(answer)}"
    )
    return Check(f"columns {table}", False, detail, FIX_REPAIR)


class WriteProbe:
    """One probe run, a log row under it (and an integration_logs row), then deleted."""

    def __init__(
        self, client: Any, base: str, s: Settings, role: str | None, tables: list[str]
    ) -> None:
        self.client = client
        self.base = base
        self.s = s
        self.role = role
        self.tables = tables
        self.run_id = str(uuid.uuid4())
        marker = {"doctor_probe": True}
        # (table, first row, the same row as the handler would update it, or None)
        self.rows: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
            s.runs_table: (
                {
                    "id": self.run_id,
                    "script_name": PROBE_SCRIPT,
                    "status": "running",
                    "triggered_by": "doctor",
                    "metadata": marker,
                },
                {
                    "id": self.run_id,
                    "script_name": PROBE_SCRIPT,
                    "status": "success",
                    "triggered_by": "doctor",
                    "metadata": marker,
                },
            ),
            s.logs_table: (
                {
                    "id": str(uuid.uuid4()),
                    "run_id": self.run_id,
                    "level": "INFO",
                    "step": "DOCTOR",
                    "message": "supabase-log doctor write probe",
                    "meta": marker,
                },
                None,  # the handler never updates a log row
            ),
        }
        for table in tables:
            if optional_table(s, table):  # integration_logs: one row per API call, updated in place
                row = {
                    "id": str(uuid.uuid4()),
                    "service_name": PROBE_SCRIPT,
                    "action": "doctor_probe",
                    "status": "pending",
                }
                self.rows[table] = (row, {**row, "status": "success"})
        self.written: list[str] = []

    def run(self) -> list[Check]:
        checks: list[Check] = []
        try:
            for table in [t for t in self.tables if t in self.rows]:
                if table != self.s.runs_table and self.s.runs_table not in self.written:
                    checks.append(
                        Check(
                            f"write {table}",
                            None,
                            f"not probed: the probe run could not be written to {self.s.runs_table}",
                        )
                    )
                    continue
                checks.append(self._probe(table))
        finally:
            cleanup = self._cleanup()
        if cleanup is not None:
            checks.append(cleanup)
        return checks

    def _name(self, table: str) -> str:
        return f"{self.s.schema}.{table}"

    def _post(self, table: str, row: dict[str, Any], prefer: str) -> Any:
        return self.client.post(
            f"{self.base}/{table}",
            params={"on_conflict": "id"},
            headers={"Prefer": prefer},
            json=[row],
        )

    def _probe(self, table: str) -> Check:
        first, update = self.rows[table]
        answer = self._post(table, first, _IGNORE)
        if answer.status_code >= 300:
            return self._refused(table, "INSERT into", answer)
        self.written.append(table)
        answer = self.client.get(
            f"{self.base}/{table}", params={"select": "id", "id": f"eq.{first['id']}"}
        )
        if answer.status_code >= 300:
            return self._refused(table, "SELECT from", answer)
        if len(answer.json()) != 1:
            return Check(
                f"write {table}",
                False,
                f"a row written to {self._name(table)} cannot be read back (a policy or trigger hides it)",
                FIX_REPAIR,
            )
        done = "insert (upsert) and select work"
        if update is not None:
            answer = self._post(table, update, _MERGE)
            if answer.status_code >= 300:
                return self._refused(table, "UPDATE", answer)
            done = "insert, upsert and select work"
        return Check(f"write {table}", True, f"{done} (a probe row, removed again)")

    def _refused(self, table: str, verb: str, answer: Any) -> Check:
        name = self._name(table)
        if _denied(answer):
            service = self.role == "service_role"
            who = "service_role" if service else "this key"
            text = message(answer)
            what = f"{verb} {name}"
            if "sequence" in text:  # an older runs table's legacy_id sequence
                what = f"use the sequence behind a default of {name}"
            return Check(
                f"write {table}",
                False,
                f"{who} may not {what} ({text})",
                FIX_REPAIR if service else FIX_SERVICE_KEY,
            )
        if code(answer) in ("PGRST204", "42703"):
            return Check(
                f"write {table}", False, f"{name} lacks a column: {message(answer)}", FIX_REPAIR
            )
        return Check(
            f"write {table}",
            False,
            f"{name} refused the probe row on {verb.split()[0]}: {message(answer)}",
            FIX_ROW,
        )

    def _delete(self, table: str, row_id: str) -> Any:
        return self.client.delete(
            f"{self.base}/{table}",
            params={"id": f"eq.{row_id}"},
            headers={"Prefer": "return=minimal"},
        )

    def _cleanup(self) -> Check | None:
        """Delete the probe rows (children first where no cascade would); None when all went."""
        left: list[str] = []
        refusal = ""
        runs = self.s.runs_table
        for table in reversed(self.written):
            if table == runs:
                continue
            if table == self.s.logs_table:
                continue  # removed with the run (on delete cascade), unless that fails below
            answer = self._delete(table, self.rows[table][0]["id"])
            if answer.status_code >= 300:
                left.append(self._name(table))
                refusal = refusal or message(answer)
        if runs in self.written:
            answer = self._delete(runs, self.run_id)
            if answer.status_code == 409 and self.s.logs_table in self.written:  # no cascade
                self._delete(self.s.logs_table, self.rows[self.s.logs_table][0]["id"])
                answer = self._delete(runs, self.run_id)
            if answer.status_code >= 300:
                left.append(self._name(runs))
                refusal = refusal or message(answer)
            else:
                gone = self.client.get(
                    f"{self.base}/{self.s.logs_table}",
                    params={"select": "id", "run_id": f"eq.{self.run_id}"},
                )
                if gone.status_code < 300 and gone.json():
                    left.append(self._name(self.s.logs_table))
        if not left:
            return None
        return Check(
            "probe cleanup",
            False,
            f"the probe rows could not be deleted from {', '.join(left)} ({refusal or 'still there'}); "
            f"remove them with: delete from {self._name(runs)} where script_name = '{PROBE_SCRIPT}';",
            FIX_REPAIR,
        )
