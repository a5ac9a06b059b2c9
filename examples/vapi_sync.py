"""Example job: an incremental sync of calls, recorded as a run with its steps.

It is the shape of a real sync (fetch since the last successful run, validate,
save, record the counts) against a simulated API, so it runs anywhere. With no
SUPABASE_URL set, the run and its logs go to the local store; show them with
`supabase-log runs` and `supabase-log logs last`.
"""

from __future__ import annotations

import datetime as dt
import logging
import random

from supabase_log_handler import (
    FETCH,
    SAVE,
    START,
    VALIDATE,
    install,
    last_successful_run,
    start_run,
)

log = logging.getLogger("vapi_sync")


def fetch_calls(since: str, until: dt.datetime) -> list[dict[str, object]]:
    """Stands in for the VAPI API: a page of calls made in the window."""
    rng = random.Random(int(until.timestamp()) // 3600)
    log.debug("GET /call?createdAtGt=%s", since)
    return [
        {
            "id": f"call-{rng.randrange(10**6):06d}",
            "duration_s": rng.randrange(5, 900),
            "transcript": None if rng.random() < 0.1 else "...",
        }
        for _ in range(rng.randrange(20, 60))
    ]


def main() -> None:
    install()  # one line: the handler on the root logger (and a console handler if none)
    previous = last_successful_run("vapi-sync")
    now = dt.datetime.now(dt.timezone.utc)
    # The stored value is passed through as text: the database's ISO format is what the API wants.
    since = (
        str(previous["sync_end_date"])
        if previous and previous.get("sync_end_date")
        else (now - dt.timedelta(days=1)).isoformat()
    )
    with start_run("vapi-sync", sync_mode="incremental", sync_start_date=since) as run:
        with run.step(START):
            log.info("Starting VAPI synchronization", extra={"meta": {"since": since}})
        with run.step(FETCH):
            calls = fetch_calls(since, now)
            run.set(records_fetched=len(calls))
            log.info("Fetched %d calls", len(calls), extra={"meta": {"count": len(calls)}})
        with run.step(VALIDATE):
            valid = [c for c in calls if c["transcript"] is not None]
            if len(valid) < len(calls):
                log.warning(
                    "%d calls without transcript skipped",
                    len(calls) - len(valid),
                    extra={"meta": {"skipped": len(calls) - len(valid)}},
                )
        with run.step(SAVE):
            run.add(records_inserted=len(valid), records_failed=len(calls) - len(valid))
            log.info("Saved %d calls", len(valid), extra={"meta": {"inserted": len(valid)}})
        run.set(sync_end_date=now)
        log.info("Sync completed", extra={"step": "END"})


if __name__ == "__main__":
    main()
