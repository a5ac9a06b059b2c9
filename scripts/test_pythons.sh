#!/usr/bin/env bash
# The process, fork, signal and exit tests (marker "process", without the long "slow" ones)
# on the oldest and the newest Python the project supports, each in its own virtualenv
# (.venv-3.10, .venv-3.13). Called by scripts/test.sh after the full suite; extra
# arguments go to pytest. The interpreters come from PATH or from pyenv
# (PYENV_ROOT, default ~/.pyenv): `pyenv install 3.10 3.13` where they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  # A pyenv shim may be on PATH without that version selected: only an interpreter
  # that really runs counts.
  local version="$1" candidate
  for candidate in "$(command -v "python$version" 2>/dev/null)" \
      "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/"python$version"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c "" >/dev/null 2>&1; then
      echo "$candidate"
      return
    fi
  done
  return 1
}

for version in ${SUPABASE_LOG_TEST_PYTHONS:-3.10 3.13}; do
  if ! python="$(find_python "$version")"; then
    echo "Python $version not found on PATH or under pyenv: install it (pyenv install $version)" >&2
    exit 1
  fi
  venv=".venv-$version"
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  "$venv/bin/pip" install -q -e ".[test]"
  echo "== Python $version: process, fork, signal and exit tests ($python)"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "process and not slow" "$@"
done
