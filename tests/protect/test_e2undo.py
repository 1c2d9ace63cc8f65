"""formats/e2undo.py on undo files written by the real `debugfs -w -z`.

The keys must name every block debugfs changed (the VHD backup mode ships only
those), and a damaged file must raise UndoFileError, never anything else.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.formats.e2undo import MAGIC, UndoFileError, read_undo_log
from tests.helpers.tree import random_bytes, write_file
from tests.protect.mirror import FS_BLOCK, changed_blocks, need_e2fsprogs, tool

IMAGE_BLOCKS = 4096  # 16 MiB
ZAPPED = range(1000, 1700, 2)  # 350 blocks, none next to another: one key each
_NUM_KEYS, _KEY_OFFSET, _BLOCK_SIZE, _STATE = 8, 24, 32, 44  # header field offsets


@dataclass(frozen=True)
class Edit:
    before: Path
    after: Path
    undo: Path


def make_image(root: Path) -> Path:
    tree = root / "tree"
    write_file(tree / "a.txt", b"a\n")
    write_file(tree / "sub" / "b.bin", random_bytes(100_000, 1))
    image = root / "fs.img"
    tool("mke2fs", "-q", "-F", "-t", "ext4", "-b", str(FS_BLOCK), "-E", "nodiscard", "-d", tree,
         image, str(IMAGE_BLOCKS))  # fmt: skip
    return image


def edit(root: Path, *commands: str) -> Edit:
    """A fresh image, a copy of it, then `commands` run on it by debugfs -w -z."""
    root.mkdir()
    after = make_image(root)
    before = root / "before.img"
    shutil.copyfile(after, before)
    script = root / "commands.debugfs"
    script.write_text("".join(c + "\n" for c in commands))
    undo = root / "edit.e2undo"
    proc = tool("debugfs", "-w", "-z", undo, "-f", script, after)
    assert b"rror" not in proc.stderr, proc.stderr
    return Edit(before, after, undo)


def recorded_blocks(path: Path) -> list[int]:
    """The file system blocks the undo file's keys cover, one entry per block."""
    log = read_undo_log(path)
    blocks: list[int] = []
    for offset, length in log.extents:
        assert offset % FS_BLOCK == 0 and length % FS_BLOCK == 0 and length > 0
        blocks.extend(range(offset // FS_BLOCK, (offset + length) // FS_BLOCK))
    return blocks


@pytest.fixture(scope="module")
def one_file(tmp_path_factory: pytest.TempPathFactory) -> Edit:
    """debugfs writes one new 30 kB file."""
    need_e2fsprogs()
    root = tmp_path_factory.mktemp("undo")
    write_file(root / "new.bin", random_bytes(30_000, 2))
    return edit(root / "one", f'write "{root / "new.bin"}" /sub/new.bin')


@pytest.fixture(scope="module")
def scattered(tmp_path_factory: pytest.TempPathFactory) -> Edit:
    """350 blocks far apart: more keys than one key block holds (255)."""
    need_e2fsprogs()
    root = tmp_path_factory.mktemp("undo")
    return edit(root / "zap", *(f"zap_block -p 0x55 {b}" for b in ZAPPED))


def test_keys_cover_every_block_written_by_one_file(one_file: Edit, tmp_path: Path) -> None:
    log = read_undo_log(one_file.undo)
    assert log.finished
    assert (log.block_size, log.fs_block_size, log.fs_offset) == (FS_BLOCK, FS_BLOCK, 0)
    blocks = recorded_blocks(one_file.undo)
    assert len(blocks) == len(set(blocks)), "a block recorded twice"
    assert log.bytes_written == len(blocks) * FS_BLOCK
    size = IMAGE_BLOCKS * FS_BLOCK
    differing = changed_blocks(one_file.before, one_file.after, size, FS_BLOCK)
    assert differing <= set(blocks)
    assert len(blocks) < 64  # a file of 8 blocks, its inode, directory, bitmaps, counts
    # The new file's own data blocks, as debugfs lists them, are all there.
    listed = tool("debugfs", "-R", "blocks /sub/new.bin", one_file.after).stdout.split()
    assert len(listed) == 8 and {int(b) for b in listed} <= set(blocks)


def test_keys_over_several_key_blocks(scattered: Edit) -> None:
    log = read_undo_log(scattered.undo)
    assert log.finished and len(log.extents) > 255
    blocks = recorded_blocks(scattered.undo)
    assert set(ZAPPED) <= set(blocks)
    assert len(blocks) < len(ZAPPED) + 16
    differing = changed_blocks(scattered.before, scattered.after, IMAGE_BLOCKS * FS_BLOCK, 4096)
    assert set(ZAPPED) <= differing <= set(blocks)


def test_e2undo_restores_exactly_what_the_keys_name(scattered: Edit, tmp_path: Path) -> None:
    """The keys are the blocks e2undo puts back: undoing changes nothing else."""
    image = tmp_path / "fs.img"
    shutil.copyfile(scattered.after, image)
    tool("e2undo", scattered.undo, image)
    size = IMAGE_BLOCKS * FS_BLOCK
    assert changed_blocks(image, scattered.before, size, FS_BLOCK) == set()


# --- damaged files ---------------------------------------------------------------------


def patched(source: Path, target: Path, at: int, value: bytes) -> Path:
    raw = bytearray(source.read_bytes())
    raw[at : at + len(value)] = value
    target.write_bytes(bytes(raw))
    return target


def test_wrong_magic(one_file: Edit, tmp_path: Path) -> None:
    bad = patched(one_file.undo, tmp_path / "u", 0, b"E2UNDO01")
    with pytest.raises(UndoFileError, match="not an e2fsprogs undo file"):
        read_undo_log(bad)


def test_every_truncation(one_file: Edit, tmp_path: Path) -> None:
    raw = one_file.undo.read_bytes()
    assert len(raw) % 512 == 0
    cut = tmp_path / "u"
    for size in range(0, len(raw), 512):
        cut.write_bytes(raw[:size])
        with pytest.raises(UndoFileError):
            read_undo_log(cut)


def test_every_truncation_of_a_file_with_several_key_blocks(
    scattered: Edit, tmp_path: Path
) -> None:
    raw = scattered.undo.read_bytes()
    cut = tmp_path / "u"
    for size in range(0, len(raw), 4096):
        cut.write_bytes(raw[:size])
        with pytest.raises(UndoFileError):
            read_undo_log(cut)


@pytest.mark.parametrize(
    ("at", "value", "message"),
    [
        (_NUM_KEYS, struct.pack("<Q", 1 << 60), "claims"),
        (_NUM_KEYS, struct.pack("<Q", 2**64 - 1), "claims"),
        (_KEY_OFFSET, struct.pack("<Q", 10**6), "outside"),
        (_KEY_OFFSET, struct.pack("<Q", 2**64 - 1), "outside"),
        (_KEY_OFFSET, struct.pack("<Q", 0), "outside"),
        (_KEY_OFFSET, struct.pack("<Q", 1), "magic"),  # the superblock copy
        (_BLOCK_SIZE, struct.pack("<I", 0), "block size"),
        (_BLOCK_SIZE, struct.pack("<I", 3000), "block size"),
        (_BLOCK_SIZE, struct.pack("<I", 1 << 31), "block size"),
        (_BLOCK_SIZE + 4, struct.pack("<I", 256), "block size"),
        (_STATE + 8, struct.pack("<I", 1), "unknown features"),
        (2 * FS_BLOCK, b"\0\0\0\0", "magic"),  # the key block's magic
        (2 * FS_BLOCK + 16 + 12, struct.pack("<I", 0), "empty key"),  # the first key's size
        (2 * FS_BLOCK + 16 + 12, struct.pack("<I", 1 << 31), "truncated"),
        (2 * FS_BLOCK + 16, struct.pack("<Q", 2**64 - 1), "past any file system"),
    ],
)
def test_damaged_header_and_keys(
    one_file: Edit, tmp_path: Path, at: int, value: bytes, message: str
) -> None:
    bad = patched(one_file.undo, tmp_path / "u", at, value)
    with pytest.raises(UndoFileError, match=message):
        read_undo_log(bad)


def test_an_unfinished_file_says_so(one_file: Edit, tmp_path: Path) -> None:
    """A tool that died leaves the state flag clear: the keys are still read."""
    bad = patched(one_file.undo, tmp_path / "u", _STATE, struct.pack("<I", 0))
    log = read_undo_log(bad)
    assert not log.finished
    assert log.extents == read_undo_log(one_file.undo).extents


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(UndoFileError, match="cannot read"):
        read_undo_log(tmp_path / "missing")
    with pytest.raises(UndoFileError, match="cannot read"):
        read_undo_log(tmp_path)


# --- fuzzing -------------------------------------------------------------------------


def read_or_refuse(path: Path, data: bytes) -> None:
    """read_undo_log returns sane extents or raises UndoFileError; nothing else."""
    path.write_bytes(data)
    try:
        log = read_undo_log(path)
    except UndoFileError:
        return
    assert all(length > 0 and offset >= 0 for offset, length in log.extents)
    assert len(log.extents) <= len(data) // log.block_size


@given(st.binary(max_size=3 * FS_BLOCK) | st.binary(max_size=3 * FS_BLOCK).map(MAGIC.__add__))
def test_fuzz_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    read_or_refuse(tmp_path_factory.mktemp("fuzz") / "u", data)


@given(
    st.lists(
        st.tuples(st.integers(0, 3 * FS_BLOCK - 1), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    )
)
def test_fuzz_flipped_header_and_key_blocks(
    tmp_path_factory: pytest.TempPathFactory,
    one_file: Edit,
    scattered: Edit,
    flips: list[tuple[int, int]],
) -> None:
    for original in (one_file.undo, scattered.undo):
        raw = bytearray(original.read_bytes())
        for at, value in flips:
            raw[at] = value
        read_or_refuse(tmp_path_factory.mktemp("fuzz") / "u", bytes(raw))


def test_file_sizes_are_what_the_tests_assume(one_file: Edit, scattered: Edit) -> None:
    assert os.path.getsize(one_file.undo) > 3 * FS_BLOCK
    assert os.path.getsize(scattered.undo) > 3 * FS_BLOCK
