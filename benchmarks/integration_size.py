"""How much disk one `integration_logs` row takes in PostgreSQL, indexes included.

    python benchmarks/integration_size.py [--rows N] [--json] [--dsn URL]

Starts a throwaway PostgreSQL cluster (tests/stack, migrations applied) unless
``--dsn`` names a migrated database, then for each payload shape copies N rows
into an empty ``integration_logs`` and reports the growth of
``pg_total_relation_size`` (heap, TOAST and all eight indexes) per row. The
shapes are the original document's three examples (a CRM sync, a failed email,
an SMS retry), a call without payloads, and a CRM response of about 3 KB of
varied JSON. Finally it turns the measured sizes into the table's steady size at
a given daily volume under the cleanup windows (90 days for successes, 180 for
the rest). Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _stack import import_stack

from supabase_log_handler._ids import new_id
from supabase_log_handler.local_integration import CALL_COLUMNS as COLUMNS


def _crm_response(i: int) -> dict[str, Any]:
    """A lead as a CRM returns it: about 3 KB of JSON whose values differ row to row."""
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    fields = [
        {
            "field_id": 100000 + k,
            "field_name": f"Custom field {k}",
            "values": [{"value": f"{digest[k : k + 24]}-{k * i % 9973}"}],
        }
        for k in range(24)
    ]
    return {
        "id": 20000000 + i,
        "name": f"Lead {digest[:12]}",
        "price": i % 50000,
        "responsible_user_id": 7000 + i % 40,
        "pipeline_id": 5012,
        "status_id": 142,
        "created_at": 1767000000 + i,
        "custom_fields_values": fields,
        "_links": {"self": {"href": f"https://example.amocrm.ru/api/v4/leads/{20000000 + i}"}},
    }


def shapes(run_id: str) -> dict[str, Any]:
    """name -> function of the row number giving the row's varying columns."""

    def crm_sync(i: int) -> dict[str, Any]:
        return {
            "service_name": "amocrm",
            "action": "sync_lead",
            "status": "success",
            "request_payload": {"lead": {"name": f"Ivan Ivanov {i}", "phone": f"+7700{i:07d}"}},
            "response_payload": {
                "id": 12000000 + i,
                "_links": {"self": {"href": f"https://example.amocrm.ru/leads/{12000000 + i}"}},
            },
            "duration_ms": 234,
        }

    def failed_email(i: int) -> dict[str, Any]:
        return {
            "service_name": "resend",
            "action": "send_email",
            "status": "failed",
            "request_payload": {
                "to": f"user{i}@example.com",
                "subject": "Welcome",
                "html": "<p>Welcome!</p>",
            },
            "error_message": "Invalid email address",
            "error_code": "INVALID_EMAIL",
            "duration_ms": 89,
        }

    def sms_retry(i: int) -> dict[str, Any]:
        return {
            "service_name": "mobizon",
            "action": "send_sms",
            "status": "retrying",
            "request_payload": {
                "recipient": f"+7700{i:07d}",
                "text": f"Your code: {i % 10000:04d}",
            },
            "retry_count": 2,
            "duration_ms": 3456,
        }

    def no_payload(i: int) -> dict[str, Any]:
        return {"service_name": "telegram", "action": "send_telegram", "status": "success"}

    def crm_3kb(i: int) -> dict[str, Any]:
        return {**crm_sync(i), "response_payload": _crm_response(i)}

    return {
        "crm sync (original example 1)": crm_sync,
        "failed email (original example 2)": failed_email,
        "sms retry (original example 3)": sms_retry,
        "no payloads": no_payload,
        "crm sync, ~3 KB response": crm_3kb,
    }


def measure(dsn: str, rows: int) -> dict[str, Any]:
    """Bytes per row for each shape, and the JSON text size of its payloads."""
    import psycopg

    out: dict[str, Any] = {"rows": rows, "shapes": {}}
    with psycopg.connect(dsn, autocommit=True) as conn:
        run_id = new_id()
        conn.execute(
            "insert into runs (id, script_name, status) values (%s, 'size-bench', 'success')",
            (run_id,),
        )
        now = dt.datetime.now(dt.timezone.utc)
        for name, make in shapes(run_id).items():
            conn.execute("truncate integration_logs")
            conn.execute("vacuum integration_logs")
            empty = conn.execute("select pg_total_relation_size('integration_logs')").fetchone()
            payload_bytes = 0
            with (
                conn.cursor() as cur,
                cur.copy(f"copy integration_logs ({', '.join(COLUMNS)}) from stdin") as copy,
            ):
                for i in range(rows):
                    at = now - dt.timedelta(seconds=43.2 * i)  # 2,000 calls a day
                    row = {
                        "id": new_id(),
                        "related_entity_type": "lead",
                        "related_entity_id": new_id(),
                        "retry_count": 0,
                        "created_at": at,
                        "updated_at": at,
                        "run_id": run_id,
                        **make(i),
                    }
                    for key in ("request_payload", "response_payload"):
                        if row.get(key) is not None:
                            text = json.dumps(row[key])
                            payload_bytes += len(text.encode())
                            row[key] = text
                    copy.write_row([row.get(c) for c in COLUMNS])
            conn.execute("vacuum analyze integration_logs")
            full = conn.execute("select pg_total_relation_size('integration_logs')").fetchone()
            assert empty is not None and full is not None
            out["shapes"][name] = {
                "bytes_per_row": round((full[0] - empty[0]) / rows),
                "payload_json_bytes_per_row": round(payload_bytes / rows),
            }
        conn.execute("truncate integration_logs")
        conn.execute("delete from runs where id = %s", (run_id,))
    return out


def steady_rows(per_day: int, failed_share: float) -> int:
    """Rows kept under the default windows: successes 90 days, the rest 180 days."""
    return round(per_day * (1 - failed_share) * 90 + per_day * failed_share * 180)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000, help="rows per shape (default 20000)")
    parser.add_argument("--dsn", help="a migrated database to use instead of a throwaway cluster")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    cluster = None
    try:
        dsn = args.dsn
        if dsn is None:
            pg_cluster, _ = import_stack()
            cluster = pg_cluster().start()
            dsn = cluster.create_database("supabase_log_size")
        result = measure(dsn, args.rows)
    finally:
        if cluster is not None:
            cluster.stop()
    volume = {"per_day": 2000, "failed_share": 0.05}
    kept = steady_rows(volume["per_day"], volume["failed_share"])
    result["steady_state"] = {**volume, "rows_kept": kept}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"integration_logs: disk per row, indexes included ({args.rows} rows per shape)")
    for name, sizes in result["shapes"].items():
        print(
            f"  {name:<36} {sizes['bytes_per_row']:>6} B/row"
            f"   (payload JSON {sizes['payload_json_bytes_per_row']} B)"
        )
    print(
        f"steady size at {volume['per_day']} calls/day, {volume['failed_share']:.0%} not successful,"
        f" default windows: {kept} rows"
    )
    for name, sizes in result["shapes"].items():
        print(f"  {name:<36} {kept * sizes['bytes_per_row'] / 1e6:>8.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
