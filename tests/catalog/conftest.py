"""Every catalog test runs twice: on SQLite in the test's folder and on
PostgreSQL (Debian's server, one throwaway cluster per worker on a unix
socket, a fresh database per test). The PostgreSQL half is in the
"postgresql" xdist group and is skipped when the server is not installed."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from strongroom.catalog import Catalog
from tests.helpers.pg_cluster import PORT, Cluster, available, bin_dir, owned_by_nobody


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    why = available()
    if why:
        pytest.skip(why)
    bindir = bin_dir()
    assert bindir is not None
    base = Path(tempfile.mkdtemp(prefix="strongroom-catalog-pg-", dir="/tmp"))
    os.chmod(base, 0o755)  # nobody walks through it to its folders
    folder = owned_by_nobody(base / "pg")
    pg = Cluster.create(bindir, folder / "data", base / "socket", folder / "server.log")
    pg.durable = False  # throwaway: no fsync
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.xdist_group("postgresql"))]
)
def catalog_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A catalog URL nobody has opened yet (an empty database)."""
    monkeypatch.delenv("STRONGROOM_CATALOG", raising=False)
    if request.param == "sqlite":
        yield str(tmp_path / "catalog.sqlite")
        return
    pg: Cluster = request.getfixturevalue("pg_cluster")
    name = f"catalog_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@/{name}?host={pg.socket_dir}&port={PORT}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with Catalog.open(catalog_url) as cat:
        yield cat
