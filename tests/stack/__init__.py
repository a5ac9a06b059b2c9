"""The test stack: real PostgreSQL plus a PostgREST-compatible gateway for the official client.

Owns nothing itself; the parts are ``postgres`` (PgCluster: a throwaway cluster and
Supabase-like databases), ``gateway`` (Gateway: ``/rest/v1`` over that database),
``jwt`` (HS256 API keys) and ``fixtures`` (pytest fixtures, star-imported by
``tests/conftest.py``). Import as ``stack.<module>`` with ``tests/`` on ``sys.path``.
"""
