"""Catalog revision 0003: machines, enrollment tokens, agent commits;
upgraded from 0002 with its users kept; tokens consumed once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from strongroom.catalog import Catalog, Enrollment, Machine, Role, User
from strongroom.catalog.engine import create_engine, parse_url
from strongroom.catalog.migrate import alembic_config, current_revisions, head_revision
from strongroom.errors import CatalogError

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_0003_upgrades_from_0002_and_tokens_are_consumed_once(catalog_url: str) -> None:
    engine = create_engine(parse_url(catalog_url))
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0002")
            conn.execute(sa.text(
                "INSERT INTO users (name, password_hash, role, created, disabled)"
                " VALUES ('kept', 'h', 'administrator', :t, false)"), {"t": NOW})  # fmt: skip
    finally:
        engine.dispose()
    with Catalog.open(catalog_url) as cat:
        assert [u.name for u in cat.list_users()] == ["kept"]
        cat.add_enrollment(Enrollment("d" * 64, "web-1", NOW, NOW + timedelta(hours=1)))
        assert cat.consume_enrollment("d" * 64, NOW + timedelta(hours=2)) is None  # expired
        cat.add_enrollment(Enrollment("e" * 64, "web-1", NOW, NOW + timedelta(hours=1)))
        assert cat.consume_enrollment("e" * 64, NOW) == "web-1"
        assert cat.consume_enrollment("e" * 64, NOW) is None  # used
        m = cat.enroll_machine(Machine("web-1", "a" * 32, "s" * 64, NOW))
        assert m.id is not None and cat.find_agent("a" * 32) == m
        again = cat.enroll_machine(Machine("web-1", "b" * 32, "t" * 64, NOW))
        assert again.id == m.id and cat.find_agent("a" * 32) is None  # old credentials gone
        assert cat.add_agent_commit(m.id, "c1", "p" * 64, NOW) == "p" * 64
        assert cat.add_agent_commit(m.id, "c1", "q" * 64, NOW) == "p" * 64  # the first stays
        assert cat.set_machine_disabled("web-1", True).disabled
        cat.add_user(User("u2", "h", Role.OPERATOR, NOW))
    engine = create_engine(parse_url(catalog_url))
    try:
        with engine.connect() as conn:
            assert current_revisions(conn) == (head_revision(),)
    finally:
        engine.dispose()


def test_0006_upgrades_from_0005_keeping_machines_and_sets_clusters(catalog_url: str) -> None:
    engine = create_engine(parse_url(catalog_url))
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0005")
            conn.execute(
                sa.text(
                    "INSERT INTO machines (name, agent_id, secret_digest, created, disabled)"
                    " VALUES ('node-a', :a, :s, :t, false)"
                ),
                {"a": "a" * 32, "s": "s" * 64, "t": NOW},
            )
    finally:
        engine.dispose()
    with Catalog.open(catalog_url) as cat:
        (kept,) = cat.list_machines()
        assert kept.name == "node-a" and kept.cluster is None
        assert cat.set_machine_cluster("node-a", "prod").cluster == "prod"
        again = cat.enroll_machine(Machine("node-a", "b" * 32, "t" * 64, NOW))
        assert again.cluster == "prod"  # re-enrolling keeps the cluster
        assert cat.set_machine_cluster("node-a", None).cluster is None
        with pytest.raises(CatalogError):
            cat.set_machine_cluster("nobody", "prod")
        with pytest.raises(CatalogError):
            cat.set_machine_cluster("node-a", "../x")
