"""Settings: one place that reads keyword arguments, the environment and ``.env``.

Explicit keyword arguments win over environment variables, which win over a
``.env`` file (read with python-dotenv, never copied into ``os.environ``), which
win over defaults. Every value is validated at once; a bad one raises
:class:`~supabase_log_handler.errors.ConfigurationError` naming both the keyword
and the environment variable. Nothing here touches the network.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ConfigurationError

DEFAULT_EXCLUDED_LOGGERS = ""  # the handler's own requests are recognised by thread, not by name
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def data_dir() -> Path:
    """The per-user data directory where the spool and the local store live by default."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "supabase-log-handler"


def default_script_name() -> str:
    """The running script's name: ``sync.py`` -> ``sync``; ``python -m pkg`` -> ``pkg``;
    ``python -c CODE`` -> the module CODE imports, else ``python-c`` (see ``_scriptname``)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 == "-c":
        from ._scriptname import code_argument, name_for_code

        return name_for_code(code_argument(list(getattr(sys, "orig_argv", []))))
    if not argv0 or argv0 in ("-m", "-"):
        return "python"
    path = Path(argv0)
    if path.name == "__main__.py":
        return path.parent.name or "python"
    return path.stem or "python"


class Field(NamedTuple):
    env: str
    kind: str  # str | bool | int | float | choice
    default: Any
    choices: tuple[str, ...] = ()
    doc: str = ""


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
    "diagnostics": Field(
        "SUPABASE_LOG_DIAGNOSTICS", "bool", True, doc="write the handler's own problems to stderr"
    ),
}
MAX_REASONABLE = {"max_batch_rows": 10_000}


class Settings(NamedTuple):
    """Validated settings of one handler (see ``FIELDS`` for meaning and sources)."""

    url: str | None
    key: str | None
    script_name: str | None
    triggered_by: str | None
    default_step: str
    schema: str
    runs_table: str
    logs_table: str
    integration_logs_table: str
    sink: str
    db_url: str | None
    local_path: str | None
    flush_interval_s: float
    max_batch_rows: int
    max_batch_bytes: int
    max_queue_rows: int
    max_queue_bytes: int
    overflow: str
    block_timeout_s: float
    request_timeout_s: float
    retry_deadline_s: float
    retry_max_wait_s: float
    probe_interval_s: float
    shutdown_timeout_s: float
    spool: bool
    spool_path: str | None
    max_spool_bytes: int
    durability: str
    redact: bool
    redact_keys: str
    exclude_loggers: str
    max_message_chars: int
    max_traceback_chars: int
    max_meta_bytes: int
    implicit_run: bool
    capture_uncaught: bool
    install_signal_handlers: bool
    diagnostics: bool

    @property
    def uses_supabase(self) -> bool:
        """Rows go to the project (through PostgREST, or straight to PostgreSQL), not the local store."""
        return self.sink in ("supabase", "postgres") or (self.sink == "auto" and bool(self.url))

    @property
    def uses_postgres(self) -> bool:
        """Rows go straight to PostgreSQL (``sink="postgres"``: COPY through the pooler)."""
        return self.sink == "postgres"

    @property
    def resolved_spool_path(self) -> Path:
        return Path(self.spool_path) if self.spool_path else data_dir() / "spool"

    @property
    def destination(self) -> str:
        """Where rows go, as the spool labels its entries: never mixed between projects."""
        if self.uses_postgres:
            from .sinks.pgurl import describe

            return f"postgres:{describe(self.db_url or '')}|{self.schema}|{self.runs_table}|{self.logs_table}"
        if self.uses_supabase:
            return f"supabase:{(self.url or '').rstrip('/')}|{self.schema}|{self.runs_table}|{self.logs_table}"
        return f"local:{self.resolved_local_path}"

    @property
    def resolved_local_path(self) -> Path:
        return Path(self.local_path) if self.local_path else data_dir() / "local.sqlite3"

    @property
    def excluded_logger_names(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.exclude_loggers.split(",") if n.strip())

    def public_dict(self) -> dict[str, Any]:
        """The settings without the key, for display."""
        data = self._asdict()
        data["key"] = "***" if self.key else None
        if self.db_url:
            from .sinks.pgurl import describe

            data["db_url"] = describe(self.db_url)
        return data


def _describe(name: str) -> str:
    return f"{name} ({FIELDS[name].env})"


def _coerce(name: str, raw: Any) -> Any:
    spec = FIELDS[name]
    if raw is None:
        return None
    if spec.kind == "str":
        if not isinstance(raw, str):
            raise ConfigurationError(f"{_describe(name)} must be text, got {type(raw).__name__}")
        return raw.strip() or None
    if spec.kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigurationError(f"{_describe(name)} must be true or false, got {raw!r}")
    if spec.kind == "choice":
        text = str(raw).strip().lower()
        if text not in spec.choices:
            raise ConfigurationError(
                f"{_describe(name)} must be one of {', '.join(spec.choices)}, got {raw!r}"
            )
        return text
    try:
        if isinstance(raw, bool):
            raise ValueError
        if spec.kind == "int":
            as_float = float(raw)
            if as_float != int(as_float):
                raise ValueError  # 4.5 rows is a mistake, not 4
            value: float = int(as_float)
        else:
            value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise ConfigurationError(
            f"{_describe(name)} must be a {'whole ' if spec.kind == 'int' else ''}number, got {raw!r}"
        ) from None
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigurationError(f"{_describe(name)} must be a positive number, got {raw!r}")
    return value


def find_env_file(start: str | None = None) -> str | None:
    """The nearest ``.env`` in the working directory or its parents (as dotenv looks), or None."""
    directory = os.path.abspath(start or os.getcwd())
    while True:
        candidate = os.path.join(directory, ".env")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def read_env_file(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Values of a ``.env`` file (the nearest one to the working directory by default).

    python-dotenv is imported only when there is a file to read: its import alone
    costs more than the rest of the handler's start-up.
    """
    found = os.fspath(path) if path is not None else find_env_file()
    if not found or not os.path.isfile(found):
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(found).items() if v is not None}


