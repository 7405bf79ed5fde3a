"""Bench fixtures: a fresh database on the session PostgreSQL, in REPEATABLE READ like DSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture()
def bench_db(pg) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A conninfo string for a new, empty database whose transactions are REPEATABLE READ."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = f"host={pg.host} port={pg.port} dbname=postgres user={pg.superuser} sslmode=require"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'")
    yield f"host={pg.host} port={pg.port} dbname={name} user={pg.superuser} sslmode=require"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
