"""``supabase-log ui``: a read-only local web dashboard over runs, logs, errors and calls.

Data flow, one direction::

    Supabase (PostgREST, the service key stays in this process)  -> store_rest.RestStore
    the local embedded store (SQLite)                            -> store_local.LocalStore
        -> store.Store (every query a page makes; keyset pages)
        -> pages_runs.py / pages_insights.py (routes) + charts.py (chart data)
        -> web.py (Jinja2 templates, autoescaped) -> app.py (Starlette app)
        -> security.Guard (bind, token, host, CSP) -> uvicorn (command.py)

Importing this package costs nothing: Starlette, uvicorn and Jinja2 (the ``[ui]``
extra) are imported by ``command.cmd_ui`` when the command runs. The handler never
imports anything from here.
"""
