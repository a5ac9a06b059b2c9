"""A PostgREST-compatible HTTP gateway (``/rest/v1``) for the test stack.

Owns: answering the official ``supabase`` client the way Supabase's API gateway
plus PostgREST do, on top of a real PostgreSQL database. Every request is
authenticated (HS256 JWT or an opaque ``sb_secret_``/``sb_publishable_`` key),
runs in one transaction as the JWT's role (``set_config('role', ...)``, the
request's claims and the role's own ``ALTER ROLE ... SET`` settings), and is
translated to SQL so that privileges, Row Level Security, constraints and type
checks all come from PostgreSQL itself. Errors are mapped SQLSTATE -> HTTP
exactly as PostgREST maps them.

Speed, so that a fast client can be measured through it: HTTP/1.1 keep-alive with
one database connection per client connection; one prepared statement opens every
request (role settings, role, claims and the relation's catalog entry in one round
trip); an insert hands the body to PostgreSQL as one parameter
(``jsonb_to_recordset($1)``, as PostgREST does) instead of parsing it in Python, and
its SQL text is built once per shape of request and prepared.
``benchmarks/gateway_bench.py`` measures it.

Also owns the fault controls tests use: ``stop()``/``start()`` (a real outage on
the same port), ``delay_response_s`` (commit, then answer late),
``fail_next()`` (canned error answers) and the ``requests`` log.

Supported surface: tables (GET/HEAD with select, filters, logic trees, order,
limit, offset, counts; POST inserts and upserts; PATCH; DELETE), RPC (POST, GET)
and a minimal OpenAPI root. Not supported: resource embedding, Range headers,
CSV, PUT, aggregates, ``Prefer: tx=``.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import re
import secrets
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg import sql

from . import jwt

__all__ = ["ApiError", "Gateway", "RequestRecord", "http_status_for_sqlstate"]

log = logging.getLogger(__name__)

REST_PREFIX = "/rest/v1"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
SINGLE_OBJECT_MEDIA = "application/vnd.pgrst.object+json"
WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE", "PUT"})
RESERVED_PARAMS = frozenset(
    {"select", "order", "limit", "offset", "columns", "on_conflict", "apikey"}
)

_SERVER_STOP_WAIT_S = 5.0
_POLL_INTERVAL_S = 0.05


# --------------------------------------------------------------------------- errors


class RequestRecord(NamedTuple):
    """One answered request: ``rows`` is the length of a JSON array body, else 1."""

    method: str
    path: str
    rows: int
    status: int
    on_conflict: str | None = None


class ApiError(Exception):
    """An error answer in PostgREST's shape: {"code","message","details","hint"}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: str | None = None,
        hint: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = list(headers)

    def reply(self) -> Reply:
        body = json.dumps(
            {
                "code": self.code,
                "details": self.details,
                "hint": self.hint,
                "message": self.message,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        headers = [
            ("Content-Type", JSON_CONTENT_TYPE),
            ("Proxy-Status", f"PostgREST; error={self.code}"),
            *self.headers,
        ]
        return Reply(self.status, body, headers)


def _bad_request(message: str, details: str | None = None, code: str = "PGRST100") -> ApiError:
    return ApiError(400, code, message, details)


def http_status_for_sqlstate(
    sqlstate: str, message: str = "", *, authenticated: bool = True
) -> int:
    """PostgREST's SQLSTATE -> HTTP status table. ``authenticated`` is False for the
    anonymous role (42501 is then 401 instead of 403)."""
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "53400": 500,
        "57P01": 503,
        "P0001": 400,
        "42883": 404,
        "42P01": 404,
        "42P17": 500,
    }
    if sqlstate == "42501":
        return 403 if authenticated else 401
    if sqlstate == "22023":
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if sqlstate == "21000":
        return 400 if message.endswith("requires a WHERE clause") else 500
    if sqlstate in exact:
        return exact[sqlstate]
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    prefixes = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500,
        "38": 500, "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500,
        "57": 500, "58": 500, "F0": 500, "HV": 500, "P0": 500, "XX": 500,
    }  # fmt: skip
    return prefixes.get(sqlstate[:2], 400)


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class Column:
    name: str
    type_sql: str
    default_sql: str | None


@dataclass(frozen=True)
class Relation:
    """A table or view as the catalog describes it right now (looked up in every request)."""

    schema: str
    name: str
    columns: dict[str, Column]
    pk: tuple[str, ...]
    key: str = ""  # the catalog's description it was built from: equal keys, equal relations
    partitioned: bool = False  # xmax cannot be read from one in an upsert's RETURNING

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def column(self, name: str) -> Column:
        try:
            return self.columns[name]
        except KeyError:
            raise ApiError(
                400,
                "PGRST204",
                f"Could not find the '{name}' column of '{self.name}' in the schema cache",
            ) from None


# The relation as one JSON text: [[name, type, default expression, in primary key,
# partitioned table], ...]
# in column order, or NULL when there is no such table or view.
_RELATION_JSON_SQL = """
select json_agg(json_build_array(
         a.attname,
         format_type(a.atttypid, a.atttypmod),
         case
           when a.attgenerated <> '' then null
           when d.adbin is not null then pg_get_expr(d.adbin, d.adrelid)
           when a.attidentity <> '' then
             format('nextval(pg_get_serial_sequence(%L, %L))', c.oid::regclass::text, a.attname)
         end,
         coalesce(a.attnum = any(pk.conkey), false),
         c.relkind = 'p') order by a.attnum)::text
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
left join pg_constraint pk on pk.conrelid = c.oid and pk.contype = 'p'
where n.nspname = $3::text and c.relname = $4::text and c.relkind in ('r', 'p', 'v', 'm', 'f')
"""

_TABLE_NAMES_SQL = """
select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = $1::text and c.relkind in ('r', 'p', 'v', 'm', 'f') order by 1
"""

# One statement opens every request (``$1`` role, ``$2`` claims, ``$3``/``$4`` the
# relation, NULL when the request names none, ``$5`` the settings an ordinary role may
# set, read once per connection from pg_settings): the role's own ALTER ROLE ... SET
# settings (global first, then per database so those win, limited to ``$5``, as
# PostgREST applies them), then the role and the claims, then the relation as the
# catalog describes it right now. One round trip, prepared.
_PRELUDE_SQL = f"""
select
  (select count(set_config(s.name, s.value, true))
   from (
     select kv.name, kv.value
     from pg_db_role_setting d
     join pg_roles r on r.oid = d.setrole
     cross join lateral unnest(d.setconfig) as cfg
     cross join lateral (select split_part(cfg, '=', 1) as name,
                                substr(cfg, strpos(cfg, '=') + 1) as value) kv
     where r.rolname = $1::text and kv.name = any($5::text[])
       and d.setdatabase in (0, (select oid from pg_database where datname = current_database()))
     order by d.setdatabase
   ) s),
  set_config('role', $1::text, true),
  set_config('request.jwt.claims', $2::text, true),
  ({_RELATION_JSON_SQL})
"""

