"""What a failed PostgreSQL call of the direct sink means: TransientError, SetupError or DataError.

The direct sink's twin of ``classify.py``: psycopg's exceptions and the
server's SQLSTATE are mapped once, here, with the same meaning the REST sink
gives the same SQLSTATE behind PostgREST. Connection trouble, timeouts,
serialisation failures, too many connections and a server shutting down
(classes 08, 40, 53, 57P0x, 57014, 55P03, 58) are retried; a missing table,
column, schema, database or privilege, or a refused login, needs a person
(SetupError, naming the fix); a refused value (22xxx, 23xxx, 54xxx, 21000,
P0001) is the rows' own fault, so delivery halves the group around it.
"""

from __future__ import annotations

from ..errors import DataError, DeliveryError, SetupError, TransientError
from .classify import FIX_GRANTS, FIX_MIGRATIONS

FIX_DB_URL = (
    "check SUPABASE_DB_URL: the connection string (user, password, host, port 6543 for the "
    "transaction pooler, database) from the project's Database settings"
)
_TRANSIENT_CLASSES = ("08", "40", "53", "58", "57P0", "55P03", "57014", "25P02", "XX")
_DATA_CLASSES = ("22", "23", "54")


def classify_pg(exc: BaseException, *, timed_out: bool = False) -> DeliveryError:
    """Map any failure of a psycopg call to the project's error kinds."""
    if isinstance(exc, DeliveryError):
        return exc
    if timed_out:
        return TransientError(f"PostgreSQL did not answer in time ({type(exc).__name__})", code="timeout")
    sqlstate = getattr(exc, "sqlstate", None)
    message = _message(exc)
    if not sqlstate:
        if isinstance(exc, (OSError, ConnectionError)) or _is_psycopg(exc, "OperationalError", "InterfaceError"):
            return TransientError(f"cannot reach PostgreSQL ({message})", code="network")
        if isinstance(exc, (ValueError, UnicodeError)):
            return DataError(f"the client refused the rows: {message}", code="client")
        return TransientError(f"unexpected {type(exc).__name__}: {message}", code="unexpected")
    return classify_sqlstate(sqlstate, message)


def classify_sqlstate(sqlstate: str, message: str) -> DeliveryError:
    """The error kind of a SQLSTATE answered by PostgreSQL (or by the pooler)."""
    if sqlstate.startswith(_TRANSIENT_CLASSES):
        return TransientError(message, code=sqlstate)
    if sqlstate.startswith(_DATA_CLASSES) or sqlstate in ("21000", "P0001"):
        return DataError(message, code=sqlstate)
    if sqlstate in ("42P01", "3F000"):
        return SetupError(f"the table is missing ({message})", fix=FIX_MIGRATIONS, code=sqlstate)
    if sqlstate == "42703":
        return SetupError(f"a column is missing ({message})", fix=FIX_MIGRATIONS, code=sqlstate)
    if sqlstate == "42501":
        return SetupError(f"permission denied ({message})", fix=FIX_GRANTS, code=sqlstate)
    if sqlstate.startswith("28") or sqlstate == "3D000":
        return SetupError(f"cannot log in ({message})", fix=FIX_DB_URL, code=sqlstate)
    if sqlstate.startswith(("42", "0A")):  # the table's shape is not what the handler writes
        return SetupError(f"the database refused the statement ({message})", fix=FIX_MIGRATIONS,
                          code=sqlstate)  # fmt: skip
    return TransientError(message, code=sqlstate)


def _message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return str(primary or exc).strip().splitlines()[0] if (primary or str(exc)) else type(exc).__name__


def _is_psycopg(exc: BaseException, *names: str) -> bool:
    return any(c.__module__.startswith("psycopg") and c.__name__ in names for c in type(exc).__mro__)
