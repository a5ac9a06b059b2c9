# Sourced after _venv.sh: the PostgreSQL server binaries the tests and the benchmark
# start their throwaway clusters with, installed from the distribution if missing.
have_postgres() {
  command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
if ! have_postgres; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
fi
