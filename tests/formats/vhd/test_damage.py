"""Damaged and hostile VHDs: each gives one `VhdError`, never a crash or a hang."""

from __future__ import annotations

import struct
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.errors import SourceError
from strongroom.formats.vhd import VhdError, open_vhd
from strongroom.formats.vhd.structs import checksum
from tests.formats.vhd.disks import BASE, CHILD, SIZE, KiB, MiB, noise, write, write_child


def _one_error(path: Path, match: str) -> None:
    with pytest.raises(VhdError, match=match) as err, open_vhd(path) as r:
        r.read(0, r.size)
    assert isinstance(err.value, SourceError)
    assert "\n" not in str(err.value)


def _poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _fix_checksums(path: Path) -> None:
    """Recompute the checksums of both footers and the header, so deeper checks run."""
    raw = bytearray(path.read_bytes())
    for at in (0, len(raw) - 512):
        footer = raw[at : at + 512]
        struct.pack_into(">I", raw, at + 64, checksum(footer, 64))
    (header_at,) = struct.unpack_from(">Q", raw, 16)
    if header_at + 1024 <= len(raw):
        header = raw[header_at : header_at + 1024]
        struct.pack_into(">I", raw, header_at + 36, checksum(header, 36))
    path.write_bytes(bytes(raw))


@pytest.fixture
def dynamic(tmp_path: Path) -> Path:
    write(tmp_path / "d.vhd", SIZE, BASE)
    return tmp_path / "d.vhd"


