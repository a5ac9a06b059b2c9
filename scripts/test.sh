#!/usr/bin/env bash
# Run every check on a fresh machine: lint, types and the whole test suite, which
# starts its own PostgreSQL (installed here from the distribution if missing).
# Extra arguments go to pytest.
. "$(dirname "$0")/_venv.sh" test

. scripts/_postgres.sh
# pg_cron for the watch tests (tests/stack/fixtures.py: cron_db), for each installed server.
for bindir in /usr/lib/postgresql/*/bin; do
  version="$(basename "$(dirname "$bindir")")"
  if [ ! -e "/usr/lib/postgresql/$version/lib/pg_cron.so" ]; then
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$version-cron"
  fi
done
# The benchmark's peers, so that tests/test_benchmark_smoke.py runs every instrument.
.venv/bin/pip install -q -r benchmarks/requirements.txt

# Chromium for the dashboard's browser tests (tests/test_ui_browser.py), driven by Playwright
# through its executable path: Debian's package, never a browser download.
if [ ! -x /usr/bin/chromium ]; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi

# PgBouncer (transaction mode) in front of the test cluster for the direct sink's tests
# (tests/stack/pgbouncer.py).
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer
fi

.venv/bin/ruff check supabase_log_handler tests benchmarks examples
.venv/bin/mypy supabase_log_handler
# pytest exits 5 when it collected no test: that is a failure too (set -e).
.venv/bin/python -m pytest -q "$@"
# Then the process, fork, signal and exit tests on Python 3.10 and 3.13 (not when pytest
# was given arguments: a chosen test runs once, on the default interpreter).
if [ "$#" -eq 0 ]; then
  bash scripts/test_pythons.sh
fi
