"""The server's users, sign-in sessions and audit log in the catalog, and
revision 0002 applied to a catalog a strongroom of revision 0001 wrote."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from strongroom.catalog import AuditEntry, Catalog, LoginSession, Role, User
from strongroom.catalog.engine import create_engine, parse_url
from strongroom.catalog.migrate import alembic_config, current_revisions, head_revision
from strongroom.errors import CatalogError

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def _user(name: str, role: Role = Role.OPERATOR) -> User:
    return User(name=name, password_hash="$argon2id$fake", role=role, created=NOW)


def test_users_are_added_found_changed_and_removed(catalog: Catalog) -> None:
    added = catalog.add_user(_user("alice", Role.ADMINISTRATOR))
    assert added.id is not None
    catalog.add_user(_user("bob", Role.READ_ONLY))
    with pytest.raises(CatalogError, match="already exists"):
        catalog.add_user(_user("alice"))
    with pytest.raises(CatalogError, match="user name"):
        catalog.add_user(_user("../x"))
    assert [u.name for u in catalog.list_users()] == ["alice", "bob"]
    assert catalog.get_user("alice").created == NOW
    assert catalog.count_administrators() == 1
    catalog.update_user("bob", role=Role.ADMINISTRATOR)
    assert catalog.count_administrators() == 2
    catalog.update_user("alice", disabled=True)
    assert catalog.count_administrators() == 1
    catalog.remove_user("bob")
    assert catalog.find_user("bob") is None
    with pytest.raises(CatalogError, match="no user"):
        catalog.remove_user("bob")


def test_sessions_belong_to_a_user_and_end_with_password_change(catalog: Catalog) -> None:
    catalog.add_user(_user("carol"))
    session = LoginSession("ab" * 32, "carol", NOW, NOW + timedelta(hours=1), NOW)
    catalog.add_login_session(session)
    found = catalog.find_login_session("ab" * 32)
    assert found is not None and found[0] == session and found[1].name == "carol"
    catalog.touch_login_session("ab" * 32, NOW + timedelta(minutes=5))
    found = catalog.find_login_session("ab" * 32)
    assert found is not None and found[0].last_seen == NOW + timedelta(minutes=5)
    catalog.update_user("carol", password_hash="$argon2id$other")
    assert catalog.find_login_session("ab" * 32) is None
    catalog.add_login_session(session)
    assert catalog.remove_expired_login_sessions(NOW + timedelta(hours=2)) == 1
    catalog.add_login_session(session)
    assert catalog.remove_login_session("ab" * 32) is True
    assert catalog.remove_login_session("ab" * 32) is False


def test_audit_rows_are_listed_newest_first_and_survive_the_user(catalog: Catalog) -> None:
    catalog.add_user(_user("dave"))
    for i, action in enumerate(("session.create", "user.create")):
        catalog.add_audit(
            AuditEntry(NOW + timedelta(seconds=i), action, "x" * 400, "ok", "dave", "127.0.0.1")
        )
    catalog.remove_user("dave")
    rows = catalog.list_audit()
    assert [r.action for r in rows] == ["user.create", "session.create"]
    assert rows[0].user == "dave" and rows[0].address == "127.0.0.1"
    assert len(rows[0].target) == 256
    assert [r.action for r in catalog.list_audit(action="session.create")] == ["session.create"]


def test_0002_upgrades_a_catalog_written_at_0001_and_keeps_its_data(catalog_url: str) -> None:
    engine = create_engine(parse_url(catalog_url))
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
        with engine.connect() as conn:
            assert current_revisions(conn) == ("0001",)
            assert "users" not in sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    media_id = uuid.uuid4()
    engine = create_engine(parse_url(catalog_url))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO media (media_id, barcode, state, online, bytes_written, sessions)"
                    " VALUES (:m, 'OLD001L8', 'free', true, 0, 0)"
                ),
                {"m": media_id.hex if conn.dialect.name == "sqlite" else media_id},
            )
    finally:
        engine.dispose()
    with Catalog.open(catalog_url) as cat:
        assert [m.barcode for m in cat.list_media()] == ["OLD001L8"]
        cat.add_user(_user("erin", Role.ADMINISTRATOR))
        assert cat.count_administrators() == 1
    engine = create_engine(parse_url(catalog_url))
    try:
        with engine.connect() as conn:
            assert current_revisions(conn) == (head_revision(),)
    finally:
        engine.dispose()
