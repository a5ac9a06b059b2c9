"""Tests of the test stack itself: PostgreSQL + the PostgREST-compatible gateway,
driven through the official ``supabase`` client exactly as the handler uses it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

import httpx
import psycopg
import pytest
from postgrest import APIResponse
from postgrest.exceptions import APIError
from postgrest.types import CountMethod, ReturnMethod
from stack import jwt
from stack.fixtures import Db, FreshStack
from stack.gateway import Gateway
from stack.postgres import PgCluster
from supabase import Client, ClientOptions, create_client

# The stack's fixtures (pg_cluster, db, gateway, gateway_faults, fresh_gateway, ...) come
# from tests/conftest.py, which star-imports stack.fixtures.

pytestmark = pytest.mark.timeout(60)

ERROR_BODY_KEYS = {"code", "message", "details", "hint"}
MINIMAL = ReturnMethod("minimal")  # enum values keep mypy happy; the client sends "minimal"
EXACT = CountMethod("exact")
Row = dict[str, Any]


def rows_of(response: APIResponse) -> list[Row]:
    """The JSON rows of a table response, typed for the assertions."""
    return cast(list[Row], response.data)


@contextmanager
def official_client(
    gateway: Gateway, key: str, *, timeout: float | httpx.Timeout = 5.0
) -> Iterator[tuple[Client, list[httpx.Response]]]:
    """The official client on ``gateway`` with ``key``; also yields every raw HTTP response."""
    responses: list[httpx.Response] = []
    http = httpx.Client(timeout=timeout, event_hooks={"response": [responses.append]})
    options = ClientOptions(
        auto_refresh_token=False,
        persist_session=False,
        postgrest_client_retry=False,
        httpx_client=http,
    )
    try:
        yield create_client(gateway.url, key, options), responses
    finally:
        http.close()


def new_run(client: Client, **fields: Any) -> str:
    """Insert a run through ``client``; returns its id."""
    run_id = str(uuid.uuid4())
    row = {"id": run_id, "script_name": "stack-test", "status": "running", **fields}
    client.table("runs").insert(row, returning=MINIMAL).execute()
    return run_id


def log_row(run_id: str, **fields: Any) -> dict[str, Any]:
    """A valid ``logs`` row for ``run_id``, with ``fields`` overriding."""
    return {"run_id": run_id, "level": "INFO", "step": "PROCESS", "message": "hello", **fields}


@pytest.fixture
def service(gateway: Gateway) -> Iterator[tuple[Client, list[httpx.Response]]]:
    """The official client with the service role key, plus its raw responses."""
    with official_client(gateway, gateway.service_key) as pair:
        yield pair


# --------------------------------------------------------------------------- writes


def test_service_role_inserts_run_and_logs(
    gateway: Gateway, db: Db, service: tuple[Client, list[httpx.Response]]
) -> None:
    """The service key inserts a run and a list of logs (returning=minimal: 201, empty body)."""
    client, responses = service
    run_id = new_run(client)
    gateway.reset_log()
    result = (
        client.table("logs")
        .insert([log_row(run_id, message=f"m{i}") for i in range(5)], returning=MINIMAL)
        .execute()
    )

    assert result.data == []
    assert responses[-1].status_code == 201
    assert responses[-1].headers["Content-Range"] == "*/*"
    assert responses[-1].content == b""
    assert db.fetchval("select count(*) from logs where run_id = %s", (run_id,)) == 5
    assert [r[:4] for r in gateway.requests] == [("POST", "/rest/v1/logs", 5, 201)]


def test_insert_representation_serializes_like_postgrest(
    service: tuple[Client, list[httpx.Response]],
) -> None:
    """return=representation gives the rows with defaults, timestamptz as ISO-8601 with offset."""
    client, _ = service
    run_id = str(uuid.uuid4())
    rows = rows_of(
        client.table("runs")
        .insert({"id": run_id, "script_name": "s", "status": "running", "api_cost": 0.125})
        .execute()
    )

    assert rows[0]["id"] == run_id
    assert rows[0]["triggered_by"] == "manual"
    assert rows[0]["metadata"] == {}
    assert rows[0]["api_cost"] == 0.125
    started = datetime.fromisoformat(rows[0]["started_at"])
    assert started.utcoffset() is not None


def test_upsert_ignore_duplicates_is_idempotent(
    db: Db, service: tuple[Client, list[httpx.Response]]
) -> None:
    """Upserting existing ids with ignore_duplicates changes nothing and raises nothing."""
    client, responses = service
    run_id = new_run(client)
    rows = [log_row(run_id, id=str(uuid.uuid4()), message=f"m{i}") for i in range(3)]
    for _ in range(2):
        client.table("logs").upsert(
            rows, on_conflict="id", ignore_duplicates=True, returning=MINIMAL
        ).execute()
        assert responses[-1].status_code == 201

    changed = [{**rows[0], "message": "changed"}]
    client.table("logs").upsert(changed, on_conflict="id", ignore_duplicates=True).execute()
    assert db.fetchval("select count(*) from logs where run_id = %s", (run_id,)) == 3
    assert db.fetchval("select message from logs where id = %s", (rows[0]["id"],)) == "m0"


def test_upsert_merge_duplicates_updates(
    db: Db, service: tuple[Client, list[httpx.Response]]
) -> None:
    """merge-duplicates updates the existing row (200 when nothing new was inserted)."""
    client, responses = service
    run_id = new_run(client)
    result = (
        client.table("runs")
        .upsert(
            {"id": run_id, "script_name": "stack-test", "status": "success", "duration_ms": 42},
            on_conflict="id",
        )
        .execute()
    )

    assert responses[-1].status_code == 200
    assert rows_of(result)[0]["status"] == "success"
    assert db.fetch("select status, duration_ms from runs where id = %s", (run_id,)) == [
        ("success", 42)
    ]


def test_update_and_delete_with_filters(
    db: Db, service: tuple[Client, list[httpx.Response]]
) -> None:
    """PATCH and DELETE apply their filters; return=minimal answers 204."""
    client, responses = service
    run_id = new_run(client)
    client.table("logs").insert(
        [log_row(run_id, level="DEBUG"), log_row(run_id, level="ERROR")]
    ).execute()

    updated = (
        client.table("runs")
        .update({"status": "error", "error_message": "boom"})
        .eq("id", run_id)
        .execute()
    )
    assert updated.data[0]["error_message"] == "boom"
    client.table("logs").delete(returning=MINIMAL).eq("run_id", run_id).eq(
        "level", "DEBUG"
    ).execute()
    assert responses[-1].status_code == 204
    assert db.fetch("select level from logs where run_id = %s", (run_id,)) == [("ERROR",)]


def test_missing_keys_follow_postgrest_defaults(
    db: Db, service: tuple[Client, list[httpx.Response]]
) -> None:
    """With ?columns, a missing key is NULL (23502 on a NOT NULL column) unless missing=default."""
    client, _ = service
    run_id = new_run(client)
    rows = [log_row(run_id, timestamp="2025-01-01T00:00:00+00:00"), log_row(run_id)]

    with pytest.raises(APIError) as excinfo:
        client.table("logs").insert(rows).execute()
    assert excinfo.value.code == "23502"
    assert db.fetchval("select count(*) from logs where run_id = %s", (run_id,)) == 0

    client.table("logs").insert(rows, default_to_null=False).execute()
    assert (
        db.fetchval(
            "select count(*) from logs where run_id = %s and timestamp is not null", (run_id,)
        )
        == 2
    )


def test_array_body_without_columns_needs_uniform_keys(gateway: Gateway) -> None:
    """A raw array whose objects have different keys is PGRST102, as is invalid JSON."""
    url = gateway.rest_url + "/logs"
    headers = gateway.headers_for()
    mismatched = httpx.post(url, headers=headers, json=[{"level": "INFO"}, {"step": "x"}])
    invalid = httpx.post(
        url, headers={**headers, "Content-Type": "application/json"}, content=b"{nope"
    )

    for response in (mismatched, invalid):
        assert response.status_code == 400
        assert response.json()["code"] == "PGRST102"
    assert mismatched.json()["message"] == "All object keys must match"


# --------------------------------------------------------------------------- reads


def test_select_with_filters_order_limit_and_exact_count(
    service: tuple[Client, list[httpx.Response]],
) -> None:
    """select with eq/order/limit and count=EXACT returns the page and the total."""
    client, responses = service
    run_id = new_run(client)
    client.table("logs").insert(
        [log_row(run_id, step=f"S{i}", timestamp=f"2025-01-01T00:00:0{i}+00:00") for i in range(5)],
        returning=MINIMAL,
    ).execute()

    result = (
        client.table("logs")
        .select("step,timestamp", count=EXACT)
        .eq("run_id", run_id)
        .order("timestamp", desc=True)
        .limit(2)
        .execute()
    )
    assert [r["step"] for r in rows_of(result)] == ["S4", "S3"]
    assert result.count == 5
    assert responses[-1].headers["Content-Range"] == "0-1/5"

    # client.schema() sends X-Client-Info twice: the gateway must tolerate it.
    empty = (
        client.schema("public")
        .table("logs")
        .select("*", count=EXACT)
        .eq("run_id", str(uuid.uuid4()))
        .execute()
    )
    assert (empty.data, empty.count) == ([], 0)
    assert responses[-1].headers["Content-Range"] == "*/0"


def test_filter_operators(service: tuple[Client, list[httpx.Response]]) -> None:
    """in/neq/like/ilike/is/gte filters and or() match PostgREST semantics."""
    client, _ = service
    run_id = new_run(client)
    client.table("logs").insert(
        [
            log_row(run_id, level=level, message=message)
            for level, message in [
                ("INFO", "alpha one"),
                ("ERROR", "Beta two"),
                ("DEBUG", "gamma three"),
            ]
        ]
    ).execute()
    logs = client.table("logs")

    def levels(query: Any) -> list[str]:
        return sorted(r["level"] for r in query.eq("run_id", run_id).execute().data)

    assert levels(logs.select("level").in_("level", ["INFO", "DEBUG"])) == ["DEBUG", "INFO"]
    assert levels(logs.select("level").neq("level", "INFO")) == ["DEBUG", "ERROR"]
    assert levels(logs.select("level").like("message", "%one")) == ["INFO"]
    assert levels(logs.select("level").ilike("message", "beta%")) == ["ERROR"]
    assert levels(logs.select("level").is_("meta", None)) == []
    assert levels(logs.select("level").or_("level.eq.INFO,message.ilike.*three")) == [
        "DEBUG",
        "INFO",
    ]


def test_tables_created_and_dropped_at_runtime_are_seen(
    db: Db, service: tuple[Client, list[httpx.Response]]
) -> None:
    """The gateway reads the catalog per request: new tables work at once, dropped ones are PGRST205."""
    client, _ = service
    table = f"t_{uuid.uuid4().hex[:8]}"
    db.execute(
        f"create table public.{table} (id int primary key, note text); grant all on public.{table} to service_role"
    )
    try:
        client.table(table).insert({"id": 1, "note": "x"}).execute()
        assert client.table(table).select("*").execute().data == [{"id": 1, "note": "x"}]
    finally:
        db.execute(f"drop table public.{table}")
    with pytest.raises(APIError) as excinfo:
        client.table(table).select("*").execute()
    assert excinfo.value.code == "PGRST205"


def test_insert_statements_follow_a_table_changed_at_runtime(
    gateway: Gateway, db: Db, service: tuple[Client, list[httpx.Response]]
) -> None:
    """The gateway prepares an insert once per shape of request, yet a column added, or the
    table dropped and made again with other types, is seen by the next insert; the request
    log counts the rows of each body."""
    client, _ = service
    table = f"t_{uuid.uuid4().hex[:8]}"
    db.execute(
        f"create table public.{table} (id int primary key, note text); grant all on public.{table} to service_role"
    )
    try:
        gateway.reset_log()
        for i in range(3):  # the same shape of request, several times
            client.table(table).upsert(
                [{"id": 2 * i, "note": "a"}, {"id": 2 * i + 1, "note": "b"}],
                on_conflict="id",
                ignore_duplicates=True,
                returning=MINIMAL,
            ).execute()
        db.execute(f"alter table public.{table} add column n int not null default 7")
        client.table(table).insert({"id": 10, "note": "c", "n": 1}, returning=MINIMAL).execute()
        db.execute(
            f"drop table public.{table}; create table public.{table} (id text primary key, note int);"
            f" grant all on public.{table} to service_role"
        )
        client.table(table).upsert(  # the first shape again, on the new column types
            [{"id": "x", "note": 5}], on_conflict="id", ignore_duplicates=True, returning=MINIMAL
        ).execute()
        assert db.fetch(f"select id, note from public.{table}") == [("x", 5)]
    finally:
        db.execute(f"drop table if exists public.{table}")
    assert [r.rows for r in gateway.requests] == [2, 2, 2, 1, 1]


def test_json_column_keeps_the_text_as_sent(
    db: Db, service: tuple[Client, list[httpx.Response]]
) -> None:
    """A ``json`` column stores the value's text exactly as sent (key order, duplicate keys),
    as PostgREST does; a ``jsonb`` column in the same table normalises it."""
    client, _ = service
    table = f"t_{uuid.uuid4().hex[:8]}"
    db.execute(
        f"create table public.{table} (id int primary key, j json, b jsonb);"
        f" grant all on public.{table} to service_role"
    )
    raw = '{"z": 1, "a": [1, 2], "z": 3}'
    try:
        response = httpx.post(
            f"{client.supabase_url}/rest/v1/{table}?columns=id,j",
            headers={
                **client.options.headers,
                "apikey": client.supabase_key,
                "Authorization": f"Bearer {client.supabase_key}",
                "Content-Type": "application/json",
                "Prefer": "return=minimal",
            },
            content=f'[{{"id": 1, "j": {raw}}}]',
        )
        assert response.status_code == 201, response.text
        client.table(table).insert(
            {"id": 2, "b": {"z": 1, "a": [1, 2]}}, returning=MINIMAL
        ).execute()
        rows = db.fetch(f"select id, j::text, b::text from public.{table} order by id")
    finally:
        db.execute(f"drop table if exists public.{table}")
    assert rows == [(1, raw, None), (2, None, '{"a": [1, 2], "z": 1}')]


# --------------------------------------------------------------------------- roles and keys


def test_anon_key_cannot_read_or_write(gateway: Gateway) -> None:
    """The anon key gets 42501 from PostgreSQL, answered 401 with PostgREST's error body."""
    with official_client(gateway, gateway.anon_key) as (client, responses):
        actions: list[Callable[[], object]] = [
            lambda: client.table("runs").select("*").execute(),
            lambda: client.table("logs").select("*").execute(),
            lambda: (
                client.table("runs").insert({"script_name": "x", "status": "running"}).execute()
            ),
            lambda: (
                client.table("logs")
                .insert([log_row(str(uuid.uuid4()))], returning=MINIMAL)
                .execute()
            ),
        ]
        for action in actions:
            with pytest.raises(APIError) as excinfo:
                action()
            assert excinfo.value.code == "42501"
            assert set(excinfo.value.json()) == ERROR_BODY_KEYS
            response = responses[-1]
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.headers["Proxy-Status"] == "PostgREST; error=42501"
            assert set(response.json()) == ERROR_BODY_KEYS


