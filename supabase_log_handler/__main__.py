"""``python -m supabase_log_handler``: the ``supabase-log`` command."""

from .cli import main

raise SystemExit(main())
