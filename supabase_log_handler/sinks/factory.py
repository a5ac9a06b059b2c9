"""``make_sink``: the sink the settings name, its module imported only then."""

from __future__ import annotations

from ..config import Settings, key_role
from . import Sink


def make_sink(settings: Settings) -> Sink:
    """The sink the settings ask for (Supabase when a URL is set, else the local store;
    PostgreSQL directly with ``sink="postgres"``)."""
    if settings.uses_postgres:
        from .postgres import PostgresSink

        assert settings.db_url is not None
        return PostgresSink(
            settings.db_url, schema=settings.schema, request_timeout_s=settings.request_timeout_s
        )
    if settings.uses_supabase:
        from .rest import SupabaseSink

        assert settings.url is not None and settings.key is not None
        return SupabaseSink(
            settings.url,
            settings.key,
            schema=settings.schema,
            request_timeout_s=settings.request_timeout_s,
            service_key=key_role(settings.key) in ("service_role", None),
        )
    from .local import LocalSink

    return LocalSink(
        settings.resolved_local_path,
        runs_table=settings.runs_table,
        logs_table=settings.logs_table,
        integration_logs_table=settings.integration_logs_table,
    )