def test_authenticated_key_reads_but_cannot_insert(
    gateway: Gateway, service: tuple[Client, list[httpx.Response]]
) -> None:
    """The authenticated key may read runs/logs (RLS select policy) but inserting is 403 42501."""
    run_id = new_run(service[0])
    with official_client(gateway, gateway.authenticated_key) as (client, responses):
        assert [
            r["id"] for r in client.table("runs").select("id").eq("id", run_id).execute().data
        ] == [run_id]
        assert client.table("logs").select("id").eq("run_id", run_id).execute().data == []
        with pytest.raises(APIError) as excinfo:
            client.table("logs").insert(log_row(run_id)).execute()
        assert excinfo.value.code == "42501"
        assert responses[-1].status_code == 403


def test_opaque_secret_key_acts_as_service_role(gateway: Gateway, db: Db) -> None:
    """A new-style sb_secret_ key maps to service_role, sb_publishable_ to anon."""
    with official_client(gateway, gateway.secret_key) as (client, _):
        run_id = new_run(client)
    assert db.fetchval("select count(*) from runs where id = %s", (run_id,)) == 1
    with (
        official_client(gateway, gateway.publishable_key) as (client, responses),
        pytest.raises(APIError),
    ):
        client.table("runs").select("*").execute()
    assert responses[-1].status_code == 401


