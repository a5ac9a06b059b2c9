"""Expected schedules of jobs: validation, durations, expected start times, declaration.

A schedule is a cron expression read in an IANA time zone (DST-correct, through
``cronsim``, the ``[watch]`` extra) or a plain interval between starts. It owns
turning either into the UTC times a run is expected to start at, and writing a
schedule to the ``job_schedules`` table (``declare_schedule``). ``cronsim`` and
``zoneinfo`` are imported when a schedule is validated or expanded, never at
import time.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, NamedTuple

from ..errors import ConfigurationError

UTC = dt.timezone.utc
KINDS_OF_SOURCE = ("cli", "code", "sql")
DEFAULT_GRACE_S = 300
_DURATION = (
    r"(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d|w)?"  # compiled on first use (import stays cheap)
)
_UNIT_S = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
INSTALL_HINT = "schedules need the [watch] extra: pip install 'supabase-log-handler[watch]'"


def parse_duration_s(text: str | float | int) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``6h``, ``1d``, ``1h30m``; ValueError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {text!r}")
        return float(text)
    compact = str(text).strip().replace(" ", "")
    pos, total = 0, 0.0
    for match in re.finditer(_DURATION, compact, re.IGNORECASE):
        if match.start() != pos or not match.group(0):
            break
        total += float(match.group(1)) * _UNIT_S[(match.group(2) or "s").lower()]
        pos = match.end()
    if not compact or pos != len(compact):
        raise ValueError(f"expected a duration such as 90s, 15m, 6h or 1d, got {text!r}")
    return total


def format_duration(seconds: float | None) -> str:
    """``15m``, ``6h``, ``1h30m``, ``45s``; empty for None."""
    if seconds is None:
        return ""
    rest = round(seconds)
    if rest == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            count, rest = divmod(rest, size)
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_ts(value: Any) -> dt.datetime | None:
    """A timestamp from PostgREST or SQLite (any ISO 8601 form, naive meaning UTC), or None."""
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = re.sub(r"(\.\d{1,6})\d*", r"\1", str(value).strip().replace("Z", "+00:00"))
    text = re.sub(r"\.(\d{1,5})(?=[+-]|$)", lambda m: "." + m.group(1).ljust(6, "0"), text)
    text = re.sub(r"(:\d\d(?:\.\d+)?[+-]\d\d)$", r"\1:00", text)  # "+00" -> "+00:00"
    when = dt.datetime.fromisoformat(text.replace(" ", "T", 1))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def iso_utc(when: dt.datetime) -> str:
    """UTC, microseconds, ``+00:00``: the form PostgreSQL and the periods use."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def zone(name: str) -> dt.tzinfo:
    """The IANA time zone ``name``; ConfigurationError naming the fix otherwise."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Moscow or UTC "
            "(on systems without a time zone database: pip install tzdata)"
        ) from None


def cron_times(
    expr: str, tz_name: str, after: dt.datetime, until: dt.datetime
) -> list[dt.datetime]:
    """UTC times ``t`` with ``after < t <= until`` at which ``expr`` fires, read in ``tz_name``."""
    try:
        from cronsim import CronSim
    except ImportError:
        raise ConfigurationError(INSTALL_HINT) from None
    out: list[dt.datetime] = []
    for when in CronSim(expr, after.astimezone(zone(tz_name))):
        moment = when.astimezone(UTC)
        if moment > until:
            break
        if moment > after:
            out.append(moment)
    return out


def check_cron(expr: str) -> str:
    """``expr`` normalised, if it is a valid five-field cron expression; else ConfigurationError."""
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigurationError(
            f"cron expression {expr!r} must have five fields: minute hour day-of-month month day-of-week"
        )
    try:
        from cronsim import CronSim, CronSimError
    except ImportError:
        raise ConfigurationError(INSTALL_HINT) from None
    try:
        next(CronSim(" ".join(fields), dt.datetime(2026, 1, 1, tzinfo=UTC)))
    except (CronSimError, StopIteration) as exc:
        raise ConfigurationError(f"cron expression {expr!r} is not valid: {exc}") from None
    return " ".join(fields)


def _seconds(name: str, value: float | None, *, allow_zero: bool) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return round(value)


class Schedule(NamedTuple):
    """One row of ``job_schedules``: when ``script_name`` is expected to run, and its limits."""

    script_name: str
    cron: str | None = None
    interval_s: int | None = None
    timezone: str = "UTC"
    grace_s: int = DEFAULT_GRACE_S
    max_runtime_s: int | None = None
    min_runtime_s: int | None = None
    channels: tuple[str, ...] | None = None
    enabled: bool = True
    declared_in: str = "cli"
    created_at: dt.datetime | None = None

    def validated(self) -> Schedule:
        """A copy with the cron expression normalised; ConfigurationError naming what is wrong."""
        if not self.script_name or not self.script_name.strip():
            raise ConfigurationError("a schedule needs a script_name")
        if (self.cron is None) == (self.interval_s is None):
            raise ConfigurationError(
                "give either a cron expression or an interval, not both or neither"
            )
        cron = check_cron(self.cron) if self.cron is not None else None
        zone(self.timezone)
        interval = _seconds("interval_s", self.interval_s, allow_zero=False)
        grace = _seconds("grace_s", self.grace_s, allow_zero=True)
        max_rt = _seconds("max_runtime_s", self.max_runtime_s, allow_zero=False)
        min_rt = _seconds("min_runtime_s", self.min_runtime_s, allow_zero=True)
        if max_rt is not None and min_rt is not None and min_rt >= max_rt:
            raise ConfigurationError("min_runtime_s must be below max_runtime_s")
        if self.declared_in not in KINDS_OF_SOURCE:
            raise ConfigurationError(f"declared_in must be one of {', '.join(KINDS_OF_SOURCE)}")
        channels = None
        if self.channels is not None:
            channels = (
                tuple(sorted({c.strip().lower() for c in self.channels if c.strip()})) or None
            )
        return self._replace(
            script_name=self.script_name.strip(),
            cron=cron,
            interval_s=interval,
            grace_s=grace if grace is not None else DEFAULT_GRACE_S,
            max_runtime_s=max_rt,
            min_runtime_s=min_rt,
            channels=channels,
        )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Schedule:
        channels = row.get("channels")
        return cls(
            script_name=str(row["script_name"]),
            cron=row.get("cron"),
            interval_s=row.get("interval_s"),
            timezone=row.get("timezone") or "UTC",
            grace_s=int(row.get("grace_s") or 0),
            max_runtime_s=row.get("max_runtime_s"),
            min_runtime_s=row.get("min_runtime_s"),
            channels=tuple(channels) if channels else None,
            enabled=bool(row.get("enabled", True)),
            declared_in=row.get("declared_in") or "cli",
            created_at=parse_ts(row.get("created_at")),
        )

    def rpc_args(self) -> dict[str, Any]:
        """The arguments of ``declare_job_schedule``."""
        return {
            "p_script_name": self.script_name,
            "p_cron": self.cron,
            "p_interval_s": self.interval_s,
            "p_timezone": self.timezone,
            "p_grace_s": self.grace_s,
            "p_max_runtime_s": self.max_runtime_s,
            "p_min_runtime_s": self.min_runtime_s,
            "p_channels": list(self.channels) if self.channels else None,
            "p_enabled": self.enabled,
            "p_declared_in": self.declared_in,
        }

    def describe(self) -> str:
        """``0 */6 * * * Europe/Moscow`` or ``every 6h``."""
        if self.cron is not None:
            return f"{self.cron} ({self.timezone})"
        return f"every {format_duration(self.interval_s)}"

    def typical_period_s(self, around: dt.datetime) -> float:
        """Seconds between two expected starts near ``around`` (the interval, for interval schedules)."""
        if self.interval_s is not None:
            return float(self.interval_s)
        assert self.cron is not None
        for horizon_days in (2, 40, 400):
            times = cron_times(
                self.cron, self.timezone, around, around + dt.timedelta(days=horizon_days)
            )
            if len(times) >= 2:
                return (times[1] - times[0]).total_seconds()
        return 365 * 86400.0

    def next_start(self, after: dt.datetime, last_start: dt.datetime | None) -> dt.datetime | None:
        """The first expected start after ``after``."""
        if self.interval_s is not None:
            anchor = last_start or self.created_at or after
            step = dt.timedelta(seconds=self.interval_s)
            nxt = anchor + step
            while nxt <= after:
                nxt += step
            return nxt
        assert self.cron is not None
        for horizon_days in (2, 40, 400):
            times = cron_times(
                self.cron, self.timezone, after, after + dt.timedelta(days=horizon_days)
            )
            if times:
                return times[0]
        return None
