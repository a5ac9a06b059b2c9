"""The settings table: every keyword, its environment variable, kind and default.

``config.py`` reads and validates them; the README's and docs/configuration.md's
tables are this table (a test keeps them in step).
"""

from __future__ import annotations

from typing import Any, NamedTuple

DEFAULT_EXCLUDED_LOGGERS = ""  # the handler's own requests are recognised by thread, not by name


class Field(NamedTuple):
    env: str
    kind: str  # str | bool | int | float | choice
    default: Any
    choices: tuple[str, ...] = ()
    doc: str = ""
    zero_ok: bool = False  # numbers: 0 is allowed (and means "off")


# keyword -> how to read it. The README's configuration table is this table.
FIELDS: dict[str, Field] = {
    "url": Field("SUPABASE_URL", "str", None, doc="Project URL; unset means the local store"),
    "key": Field("SUPABASE_SERVICE_ROLE_KEY", "str", None, doc="service role (secret) key"),
    "script_name": Field(
        "SUPABASE_LOG_SCRIPT_NAME",
        "str",
        None,
        doc="name of implicit runs (default: the script's file name)",
    ),
    "triggered_by": Field(
        "SUPABASE_LOG_TRIGGERED_BY",
        "str",
        None,
        doc="manual, cron, github-actions ... (default: detected)",
    ),
    "default_step": Field(
        "SUPABASE_LOG_DEFAULT_STEP",
        "str",
        "LOG",
        doc="step of records outside any run.step() block",
    ),
    "schema": Field("SUPABASE_LOG_SCHEMA", "str", "public", doc="PostgreSQL schema of the tables"),
    "runs_table": Field("SUPABASE_LOG_RUNS_TABLE", "str", "runs", doc="table of runs"),
    "logs_table": Field("SUPABASE_LOG_LOGS_TABLE", "str", "logs", doc="table of log rows"),
    "integration_logs_table": Field(
        "SUPABASE_LOG_INTEGRATION_TABLE",
        "str",
        "integration_logs",
        doc="table of external API calls",
    ),
    "sink": Field(
        "SUPABASE_LOG_SINK",
        "choice",
        "auto",
        ("auto", "supabase", "local", "postgres"),
        doc="auto: Supabase when a URL is set, else the local store; postgres: COPY to db_url",
    ),
    "db_url": Field(
        "SUPABASE_DB_URL",
        "str",
        None,
        doc="PostgreSQL connection string (the pooler's, transaction mode) for sink=postgres, migrate, doctor",
    ),
    "local_path": Field("SUPABASE_LOG_LOCAL_DB", "str", None, doc="SQLite file of the local store"),
    "flush_interval_s": Field(
        "SUPABASE_LOG_FLUSH_INTERVAL_S",
        "float",
        1.0,
        doc="longest a row waits before its batch is sent",
    ),
    "max_batch_rows": Field("SUPABASE_LOG_MAX_BATCH_ROWS", "int", 500, doc="rows per request"),
    "max_batch_bytes": Field(
        "SUPABASE_LOG_MAX_BATCH_BYTES", "int", 1_000_000, doc="approximate bytes per request"
    ),
    "max_queue_rows": Field(
        "SUPABASE_LOG_MAX_QUEUE_ROWS",
        "int",
        100_000,
        doc="rows held in memory before spilling to the spool",
    ),
    "max_queue_bytes": Field(
        "SUPABASE_LOG_MAX_QUEUE_BYTES",
        "int",
        64 * 1024 * 1024,
        doc="approximate bytes held in memory",
    ),
    "overflow": Field(
        "SUPABASE_LOG_OVERFLOW",
        "choice",
        "shed",
        ("shed", "block"),
        doc="what emit does when memory and spool are full",
    ),
    "block_timeout_s": Field(
        "SUPABASE_LOG_BLOCK_TIMEOUT_S",
        "float",
        1.0,
        doc="with overflow=block, the longest emit waits",
    ),
    "request_timeout_s": Field(
        "SUPABASE_LOG_REQUEST_TIMEOUT_S", "float", 10.0, doc="HTTP timeout of one request"
    ),
    "retry_deadline_s": Field(
        "SUPABASE_LOG_RETRY_DEADLINE_S",
        "float",
        15.0,
        doc="how long one batch is retried before it is spooled",
    ),
    "retry_max_wait_s": Field(
        "SUPABASE_LOG_RETRY_MAX_WAIT_S", "float", 5.0, doc="longest pause between two retries"
    ),
    "probe_interval_s": Field(
        "SUPABASE_LOG_PROBE_INTERVAL_S", "float", 5.0, doc="how often a failed backend is probed"
    ),
    "heartbeat_interval_s": Field(
        "SUPABASE_LOG_HEARTBEAT_INTERVAL_S",
        "float",
        30.0,
        doc="how often an open run's row shows it is alive, with its metrics so far (0: never)",
        zero_ok=True,
    ),
    "shutdown_timeout_s": Field(
        "SUPABASE_LOG_SHUTDOWN_TIMEOUT_S",
        "float",
        5.0,
        doc="longest the exit drain takes; the rest is spooled",
    ),
    "spool": Field(
        "SUPABASE_LOG_SPOOL_ENABLED", "bool", True, doc="keep undeliverable rows on disk"
    ),
    "spool_path": Field("SUPABASE_LOG_SPOOL", "str", None, doc="directory of the spool"),
    "max_spool_bytes": Field(
        "SUPABASE_LOG_MAX_SPOOL_BYTES", "int", 512 * 1024 * 1024, doc="size cap of the spool"
    ),
    "durability": Field(
        "SUPABASE_LOG_DURABILITY",
        "choice",
        "memory",
        ("memory", "disk"),
        doc="disk: write rows to the spool before sending",
    ),
    "redact": Field(
        "SUPABASE_LOG_REDACT", "bool", True, doc="mask secrets in messages, meta and tracebacks"
    ),
    "redact_keys": Field(
        "SUPABASE_LOG_REDACT_KEYS", "str", "", doc="more sensitive key names, comma separated"
    ),
    "exclude_loggers": Field(
        "SUPABASE_LOG_EXCLUDE_LOGGERS",
        "str",
        DEFAULT_EXCLUDED_LOGGERS,
        doc="loggers never written, comma separated (none by default)",
    ),
    "max_message_chars": Field(
        "SUPABASE_LOG_MAX_MESSAGE_CHARS",
        "int",
        100_000,
        doc="longer messages are truncated, marked in meta",
    ),
    "max_traceback_chars": Field(
        "SUPABASE_LOG_MAX_TRACEBACK_CHARS", "int", 100_000, doc="longer tracebacks are truncated"
    ),
    "max_meta_bytes": Field(
        "SUPABASE_LOG_MAX_META_BYTES",
        "int",
        256 * 1024,
        doc="larger meta is replaced by a truncated text",
    ),
    "implicit_run": Field(
        "SUPABASE_LOG_IMPLICIT_RUN",
        "bool",
        True,
        doc="open a run per process for records outside start_run",
    ),
    "capture_uncaught": Field(
        "SUPABASE_LOG_CAPTURE_UNCAUGHT",
        "bool",
        True,
        doc="log uncaught exceptions and fail the run",
    ),
    "install_signal_handlers": Field(
        "SUPABASE_LOG_SIGNALS", "bool", True, doc="on SIGTERM fail the run and drain"
    ),
    "strict": Field(
        "SUPABASE_LOG_STRICT",
        "bool",
        False,
        doc="raise on a configuration mistake instead of reporting it (for CI checks)",
    ),
    "diagnostics": Field(
        "SUPABASE_LOG_DIAGNOSTICS", "bool", True, doc="write the handler's own problems to stderr"
    ),
}
