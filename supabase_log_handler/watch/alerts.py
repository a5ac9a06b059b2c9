"""Alert messages and their delivery, including the failing job's own alert.

Owns what an alert says (job, what happened, when, duration, error message, the
run's last ERROR rows, a dashboard link when ``SUPABASE_LOG_DASHBOARD_URL`` is
set), masking secrets out of it, and sending it to channels in parallel under
one deadline. ``notify_run_failed`` is what the handler calls when a run ends
in error: it never raises and returns by its deadline even when a channel hangs
(the send goes on in a daemon thread that cannot hold up exit).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .._redact import Redactor
from .._threads import start_without_signals, without_signals
from ..config import Settings
from ..diagnostics import Diagnostics
from .channels import Channel, Message, load_channels
from .evaluate import show
from .schedules import format_duration, iso_utc, parse_ts

DASHBOARD_ENV = "SUPABASE_LOG_DASHBOARD_URL"
MAX_ERROR_ROWS = 5
MAX_ERROR_CHARS = 500
diagnostics = Diagnostics(interval_s=60.0)
_counts_lock = threading.Lock()
_counts = {"run_failed_sent": 0, "run_failed_skipped": 0, "gave_up": 0}

WHAT = {
    "late": "is late",
    "missed": "missed a run",
    "too_long": "is running too long",
    "too_fast": "finished too fast",
    "failed": "failed",
    "lost": "was lost (no heartbeat)",
}


@dataclass
class Delivery:
    """What happened to one message: channels that took it, failures, channels still hanging."""

    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.sent)


def alert_counts() -> dict[str, int]:
    """How many job-side failure alerts were sent, skipped (already claimed) or given up on."""
    with _counts_lock:
        return dict(_counts)


def _count(name: str) -> None:
    with _counts_lock:
        _counts[name] += 1


def redactor_for(channels: list[Channel] | dict[str, Channel]) -> Redactor:
    """Masks every channel secret and the Supabase key, besides the usual secret shapes."""
    values = channels.values() if isinstance(channels, dict) else channels
    literals: list[str | None] = [s for ch in values for s in ch.secrets()]
    literals.append(os.environ.get("SUPABASE_SERVICE_ROLE_KEY"))
    return Redactor(literals=literals)


def deliver(
    message: Message,
    channels: list[Channel],
    *,
    deadline_s: float,
    redactor: Redactor | None = None,
) -> Delivery:
    """Send ``message`` (masked) to every channel at once; returns by ``deadline_s``."""
    redactor = redactor or redactor_for(channels)
    safe = Message(
        redactor.text(message.subject), redactor.text(message.text), redactor.value(message.fields)
    )
    result = Delivery()
    lock = threading.Lock()

    def send(channel: Channel) -> None:
        try:
            channel.send(safe, deadline_s)
            outcome, text = "sent", channel.name
        except Exception as exc:
            outcome = "failed"
            text = redactor.text(
                str(exc)
                if str(exc).startswith(channel.name)
                else f"{channel.name}: {type(exc).__name__}"
            )
        with lock:
            getattr(result, outcome).append(text)

    threads = [
        threading.Thread(
            target=without_signals(functools.partial(send, ch)),
            name=f"supabase-log-alert-{ch.name}",
            daemon=True,
        )
        for ch in channels
    ]
    for thread in threads:
        start_without_signals(thread)
    ends_at = _monotonic() + deadline_s
    for thread in threads:
        thread.join(max(0.0, ends_at - _monotonic()))
    with lock:
        done = set(result.sent) | {f.split(":", 1)[0] for f in result.failed}
        result.timed_out = [ch.name for ch in channels if ch.name not in done]
    return result


def _monotonic() -> float:
    import time

    return time.monotonic()


def dashboard_link(script_name: str, run_id: str | None) -> str | None:
    """``SUPABASE_LOG_DASHBOARD_URL`` with ``{run_id}`` and ``{script_name}`` filled in."""
    template = os.environ.get(DASHBOARD_ENV, "").strip()
    if not template:
        return None
    try:
        return template.format(run_id=run_id or "", script_name=quote(script_name, safe=""))
    except (KeyError, IndexError, ValueError):
        return template


def _error_lines(error_rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in error_rows[-MAX_ERROR_ROWS:]:
        when = parse_ts(row.get("timestamp"))
        text = str(row.get("message") or "").strip()
        if len(text) > MAX_ERROR_CHARS:
            text = text[: MAX_ERROR_CHARS - 1] + "…"
        stamp = when.strftime("%H:%M:%S") if when else ""
        lines.append(f"  {stamp} [{row.get('step') or ''}] {text}")
    return lines


def _body(facts: list[tuple[str, Any]], error_rows: list[dict[str, Any]], link: str | None) -> str:
    lines = [f"{label}: {value}" for label, value in facts if value not in (None, "")]
    errors = _error_lines(error_rows)
    if errors:
        lines += ["Last ERROR rows:", *errors]
    if link:
        lines.append(f"Link: {link}")
    return "\n".join(lines)


def incident_message(
    incident: dict[str, Any], error_rows: list[dict[str, Any]], *, repeat: bool = False
) -> Message:
    """The alert for a claimed incident (a ``job_incidents`` row)."""
    name, kind = str(incident["script_name"]), str(incident["kind"])
    detail: dict[str, Any] = incident.get("detail") or {}
    run_id = incident.get("run_id")
    subject = f"{'[still] ' if repeat else ''}{name} {WHAT.get(kind, kind)}"
    duration = detail.get("duration_ms")
    facts = [
        ("Job", name),
        ("What", detail.get("summary") or WHAT.get(kind, kind)),
        ("When", show(parse_ts(incident.get("event_at")))),
        ("Expected at", show(parse_ts(detail.get("expected_at")))),
        ("Started at", show(parse_ts(detail.get("started_at")))),
        ("Duration", format_duration(duration / 1000) if duration is not None else None),
        ("Error", detail.get("error_message")),
        ("Run", run_id),
    ]
    link = dashboard_link(name, run_id)
    fields = {
        "event": "incident",
        "script_name": name,
        "kind": kind,
        "repeat": repeat,
        "at": incident.get("event_at"),
        "run_id": run_id,
        "summary": detail.get("summary"),
        "duration_ms": duration,
        "error_message": detail.get("error_message"),
        "errors": [{k: r.get(k) for k in ("timestamp", "step", "message")} for r in error_rows],
        "link": link,
    }
    return Message(subject, _body(facts, error_rows, link), fields)


def recovery_message(
    script_name: str, resolved: list[dict[str, Any]], good_run: dict[str, Any] | None
) -> Message:
    """One message saying the job is fine again, naming the problems it had."""
    kinds = sorted({str(r["kind"]) for r in resolved})
    since = min(
        (parse_ts(r.get("event_at")) for r in resolved),
        default=None,
        key=lambda t: t or dt.datetime.max.replace(tzinfo=dt.timezone.utc),
    )
    run_id = str(good_run["id"]) if good_run else None
    duration = good_run.get("duration_ms") if good_run else None
    facts = [
        ("Job", script_name),
        ("What", "recovered: a run succeeded"),
        ("Problems", ", ".join(kinds)),
        ("Since", show(since)),
        ("Good run started at", show(parse_ts(good_run.get("started_at"))) if good_run else None),
        ("Duration", format_duration(duration / 1000) if duration is not None else None),
        ("Run", run_id),
    ]
    link = dashboard_link(script_name, run_id)
    fields = {
        "event": "recovery",
        "script_name": script_name,
        "kinds": kinds,
        "since": iso_utc(since) if since else None,
        "run_id": run_id,
        "link": link,
    }
    return Message(f"{script_name} recovered", _body(facts, [], link), fields)


def run_failed_message(run: dict[str, Any], error_rows: list[dict[str, Any]]) -> Message:
    """The failing job's own alert."""
    name = str(run.get("script_name") or "job")
    detail = {
        "summary": "failed",
        "started_at": run.get("started_at"),
        "duration_ms": run.get("duration_ms"),
        "error_message": run.get("error_message"),
    }
    incident = {
        "script_name": name,
        "kind": "failed",
        "run_id": run.get("id"),
        "event_at": run.get("finished_at") or run.get("started_at"),
        "detail": detail,
    }
    return incident_message(incident, error_rows)