def load_settings(
    explicit: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Settings from explicit values, then the environment, then ``.env``, then defaults."""
    explicit = dict(explicit or {})
    unknown = sorted(set(explicit) - set(FIELDS))
    if unknown:
        raise ConfigurationError(f"unknown setting(s): {', '.join(unknown)}")
    environ = os.environ if environ is None else environ
    dotenv = read_env_file(env_file)
    values: dict[str, Any] = {}
    for name, spec in FIELDS.items():
        if explicit.get(name) is not None:
            raw = explicit[name]
        elif spec.env in environ:
            # Set in the environment, even to "": .env does not apply. Empty means "not set"
            # (`SUPABASE_URL= python job.py` writes to the local store whatever .env says).
            raw = environ[spec.env]
            if not raw.strip():
                values[name] = spec.default
                continue
        elif dotenv.get(spec.env, "").strip():
            raw = dotenv[spec.env]
        else:
            values[name] = spec.default
            continue
        value = _coerce(name, raw)
        values[name] = spec.default if value is None else value
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    for name, limit in MAX_REASONABLE.items():
        if getattr(s, name) > limit:
            raise ConfigurationError(f"{_describe(name)} must be at most {limit}")
    for name in ("schema", "runs_table", "logs_table", "integration_logs_table"):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", getattr(s, name)):
            raise ConfigurationError(f"{_describe(name)} must be a plain SQL identifier")
    if s.sink == "supabase" and not s.url:
        raise ConfigurationError(f"{_describe('url')} is required when sink is 'supabase'")
    if s.uses_postgres:
        _check_db_url(s)
        if not s.url:
            return  # rows go straight to PostgreSQL: the REST settings are not needed
    if not s.uses_supabase:
        return
    assert s.url is not None
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", s.url):
        from ._redact import Redactor

        shown = Redactor(literals=[s.key]).text(s.url)  # a key pasted as the URL must not be echoed
        raise ConfigurationError(
            f"{_describe('url')} must look like https://<project>.supabase.co, got {shown!r}"
        )
    if not s.key:
        raise ConfigurationError(
            f"{_describe('key')} is required when {FIELDS['url'].env} is set: "
            "use the project's service role (secret) key"
        )
    role = key_role(s.key)
    if role in ("anon", "authenticated"):
        raise ConfigurationError(
            f"{_describe('key')} is the {role} key, which cannot write logs; "
            "use the service role (secret) key from the project's API settings"
        )


def _check_db_url(s: Settings) -> None:
    if not s.db_url:
        raise ConfigurationError(
            f"{_describe('db_url')} is required when sink is 'postgres': the connection string "
            "from the project's Database settings (the pooler's, transaction mode, port 6543)"
        )
    from .sinks.pgurl import describe, looks_like_db_url

    if not looks_like_db_url(s.db_url):
        raise ConfigurationError(
            f"{_describe('db_url')} must look like postgresql://user:password@host:6543/postgres, "
            f"got {describe(s.db_url)!r}"
        )


def key_role(key: str) -> str | None:
    """The role a Supabase key stands for, read without any network call."""
    if key.startswith("sb_secret_"):
        return "service_role"
    if key.startswith("sb_publishable_"):
        return "anon"
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return None
    role = claims.get("role") if isinstance(claims, dict) else None
    return role if isinstance(role, str) else None