def test_bad_jwt_signature_is_pgrst301(gateway: Gateway) -> None:
    """A key signed with another secret is rejected with 401 PGRST301."""
    forged = jwt.make_keys("another-secret-that-is-at-least-32-chars").service_role
    with (
        official_client(gateway, forged) as (client, responses),
        pytest.raises(APIError) as excinfo,
    ):
        client.table("runs").select("*").execute()
    assert excinfo.value.code == "PGRST301"
    assert responses[-1].status_code == 401
    assert responses[-1].headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_jwt_is_pgrst303(gateway: Gateway) -> None:
    """An expired key is rejected with 401 PGRST303 "JWT expired"."""
    expired = jwt.encode(
        {"role": "service_role", "exp": int(time.time()) - 3600}, gateway.jwt_secret
    )
    with (
        official_client(gateway, expired) as (client, responses),
        pytest.raises(APIError) as excinfo,
    ):
        client.table("runs").insert({"script_name": "x", "status": "running"}).execute()
    assert (excinfo.value.code, excinfo.value.message) == ("PGRST303", "JWT expired")
    assert responses[-1].status_code == 401


def test_jwt_round_trip_and_segment_errors() -> None:
    """jwt.decode returns the claims of jwt.encode and names malformed tokens PGRST301."""
    secret = "s" * 40
    token = jwt.encode({"role": "anon", "exp": jwt.FAR_FUTURE_EXP}, secret)
    assert jwt.decode(token, secret) == {"role": "anon", "exp": jwt.FAR_FUTURE_EXP}
    for bad in ("", "a.b", "a.b.c.d", token[:-2] + "xx", "!!." + token.split(".", 1)[1]):
        with pytest.raises(jwt.JWTError) as excinfo:
            jwt.decode(bad, secret)
        assert excinfo.value.code == "PGRST301"