_USER_SETTINGS_SQL = (
    "select coalesce(array_agg(name), '{}') from pg_settings where context = 'user'"
)

_RELATIONS_CACHED = 256
_relations: dict[tuple[str, str, str], Relation] = {}
_relations_lock = threading.Lock()


def relation_from_json(schema: str, name: str, text: str) -> Relation:
    """The :class:`Relation` that ``_RELATION_JSON_SQL`` described (parsed once per text)."""
    key = (schema, name, text)
    rel = _relations.get(key)
    if rel is None:
        rows = json.loads(text)
        columns = {r[0]: Column(r[0], r[1], r[2]) for r in rows}
        pk = tuple(r[0] for r in rows if r[3])
        rel = Relation(schema, name, columns, pk, text, any(r[4] for r in rows))
        with _relations_lock:
            if len(_relations) >= _RELATIONS_CACHED:
                _relations.clear()
            _relations[key] = rel
    return rel


def missing_relation(conn: psycopg.Connection[Any], schema: str, name: str) -> ApiError:
    """PGRST205 for a table the catalog does not have, with PostgREST's suggestion."""
    rows = psycopg.RawCursor(conn).execute(_TABLE_NAMES_SQL, (schema,)).fetchall()
    close = difflib.get_close_matches(name, [r[0] for r in rows], n=1, cutoff=0.75)
    return ApiError(
        404,
        "PGRST205",
        f"Could not find the table '{schema}.{name}' in the schema cache",
        hint=f"Perhaps you meant the table '{schema}.{close[0]}'" if close else None,
    )


# --------------------------------------------------------------------------- query-string grammar


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside parentheses and double quotes."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    current: list[str] = []
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == sep:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def unquote_value(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


_ARROW = re.compile(r"(->>?)")
_CAST = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]*(\[\])?")


def column_ref(text: str, qualifier: sql.Composable) -> tuple[sql.Composable, str]:
    """``col`` or ``col->key->>key`` -> (SQL expression, output name)."""
    parts = _ARROW.split(text.strip())
    base = unquote_value(parts[0].strip())
    if not base:
        raise _bad_request(f'"failed to parse column reference ({text})"')
    expr: sql.Composable = sql.SQL("{}.{}").format(qualifier, sql.Identifier(base))
    name = base
    for arrow, raw_key in zip(parts[1::2], parts[2::2], strict=True):
        key = unquote_value(raw_key.strip())
        literal = sql.Literal(int(key)) if re.fullmatch(r"-?\d+", key) else sql.Literal(key)
        expr = sql.SQL("({} {} {})").format(expr, sql.SQL(arrow), literal)
        name = key
    return expr, name


def compile_select(param: str | None, rel: Relation, qualifier: sql.Composable) -> sql.Composable:
    items: list[sql.Composable] = []
    for raw in split_top_level(param if param else "*"):
        item = raw.strip()
        if item == "*":
            items.extend(
                sql.SQL("{}.{} AS {}").format(qualifier, sql.Identifier(c), sql.Identifier(c))
                for c in rel.columns
            )
            continue
        if not item:
            continue
        if "(" in item or "!" in item or "..." in item:
            raise _bad_request(
                f'"failed to parse select parameter ({param})"',
                "resource embedding and spreads are not supported by the test gateway",
            )
        cast = None
        if "::" in item:
            item, cast = item.rsplit("::", 1)
            if not _CAST.fullmatch(cast):
                raise _bad_request(f'"failed to parse select parameter ({param})"')
        alias = None
        head, colon, rest = item.partition(":")
        if colon and "->" not in head:
            alias, item = head.strip(), rest
        expr, name = column_ref(item, qualifier)
        if cast:
            expr = sql.SQL("CAST({} AS {})").format(expr, sql.SQL(cast))
        items.append(sql.SQL("{} AS {}").format(expr, sql.Identifier(alias or name)))
    if not items:
        raise _bad_request(f'"failed to parse select parameter ({param})"')
    return sql.SQL(", ").join(items)


_BINARY_OPS = {
    "eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
    "like": "LIKE", "ilike": "ILIKE", "match": "~", "imatch": "~*",
    "cs": "@>", "cd": "<@", "ov": "&&", "isdistinct": "IS DISTINCT FROM",
}  # fmt: skip
_IS_VALUES = {
    "null": "NULL",
    "not_null": "NOT NULL",
    "true": "TRUE",
    "false": "FALSE",
    "unknown": "UNKNOWN",
}


def compile_condition(
    field_text: str, op_text: str, qualifier: sql.Composable, *, in_logic_tree: bool = False
) -> sql.Composable:
    """``field`` + ``[not.]op.value`` -> a SQL boolean expression."""
    negate = op_text.startswith("not.")
    if negate:
        op_text = op_text[4:]
    op, dot, value = op_text.partition(".")
    if not dot or (op not in _BINARY_OPS and op not in ("in", "is")):
        raise _bad_request(f'"failed to parse filter ({op_text})"', f"unknown operator {op!r}")
    lhs, _ = column_ref(unquote_value(field_text), qualifier)
    if in_logic_tree and op != "in":
        value = unquote_value(value)
    cond: sql.Composable
    if op == "is":
        keyword = _IS_VALUES.get(value.lower())
        if keyword is None:
            raise _bad_request(f'"failed to parse filter (is.{value})"')
        cond = sql.SQL("{} IS {}").format(lhs, sql.SQL(keyword))
    elif op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise _bad_request(f'"failed to parse filter (in.{value})"')
        inner = value[1:-1]
        elements = [unquote_value(v.strip()) for v in split_top_level(inner)] if inner else []
        if elements:
            cond = sql.SQL("{} IN ({})").format(lhs, sql.SQL(", ").join(map(sql.Literal, elements)))
        else:
            cond = sql.SQL("FALSE")
    else:
        if op in ("like", "ilike"):
            value = value.replace("*", "%")
        cond = sql.SQL("{} {} {}").format(lhs, sql.SQL(_BINARY_OPS[op]), sql.Literal(value))
    return sql.SQL("NOT ({})").format(cond) if negate else cond


def compile_logic(op: str, body: str, qualifier: sql.Composable) -> sql.Composable:
    """``or=(a.eq.1,and(b.gt.2,c.is.null))`` -> SQL."""
    negate = op.startswith("not.")
    joiner = op[4:] if negate else op
    if joiner not in ("and", "or") or not (body.startswith("(") and body.endswith(")")):
        raise _bad_request(f'"failed to parse logic tree ({body})"')
    parts: list[sql.Composable] = []
    for raw in split_top_level(body[1:-1]):
        item = raw.strip()
        match = re.match(r"^(not\.)?(and|or)(\(.*\))$", item, re.S)
        if match:
            parts.append(
                compile_logic((match.group(1) or "") + match.group(2), match.group(3), qualifier)
            )
            continue
        field_text, dot, op_text = item.partition(".")
        if not dot:
            raise _bad_request(f'"failed to parse logic tree ({body})"')
        parts.append(compile_condition(field_text, op_text, qualifier, in_logic_tree=True))
    if not parts:
        raise _bad_request(f'"failed to parse logic tree ({body})"')
    tree = sql.SQL("({})").format(sql.SQL(f" {joiner.upper()} ").join(parts))
    return sql.SQL("NOT {}").format(tree) if negate else tree


