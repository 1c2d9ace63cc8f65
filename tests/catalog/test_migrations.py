"""Opening a catalog creates it at the head revision, upgrades nothing when
it is there, refuses a database a newer strongroom wrote (untouched), and
survives two processes opening a fresh one at the same moment."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from strongroom.catalog import Catalog, Medium
from strongroom.catalog.engine import create_engine, parse_url
from strongroom.catalog.migrate import current_revisions, head_revision, upgrade
from strongroom.catalog.schema import VERSION_TABLE, metadata
from strongroom.errors import CatalogError

TABLES = {
    "libraries", "pools", "media", "drives", "sessions", "media_contents", "events",
    "users", "login_sessions", "audit_log", "machines", "enrollment_tokens", "agent_commits",
    "jobs", "schedules", "maintenance_locks", "sign_in_limits", "api_tokens", "point_memos",
}  # fmt: skip


def _engine(url: str) -> sa.Engine:
    return create_engine(parse_url(url))


def test_a_fresh_database_is_created_at_head_as_the_schema_module_says(catalog_url: str) -> None:
    Catalog.open(catalog_url).close()
    engine = _engine(catalog_url)
    try:
        with engine.connect() as conn:
            assert current_revisions(conn) == (head_revision(),)
            assert set(sa.inspect(conn).get_table_names()) == TABLES | {VERSION_TABLE}
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            assert compare_metadata(context, metadata) == []
            indexed = {
                tuple(ix["column_names"]) for ix in sa.inspect(conn).get_indexes("media_contents")
            }
            assert {("point_id",), ("pack_id",)} <= indexed
    finally:
        engine.dispose()


def test_reopening_migrates_nothing_and_keeps_the_data(catalog_url: str) -> None:
    with Catalog.open(catalog_url) as cat:
        cat.add_medium(Medium(media_id=uuid.uuid4(), barcode="KEEP01L8"))
    engine = _engine(catalog_url)
    try:
        with engine.connect() as conn:
            assert upgrade(conn, "test") is False
    finally:
        engine.dispose()
    with Catalog.open(catalog_url) as cat:
        assert [m.barcode for m in cat.list_media()] == ["KEEP01L8"]


@pytest.mark.parametrize("created", [True, False], ids=["full", "only-stamped"])
def test_a_newer_strongroom_s_catalog_is_refused_and_left_alone(
    catalog_url: str, created: bool
) -> None:
    engine = _engine(catalog_url)
    try:
        if created:
            Catalog.open(catalog_url).close()
            with engine.begin() as conn:
                conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099_future'"))
        else:
            with engine.begin() as conn:
                conn.execute(sa.text(f"CREATE TABLE {VERSION_TABLE} (version_num varchar(32))"))
                conn.execute(sa.text(f"INSERT INTO {VERSION_TABLE} VALUES ('0099_future')"))
        with engine.connect() as conn:
            before = set(sa.inspect(conn).get_table_names())
        with pytest.raises(CatalogError) as caught:
            Catalog.open(catalog_url)
        message = str(caught.value)
        assert "\n" not in message
        assert "0099_future, newer than this strongroom's" in message
        assert "upgrade strongroom" in message
        with engine.connect() as conn:
            assert current_revisions(conn) == ("0099_future",)
            assert set(sa.inspect(conn).get_table_names()) == before
    finally:
        engine.dispose()


_OPENER = """
import sys, time, uuid
from strongroom.catalog import Catalog, Medium
url, start, tag = sys.argv[1], float(sys.argv[2]), sys.argv[3]
time.sleep(max(0.0, start - time.time()))
with Catalog.open(url) as cat:
    for n in range(20):
        cat.add_medium(Medium(media_id=uuid.uuid4(), barcode=f"{tag}{n:03d}L8"))
"""


def test_two_processes_opening_a_fresh_catalog_at_once(catalog_url: str) -> None:
    start = time.time() + 1.0  # both interpreters loaded and waiting
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, catalog_url, str(start), tag],
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("AA", "BB")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    with Catalog.open(catalog_url) as cat:
        barcodes = [m.barcode for m in cat.list_media()]
    assert len(barcodes) == 40 and {b[:2] for b in barcodes if b} == {"AA", "BB"}
    engine = _engine(catalog_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        assert [r[0] for r in rows] == [head_revision()]
    finally:
        engine.dispose()