def test_role_settings_and_claims_reach_postgres(fresh_gateway: Any) -> None:
    """Requests run as the JWT role with its ALTER ROLE settings and request.jwt.claims set."""
    stack: FreshStack = fresh_gateway(
        sql="""
        create function public.whoami() returns json language sql stable as $$
          select json_build_object('role', current_user, 'timeout', current_setting('statement_timeout'),
                                   'uid', auth.uid(), 'jwt_role', auth.role())
        $$;
        grant execute on function public.whoami() to anon, authenticated, service_role;
        """
    )
    with official_client(stack.gateway, stack.gateway.authenticated_key) as (client, _):
        me = client.rpc("whoami").execute().data  # a scalar json function: one object
    assert me == {
        "role": "authenticated",
        "timeout": "8s",
        "uid": jwt.AUTHENTICATED_SUB,
        "jwt_role": "authenticated",
    }
    with official_client(stack.gateway, stack.gateway.anon_key) as (client, _):
        assert cast(Row, client.rpc("whoami").execute().data)["timeout"] == "3s"


def test_role_statement_timeout_cancels_with_500(fresh_gateway: Any) -> None:
    """A role's per-database statement_timeout applies; the cancellation (57014) answers 500."""
    stack: FreshStack = fresh_gateway(
        sql="""
        create function public.nap() returns void language sql as $$ select pg_sleep(5) $$;
        grant execute on function public.nap() to service_role;
        """
    )
    stack.db.execute(
        f"alter role service_role in database {stack.db.name} set statement_timeout = '100ms'"
    )
    with (
        official_client(stack.gateway, stack.gateway.service_key) as (client, responses),
        pytest.raises(APIError) as excinfo,
    ):
        client.rpc("nap").execute()
    assert excinfo.value.code == "57014"
    assert responses[-1].status_code == 500