def compile_where(params: list[tuple[str, str]], qualifier: sql.Composable) -> sql.Composable:
    conditions: list[sql.Composable] = []
    for key, value in params:
        if key in RESERVED_PARAMS:
            continue
        if key in ("or", "and", "not.or", "not.and"):
            conditions.append(compile_logic(key, value, qualifier))
        else:
            conditions.append(compile_condition(key, value, qualifier))
    if not conditions:
        return sql.SQL("TRUE")
    return sql.SQL(" AND ").join(conditions)


_ORDER_MODIFIERS = {
    "asc": "ASC",
    "desc": "DESC",
    "nullsfirst": "NULLS FIRST",
    "nullslast": "NULLS LAST",
}


def compile_order(param: str, qualifier: sql.Composable) -> sql.Composable:
    """``col.desc.nullslast,other`` -> ORDER BY terms."""
    terms: list[sql.Composable] = []
    for raw in split_top_level(param):
        pieces = raw.strip().split(".")
        modifiers: list[str] = []
        while len(pieces) > 1 and pieces[-1] in _ORDER_MODIFIERS and len(modifiers) < 2:
            modifiers.insert(0, _ORDER_MODIFIERS[pieces.pop()])
        field_text = ".".join(pieces)
        if not field_text:
            raise _bad_request(f'"failed to parse order ({param})"')
        expr, _ = column_ref(field_text, qualifier)
        terms.append(sql.SQL(" ").join([expr, *map(sql.SQL, modifiers)]))
    return sql.SQL(", ").join(terms)


def parse_non_negative_int(name: str, value: str) -> int:
    if not re.fullmatch(r"\d+", value):
        raise _bad_request(f'"failed to parse {name} parameter ({value})"')
    return int(value)


def parse_columns_param(value: str) -> list[str]:
    columns = [unquote_value(c.strip()) for c in split_top_level(value)]
    if any(not c for c in columns):
        raise _bad_request(f'"failed to parse columns parameter ({value})"')
    return columns


def parse_prefer(values: Sequence[str]) -> dict[str, str]:
    prefs: dict[str, str] = {}
    for header in values:
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            if key:
                prefs.setdefault(key.strip().lower(), value.strip().lower())
    return prefs


def content_range(lower: int, upper: int, total: int | None) -> str:
    total_text = "*" if total is None else str(total)
    if total != 0 and lower <= upper:
        return f"{lower}-{upper}/{total_text}"
    return f"*/{total_text}"


# --------------------------------------------------------------------------- request / reply


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    rows: int | None = None  # rows in the request body, when the database counted them


class _StatementCache:
    """SQL text built once per shape of request (bounded; shared by the handler threads)."""

    def __init__(self, limit: int = 512) -> None:
        self._limit = limit
        self._items: dict[tuple[Any, ...], bytes] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        return key in self._items

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        return self._items.get(key)

    def put(self, key: tuple[Any, ...], query: bytes) -> None:
        with self._lock:
            if len(self._items) >= self._limit:
                self._items.clear()
            self._items[key] = query


def _json_reply(
    status: int, body_text: str | None, headers: Sequence[tuple[str, str]] = ()
) -> Reply:
    if body_text is None:
        return Reply(status, b"", list(headers))
    return Reply(status, body_text.encode("utf-8"), [("Content-Type", JSON_CONTENT_TYPE), *headers])


