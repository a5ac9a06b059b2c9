"""Settings: one place that reads keyword arguments, the environment and ``.env``.

Explicit keyword arguments win over environment variables, which win over a
``.env`` file (read with python-dotenv, never copied into ``os.environ``), which
win over defaults. Every value is validated at once; a bad one raises
:class:`~supabase_log_handler.errors.ConfigurationError` naming both the keyword
and the environment variable, or, for a handler (whose configuration must never
crash the job), gives way to a safe choice that ``load_settings_forgiving`` names.
Nothing here touches the network.
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
from .fields import FIELDS as FIELDS

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
    heartbeat_interval_s: float
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
    strict: bool
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

    def table(self, key: str) -> str:
        """The configured table for a logical name ("runs", "logs", "integration_logs")."""
        names = {"runs": self.runs_table, "logs": self.logs_table,
                 "integration_logs": self.integration_logs_table}  # fmt: skip
        return names.get(key, key)

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
    if value != value or value == float("inf") or not (value > 0 or (value == 0 and spec.zero_ok)):
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
    """Settings from explicit values, then the environment, then ``.env``, then defaults.

    Raises :class:`ConfigurationError` for the first setting that is wrong.
    """
    settings, problems = _load(explicit, environ, env_file)
    if problems:
        raise ConfigurationError(problems[0].message)
    return settings


class Problem(NamedTuple):
    """A setting that is wrong, and what a forgiving load did about it."""

    name: str
    message: str
    action: str  # "default": the default is used; "local": the local store; "park": rows wait


def load_settings_forgiving(
    explicit: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = None,
) -> tuple[Settings, list[Problem]]:
    """Settings that never fail: a wrong value gives way to its default, a malformed URL to the
    local store; with a missing or anon key the URL is kept and rows wait (``park``) for a
    process that has the right key. The problems say what was done."""
    settings, problems = _load(explicit, environ, env_file)
    for p in problems:
        if p.action == "default" and p.name in FIELDS:
            settings = settings._replace(**{p.name: FIELDS[p.name].default})
        elif p.action == "local":
            settings = settings._replace(url=None, sink="local")
    return settings, problems


def _load(
    explicit: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None,
    env_file: str | os.PathLike[str] | None,
) -> tuple[Settings, list[Problem]]:
    explicit = dict(explicit or {})
    problems: list[Problem] = []
    unknown = sorted(set(explicit) - set(FIELDS))
    if unknown:
        problems.append(Problem("", f"unknown setting(s): {', '.join(unknown)}", "default"))
    environ = os.environ if environ is None else environ
    dotenv = read_env_file(env_file)
    values: dict[str, Any] = {}
    for name, spec in FIELDS.items():
        values[name] = spec.default
        if explicit.get(name) is not None:
            raw = explicit[name]
        elif spec.env in environ:
            # Set in the environment, even to "": .env does not apply. Empty means "not set"
            # (`SUPABASE_URL= python job.py` writes to the local store whatever .env says).
            raw = environ[spec.env]
            if not raw.strip():
                continue
        elif dotenv.get(spec.env, "").strip():
            raw = dotenv[spec.env]
        else:
            continue
        try:
            value = _coerce(name, raw)
        except ConfigurationError as exc:
            problems.append(Problem(name, str(exc), "default"))
            continue
        values[name] = spec.default if value is None else value
    settings = Settings(**values)
    problems.extend(_check(settings))
    return settings, problems


def _check(s: Settings) -> list[Problem]:
    found = [
        Problem(name, f"{_describe(name)} must be at most {limit}", "default")
        for name, limit in MAX_REASONABLE.items()
        if getattr(s, name) > limit
    ]
    for name in ("schema", "runs_table", "logs_table", "integration_logs_table"):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", getattr(s, name)):
            found.append(Problem(name, f"{_describe(name)} must be a plain SQL identifier", "default"))
    if s.sink == "supabase" and not s.url:
        found.append(Problem("url", f"{_describe('url')} is required when sink is 'supabase'", "local"))
        return found
    if s.uses_postgres:
        wrong = _check_db_url(s)
        if wrong:
            found.append(Problem("sink", wrong, "default"))  # Supabase or the local store instead
        if not s.url:
            return found  # rows go straight to PostgreSQL (or the local store): no REST settings
    if not s.uses_supabase:
        return found
    assert s.url is not None
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", s.url):
        from ._redact import Redactor

        shown = Redactor(literals=[s.key]).text(s.url)  # a key pasted as the URL must not be echoed
        found.append(Problem(
            "url", f"{_describe('url')} must look like https://<project>.supabase.co, got {shown!r}",
            "local"))  # fmt: skip
        return found
    if not s.key:
        found.append(Problem(
            "key", f"{_describe('key')} is required when {FIELDS['url'].env} is set: "
            "use the project's service role (secret) key", "park"))  # fmt: skip
        return found
    role = key_role(s.key)
    if role in ("anon", "authenticated"):
        found.append(Problem(
            "key", f"{_describe('key')} is the {role} key, which cannot write logs; "
            "use the service role (secret) key from the project's API settings", "park"))  # fmt: skip
    return found


def _check_db_url(s: Settings) -> str | None:
    """What is wrong with ``db_url`` for ``sink="postgres"``, if anything."""
    if not s.db_url:
        return (
            f"{_describe('db_url')} is required when sink is 'postgres': the connection string "
            "from the project's Database settings (the pooler's, transaction mode, port 6543)"
        )
    from .sinks.pgurl import describe, looks_like_db_url

    if not looks_like_db_url(s.db_url):
        return (
            f"{_describe('db_url')} must look like postgresql://user:password@host:6543/postgres, "
            f"got {describe(s.db_url)!r}"
        )
    return None


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
