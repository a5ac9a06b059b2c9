"""supabase-log-handler: every job run as a ``runs`` row, its logging as ``logs`` rows.

Attach :class:`SupabaseHandler` (dictConfig, ``install()``, or the
``supabase-log run`` wrapper) and ordinary ``logging`` calls, yours and your
libraries', land in Supabase through a background queue. ``start_run`` records
one execution with its status, duration and metrics.

Data flow, one module per stage::

    handler.emit -> snapshot -> queue (intake) -> worker (rows) -> ledger slot -> sender
        -> delivery -> sinks/        spool beside worker and sender; ledger owns every row
    runs.py, context.py (run lifecycle) and lifecycle.py (exit, signals, fork) beside them.
    integrations.py (calls to external services: integration_logs rows through the same
    pipeline) and integrations_http.py (httpx and requests instrumentation) beside runs.
"""

from __future__ import annotations

from .call_values import entity_uuid
from .config import Settings, load_settings
from .errors import (
    ConfigurationError,
    DataError,
    DeliveryError,
    SetupError,
    SupabaseLogHandlerError,
    TransientError,
)
from .handler import SupabaseHandler
from .installer import install
from .integrations import Call, call_before_sleep, current_call, record_call
from .integrations_http import instrument_httpx, instrument_requests
from .pools import join_run, pool_options
from .read import get_logs, get_run, last_successful_run
from .runlog import RunLogger
from .runs import (
    ANALYZE,
    END,
    ERROR,
    FETCH,
    LOAD,
    MERGE,
    PROCESS,
    SAVE,
    START,
    STEPS,
    UPSERT,
    VALIDATE,
    Run,
    start_run,
)
from .watch.declare import declare_schedule

__version__ = "0.1.0"

__all__ = [
    "ANALYZE",
    "END",
    "ERROR",
    "FETCH",
    "LOAD",
    "MERGE",
    "PROCESS",
    "SAVE",
    "START",
    "STEPS",
    "UPSERT",
    "VALIDATE",
    "Call",
    "ConfigurationError",
    "DataError",
    "DeliveryError",
    "Run",
    "RunLogger",
    "Settings",
    "SetupError",
    "SupabaseHandler",
    "SupabaseLogHandlerError",
    "TransientError",
    "__version__",
    "call_before_sleep",
    "current_call",
    "declare_schedule",
    "entity_uuid",
    "get_logs",
    "get_run",
    "install",
    "instrument_httpx",
    "instrument_requests",
    "join_run",
    "last_successful_run",
    "load_settings",
    "pool_options",
    "record_call",
    "start_run",
]
