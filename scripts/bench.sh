#!/usr/bin/env bash
# Run the benchmark (benchmarks/bench.py) in the project's venv, with the peers it
# compares against (benchmarks/requirements.txt) installed there first. PostgreSQL is
# installed from the distribution if missing. Arguments go to bench.py, e.g.
#   bash scripts/bench.sh --quick
#   bash scripts/bench.sh --calls 100000 --repeats 5
. "$(dirname "$0")/_venv.sh" test
. scripts/_postgres.sh
.venv/bin/pip install -q -r benchmarks/requirements.txt
exec .venv/bin/python benchmarks/bench.py "$@"
