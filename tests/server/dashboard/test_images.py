"""An image point's disk downloaded from its dashboard page, in process,
over a point made by the real CLI (`strongroom backup --image`): the raw
download is the source's bytes, the fixed VHD download reads back through
libvhdi (an independent reader) as the source; the answer is streamed
(Content-Length known, pieces of at most a chunk or a megabyte); read-only
users and a missing CSRF token get 403; each download is an audit row."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from strongroom.formats.vhd import read_footer
from strongroom.model.blockmap import BlockMap
from strongroom.services.dashboard_images import _dynamic_layout
from strongroom.services.export import point_uuid
from tests.conftest import CliRunner
from tests.helpers.libvhdi import pyvhdi
from tests.server.dashboard.conftest import OPERATOR_PASSWORD, READER_PASSWORD, sign_in
from tests.server.dashboard.image_site import ImageSite, image_site  # noqa: F401 (fixture)


def _audit(site: ImageSite) -> list[tuple[str, str, str | None]]:
    return [(a.action, a.outcome, a.user) for a in site.accounts.catalog.list_audit(limit=50)]


def test_operators_download_the_disk_raw_and_as_vhds_readers_cannot(
    image_site: ImageSite,  # noqa: F811 (the fixture)
    tmp_path: Path,
    cli: CliRunner,
) -> None:
    site, source = image_site, image_site.image.read_bytes()
    csrf = sign_in(site.client, "olga", OPERATOR_PASSWORD)
    page = site.client.get(f"/points/{site.point}")
    assert page.status_code == 200 and 'id="disk-raw"' in page.text and 'id="disk-vhd"' in page.text
    url = f"/points/{site.point}/disk"

    with site.client.stream("POST", url, data={"csrf_token": csrf, "format": "raw"}) as raw:
        assert raw.status_code == 200
        assert raw.headers["content-length"] == str(len(source))
        assert raw.headers["content-disposition"].endswith('.img"')
        digest, pieces = hashlib.sha256(), 0
        for piece in raw.iter_raw():
            digest.update(piece)
            pieces += 1
    assert digest.hexdigest() == hashlib.sha256(source).hexdigest()
    assert pieces > 4  # streamed, not one body built in memory

    vhd = site.client.post(url, data={"csrf_token": csrf, "format": "vhd-fixed"})
    assert vhd.status_code == 200 and vhd.headers["content-disposition"].endswith('.vhd"')
    assert len(vhd.content) == len(source) + 512
    assert vhd.content[: len(source)] == source  # a fixed VHD: the disk, then the footer
    dynamic = site.client.post(url, data={"csrf_token": csrf, "format": "vhd-dynamic"})
    assert dynamic.status_code == 200
    assert int(dynamic.headers["content-length"]) == len(dynamic.content)
    # footer copy, header, table (one sector), then 4 of the 5 VHD blocks of
    # 2 MiB with their bitmaps: the hole at 4-6 MiB is left out; the footer
    assert len(dynamic.content) == 512 + 1024 + 512 + 4 * (2 * 1024 * 1024 + 512) + 512
    for kind, answer in (("fixed", vhd), ("dynamic", dynamic)):
        path = tmp_path / f"download-{kind}.vhd"
        path.write_bytes(answer.content)
        footer = read_footer(path)
        assert footer.current_size == len(source)
        assert footer.uuid == point_uuid(SimpleNamespace(id=site.point))  # type: ignore[arg-type]
        f = pyvhdi().file()
        f.open(str(path))
        try:  # an independent reader sees the source disk
            assert f.get_media_size() == len(source)
            assert f.read_buffer_at_offset(len(source), 0) == source
        finally:
            f.close()
        # the same bytes as the CLI's export of the point (its id and time)
        exported = tmp_path / f"exported-{kind}.vhd"
        assert cli("export", site.point, str(exported), "--type", kind).rc == 0
        assert exported.read_bytes() == answer.content, kind
    assert ("points.disk", "ok", "olga") in _audit(site)
    _refusals(site)  # on the same site: one CLI-made point per test file is enough


def _refusals(site: ImageSite) -> None:
    """Read-only users, a missing CSRF token, another format, no such point."""
    site.client.cookies.clear()
    csrf = sign_in(site.client, "rita", READER_PASSWORD)
    page = site.client.get(f"/points/{site.point}")
    assert page.status_code == 200 and 'id="disk-raw"' not in page.text
    url = f"/points/{site.point}/disk"
    assert site.client.post(url, data={"csrf_token": csrf, "format": "raw"}).status_code == 403
    assert any(
        action.startswith("POST /points/") and (outcome, user) == ("denied", "rita")
        for action, outcome, user in _audit(site)
    )
    site.client.cookies.clear()
    csrf = sign_in(site.client, "olga", OPERATOR_PASSWORD)
    assert site.client.post(url, data={"format": "raw"}).status_code == 403  # no CSRF token
    assert site.client.post(url, data={"csrf_token": csrf, "format": "qcow2"}).status_code == 400
    missing = site.client.post(f"/points/{'0' * 64}/disk", data={"csrf_token": csrf})
    assert missing.status_code == 404
    assert ("points.disk", "failed", "olga") in _audit(site)


@pytest.mark.parametrize(
    ("block_size", "data_blocks", "vhd_blocks"),
    [
        (64 * 1024, [33], [1]),  # 2.06 MiB: in the second VHD block
        (64 * 1024, [0, 31, 32], [0, 1]),
        (4 * 1024 * 1024, [1], [2, 3]),  # a block larger than a VHD block spans two
        (4 * 1024 * 1024, [2], [4, 5]),  # the short last block (8-11 MiB) spans two
    ],
)
def test_a_dynamic_vhd_allocates_the_vhd_blocks_its_data_overlaps(
    block_size: int, data_blocks: list[int], vhd_blocks: list[int]
) -> None:
    block_map = BlockMap.empty(11 * 1024 * 1024, block_size)
    for block in data_blocks:
        block_map.assign(block, bytes(31) + b"\x01")
    _head, allocated, length = _dynamic_layout(block_map, bytes(512))
    assert [i for i, used in enumerate(allocated) if used] == vhd_blocks
    assert length == 2048 + len(vhd_blocks) * (2 * 1024 * 1024 + 512) + 512
