"""The dashboard's pages at 10,000 points (20 sources of 500): each answers
well under the 300 ms target on a quiet machine (docs/performance.md,
"Backup server"); asserted at 1 s here, for a busy CI box. The points are
synthetic and in memory: what is measured is grouping, filtering, paging,
the charts and rendering, not reading point objects (a real repository's
numbers are in the docs)."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from strongroom.catalog import Catalog
from strongroom.config import Settings
from strongroom.model.point import RecoveryPoint
from strongroom.server import create_app
from strongroom.server.dashboard import add_dashboard_routes
from strongroom.services.accounts import Accounts
from strongroom.services.dashboard import RepositoryView
from tests.server.conftest import FAST_HASHER
from tests.server.dashboard.conftest import ADMIN_PASSWORD, sign_in

N = 10_000


class SyntheticView(RepositoryView):
    def __init__(self, points: list[RecoveryPoint]) -> None:
        super().__init__("unused", b"unused")
        self._fixed = points
        self._by_id = {p.id: p for p in points}

    def points(self) -> list[RecoveryPoint]:
        return self._fixed

    def point(self, point_id: str) -> RecoveryPoint:
        return self._by_id[point_id]


def _points() -> list[RecoveryPoint]:
    start = datetime.now(UTC) - timedelta(hours=N // 20)
    return [
        RecoveryPoint(
            kind="files",
            time=start + timedelta(hours=i // 20),
            host=f"host{i % 20:02d}",
            user="u",
            paths=[f"/srv/host{i % 20:02d}"],
            tree="ab" * 32,
            summary={"total_bytes": 10**9 + i, "data_added": 10**6},
            id=f"{i:064x}",
        )
        for i in range(N)
    ]


def test_pages_stay_fast_at_ten_thousand_points(tmp_path: Path) -> None:
    catalog = Catalog.open(str(tmp_path / "catalog.sqlite"))
    try:
        accounts = Accounts(catalog, hasher=FAST_HASHER)
        accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
        view = SyntheticView(_points())
        routes = functools.partial(add_dashboard_routes, view=view, settings=Settings())
        app = create_app(accounts, lambda: [], routers=[routes])
        with TestClient(app, follow_redirects=False) as client:
            sign_in(client, "admin", ADMIN_PASSWORD)
            for url in ("/", "/points", "/points?page=50", "/points?host=host07&tag=x"):
                client.get(url)  # warm
                began = time.perf_counter()
                answer = client.get(url)
                took = time.perf_counter() - began
                assert answer.status_code == 200
                assert took < 1.0, f"{url}: {took * 1000:.0f} ms"
            overview = client.get("/").text
            assert overview.count('class="source"') == 20
            assert overview.count("<rect") <= 20 * 150  # binned: at most COLUMNS bars
            assert client.get("/points?host=host07").text.count('class="point"') == 100
    finally:
        catalog.close()
