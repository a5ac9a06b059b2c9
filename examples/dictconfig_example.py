"""logging.config.dictConfig example: the job's console output plus Supabase.

Run it as it is (``python examples/dictconfig_example.py``) or copy ``LOGGING``.
SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY come from the environment or .env
(without SUPABASE_URL the rows go to the local store). Every keyword of
SupabaseHandler can be a key of its handler entry. The root level comes from
SUPABASE_LOG_LEVEL (default INFO), so DEBUG rows are stored only when it says so.
"""

from __future__ import annotations

import logging
import logging.config
import os

from supabase_log_handler import start_run

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "supabase": {
            "class": "supabase_log_handler.SupabaseHandler",
            "script_name": "dictconfig-example",
            "flush_interval_s": 0.5,
        },
    },
    "root": {
        "level": os.environ.get("SUPABASE_LOG_LEVEL", "INFO").upper(),
        "handlers": ["console", "supabase"],
    },
}


def main() -> None:
    logging.config.dictConfig(LOGGING)
    log = logging.getLogger("example")
    with start_run("dictconfig-example", sync_mode="incremental") as run:
        with run.step("FETCH"):
            log.debug("request details", extra={"meta": {"page": 1}})
            log.info("fetched %d calls", 3, extra={"meta": {"count": 3}})
        run.set(records_fetched=3)
        with run.step("SAVE"):
            log.warning("1 call skipped", extra={"meta": {"reason": "duplicate"}})
        print(run.id, flush=True)


if __name__ == "__main__":
    main()