# --------------------------------------------------------------------------- PostgreSQL errors


@pytest.mark.parametrize(
    ("row", "code", "status"),
    [
        pytest.param({"message": "before\x00after"}, "22P05", 400, id="nul-byte"),
        pytest.param({"level": "LOUD"}, "23514", 400, id="bad-level"),
        pytest.param(
            {"run_id": "00000000-0000-4000-8000-00000000dead"}, "23503", 409, id="unknown-run"
        ),
        pytest.param({"run_id": "not-a-uuid"}, "22P02", 400, id="bad-uuid"),
    ],
)
def test_database_errors_map_like_postgrest(
    db: Db,
    service: tuple[Client, list[httpx.Response]],
    row: dict[str, Any],
    code: str,
    status: int,
) -> None:
    """Constraint and type errors come from PostgreSQL with PostgREST's HTTP status; nothing is written."""
    client, responses = service
    run_id = new_run(client)
    with pytest.raises(APIError) as excinfo:
        client.table("logs").insert(
            [log_row(run_id), {**log_row(run_id), **row}], returning=MINIMAL
        ).execute()
    assert excinfo.value.code == code
    assert responses[-1].status_code == status
    assert responses[-1].headers["Proxy-Status"] == f"PostgREST; error={code}"
    assert db.fetchval("select count(*) from logs where run_id = %s", (run_id,)) == 0


