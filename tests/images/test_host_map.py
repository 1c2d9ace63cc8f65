"""Reading local images by host offsets (HostMap) against what qemu reads."""

from __future__ import annotations

import random
from pathlib import Path

from strongroom.sources.images import OpenRules, probe_image
from strongroom.sources.qemu import QemuImageSource
from strongroom.sources.qemu_img import image_info
from tests.conftest import CliRunner
from tests.helpers.images import (
    MiB,
    backup,
    needs,
    qemu_io,
    restore_and_compare,
    run,
    to_raw,
    write_random,
)

pytestmark = needs("qemu-img", "qemu-io", "qemu-nbd")


def _chain(tmp_path: Path) -> Path:
    """raw base <- qcow2 mid <- qcow2 top, each layer writing over the one below."""
    base = tmp_path / "base.raw"
    base.write_bytes(b"")
    write_random(base, 0, 6 * MiB, seed=1)
    mid = tmp_path / "mid.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", mid, "24M")
    qemu_io(mid, "write -P 0x21 1M 512k", "write -z 3M 1M", "write -P 0x22 20M 64k")
    top = tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top)
    qemu_io(top, "write -P 0x31 1280k 4k", "discard 0 64k", "write -P 0x32 23M 1M")
    return top


def test_host_offsets_read_what_qemu_reads(tmp_path: Path) -> None:
    top = _chain(tmp_path)
    expected = to_raw(top, tmp_path / "expected.raw").read_bytes()
    source = QemuImageSource(probe_image(str(top), rules=OpenRules(allow_backing=True)))
    try:
        assert source.host_map is not None  # uncompressed chain: the direct path
        rng = random.Random(7)
        ranges = [(0, len(expected))] + [
            (off, rng.randrange(1, 3 * MiB))
            for off in (rng.randrange(0, len(expected) - 1) for _ in range(40))
        ]
        ranges = [(o, min(n, len(expected) - o)) for o, n in ranges]
        for offset, data in source.read_blocks(ranges):
            length = len(data)
            assert bytes(data) == expected[offset : offset + length], offset
        assert source.bytes_read > 0
    finally:
        source.close()


def test_compressed_images_are_read_over_nbd(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"")
    write_random(raw, 2 * MiB, 1 * MiB, seed=2)  # stays uncompressed in the qcow2
    with open(raw, "r+b") as f:  # compresses: no plain host offset
        f.seek(4 * MiB)
        f.write(b"compressible text " * (2 * MiB // 18))
    packed = tmp_path / "packed.qcow2"
    run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, packed)
    source = QemuImageSource(image_info(str(packed)))
    try:
        assert source.host_map is None  # compressed clusters have no plain host offset
    finally:
        source.close()
    point = backup(cli, packed)
    restore_and_compare(cli, point["point_id"], raw, tmp_path)


def test_a_chain_backs_up_exactly(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    top = _chain(tmp_path)
    point = backup(cli, top, "--allow-backing")
    restore_and_compare(cli, point["point_id"], to_raw(top, tmp_path / "now.raw"), tmp_path)
