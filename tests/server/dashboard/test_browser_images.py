"""The image and seed pages in a real browser (Debian's chromium through Playwright),
against a real `strongroom server` process over a repository with a golden image seed
and an image point that builds on it, both made by the real CLI: an operator downloads
the point's disk raw and as a fixed VHD (bytes compared with the source), the Seeds page
names the seed and links the point, a read-only user sees no download. Every request is
confined to the server's origin (test_browser.py's `tab` fixture); screenshots go to the
artifacts folder."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.dashboard.conftest import OPERATOR_PASSWORD, READER_PASSWORD
from tests.server.dashboard.test_browser import (  # noqa: F401 (fixtures used by name)
    Server,
    Tab,
    _cli,
    browser,
    browser_env,
    expect,
    running_server,
    tab,
)

pytestmark = pytest.mark.xdist_group("dashboard-browser")
SIZE = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("dashboard-images")
    env = browser_env(tmp)
    rng = random.Random(5)
    golden = tmp / "golden.img"
    with open(golden, "wb") as f:  # data, a hole, data
        f.truncate(SIZE)
        f.write(rng.randbytes(1 << 20))
        f.seek(SIZE - (512 << 10))
        f.write(rng.randbytes(512 << 10))
    image = tmp / "disk.img"
    shutil.copyfile(golden, image)
    with open(image, "r+b") as f:  # the machine changed a little since the golden image
        f.seek(2 << 20)
        f.write(rng.randbytes(64 << 10))
    _cli(env, "init")
    _cli(env, "seed", "add", "golden", str(golden), "--kind", "os", "--version", "12.8")
    made = _cli(env, "backup", "--image", str(image), "--seed", "golden", "--json")
    with running_server(env, tmp) as base:
        artifacts = Path(os.environ.get("STRONGROOM_TEST_ARTIFACTS") or tmp) / "dashboard"
        artifacts.mkdir(parents=True, exist_ok=True)
        yield Server(base, made.summary()["point_id"], image, {}, artifacts)


def test_an_operator_downloads_the_disk_and_finds_the_seed(tab: Tab) -> None:  # noqa: F811
    page, server = tab.page, tab.server
    tab.sign_in("olga", OPERATOR_PASSWORD)
    page.wait_for_url(server.base + "/")
    tab.go(f"/points/{server.point}")
    expect(page.locator("#point-id")).to_have_text(server.point)
    tab.shot("image-point")
    source = server.source.read_bytes()
    with page.expect_download() as got:
        page.click("#disk-raw")
    assert Path(got.value.path()).read_bytes() == source
    with page.expect_download() as got:
        page.click("#disk-vhd")
    vhd = Path(got.value.path()).read_bytes()
    assert len(vhd) == len(source) + 512 and vhd[: len(source)] == source  # disk, then footer
    assert vhd[len(source) : len(source) + 8] == b"conectix"

    page.click("text=Seeds")
    page.wait_for_url(server.base + "/seeds")
    row = page.locator("tr.seed")
    expect(row).to_have_count(1)
    assert "golden" in row.inner_text() and "12.8" in row.inner_text()
    tab.shot("seeds")
    row.locator(f"a[href='/points/{server.point}']").click()
    page.wait_for_url(f"{server.base}/points/{server.point}")


def test_a_reader_sees_the_image_point_but_no_download(tab: Tab) -> None:  # noqa: F811
    page, server = tab.page, tab.server
    tab.sign_in("rita", READER_PASSWORD)
    page.wait_for_url(server.base + "/")
    tab.go(f"/points/{server.point}")
    expect(page.locator("#point-id")).to_have_text(server.point)
    assert page.locator("#disk-raw").count() == 0
    tab.go("/seeds")
    expect(page.locator("tr.seed")).to_have_count(1)
    tab.shot("image-point-read-only")