def test_unknown_column_is_pgrst204(service: tuple[Client, list[httpx.Response]]) -> None:
    """A body key that is not a column is 400 PGRST204 naming the column and table."""
    client, responses = service
    with pytest.raises(APIError) as excinfo:
        client.table("logs").insert([log_row(str(uuid.uuid4()), severity="high")]).execute()
    assert excinfo.value.code == "PGRST204"
    assert (
        excinfo.value.message
        == "Could not find the 'severity' column of 'logs' in the schema cache"
    )
    assert responses[-1].status_code == 400


def test_unknown_table_is_pgrst205(service: tuple[Client, list[httpx.Response]]) -> None:
    """An unknown table is 404 PGRST205, with PostgREST's hint for a close name."""
    client, responses = service
    with pytest.raises(APIError) as excinfo:
        client.table("log").insert({"message": "x"}).execute()
    assert excinfo.value.code == "PGRST205"
    assert excinfo.value.message == "Could not find the table 'public.log' in the schema cache"
    assert excinfo.value.hint == "Perhaps you meant the table 'public.logs'"
    assert responses[-1].status_code == 404


def test_unknown_schema_is_pgrst106(gateway: Gateway) -> None:
    """Accept-Profile naming an unexposed schema is 406 PGRST106."""
    response = httpx.get(
        gateway.rest_url + "/runs", headers={**gateway.headers_for(), "Accept-Profile": "auth"}
    )
    assert response.status_code == 406
    assert response.json()["code"] == "PGRST106"