@dataclass
class Request:
    method: str
    path: str
    params: list[tuple[str, str]]
    headers: Any  # email.message.Message: case-insensitive, keeps duplicates
    body: bytes

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None

    @functools.cached_property
    def prefer(self) -> dict[str, str]:
        return parse_prefer(self.headers.get_all("Prefer") or [])

    @property
    def wants_single_object(self) -> bool:
        return SINGLE_OBJECT_MEDIA in (self.headers.get("Accept") or "")

    def body_rows(self) -> int:
        """Number of rows in a JSON array body, else 1 (for the request log)."""
        if self.body.lstrip()[:1] == b"[":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                value = json.loads(self.body)
                if isinstance(value, list):
                    return len(value)
        return 1


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def parse_json_body(body: bytes) -> Any:
    """Strict JSON (no NaN/Infinity), or PGRST102 as PostgREST answers."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "PGRST102", "Empty or invalid json") from None


# --------------------------------------------------------------------------- the PostgREST part


@dataclass
class Identity:
    role: str
    claims: dict[str, Any]
    authenticated: bool  # False for the anonymous role: 42501 then answers 401


class _Session:
    """One handler thread's lazily opened database connection as ``authenticator``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.conn: psycopg.Connection[Any] | None = None
        self.user_settings: list[str] = []

    def connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            try:
                conn = psycopg.connect(
                    self.gateway.dsn,
                    autocommit=True,
                    prepare_threshold=None,
                    connect_timeout=self.gateway.db_connect_timeout_s,
                    application_name="postgrest-test-gateway",
                )
                row = conn.execute(_USER_SETTINGS_SQL).fetchone()
                self.user_settings = list(row[0]) if row else []
                self.conn = conn
            except psycopg.OperationalError as exc:
                raise ApiError(
                    503,
                    "PGRST000",
                    "Database connection error. Retrying the connection.",
                    str(exc).strip(),
                ) from None
        return self.conn

    def discard(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def run(self, identity: Identity, work: Callable[[psycopg.Connection[Any]], Reply]) -> Reply:
        """Run ``work`` in one transaction as the identity's role; map database errors."""
        return self._run(identity, None, lambda conn, _rel: work(conn))

    def run_on(
        self,
        identity: Identity,
        schema: str,
        name: str,
        work: Callable[[psycopg.Connection[Any], Relation], Reply],
    ) -> Reply:
        """Like :meth:`run`, with the relation ``schema.name`` looked up in the same round
        trip that sets the role (PGRST205 when the catalog has no such table)."""

        def on_relation(conn: psycopg.Connection[Any], rel: Relation | None) -> Reply:
            assert rel is not None
            return work(conn, rel)

        return self._run(identity, (schema, name), on_relation)

    def _run(
        self,
        identity: Identity,
        target: tuple[str, str] | None,
        work: Callable[[psycopg.Connection[Any], Relation | None], Reply],
    ) -> Reply:
        conn = self.connection()
        schema, name = target if target is not None else (None, None)
        try:
            with conn.transaction():
                row = (
                    psycopg.RawCursor(conn)
                    .execute(
                        _PRELUDE_SQL,
                        (
                            identity.role,
                            json.dumps(identity.claims),
                            schema,
                            name,
                            self.user_settings,
                        ),
                        prepare=True,
                    )
                    .fetchone()
                )
                rel: Relation | None = None
                if target is not None:
                    assert schema is not None and name is not None and row is not None
                    if row[3] is None:
                        raise missing_relation(conn, schema, name)
                    rel = relation_from_json(schema, name, row[3])
                return work(conn, rel)
        except psycopg.Error as exc:
            if conn.closed or conn.broken:
                self.discard()
            raise self._api_error(exc, identity) from None

    @staticmethod
    def _api_error(exc: psycopg.Error, identity: Identity) -> ApiError:
        sqlstate = exc.sqlstate
        if sqlstate is None:
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                return ApiError(
                    503,
                    "PGRST001",
                    "Database client error. Retrying the connection.",
                    str(exc).strip(),
                )
            return ApiError(400, "22P05" if "NUL" in str(exc) else "PGRSTX00", str(exc).strip())
        diag = exc.diag
        message = diag.message_primary or str(exc).strip()
        status = http_status_for_sqlstate(sqlstate, message, authenticated=identity.authenticated)
        headers = [("WWW-Authenticate", "Bearer")] if status == 401 else []
        return ApiError(status, sqlstate, message, diag.message_detail, diag.message_hint, headers)


def _count_clause(prefer: dict[str, str]) -> bool:
    return prefer.get("count") in ("exact", "planned", "estimated")


class _Api:
    """Translates one HTTP request into SQL on a :class:`_Session`."""

    def __init__(self, gateway: Gateway, session: _Session, request: Request) -> None:
        self.gateway = gateway
        self.session = session
        self.request = request

    # ---------------------------------------------------------------- entry

    def handle(self) -> Reply:
        request = self.request
        if not (request.path == REST_PREFIX or request.path.startswith(REST_PREFIX + "/")):
            return _json_reply(404, json.dumps({"message": "no Route matched with those values"}))
        identity = self.authenticate()
        schema = self.schema()
        resource = request.path[len(REST_PREFIX) :].strip("/")
        if not resource:
            if request.method in ("GET", "HEAD"):
                return self.session.run(identity, lambda conn: self.openapi(conn, schema))
            raise ApiError(405, "PGRST117", f"Unsupported HTTP method: {request.method}")
        if resource.startswith("rpc/"):
            name = resource[4:]
            if request.method not in ("GET", "HEAD", "POST"):
                raise ApiError(405, "PGRST101", f"Cannot use the {request.method} method on RPC")
            return self.session.run(identity, lambda conn: self.call(conn, schema, name))
        if "/" in resource:
            raise ApiError(404, "PGRST125", "Invalid path specified in request URL")
        handlers = {
            "GET": self.read,
            "HEAD": self.read,
            "POST": self.insert,
            "PATCH": self.update,
            "DELETE": self.delete,
        }
        handler = handlers.get(request.method)
        if handler is None:
            raise ApiError(405, "PGRST117", f"Unsupported HTTP method: {request.method}")
        return self.session.run_on(identity, schema, resource, handler)

    def authenticate(self) -> Identity:
        headers = self.request.headers
        token: str | None = None
        authorization = headers.get("Authorization")
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                token = value.strip()
                if not token:
                    raise self._jwt_error(
                        jwt.JWTError("PGRST301", "Empty JWT is sent in Authorization header")
                    )
        if token is None:  # Supabase's API gateway also takes the key as a header or ?apikey=
            token = headers.get("apikey") or self.request.param("apikey")
        anon = self.gateway.anon_role
        if token is None:
            return Identity(anon, {"role": anon}, authenticated=False)
        opaque_role = self.gateway.opaque_keys.get(token)
        if opaque_role is not None:
            claims: dict[str, Any] = {"iss": "supabase", "role": opaque_role}
        else:
            try:
                claims = jwt.decode(token, self.gateway.jwt_secret)
            except jwt.JWTError as exc:
                raise self._jwt_error(exc) from None
        role = claims.get("role", anon)
        if not isinstance(role, str) or not role:
            role = anon
        return Identity(role, claims, authenticated=role != anon)

    @staticmethod
    def _jwt_error(exc: jwt.JWTError) -> ApiError:
        challenge = f'Bearer error="invalid_token", error_description={json.dumps(exc.message)}'
        return ApiError(401, exc.code, exc.message, headers=[("WWW-Authenticate", challenge)])

    def schema(self) -> str:
        header = "Accept-Profile" if self.request.method in ("GET", "HEAD") else "Content-Profile"
        value = self.request.headers.get(header)
        schemas = self.gateway.schemas
        schema = value.strip() if value else schemas[0]
        if schema not in schemas:
            raise ApiError(
                406,
                "PGRST106",
                f"Invalid schema: {schema}",
                hint=f"Only the following schemas are exposed: {', '.join(schemas)}",
            )
        return schema

    # ---------------------------------------------------------------- reads

    def read(self, conn: psycopg.Connection[Any], rel: Relation) -> Reply:
        request = self.request
        qualifier = sql.Identifier(rel.name)
        select = compile_select(request.param("select"), rel, qualifier)
        where = compile_where(request.params, qualifier)
        query = sql.SQL("SELECT {} FROM {} WHERE {}").format(select, rel.ident, where)
        order = request.param("order")
        if order:
            query = sql.SQL("{} ORDER BY {}").format(query, compile_order(order, qualifier))
        limit = request.param("limit")
        offset = parse_non_negative_int("offset", request.param("offset") or "0")
        if limit is not None:
            query = sql.SQL("{} LIMIT {}").format(
                query, sql.Literal(parse_non_negative_int("limit", limit))
            )
        if offset:
            query = sql.SQL("{} OFFSET {}").format(query, sql.Literal(offset))
        body, first, returned = self._aggregate(conn, query)
        total: int | None = None
        if _count_clause(request.prefer):
            count_query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(rel.ident, where)
            row = conn.execute(count_query).fetchone()
            total = int(row[0]) if row else 0
        if total is not None and offset > total:
            raise ApiError(
                416,
                "PGRST103",
                "Requested range not satisfiable",
                f"An offset of {offset} was requested, but there are only {total} rows.",
                headers=[("Content-Range", f"*/{total}")],
            )
        status = 206 if total is not None and returned < total else 200
        headers = [("Content-Range", content_range(offset, offset + returned - 1, total))]
        if request.wants_single_object:
            self._require_single(returned)
            body = first
        return _json_reply(status, body, headers)

    @staticmethod
    def _aggregate(conn: psycopg.Connection[Any], query: sql.Composable) -> tuple[str, str, int]:
        wrapped = sql.SQL(
            "SELECT coalesce(json_agg(_pgrst_row), '[]')::text, (json_agg(_pgrst_row) -> 0)::text, count(*)"
            " FROM ({}) _pgrst_row"
        ).format(query)
        row = conn.execute(wrapped).fetchone()
        assert row is not None
        return row[0], row[1], int(row[2])

    @staticmethod
    def _require_single(rows: int) -> None:
        if rows != 1:
            raise ApiError(
                406,
                "PGRST116",
                "Cannot coerce the result to a single JSON object",
                f"The result contains {rows} rows",
            )

    # ---------------------------------------------------------------- writes

    def _returning(
        self,
        conn: psycopg.Connection[Any],
        rel: Relation,
        mutation: sql.Composable,
        *,
        count_inserted: bool = False,
        payload_type: str = "json",
        cache_key: tuple[Any, ...] | None = None,
    ) -> tuple[str | None, str | None, int, int, int | None]:
        """Run ``WITH _pgrst_payload ..., _pgrst_mut AS (<mutation> RETURNING ...)`` with
        the request body as the one parameter ``$1`` and return (JSON array or None, first
        object or None, affected rows, inserted rows, elements in the body or None).

        ``return=minimal`` returns no columns, so it needs no SELECT privilege. With a
        ``cache_key`` (which must determine the statement) the SQL text is built once and
        the statement is prepared on the connection."""
        request = self.request
        representation = (
            request.prefer.get("return") == "representation" or request.wants_single_object
        )
        query = self.gateway._statements.get(cache_key) if cache_key is not None else None
        if query is None:
            query = self._returning_sql(
                conn, rel, mutation, representation, count_inserted, payload_type
            )
            if cache_key is not None:
                self.gateway._statements.put(cache_key, query)
        row = (
            psycopg.RawCursor(conn)
            .execute(query, (self._payload_text(),), prepare=cache_key is not None)
            .fetchone()
        )
        assert row is not None
        body, first, affected, inserted, source_rows = row
        if request.wants_single_object:
            self._require_single(int(affected))
        rows = None if source_rows is None else int(source_rows)
        return (body if representation else None), first, int(affected), int(inserted), rows

    def _returning_sql(
        self,
        conn: psycopg.Connection[Any],
        rel: Relation,
        mutation: sql.Composable,
        representation: bool,
        count_inserted: bool,
        payload_type: str,
    ) -> bytes:
        inserted_expr = (
            sql.SQL(", ({}.xmax = 0) AS _pgrst_inserted").format(sql.Identifier(rel.name))
            if count_inserted and not rel.partitioned
            else sql.SQL(", TRUE AS _pgrst_inserted")
        )
        returning: sql.Composable
        body_expr: sql.Composable
        if representation:
            returning = sql.SQL("RETURNING {}.*{}").format(sql.Identifier(rel.name), inserted_expr)
            select = compile_select(self.request.param("select"), rel, sql.Identifier("_pgrst_mut"))
            body_expr = sql.SQL(
                "(SELECT coalesce(json_agg(_pgrst_row), '[]')::text FROM (SELECT {} FROM _pgrst_mut) _pgrst_row),"
                " (SELECT (json_agg(_pgrst_row) -> 0)::text FROM (SELECT {} FROM _pgrst_mut) _pgrst_row)"
            ).format(select, select)
        else:
            returning = sql.SQL("RETURNING 1 AS _pgrst_one{}").format(inserted_expr)
            body_expr = sql.SQL("NULL::text, NULL::text")
        # jsonb knows an array's length without reading it: the request log's row count.
        body_rows = sql.SQL(
            "(SELECT CASE WHEN jsonb_typeof(j) = 'array' THEN jsonb_array_length(j) ELSE 1 END"
            " FROM _pgrst_payload)"
            if payload_type == "jsonb"
            else "NULL::int"
        )
        query = sql.SQL(
            "WITH _pgrst_payload AS (SELECT $1::{} AS j), _pgrst_mut AS ({} {})"
            " SELECT {}, (SELECT count(*) FROM _pgrst_mut),"
            " (SELECT count(*) FILTER (WHERE _pgrst_inserted) FROM _pgrst_mut), {}"
        ).format(sql.SQL(payload_type), mutation, returning, body_expr, body_rows)
        return query.as_bytes(conn)

    def _payload_text(self) -> str:
        if self.request.method == "DELETE":
            return "{}"
        try:
            return self.request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "PGRST102", "Empty or invalid json") from None

    def _payload_columns(self, rel: Relation) -> list[str]:
        """Columns a POST/PATCH writes: the ``columns`` parameter, else the body's keys
        (which must be the same for every row)."""
        columns_param = self.request.param("columns")
        if columns_param is not None:
            columns = parse_columns_param(columns_param)
        else:
            payload = parse_json_body(self.request.body)
            if not isinstance(payload, (list, dict)):
                raise ApiError(400, "PGRST102", "Empty or invalid json")
            rows = payload if isinstance(payload, list) else [payload]
            if not rows:
                return []
            if not isinstance(rows[0], dict):
                raise ApiError(400, "PGRST102", "All object keys must match")
            keys = list(rows[0].keys())
            key_set = set(keys)
            if any(not isinstance(r, dict) or set(r.keys()) != key_set for r in rows):
                raise ApiError(400, "PGRST102", "All object keys must match")
            columns = keys
        for name in columns:
            rel.column(name)
        return list(dict.fromkeys(columns))

    def _mutation_headers(self, total: int | None, lower: int, upper: int) -> list[tuple[str, str]]:
        prefer = self.request.prefer
        applied = [
            f"{k}={prefer[k]}" for k in ("return", "resolution", "missing", "count") if k in prefer
        ]
        headers = [("Content-Range", content_range(lower, upper, total))]
        if applied:
            headers.append(("Preference-Applied", ", ".join(applied)))
        return headers

    def insert(self, conn: psycopg.Connection[Any], rel: Relation) -> Reply:
        request = self.request
        prefer = request.prefer
        columns = self._payload_columns(rel)
        missing_default = prefer.get("missing") == "default"
        resolution = prefer.get("resolution")
        on_conflict = request.param("on_conflict")
        merge = resolution == "merge-duplicates"
        cache_key = (
            "insert",
            rel.schema,
            rel.name,
            rel.key,
            tuple(columns),
            missing_default,
            resolution,
            on_conflict,
            prefer.get("return"),
            request.wants_single_object,
            request.param("select"),
        )
        mutation: sql.Composable = sql.SQL("")
        # jsonb is parsed once and is faster to take apart; json keeps a json column's
        # text exactly as sent, so it is used when the body writes one.
        kind = (
            "json"
            if any(
                rel.columns[c].type_sql.startswith("json") and rel.columns[c].type_sql != "jsonb"
                for c in columns
            )
            else "jsonb"
        )
        if cache_key not in self.gateway._statements:
            mutation = self._insert_sql(rel, columns, missing_default, kind)
            if resolution in ("ignore-duplicates", "merge-duplicates"):
                mutation = sql.SQL("{}{}").format(
                    mutation, self._on_conflict(rel, columns, on_conflict, resolution)
                )
        body, first, affected, inserted, rows = self._returning(
            conn, rel, mutation, count_inserted=merge, payload_type=kind, cache_key=cache_key
        )
        total = affected if _count_clause(prefer) else None
        status = 200 if merge and inserted <= 0 else 201
        if request.wants_single_object:
            body = first
        reply = _json_reply(status, body, self._mutation_headers(total, 1, 0))
        reply.rows = rows
        return reply

    @staticmethod
    def _insert_sql(
        rel: Relation, columns: list[str], missing_default: bool, kind: str
    ) -> sql.Composable:
        """The INSERT of the body's rows (``kind``: the body's type, json or jsonb). The body
        is one object or an array of objects; without ``missing=default`` it is read by
        ``<kind>_to_recordset`` with the columns' types, as PostgREST does."""
        fn = sql.SQL(kind)
        definitions = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(rel.columns[c].type_sql))
            for c in columns
        )
        uniform = sql.SQL(
            "CASE WHEN {fn}_typeof(_pgrst_payload.j) = 'array'"
            " THEN _pgrst_payload.j ELSE {fn}_build_array(_pgrst_payload.j) END"
        ).format(fn=fn)
        targets = sql.SQL(", ").join(map(sql.Identifier, columns))
        defaults = missing_default and any(rel.columns[c].default_sql is not None for c in columns)
        if columns and not defaults:
            return sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM _pgrst_payload,"
                " {}_to_recordset({}) AS _pgrst_body({})"
            ).format(
                rel.ident,
                targets,
                sql.SQL(", ").join(
                    sql.SQL("_pgrst_body.{}").format(sql.Identifier(c)) for c in columns
                ),
                fn,
                uniform,
                definitions,
            )
        # Per element, in order: a key missing from an element takes the column's default.
        source = sql.SQL(
            "FROM _pgrst_payload, {}_array_elements({}) WITH ORDINALITY AS _pgrst_elem(doc, ord)"
        ).format(fn, uniform)
        if not columns:
            return sql.SQL("INSERT INTO {} SELECT {} ORDER BY _pgrst_elem.ord").format(
                rel.ident, source
            )
        values: list[sql.Composable] = []
        for name in columns:
            column = rel.columns[name]
            value: sql.Composable = sql.SQL("_pgrst_body.{}").format(sql.Identifier(name))
            if column.default_sql is not None:
                value = sql.SQL(
                    "CASE WHEN _pgrst_elem.doc -> {} IS NULL THEN CAST(({}) AS {}) ELSE {} END"
                ).format(
                    sql.Literal(name), sql.SQL(column.default_sql), sql.SQL(column.type_sql), value
                )
            values.append(value)
        return sql.SQL(
            "INSERT INTO {} ({}) SELECT {} {}, {}_to_record(_pgrst_elem.doc) AS _pgrst_body({})"
            " ORDER BY _pgrst_elem.ord"
        ).format(rel.ident, targets, sql.SQL(", ").join(values), source, fn, definitions)

    @staticmethod
    def _on_conflict(
        rel: Relation, columns: list[str], on_conflict: str | None, resolution: str
    ) -> sql.Composable:
        target = parse_columns_param(on_conflict) if on_conflict else list(rel.pk)
        if not target:
            raise _bad_request("on_conflict requires a primary key or an on_conflict parameter")
        conflict = sql.SQL(" ON CONFLICT ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, target))
        )
        if resolution == "ignore-duplicates" or not columns:
            return sql.SQL("{} DO NOTHING").format(conflict)
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in columns
        )
        return sql.SQL("{} DO UPDATE SET {}").format(conflict, assignments)

    def update(self, conn: psycopg.Connection[Any], rel: Relation) -> Reply:
        request = self.request
        if request.param("columns") is None and not isinstance(parse_json_body(request.body), dict):
            raise ApiError(400, "PGRST102", "Empty or invalid json")
        columns = self._payload_columns(rel)
        where = compile_where(request.params, sql.Identifier(rel.name))
        if not columns:  # an empty object updates nothing
            headers = self._mutation_headers(None, 0, -1)
            if request.prefer.get("return") == "representation":
                return _json_reply(200, "[]", headers)
            return Reply(204, b"", headers)
        definitions = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(rel.columns[c].type_sql))
            for c in columns
        )
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = _pgrst_body.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in columns
        )
        mutation = sql.SQL(
            "UPDATE {} SET {} FROM _pgrst_payload, json_to_record(_pgrst_payload.j) AS _pgrst_body({}) WHERE {}"
        ).format(rel.ident, assignments, definitions, where)
        body, first, affected, _, _ = self._returning(conn, rel, mutation)
        total = affected if _count_clause(request.prefer) else None
        headers = self._mutation_headers(total, 0, affected - 1)
        if body is None:
            return Reply(204, b"", headers)
        return _json_reply(200, first if request.wants_single_object else body, headers)

    def delete(self, conn: psycopg.Connection[Any], rel: Relation) -> Reply:
        request = self.request
        where = compile_where(request.params, sql.Identifier(rel.name))
        mutation = sql.SQL("DELETE FROM {} WHERE {}").format(rel.ident, where)
        body, first, affected, _, _ = self._returning(conn, rel, mutation)
        total = affected if _count_clause(request.prefer) else None
        headers = self._mutation_headers(total, 1, 0)
        if body is None:
            return Reply(204, b"", headers)
        return _json_reply(200, first if request.wants_single_object else body, headers)

    # ---------------------------------------------------------------- rpc

    def call(self, conn: psycopg.Connection[Any], schema: str, name: str) -> Reply:
        request = self.request
        if request.method == "POST":
            args = parse_json_body(request.body) if request.body.strip() else {}
            payload_text = request.body.decode("utf-8") if request.body.strip() else "{}"
        else:
            args = {k: v for k, v in request.params if k not in RESERVED_PARAMS}
            payload_text = json.dumps(args)
        routine = self._find_routine(conn, schema, name, args)
        params: list[sql.Composable] = []
        definitions: list[sql.Composable] = []
        single_json = routine.single_unnamed_json
        if single_json:
            params.append(sql.SQL("_pgrst_payload.j::{}").format(sql.SQL(routine.inputs[0][1])))
        elif isinstance(args, dict):
            for arg_name, arg_type in routine.inputs:
                if arg_name in args:
                    params.append(
                        sql.SQL("{} => _pgrst_args.{}").format(
                            sql.Identifier(arg_name), sql.Identifier(arg_name)
                        )
                    )
                    definitions.append(
                        sql.SQL("{} {}").format(sql.Identifier(arg_name), sql.SQL(arg_type))
                    )
        call = sql.SQL("{}({})").format(sql.Identifier(schema, name), sql.SQL(", ").join(params))
        source: sql.Composable = sql.SQL("FROM _pgrst_payload")
        if definitions:
            source = sql.SQL("{}, json_to_record(_pgrst_payload.j) AS _pgrst_args({})").format(
                source, sql.SQL(", ").join(definitions)
            )
        prefix = sql.SQL("WITH _pgrst_payload AS (SELECT {}::json AS j) ").format(
            sql.Literal(payload_text)
        )
        if routine.returns_void:
            conn.execute(sql.SQL("{} SELECT {} {}").format(prefix, call, source))
            return Reply(204, b"", [])
        if routine.returns_set:
            query = sql.SQL(
                "{} SELECT coalesce(json_agg(_pgrst_row), '[]')::text {}, LATERAL {} AS _pgrst_row"
            ).format(prefix, source, call)
        else:
            query = sql.SQL("{} SELECT to_json({})::text {}").format(prefix, call, source)
        row = conn.execute(query).fetchone()
        return _json_reply(200, row[0] if row and row[0] is not None else "null")

    def _find_routine(
        self, conn: psycopg.Connection[Any], schema: str, name: str, args: Any
    ) -> _Routine:
        rows = conn.execute(_ROUTINES_SQL, (schema, name)).fetchall()
        keys = sorted(args.keys()) if isinstance(args, dict) else []
        candidates = [_Routine.from_row(r) for r in rows]
        for routine in candidates:
            if routine.accepts(keys):
                return routine
        for routine in candidates:
            if routine.single_unnamed_json:
                return routine
        described = f"{schema}.{name}" + (f"({', '.join(keys)})" if keys else " without parameters")
        params_text = (
            (" with parameter" + ("s " if len(keys) > 1 else " ") + ", ".join(keys))
            if keys
            else " without parameters"
        )
        raise ApiError(
            404,
            "PGRST202",
            f"Could not find the function {described} in the schema cache",
            f"Searched for the function {schema}.{name}{params_text}"
            f"{' or with a single unnamed json/jsonb parameter' if keys else ''},"
            " but no matches were found in the schema cache.",
        )

    # ---------------------------------------------------------------- openapi

    def openapi(self, conn: psycopg.Connection[Any], schema: str) -> Reply:
        rows = conn.execute(
            """
            select c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
            join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
            where n.nspname = %s and c.relkind in ('r', 'p', 'v', 'm', 'f')
            order by c.relname, a.attnum
            """,
            (schema,),
        ).fetchall()
        definitions: dict[str, dict[str, Any]] = {}
        for table, column, type_sql in rows:
            definitions.setdefault(table, {"type": "object", "properties": {}})["properties"][
                column
            ] = {"format": type_sql}
        document = {
            "swagger": "2.0",
            "info": {"title": "test gateway (PostgREST-compatible)", "version": "0"},
            "basePath": "/",
            "paths": {"/": {}, **{f"/{t}": {} for t in definitions}},
            "definitions": definitions,
        }
        return _json_reply(
            200, json.dumps(document), [("Content-Type", "application/openapi+json; charset=utf-8")]
        )


