"""The project's exceptions, and nothing else.

Third-party failures (httpx, postgrest, sqlite3) are translated into these at the
sink boundary, once, so the retry and spool logic reasons about three kinds of
trouble only::

    SupabaseLogHandlerError
    ├── ConfigurationError (also ValueError)   a setting is missing or malformed
    └── DeliveryError                          a sink could not store rows
        ├── TransientError                     try again later (outage, timeout, 5xx, 429)
        ├── SetupError                         the project is set up wrong (key, tables)
        └── DataError                          the database refused these rows
"""

from __future__ import annotations


class SupabaseLogHandlerError(Exception):
    """Base of every exception this package raises."""


class ConfigurationError(SupabaseLogHandlerError, ValueError):
    """A setting is missing or malformed; the message names the setting."""


class DeliveryError(SupabaseLogHandlerError):
    """A sink could not store what it was given.

    ``code`` is the server's error code (SQLSTATE, PGRST code or HTTP status)
    when there is one.
    """

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __str__(self) -> str:
        parts = [p for p in (self.code, self.message) if p]
        return ": ".join(parts) if parts else type(self).__name__


class TransientError(DeliveryError):
    """Worth retrying: connection trouble, timeouts, 408/429/5xx, serialisation failures."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after_s = retry_after_s


class SetupError(DeliveryError):
    """The Supabase project is not set up for logging: wrong key, missing table or column.

    Retrying does not help until a person acts; ``fix`` says what to do.
    """

    def __init__(
        self, message: str, *, fix: str, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.fix = fix


class DataError(DeliveryError):
    """The database refused the rows themselves (constraint, bad value, NUL byte)."""