@pytest.mark.parametrize("cut", [1, 511, 512, 4096, SIZE // 2])
def test_truncated_file(dynamic: Path, cut: int) -> None:
    data = dynamic.read_bytes()
    dynamic.write_bytes(data[:-cut])
    _one_error(dynamic, "conectix|truncated|past the end|outside")


def test_truncated_fixed_file(tmp_path: Path) -> None:
    path = tmp_path / "f.vhd"
    write(path, SIZE, BASE, kind="fixed")
    data = path.read_bytes()
    path.write_bytes(data[:4096] + data[-512:])  # the footer survives, the data does not
    _one_error(path, "truncated")


def test_bad_footer_checksum(dynamic: Path) -> None:
    size = dynamic.stat().st_size
    _poke(dynamic, size - 512 + 200, b"\1")  # reserved bytes: only the checksum notices
    _one_error(dynamic, "footer checksum")


def test_bad_footer_copy_checksum(dynamic: Path) -> None:
    _poke(dynamic, 200, b"\1")
    _one_error(dynamic, "footer copy at offset 0 checksum")


def test_bad_header_checksum(dynamic: Path) -> None:
    _poke(dynamic, 512 + 900, b"\1")
    _one_error(dynamic, "dynamic header checksum")


def test_bat_entry_past_eof(dynamic: Path) -> None:
    _poke(dynamic, 1536 + 4 * 3, struct.pack(">I", dynamic.stat().st_size // 512))
    _one_error(dynamic, "past the end")


def test_bat_entry_overlapping_metadata(dynamic: Path) -> None:
    _poke(dynamic, 1536 + 4 * 3, struct.pack(">I", 1))  # over the header
    _one_error(dynamic, "overlaps")


def test_blocks_overlapping_each_other(dynamic: Path) -> None:
    first = struct.unpack(">I", dynamic.read_bytes()[1536:1540])[0]
    _poke(dynamic, 1536 + 4 * 3, struct.pack(">I", first + 8))
    _one_error(dynamic, "overlap")


def test_block_size_not_power_of_two(dynamic: Path) -> None:
    _poke(dynamic, 512 + 32, struct.pack(">I", 3 * MiB))
    _fix_checksums(dynamic)
    _one_error(dynamic, "power of two")


def test_table_smaller_than_disk(dynamic: Path) -> None:
    _poke(dynamic, 512 + 28, struct.pack(">I", 2))
    _fix_checksums(dynamic)
    _one_error(dynamic, "fewer than")


def test_parent_id_mismatch(tmp_path: Path) -> None:
    write(tmp_path / "base.vhd", SIZE, BASE)
    write_child(tmp_path / "child.vhd", tmp_path / "base.vhd", SIZE, CHILD)
    write(tmp_path / "base.vhd", SIZE, BASE)  # same name, new unique id
    _one_error(tmp_path / "child.vhd", "expects")


def test_parent_chain_loop(tmp_path: Path) -> None:
    write(tmp_path / "base.vhd", SIZE, BASE)
    write_child(tmp_path / "child.vhd", tmp_path / "base.vhd", SIZE, CHILD)
    write_child(tmp_path / "gc.vhd", tmp_path / "child.vhd", SIZE, CHILD)
    (tmp_path / "child.vhd").rename(tmp_path / "real-child.vhd")
    (tmp_path / "gc.vhd").rename(tmp_path / "child.vhd")  # child.vhd now names itself
    _one_error(tmp_path / "child.vhd", "loops")


# --- fuzzing -------------------------------------------------------------------

FUZZ_SIZE = 64 * KiB


def _seed_files(folder: Path) -> dict[str, bytes]:
    small = [
        (0, noise(30, 8 * KiB)),
        (20 * KiB, noise(31, 4 * KiB)),
        (60 * KiB, noise(32, 4 * KiB)),
    ]
    write(folder / "fixed.vhd", FUZZ_SIZE, small, kind="fixed")
    write(folder / "base.vhd", FUZZ_SIZE, small, block_size=4096)
    child = [(4 * KiB, noise(33, 8 * KiB)), (36 * KiB, noise(34, 512))]
    write_child(folder / "child.vhd", folder / "base.vhd", FUZZ_SIZE, child)
    return {n: (folder / n).read_bytes() for n in ("fixed.vhd", "base.vhd", "child.vhd")}


@pytest.fixture(scope="module")
def seeds() -> Iterator[tuple[Path, dict[str, bytes]]]:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        yield folder, _seed_files(folder)


@settings(max_examples=300)
@given(
    name=st.sampled_from(["fixed.vhd", "base.vhd", "child.vhd"]),
    edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8),
    hot=st.booleans(),
    cut=st.one_of(st.none(), st.integers(1, 1 << 20)),
    fix=st.booleans(),
)
def test_fuzzed_files_give_only_vhd_errors(
    seeds: tuple[Path, dict[str, bytes]],
    name: str,
    edits: list[tuple[int, int]],
    hot: bool,
    cut: int | None,
    fix: bool,
) -> None:
    folder, originals = seeds
    data = bytearray(originals[name])
    for where, value in edits:
        # `hot` aims at the metadata: the first 4 KiB and the footer.
        at = (where % 4096 if where % 2 else len(data) - 1 - where % 512) if hot else where
        data[at % len(data)] = value
    if cut is not None:
        del data[len(data) - cut % len(data) :]
    path = folder / f"fuzz-{name}"
    path.write_bytes(bytes(data))
    if fix and len(data) >= 512:
        _fix_checksums(path)
    started = time.monotonic()
    try:
        with open_vhd(path) as r:
            assert r.size <= 1 << 32
            r.read(0, min(r.size, 1 << 20))
            for i, ext in enumerate(r.extents()):
                if i == 64:
                    break
                r.read(ext.offset, min(ext.length, 64 * KiB))
    except VhdError as e:
        assert "\n" not in str(e)
    assert time.monotonic() - started < 2


def test_checking_a_large_table_costs_bytes_per_entry_not_objects(tmp_path: Path) -> None:
    disk = tmp_path / "d.vhd"
    write(disk, 1024 * MiB, [(i * 2 * MiB, noise(i, 4096)) for i in range(512)], kind="dynamic")
    tracemalloc.start()
    with open_vhd(disk):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * MiB