_ROUTINES_SQL = """
select p.proretset,
       p.prorettype = 'pg_catalog.void'::regtype,
       coalesce(p.proargnames, '{}'::text[]),
       coalesce(p.proargmodes::text[], '{}'::text[]),
       array(select format_type(t, null) from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]))
             with ordinality as x(t, i) order by i),
       p.pronargs,
       p.pronargdefaults
from pg_proc p join pg_namespace n on n.oid = p.pronamespace
where n.nspname = %s and p.proname = %s and p.prokind = 'f'
order by p.oid
"""


@dataclass(frozen=True)
class _Routine:
    returns_set: bool
    returns_void: bool
    inputs: tuple[tuple[str, str], ...]  # (name, type) of input arguments, in order
    required: frozenset[str]

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> _Routine:
        returns_set, returns_void, names, modes, types, nargs, ndefaults = row
        inputs: list[tuple[str, str]] = []
        for index, arg_type in enumerate(types):
            mode = modes[index] if modes else "i"
            if mode in ("i", "b", "v"):
                inputs.append((names[index] if index < len(names) else "", arg_type))
        required = frozenset(n for n, _ in inputs[: max(nargs - ndefaults, 0)])
        return cls(bool(returns_set), bool(returns_void), tuple(inputs), required)

    @property
    def single_unnamed_json(self) -> bool:
        return (
            len(self.inputs) == 1
            and not self.inputs[0][0]
            and self.inputs[0][1] in ("json", "jsonb")
        )

    def accepts(self, keys: Sequence[str]) -> bool:
        names = {n for n, _ in self.inputs if n}
        return set(keys) <= names and self.required <= set(keys) and all(n for n, _ in self.inputs)


