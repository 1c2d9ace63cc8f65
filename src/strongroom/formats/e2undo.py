"""e2fsprogs undo files (`E2UNDO02`): which bytes of a file system a tool wrote.

`debugfs -z FILE` (like `mke2fs`, `tune2fs`, `resize2fs` and `e2fsck` with
`-z`) saves the old contents of every block before its first write, under a
key naming the block. The keys are therefore the exact set of blocks the run
modified, which is what the VHD backup mode needs to build a differencing
disk without hashing the whole file system. Only the keys are read here; the
saved data is skipped (`e2undo` uses it to roll a failed cycle back).

Layout (lib/ext2fs/undo_io.c): the file is cut into `block_size` blocks.
Block 0 holds the header, `super_offset` a copy of the superblock, and from
`key_offset` on come key blocks (magic 0xCADECADE, crc, reserved, then
16-byte keys `fsblk u64, crc u32, size u32`), each followed by the data of
its keys, `ceil(size / block_size)` blocks per key. `fsblk` counts in
`fs_block_size` units from the file system's start. All little-endian.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from strongroom.errors import StrongroomError

MAGIC = b"E2UNDO02"
KEYBLOCK_MAGIC = 0xCADECADE
STATE_FINISHED = 0x1
COMPAT_FS_OFFSET = 0x1
_HEADER = struct.Struct("<8sQQQIIIIIIIIQ")
_KEYBLOCK_HEAD = struct.Struct("<IIQ")
_KEY = struct.Struct("<QII")
_MIN_BLOCK, _MAX_BLOCK = 1024, 1 << 20
_MAX_FS_BLOCK = 1 << 16


class UndoFileError(StrongroomError):
    """An undo file that is not one, or is damaged."""


@dataclass(frozen=True)
class UndoLog:
    """What an undo file says: the byte ranges of the file system that were written."""

    block_size: int
    fs_block_size: int
    fs_offset: int
    finished: bool  # the tool closed the file (a crash leaves it unfinished)
    extents: list[tuple[int, int]]  # (offset, length) in bytes, as recorded

    @property
    def bytes_written(self) -> int:
        return sum(length for _, length in self.extents)


def read_undo_log(path: str | os.PathLike[str]) -> UndoLog:
    """Parse the keys of the undo file at `path`; UndoFileError on anything malformed."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return _parse(f, size, os.fspath(path))
    except OSError as err:
        raise UndoFileError(f"{os.fspath(path)}: cannot read undo file: {err.strerror}") from None


def _parse(f, size: int, where: str) -> UndoLog:  # type: ignore[no-untyped-def]
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size or head[:8] != MAGIC:
        raise UndoFileError(f"{where}: not an e2fsprogs undo file (no E2UNDO02 header)")
    (
        _magic,
        num_keys,
        _super_offset,
        key_offset,
        block_size,
        fs_block_size,
        _sb_crc,
        state,
        f_compat,
        f_incompat,
        _f_rocompat,
        _pad,
        fs_offset,
    ) = _HEADER.unpack(head)
    if num_keys == 0 and block_size == 0:
        # A run that wrote nothing never set its block size.
        return UndoLog(0, fs_block_size, 0, bool(state & STATE_FINISHED), [])
    if not _MIN_BLOCK <= block_size <= _MAX_BLOCK or block_size & (block_size - 1):
        raise UndoFileError(f"{where}: undo block size {block_size} is invalid")
    if not 512 <= fs_block_size <= _MAX_FS_BLOCK or fs_block_size & (fs_block_size - 1):
        raise UndoFileError(f"{where}: file system block size {fs_block_size} is invalid")
    if f_incompat:
        raise UndoFileError(f"{where}: undo file uses unknown features ({f_incompat:#x})")
    if not f_compat & COMPAT_FS_OFFSET:
        fs_offset = 0
    blocks_in_file = size // block_size
    keys_per_block = block_size // _KEY.size - 1
    # Every key takes at least one data block, so a count beyond the file's
    # blocks is a lie, not a reason to loop.
    if num_keys > blocks_in_file:
        raise UndoFileError(f"{where}: undo file claims {num_keys} keys in {size} bytes")
    extents: list[tuple[int, int]] = []
    block = key_offset
    remaining = num_keys
    while remaining > 0:
        if block < 1 or block >= blocks_in_file:
            raise UndoFileError(f"{where}: key block {block} lies outside the undo file")
        f.seek(block * block_size)
        raw = f.read(block_size)
        if len(raw) < block_size:
            raise UndoFileError(f"{where}: undo file truncated in key block {block}")
        keyb_magic, _crc, _reserved = _KEYBLOCK_HEAD.unpack_from(raw)
        if keyb_magic != KEYBLOCK_MAGIC:
            raise UndoFileError(f"{where}: bad key block magic at undo block {block}")
        count = min(remaining, keys_per_block)
        data_blocks = 0
        for i in range(count):
            fsblk, _blk_crc, length = _KEY.unpack_from(raw, _KEYBLOCK_HEAD.size + i * _KEY.size)
            if length == 0:
                raise UndoFileError(f"{where}: empty key in undo block {block}")
            offset = fsblk * fs_block_size
            if offset >= 1 << 62:
                raise UndoFileError(f"{where}: key points past any file system ({fsblk})")
            extents.append((offset, length))
            data_blocks += -(-length // block_size)
        remaining -= count
        block += 1 + data_blocks
        if block > blocks_in_file:
            raise UndoFileError(f"{where}: undo file truncated in the data of its keys")
    return UndoLog(
        block_size=block_size,
        fs_block_size=fs_block_size,
        fs_offset=fs_offset,
        finished=bool(state & STATE_FINISHED),
        extents=extents,
    )