def test_unreachable_database_is_503_pgrst000() -> None:
    """When PostgreSQL refuses connections the gateway answers 503 PGRST000."""
    with Gateway("postgresql://authenticator@127.0.0.1:1/nowhere", db_connect_timeout_s=2) as gw:
        response = httpx.get(gw.rest_url + "/runs", headers=gw.headers_for())
    assert response.status_code == 503
    assert response.json()["code"] == "PGRST000"


# --------------------------------------------------------------------------- faults


def test_stop_refuses_connections_and_start_recovers(gateway_faults: Gateway, db: Db) -> None:
    """stop() is a real outage (ConnectError, even kept-alive); start() recovers on the same URL."""
    gateway = gateway_faults
    url = gateway.url
    with official_client(gateway, gateway.service_key) as (client, _):
        run_id = new_run(client)  # leaves a kept-alive connection in the pool
        gateway.stop()
        with pytest.raises(httpx.ConnectError):
            client.table("logs").insert(log_row(run_id), returning=MINIMAL).execute()
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/rest/v1/runs", headers=gateway.headers_for())

        gateway.start()
        assert gateway.url == url
        client.table("logs").insert(log_row(run_id), returning=MINIMAL).execute()
    assert db.fetchval("select count(*) from logs where run_id = %s", (run_id,)) == 1


def test_delayed_answer_is_committed_before_the_client_times_out(
    gateway_faults: Gateway, db: Db
) -> None:
    """delay_response_s commits, then holds the answer (ReadTimeout); stop() ends the hold early."""
    gateway = gateway_faults
    with official_client(gateway, gateway.service_key) as (client, _):
        run_id = new_run(client)
    gateway.reset_log()
    gateway.delay_response_s = 30.0
    short_read = httpx.Timeout(5.0, read=0.5)
    with (
        official_client(gateway, gateway.service_key, timeout=short_read) as (client, _),
        pytest.raises(httpx.ReadTimeout),
    ):
        client.table("logs").insert([log_row(run_id), log_row(run_id)], returning=MINIMAL).execute()
    assert db.fetchval("select count(*) from logs where run_id = %s", (run_id,)) == 2
    assert gateway.requests == []  # committed, not yet answered

    started = time.monotonic()
    gateway.stop()
    assert time.monotonic() - started < 10.0
    assert [r[:4] for r in gateway.wait_for_requests(1, timeout_s=5.0)] == [("POST", "/rest/v1/logs", 2, 0)]


def test_fail_next_answers_without_touching_the_database(gateway_faults: Gateway) -> None:
    """fail_next(1, 503, retry_after=2) answers one request 503 PGRST000 with Retry-After, then recovers."""
    gateway = gateway_faults
    gateway.fail_next(1, 503, retry_after=2)
    with official_client(gateway, gateway.service_key) as (client, responses):
        with pytest.raises(APIError) as excinfo:
            client.table("runs").select("id").limit(1).execute()
        assert excinfo.value.code == "PGRST000"
        assert responses[-1].status_code == 503
        assert responses[-1].headers["Retry-After"] == "2"
        assert set(responses[-1].json()) == ERROR_BODY_KEYS

        client.table("runs").select("id").limit(1).execute()
        assert responses[-1].status_code == 200


def test_paused_cluster_stops_answering_until_resumed(pg_cluster: PgCluster, database: str) -> None:
    """pause() freezes PostgreSQL (connections time out); resume() brings it back."""
    pg_cluster.pause()
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg_cluster.dsn(database), connect_timeout=2).close()
    finally:
        pg_cluster.resume()
    assert pg_cluster.fetch(database, "select 1") == [(1,)]