# --------------------------------------------------------------------------- HTTP server


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "postgrest"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Idle keep-alive connections (and their database sessions) end after this long.
        self.connection.settimeout(self.server.gateway.idle_timeout_s)
        # Answers go out in one write; no waiting for the client's delayed ACK.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.session = _Session(self.server.gateway)
        self.server.register_handler(self)

    def finish(self) -> None:
        try:
            with contextlib.suppress(OSError):
                super().finish()
        finally:
            self.session.discard()
            self.server.unregister_handler(self)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PATCH = do_DELETE = do_PUT = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        gateway = self.server.gateway
        method = self.command
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        split = urlsplit(self.path)
        request = Request(
            method=method,
            path=unquote(split.path),
            params=parse_qsl(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
        )
        injected = gateway._take_injected_failure()
        if injected is not None:
            reply = injected
        elif method == "OPTIONS":
            reply = Reply(
                200,
                b"",
                [
                    ("Allow", "OPTIONS,GET,HEAD,POST,PATCH,DELETE"),
                    ("Access-Control-Allow-Origin", "*"),
                ],
            )
        else:
            try:
                reply = _Api(gateway, self.session, request).handle()
            except ApiError as exc:
                reply = exc.reply()
            except Exception as exc:  # a gateway bug: answer 500 rather than hanging the client
                log.exception("test gateway failed on %s %s", method, self.path)
                reply = ApiError(500, "PGRSTX00", f"test gateway error: {exc!r}").reply()
            delay = gateway.delay_response_s
            # The transaction has committed; hold the answer (the client may time out).
            # stop() ends the hold: the connection is then dropped unanswered (status 0).
            if delay > 0 and method in WRITE_METHODS and self.server.stopped.wait(delay):
                rows = reply.rows if reply.rows is not None else request.body_rows()
                gateway._record(RequestRecord(method, request.path, rows, 0, request.param("on_conflict")))
                self.close_connection = True
                return
        rows = reply.rows if reply.rows is not None else request.body_rows()
        gateway._record(
            RequestRecord(method, request.path, rows, reply.status, request.param("on_conflict"))
        )
        self._send(reply, head_only=method == "HEAD")

    def _send(self, reply: Reply, *, head_only: bool) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.status not in (204, 304) and not 100 <= reply.status < 200:
            self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        # end_headers() would write the head, then the body: one write instead.
        self._headers_buffer.append(b"\r\n")
        if not head_only and reply.status != 204:
            self._headers_buffer.append(reply.body)
        self.flush_headers()
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, gateway: Gateway, address: tuple[str, int]) -> None:
        self.gateway = gateway
        self.stopped = threading.Event()
        self._handlers: set[_Handler] = set()
        self._connections: set[socket.socket] = set()
        self._cond = threading.Condition()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer's reverse-DNS lookup of the host name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        with self._cond:
            self._connections.add(conn)
        return conn, address

    def shutdown_request(self, request: Any) -> None:
        with self._cond:
            self._connections.discard(request)
        super().shutdown_request(request)

    def register_handler(self, handler: _Handler) -> None:
        with self._cond:
            self._handlers.add(handler)

    def unregister_handler(self, handler: _Handler) -> None:
        with self._cond:
            self._handlers.discard(handler)
            self._cond.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client or stop() closed the connection
            return
        log.exception("test gateway: unhandled error for %s", client_address)

    def break_connections(self, deadline_s: float) -> None:
        """Shut down every open client connection and wait (bounded) for the handler
        threads to finish, which closes their database connections."""
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + deadline_s
        with self._cond:
            while self._handlers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning(
                        "test gateway: %d handler(s) still busy after stop()", len(self._handlers)
                    )
                    break
                self._cond.wait(remaining)