def _claim_failed_run(
    run: dict[str, Any], timeout_s: float, settings: Settings | None
) -> tuple[bool, str | None]:
    """Ask Supabase whether this process should send (False when a checker already did).

    Returns (send, incident id). Without Supabase, or when the claim cannot be made,
    the job sends anyway: a failure alert matters more than a rare duplicate.
    """
    from ..config import load_settings

    try:
        s = settings or load_settings({})
        if not s.uses_supabase or not s.url or not s.key:
            return True, None
        import httpx

        headers = {
            "apikey": s.key,
            "Authorization": f"Bearer {s.key}",
            "Content-Profile": s.schema,
            "Accept-Profile": s.schema,
        }
        started = parse_ts(run.get("started_at")) or dt.datetime.now(dt.timezone.utc)
        body = {
            "p_script_name": str(run.get("script_name")),
            "p_kind": "failed",
            "p_period": str(run.get("id")),
            "p_event_at": iso_utc(started),
            "p_run_id": str(run.get("id")),
            "p_detail": {
                "summary": "failed",
                "error_message": run.get("error_message"),
                "duration_ms": run.get("duration_ms"),
                "started_at": iso_utc(started),
            },
        }
        url = f"{s.url.rstrip('/')}/rest/v1/rpc/claim_job_incident"
        with httpx.Client(timeout=httpx.Timeout(timeout_s)) as client:
            answer = client.post(url, json=body, headers=headers)
        if answer.status_code >= 300:
            return True, None
        rows = answer.json()
        return (True, str(rows[0]["id"])) if rows else (False, None)
    except Exception:
        return True, None


