"""A dashboard over a repository with a golden image seed and an image
point that builds on it, both made by the real CLI (`strongroom seed add`,
`strongroom backup --image --seed`): shared by test_images.py and
test_seeds.py."""

from __future__ import annotations

import functools
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from strongroom.catalog import Catalog
from strongroom.config import Settings
from strongroom.server import create_app
from strongroom.server.dashboard import add_dashboard_routes
from strongroom.services.accounts import Accounts, Role
from strongroom.services.dashboard import RepositoryView
from tests.conftest import CliRunner
from tests.helpers.cli import PASSWORD
from tests.server.dashboard.conftest import ADMIN_PASSWORD, OPERATOR_PASSWORD, READER_PASSWORD

# sectors, not whole blocks: the last block is short; 4-6 MiB is a hole (a
# dynamic VHD leaves that 2 MiB block out)
SIZE = 8 * 1024 * 1024 + 1536


@dataclass
class ImageSite:
    client: TestClient
    accounts: Accounts
    point: str  # the image point, building on the seed "golden"
    image: Path  # what the point holds


def _disk(path: Path, seed: int) -> bytes:
    """A sparse disk: data at its start and its end, a hole between."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(SIZE)
        f.write(rng.randbytes(1024 * 1024))
        f.seek(SIZE - 300 * 1024)
        f.write(rng.randbytes(300 * 1024))
    return path.read_bytes()


@pytest.fixture
def image_site(tmp_path: Path, initialized_repo: Path, cli: CliRunner) -> Iterator[ImageSite]:
    golden = tmp_path / "golden.img"
    _disk(golden, 1)
    made = cli("seed", "add", "golden", str(golden), "--kind", "os", "--version", "12.8")
    assert made.rc == 0, made.err
    image = tmp_path / "disk.img"
    shutil.copyfile(golden, image)
    with open(image, "r+b") as f:  # the machine changed a little since the golden image
        f.seek(2 * 1024 * 1024)
        f.write(random.Random(2).randbytes(64 * 1024))
    backup = cli("backup", "--image", str(image), "--seed", "golden", "--json")
    assert backup.rc == 0, backup.err
    point = backup.summary()["point_id"]
    catalog = Catalog.open(str(tmp_path / "catalog.sqlite"))
    from tests.server.conftest import FAST_HASHER

    accounts = Accounts(catalog, hasher=FAST_HASHER)
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    accounts.create_user("olga", OPERATOR_PASSWORD, Role.OPERATOR)
    accounts.create_user("rita", READER_PASSWORD, Role.READ_ONLY)
    view = RepositoryView(str(initialized_repo), PASSWORD.encode())
    dashboard = functools.partial(add_dashboard_routes, view=view, settings=Settings())
    app = create_app(accounts, lambda: [], routers=[dashboard])
    try:
        with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
            yield ImageSite(client, accounts, point, image)
    finally:
        catalog.close()
