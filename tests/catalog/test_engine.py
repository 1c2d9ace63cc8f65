"""Where the catalog lives, how its URL is read and masked, and the one-line
errors for a catalog that cannot be opened."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from strongroom.catalog import Catalog
from strongroom.catalog.engine import masked, parse_url
from strongroom.config import load_settings
from strongroom.errors import CatalogError, ConfigError

SECRET = "hunter2-s3cret"


def test_the_default_is_sqlite_in_the_data_folder(tmp_path: Path) -> None:
    url = parse_url(None)
    assert url.drivername == "sqlite"
    assert url.database == os.path.join(os.environ["XDG_DATA_HOME"], "strongroom", "catalog.sqlite")
    with Catalog.open() as cat:
        assert cat.dialect == "sqlite" and cat.list_media() == []
    assert Path(str(url.database)).is_file()
    assert parse_url(str(tmp_path / "c.db")).database == str(tmp_path / "c.db")
    assert parse_url(f"sqlite:///{tmp_path}/c.db").database == f"{tmp_path}/c.db"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgresql_urls_use_psycopg_and_never_show_the_password(scheme: str) -> None:
    url = parse_url(f"{scheme}://backup:{SECRET}@db.example:5433/catalog")
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database, url.password) == (
        "db.example",
        5433,
        "catalog",
        SECRET,
    )
    assert masked(url) == "postgresql+psycopg://backup:***@db.example:5433/catalog"


@pytest.mark.parametrize(
    "text",
    [f"mysql://root:{SECRET}@localhost/db", "sqlite://", f"postgresql://u:{SECRET}@h:port/x"],
)
def test_other_urls_are_refused_in_one_line_without_the_password(text: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_url(text)
    assert SECRET not in str(caught.value) and "\n" not in str(caught.value)


def test_an_unreachable_postgresql_is_one_line_with_the_password_masked() -> None:
    started = time.monotonic()
    with pytest.raises(CatalogError) as caught:
        Catalog.open(f"postgresql://backup:{SECRET}@127.0.0.1:1/catalog")
    message = str(caught.value)
    assert time.monotonic() - started < 15
    assert message.startswith("catalog postgresql+psycopg://backup:***@127.0.0.1:1/catalog: ")
    assert "refused" in message.lower()
    assert SECRET not in message and "\n" not in message


def test_a_file_that_is_not_a_catalog_is_one_line_and_left_alone(tmp_path: Path) -> None:
    junk = tmp_path / "catalog.sqlite"
    junk.write_bytes(b"not a database at all\n" * 300)
    with pytest.raises(CatalogError) as caught:
        Catalog.open(str(junk))
    assert str(caught.value) == f"catalog sqlite:///{junk}: file is not a database"
    assert junk.read_bytes() == b"not a database at all\n" * 300
    with pytest.raises(CatalogError, match=f"catalog {tmp_path}: not a file"):
        Catalog.open(str(tmp_path))


def test_the_setting_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('catalog = "postgresql://backup@db/catalog"\n')
    assert load_settings(env={}, path=config).catalog == "postgresql://backup@db/catalog"
    from_env = load_settings(env={"STRONGROOM_CATALOG": "/srv/c.sqlite"}, path=config)
    assert (from_env.catalog, from_env.source["catalog"]) == ("/srv/c.sqlite", "STRONGROOM_CATALOG")
    assert load_settings(env={}, path=tmp_path / "absent.toml").catalog is None
    config.write_text("catalog = 5\n")
    with pytest.raises(ConfigError, match="catalog must be a path or a postgresql:// URL"):
        load_settings(env={}, path=config)
