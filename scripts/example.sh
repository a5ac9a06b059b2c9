#!/usr/bin/env bash
# Run the example job on a fresh machine, then show what it recorded.
# With no SUPABASE_URL (in the environment or .env) it uses the local store.
. "$(dirname "$0")/_venv.sh"
.venv/bin/python examples/vapi_sync.py
echo
.venv/bin/supabase-log runs --script vapi-sync --limit 5
echo
.venv/bin/supabase-log logs last
