#!/usr/bin/env bash
# Run every check on a fresh machine: lint, types and the whole test suite, which
# starts its own PostgreSQL (installed here from the distribution if missing).
# Extra arguments go to pytest.
. "$(dirname "$0")/_venv.sh" test

. scripts/_postgres.sh
# The benchmark's peers, so that tests/test_benchmark_smoke.py runs every instrument.
.venv/bin/pip install -q -r benchmarks/requirements.txt

.venv/bin/ruff check supabase_log_handler tests benchmarks examples
.venv/bin/mypy supabase_log_handler
# pytest exits 5 when it collected no test: that is a failure too (set -e).
exec .venv/bin/python -m pytest -q "$@"
