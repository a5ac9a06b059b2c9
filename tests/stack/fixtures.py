"""pytest fixtures for the test stack: a PostgreSQL cluster, databases and gateways.

Owns: the lifetime of the stack within a test session. ``tests/conftest.py``
star-imports this module (``from stack.fixtures import *``), with ``tests/`` on
``sys.path``.

Session scope: ``pg_cluster`` (PgCluster), ``database`` (its name, migrations
applied), ``db`` (superuser SQL on it), ``gateway`` (a Gateway on it).
Function scope: ``gateway_faults`` (the session gateway, restored afterwards:
started, undelayed, no pending ``fail_next``), ``fresh_gateway`` (factory for a
new database + gateway, torn down after the test) and ``supabase_env``
(SUPABASE_URL / SUPABASE_SERVICE_ROLE_KEY for subprocesses).
The direct sink's side (``stack/pgbouncer.py``): ``pgbouncer`` (session: PgBouncer in
transaction mode in front of the cluster) and ``direct_faults`` (function: the session
database through it and a FaultLink, restored afterwards).
Module scope: ``cron_db`` (a database on a second cluster that preloads pg_cron,
bootstrapped, without migrations or the extension yet).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import psycopg
import pytest

from stack.gateway import Gateway
from stack.pgbouncer import direct_faults, pgbouncer
from stack.postgres import Params, PgCluster

__all__ = [
    "CRON_DATABASE",
    "Db",
    "FreshStack",
    "cron_db",
    "database",
    "db",
    "direct_faults",
    "fresh_gateway",
    "gateway",
    "gateway_faults",
    "pg_cluster",
    "pgbouncer",
    "supabase_env",
]

SESSION_DATABASE = "supabase_log_tests"
CRON_DATABASE = "cron_jobs"  # pg_cron serves one database per cluster: cron.database_name


class Db:
    """Superuser SQL on one database of the cluster (each call: a short autocommit connection)."""

    def __init__(self, cluster: PgCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    @property
    def dsn(self) -> str:
        """Superuser DSN (what ``supabase-log migrate`` would be given)."""
        return self.cluster.dsn(self.name)

    def fetch(self, query: str, params: Params = None) -> list[tuple[Any, ...]]:
        return self.cluster.fetch(self.name, query, params)

    def fetchval(self, query: str, params: Params = None) -> Any:
        """First column of the first row (None when there is no row)."""
        rows = self.fetch(query, params)
        return rows[0][0] if rows else None

    def execute(self, query: str, params: Params = None) -> None:
        self.cluster.execute(self.name, query, params)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new superuser connection (autocommit); the caller closes it."""
        return self.cluster.connect(self.name, **kwargs)

    def __repr__(self) -> str:
        return f"Db({self.name!r})"


class FreshStack(NamedTuple):
    """What ``fresh_gateway(...)`` returns: unpack as ``gateway, db = fresh_gateway()``."""

    gateway: Gateway
    db: Db


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A started throwaway PostgreSQL cluster, stopped and deleted at the end of the session."""
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def database(pg_cluster: PgCluster) -> str:
    """Name of the session database: Supabase bootstrap + the project's migrations."""
    pg_cluster.create_database(SESSION_DATABASE)
    return SESSION_DATABASE


@pytest.fixture(scope="session")
def db(pg_cluster: PgCluster, database: str) -> Db:
    """Superuser ``fetch``/``execute`` on the session database."""
    return Db(pg_cluster, database)


@pytest.fixture(scope="session")
def gateway(pg_cluster: PgCluster, database: str) -> Iterator[Gateway]:
    """The session's PostgREST-compatible gateway on the session database."""
    gw = Gateway(pg_cluster.authenticator_dsn(database))
    try:
        yield gw
    finally:
        gw.close()


@pytest.fixture
def gateway_faults(gateway: Gateway) -> Iterator[Gateway]:
    """The session gateway for a test that stops, delays or fails it; restored afterwards."""
    gateway.clear_faults()
    try:
        yield gateway
    finally:
        gateway.clear_faults()
        gateway.start()


@pytest.fixture
def fresh_gateway(pg_cluster: PgCluster) -> Iterator[Callable[..., FreshStack]]:
    """Factory: ``fresh_gateway(migrations=True, sql=None, **gateway_kwargs)`` creates a new
    database (``sql`` runs after the Supabase bootstrap and before the migrations, or
    instead of them with ``migrations=False``) and returns ``FreshStack(gateway, db)``
    with the gateway started. Everything is closed and dropped at teardown."""
    created: list[tuple[str, Gateway | None]] = []

    def factory(
        migrations: bool = True, sql: str | None = None, **gateway_kwargs: Any
    ) -> FreshStack:
        name = f"fresh_{uuid.uuid4().hex[:16]}"
        created.append((name, None))
        pg_cluster.create_database(name, migrations=migrations, sql=sql)
        gw = Gateway(pg_cluster.authenticator_dsn(name), **gateway_kwargs)
        created[-1] = (name, gw)
        return FreshStack(gw, Db(pg_cluster, name))

    try:
        yield factory
    finally:
        for name, gw in reversed(created):
            if gw is not None:
                gw.close()
            pg_cluster.drop_database(name)


@pytest.fixture
def supabase_env(gateway: Gateway) -> dict[str, str]:
    """Environment for a subprocess that should talk to the session gateway."""
    return {"SUPABASE_URL": gateway.url, "SUPABASE_SERVICE_ROLE_KEY": gateway.service_key}


@pytest.fixture(scope="module")
def cron_db() -> Iterator[Db]:
    """A database on its own cluster started with pg_cron preloaded (Debian's postgresql-NN-cron,
    installed by scripts/test.sh): Supabase bootstrap only; the test creates the extension."""
    cluster = PgCluster(
        settings={
            "shared_preload_libraries": "'pg_cron'",
            "cron.database_name": f"'{CRON_DATABASE}'",
        }
    ).start()
    try:
        cluster.create_database(CRON_DATABASE, migrations=False)
        yield Db(cluster, CRON_DATABASE)
    finally:
        cluster.stop()
