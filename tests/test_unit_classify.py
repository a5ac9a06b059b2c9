"""Unit tests of ``supabase_log_handler.sinks.classify.classify`` and ``classify_response``."""

from __future__ import annotations

import datetime as dt
import email.utils

import httpx
import pytest
from postgrest.exceptions import APIError

from supabase_log_handler.errors import DataError, DeliveryError, SetupError, TransientError
from supabase_log_handler.sinks.classify import (
    FIX_KEY,
    FIX_MIGRATIONS,
    classify,
    classify_response,
    parse_retry_after,
)


def api_error(code: str | None, message: str = "server said no") -> APIError:
    """The exception postgrest-py raises for an error response."""
    return APIError({"message": message, "code": code, "hint": None, "details": None})


# -- client-side failures -----------------------------------------------------------------
_REQUEST = httpx.Request("POST", "https://x.supabase.co/rest/v1/logs")


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (httpx.ConnectError("connection refused", request=_REQUEST), TransientError, "network"),
        (httpx.ReadTimeout("read timed out", request=_REQUEST), TransientError, "timeout"),
        (httpx.ConnectTimeout("connect timed out", request=_REQUEST), TransientError, "timeout"),
        (httpx.WriteTimeout("write timed out", request=_REQUEST), TransientError, "timeout"),
        (httpx.PoolTimeout("pool timed out", request=_REQUEST), TransientError, "timeout"),
        (
            httpx.RemoteProtocolError("server disconnected", request=_REQUEST),
            TransientError,
            "network",
        ),
        (httpx.ReadError("reset", request=_REQUEST), TransientError, "network"),
        (ConnectionResetError(104, "reset by peer"), TransientError, "network"),
        (OSError(101, "network unreachable"), TransientError, "network"),
        (ValueError("Out of range float values are not JSON compliant"), DataError, "client"),
        (
            UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
            DataError,
            "client",
        ),
        (RuntimeError("something odd"), TransientError, "unexpected"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_client_side_failures(exc: BaseException, kind: type[DeliveryError], code: str) -> None:
    """Transport errors and timeouts are transient; client-side value refusals are data errors."""
    out = classify(exc)
    assert type(out) is kind
    assert out.code == code


def test_delivery_error_passes_through() -> None:
    """A DeliveryError is returned as it is."""
    err = SetupError("x", fix="y")
    assert classify(err) is err


# -- server responses (table) -------------------------------------------------------------
_TRANSIENT_STATUSES = [408, 425, 429, 500, 502, 503, 504, 520, 522, 524]
# (code, realistic HTTP status PostgREST sends with it)
_TRANSIENT_CODES = [
    ("08006", 503),
    ("08001", 503),
    ("40001", 500),
    ("40P01", 500),
    ("53300", 503),
    ("53100", 500),
    ("57014", 500),
    ("57P01", 503),
    ("55P03", 500),
    ("PGRST000", 503),
    ("PGRST001", 503),
    ("PGRST002", 503),
    ("PGRST003", 504),
]
_KEY_CASES = [
    ("", 401),
    ("", 403),
    ("42501", 401),
    ("42501", 403),
    ("PGRST301", 401),
    ("PGRST302", 401),
    ("PGRST303", 401),
]
_MIGRATION_CASES = [("PGRST204", 400), ("PGRST205", 404), ("42P01", 404), ("42703", 400), ("", 404)]
_DATA_CASES = [
    ("22P05", 400),
    ("23502", 400),
    ("23514", 400),
    ("22P02", 400),
    ("23503", 409),
    ("23505", 409),
    ("PGRST102", 400),
    ("54000", 500),
    ("54001", 500),
    ("P0001", 400),
    ("", 400),
    ("", 409),
    ("", 413),
    ("", 422),
]


@pytest.mark.parametrize("status", _TRANSIENT_STATUSES)
def test_transient_statuses(status: int) -> None:
    """408, 425, 429 and 5xx gateway statuses (no PostgREST code) are transient."""
    out = classify(api_error(None, "unavailable"), status=status)
    assert type(out) is TransientError
    assert out.status == status


@pytest.mark.parametrize(("code", "status"), _TRANSIENT_CODES)
@pytest.mark.parametrize("with_status", [True, False], ids=["status", "no-status"])
def test_transient_codes(code: str, status: int, with_status: bool) -> None:
    """Connection, serialisation, deadlock, resource and timeout codes are transient."""
    out = classify(api_error(code), status=status if with_status else None)
    assert type(out) is TransientError
    assert out.code == code


@pytest.mark.parametrize(("code", "status"), _KEY_CASES)
def test_permission_problems_are_setup_errors_with_key_fix(code: str, status: int) -> None:
    """401/403 and permission codes are SetupError telling the user to use the service role key."""
    out = classify(api_error(code or None, "permission denied for table logs"), status=status)
    assert type(out) is SetupError
    assert out.fix == FIX_KEY
    assert "SUPABASE_SERVICE_ROLE_KEY" in out.fix
    assert out.status == status


@pytest.mark.parametrize("code", ["42501", "PGRST301", "PGRST303"])
def test_permission_codes_without_status(code: str) -> None:
    """Permission codes alone (status unknown) give the key fix."""
    out = classify(api_error(code))
    assert type(out) is SetupError
    assert out.fix == FIX_KEY


@pytest.mark.parametrize(("code", "status"), _MIGRATION_CASES)
def test_missing_table_or_column_are_setup_errors_with_migrations_fix(
    code: str, status: int
) -> None:
    """Missing table/column codes (and a bare 404) are SetupError telling the user to migrate."""
    out = classify(api_error(code or None, "relation does not exist"), status=status)
    assert type(out) is SetupError
    assert out.fix == FIX_MIGRATIONS
    assert "supabase-log migrate" in out.fix


@pytest.mark.parametrize("code", ["PGRST204", "PGRST205", "42P01"])
def test_migration_codes_without_status(code: str) -> None:
    """Missing table/column codes alone (status unknown) give the migrations fix."""
    out = classify(api_error(code))
    assert type(out) is SetupError
    assert out.fix == FIX_MIGRATIONS


@pytest.mark.parametrize(("code", "status"), _DATA_CASES)
def test_refused_rows_are_data_errors(code: str, status: int) -> None:
    """Constraint, bad-value, NUL, payload-size and program-limit errors are DataError."""
    out = classify(api_error(code or None, "bad row"), status=status)
    assert type(out) is DataError
    assert out.message == "bad row"


@pytest.mark.parametrize(
    "code", ["22P05", "23502", "23514", "22P02", "23503", "23505", "PGRST102", "54000"]
)
def test_data_codes_without_status(code: str) -> None:
    """Data codes alone (status unknown) are DataError."""
    assert type(classify(api_error(code))) is DataError


def test_schema_not_exposed() -> None:
    """PGRST106 is a SetupError about exposing the schema."""
    out = classify(api_error("PGRST106"), status=406)
    assert type(out) is SetupError
    assert "SUPABASE_LOG_SCHEMA" in out.fix


def test_unexpected_4xx_is_setup_error() -> None:
    """An unexpected 4xx without a known code points at the URL."""
    out = classify_response("", "I'm a teapot", 418)
    assert type(out) is SetupError
    assert "SUPABASE_URL" in out.fix


def test_unknown_code_without_status_is_transient() -> None:
    """An unknown code with no status is treated as transient (retry, then spool)."""
    assert type(classify_response("XX999", "who knows", None)) is TransientError


def test_status_only_in_non_json_body_code() -> None:
    """A non-JSON error body (postgrest puts the HTTP status in code) with 503 is transient."""
    out = classify(api_error("503", "Service Unavailable"))
    assert type(out) is TransientError
    assert out.status == 503


@pytest.mark.parametrize(
    ("status", "kind", "fix"),
    [
        (400, DataError, None),
        (401, SetupError, FIX_KEY),
        (403, SetupError, FIX_KEY),
        (404, SetupError, FIX_MIGRATIONS),
        (409, DataError, None),
    ],
    ids=["400", "401", "403", "404", "409"],
)
def test_non_json_4xx_body_classified_by_status(
    status: int, kind: type[DeliveryError], fix: str | None
) -> None:
    """A 4xx whose body is not PostgREST JSON (code == str(status)) is classified by its status."""
    out = classify(api_error(str(status), "error page"), status=status)
    assert type(out) is kind
    if fix is not None:
        assert isinstance(out, SetupError) and out.fix == fix


# -- Retry-After ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0", 0.0), (" 2.5 ", 2.5), ("-4", 0.0), (None, None), ("", None), ("soon", None)],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    """Retry-After in seconds is read as a non-negative float; junk gives None."""
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date_in_future() -> None:
    """Retry-After as an HTTP date gives the seconds until then."""
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30)
    seconds = parse_retry_after(email.utils.format_datetime(when, usegmt=True))
    assert seconds is not None
    assert 27.0 <= seconds <= 30.5


def test_parse_retry_after_http_date_in_past() -> None:
    """Retry-After as a past HTTP date gives zero."""
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_retry_after_carried_on_transient_error() -> None:
    """A 429 with Retry-After yields a TransientError carrying retry_after_s."""
    out = classify(api_error(None, "rate limited"), status=429, retry_after="7")
    assert isinstance(out, TransientError)
    assert out.retry_after_s == 7.0
    assert out.status == 429


def test_retry_after_http_date_carried_on_transient_error() -> None:
    """A 503 with an HTTP-date Retry-After carries the seconds until that date."""
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=60)
    out = classify_response("", "down", 503, email.utils.format_datetime(when, usegmt=True))
    assert isinstance(out, TransientError)
    assert out.retry_after_s is not None and 57.0 <= out.retry_after_s <= 60.5


def test_no_retry_after_means_none() -> None:
    """Without a Retry-After header, retry_after_s is None."""
    out = classify(api_error("PGRST003"), status=504)
    assert isinstance(out, TransientError)
    assert out.retry_after_s is None
