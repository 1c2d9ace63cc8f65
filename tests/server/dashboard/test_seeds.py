"""The dashboard's Seeds page in process, over a seed and an image point
made by the real CLI: the seed's name, kind, version, size and time, and
the point that builds on it; every role may look; the page needs a session."""

from __future__ import annotations

import re

from tests.server.dashboard.conftest import READER_PASSWORD, Site, sign_in
from tests.server.dashboard.image_site import SIZE, ImageSite, image_site  # noqa: F401 (fixture)


def test_the_seeds_page_lists_each_seed_and_the_points_using_it(
    image_site: ImageSite,  # noqa: F811 (the fixture)
) -> None:
    site = image_site
    assert site.client.get("/seeds").status_code == 303  # signed out: to the sign-in page
    sign_in(site.client, "rita", READER_PASSWORD)
    page = site.client.get("/seeds")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    rows = re.findall(r'<tr class="seed">(.*?)</tr>', page.text, re.S)
    assert len(rows) == 1
    cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[0], re.S)
    name, kind, holds, version, size, created, short_id, users = cells
    assert (name, kind, holds, version) == ("golden", "os", "block", "12.8")
    assert size == f"{SIZE / 1024 / 1024:.1f} MiB"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", created)
    assert re.fullmatch(r"[0-9a-f]{8}", short_id)
    assert f'href="/points/{site.point}"' in users  # the point that builds on it
    assert 'href="/seeds" class="here"' in page.text


def test_no_seed_yet_says_how_to_add_one(site: Site) -> None:
    sign_in(site.client, "rita", READER_PASSWORD)
    page = site.client.get("/seeds")
    assert page.status_code == 200 and '<tr class="seed">' not in page.text
    assert "strongroom seed add" in page.text