# --------------------------------------------------------------------------- public API


@dataclass
class _Failure:
    remaining: int
    status: int
    code: str
    message: str
    retry_after: float | int | None


class Gateway:
    """PostgREST-compatible ``/rest/v1`` on 127.0.0.1 in front of a real database.

    ``dsn`` is the ``authenticator`` role's DSN. ``url`` is what a user would configure
    as SUPABASE_URL; ``service_key`` / ``anon_key`` / ``authenticated_key`` are JWT
    API keys signed with ``jwt_secret``; ``secret_key`` / ``publishable_key`` are the
    opaque new-style keys (see ``opaque_keys``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        jwt_secret: str | None = None,
        schemas: Sequence[str] = ("public",),
        anon_role: str = "anon",
        host: str = "127.0.0.1",
        port: int = 0,
        start: bool = True,
        idle_timeout_s: float = 30.0,
        db_connect_timeout_s: int = 5,
    ) -> None:
        self.dsn = dsn
        self.jwt_secret = jwt_secret or secrets.token_urlsafe(32)
        if len(self.jwt_secret) < 32:
            raise ValueError("PostgREST requires a JWT secret of at least 32 characters")
        self.schemas = tuple(schemas)
        self.anon_role = anon_role
        self.host = host
        self.port = port
        self.idle_timeout_s = idle_timeout_s
        self.db_connect_timeout_s = db_connect_timeout_s
        keys = jwt.make_keys(self.jwt_secret)
        self.anon_key = keys.anon
        self.authenticated_key = keys.authenticated
        self.service_key = keys.service_role
        self.secret_key = f"sb_secret_{secrets.token_urlsafe(24)}"
        self.publishable_key = f"sb_publishable_{secrets.token_urlsafe(24)}"
        self.opaque_keys: dict[str, str] = {
            self.secret_key: "service_role",
            self.publishable_key: anon_role,
        }
        #: Seconds to hold the answer to a write request after its transaction commits.
        self.delay_response_s: float = 0.0
        self._lock = threading.Lock()
        self._logged = threading.Condition(self._lock)
        self._lifecycle = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: _Failure | None = None
        self._requests: list[RequestRecord] = []
        self._statements = _StatementCache()
        self._closed = False
        if start:
            self.start()

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("gateway has never been started")
        return f"http://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return self.url + REST_PREFIX

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Gateway:
        """Listen (again) on the same port; idempotent."""
        with self._lifecycle:
            if self._closed:
                raise RuntimeError("gateway is closed")
            if self._server is not None:
                return self
            server = _Server(self, (self.host, self.port))
            self.port = server.server_port
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name=f"test-gateway:{self.port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
            return self

    def stop(self) -> None:
        """A real outage: stop listening (new connections are refused) and break every
        open client connection, including keep-alive ones and held (delayed) answers."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            server.stopped.set()
            server.shutdown()
            server.server_close()
            server.break_connections(_SERVER_STOP_WAIT_S)
            if thread is not None:
                thread.join(_SERVER_STOP_WAIT_S)

    def close(self) -> None:
        """Stop for good."""
        self.stop()
        self._closed = True

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- faults and log

    def fail_next(
        self,
        n: int,
        status: int = 503,
        *,
        retry_after: float | int | None = None,
        code: str = "PGRST000",
        message: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` and a PostgREST error body,
        without touching the database (``Retry-After`` added when given)."""
        if message is None:
            message = (
                "Database connection error. Retrying the connection."
                if code == "PGRST000"
                else f"injected failure ({status})"
            )
        with self._lock:
            self._failure = _Failure(n, status, code, message, retry_after) if n > 0 else None

    def clear_faults(self) -> None:
        """Cancel ``fail_next`` and ``delay_response_s``."""
        with self._lock:
            self._failure = None
        self.delay_response_s = 0.0

    def _take_injected_failure(self) -> Reply | None:
        with self._lock:
            failure = self._failure
            if failure is None:
                return None
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failure = None
        headers: list[tuple[str, str]] = []
        if failure.retry_after is not None:
            headers.append(("Retry-After", str(failure.retry_after)))
        return ApiError(failure.status, failure.code, failure.message, headers=headers).reply()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every answered request so far (a copy), oldest first."""
        with self._lock:
            return list(self._requests)

    def reset_log(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._logged:
            self._requests.append(record)
            self._logged.notify_all()

    def wait_for_requests(self, count: int, timeout_s: float = 10.0) -> list[RequestRecord]:
        """Block until at least ``count`` requests are logged or ``timeout_s`` passes;
        returns the log either way."""
        with self._logged:
            self._logged.wait_for(lambda: len(self._requests) >= count, timeout_s)
            return list(self._requests)

    def headers_for(self, key: str | None = None) -> dict[str, str]:
        """``apikey`` + ``Authorization`` headers for raw HTTP calls (service key by default)."""
        token = key or self.service_key
        return {"apikey": token, "Authorization": f"Bearer {token}"}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stack.gateway DSN --port P --jwt-secret S``: serve until SIGTERM.

    Prints ``READY <url>`` once listening, so a parent can wait for it.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="stack.gateway")
    parser.add_argument("dsn")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--jwt-secret", required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Gateway(args.dsn, port=args.port, jwt_secret=args.jwt_secret) as gw:
        print(f"READY {gw.url}", flush=True)
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