def _mark_sent(incident_id: str, timeout_s: float, settings: Settings | None) -> None:
    from ..config import load_settings

    try:
        import httpx

        s = settings or load_settings({})
        assert s.url and s.key
        headers = {
            "apikey": s.key,
            "Authorization": f"Bearer {s.key}",
            "Content-Profile": s.schema,
            "Prefer": "return=minimal",
        }
        with httpx.Client(timeout=httpx.Timeout(timeout_s)) as client:
            client.patch(
                f"{s.url.rstrip('/')}/rest/v1/job_incidents",
                params={"id": f"eq.{incident_id}", "sent_at": "is.null"},
                json={"sent_at": iso_utc(dt.datetime.now(dt.timezone.utc))},
                headers=headers,
            )
    except Exception:
        pass


def notify_run_failed(
    run_row: dict[str, Any],
    error_rows: list[dict[str, Any]],
    *,
    deadline_s: float,
    settings: Settings | None = None,
) -> None:
    """Alert every configured channel that a run failed; returns within ``deadline_s``.

    Never raises. Does nothing (and no I/O beyond reading settings) when no
    channel is configured. With Supabase configured it first claims the run's
    ``failed`` incident, so ``supabase-log check`` does not alert about it again,
    and skips sending when a checker already did. When the deadline runs out
    the sending goes on in a daemon thread (it cannot delay exit) and
    ``alert_counts()["gave_up"]`` counts it. ``settings`` are the handler's (for
    the claim); by default they are read from the environment.
    """
    try:
        channels = load_channels()
    except Exception as exc:
        diagnostics.report("alerts", f"failure alert not sent: {exc}")
        return
    if not channels:
        return
    ends_at = _monotonic() + max(deadline_s, 0.0)
    finished = threading.Event()
    cut_short = threading.Event()  # a channel was still sending when the deadline came

    def work() -> None:
        try:
            send, incident_id = _claim_failed_run(
                run_row, max(0.1, (ends_at - _monotonic()) / 2), settings
            )
            if not send:
                _count("run_failed_skipped")
                return
            message = run_failed_message(run_row, error_rows)
            outcome = deliver(
                message, list(channels.values()), deadline_s=max(0.1, ends_at - _monotonic())
            )
            if outcome.ok:
                _count("run_failed_sent")
                if incident_id:
                    _mark_sent(incident_id, max(0.1, ends_at - _monotonic()), settings)
            if outcome.timed_out:
                cut_short.set()
            if outcome.failed or outcome.timed_out:
                diagnostics.report(
                    "alerts",
                    "failure alert not delivered to: "
                    + ", ".join(outcome.failed + outcome.timed_out),
                )
        except Exception as exc:
            diagnostics.report("alerts", f"failure alert not sent: {type(exc).__name__}")
        finally:
            finished.set()

    start_without_signals(
        threading.Thread(
            target=without_signals(work), name="supabase-log-run-failed-alert", daemon=True
        )
    )
    if not finished.wait(max(0.0, ends_at - _monotonic())) or cut_short.is_set():
        _count("gave_up")
        diagnostics.report(
            "alerts", f"failure alert still sending after {deadline_s:g}s; not waiting"
        )
