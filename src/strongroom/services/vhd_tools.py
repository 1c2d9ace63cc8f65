"""`vhd info` and `vhd check`: describe and verify a VHD file and its parent chain.

`vhd_info` describes every file of the chain it can open, from FILE down to the
base, and says where the chain breaks (a parent not found, a parent of another
id) instead of failing; only a damaged FILE raises. `check_vhd` opens the chain
with full validation and reads every allocated block of every file once;
any problem raises `VhdError` with a one-line message.

Both follow a parent outside the child's real folder only when allowed
(`allow_backing`): a parent locator is a name a guest may have written
(sources/vhd.py, `ConfinedParents`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from strongroom.formats.vhd import VhdError as VhdError  # what check_vhd raises
from strongroom.formats.vhd import VhdReader, open_vhd
from strongroom.sources.vhd import ConfinedParents

MAX_CHAIN = 64  # as the reader's own bound
READ_STEP = 4 << 20  # bytes per read while checking


@dataclass(frozen=True)
class VhdFileInfo:
    """One file of a VHD chain."""

    path: str
    type: str  # fixed | dynamic | differencing
    virtual_size: int
    block_size: int | None
    uuid: str
    file_size: int
    allocated: int  # bytes of the virtual disk this file holds data for (block granularity)
    parent_uuid: str | None = None
    parent_path: str | None = None  # resolved from the locators, None when not found
    parent_name: str | None = None  # as the file records it

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class VhdChainInfo:
    """FILE first, then its parents; `problem` says where the chain breaks."""

    files: list[VhdFileInfo] = field(default_factory=list)
    problem: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class VhdCheckResult:
    """A sound chain: its files and what was read to prove it."""

    files: list[VhdFileInfo]
    virtual_size: int
    bytes_read: int

    def as_dict(self) -> dict[str, object]:
        return {"ok": True, **asdict(self)}


def _own_ranges(reader: VhdReader) -> list[tuple[int, int]]:
    """(offset, length) of the ranges a file opened alone holds data for."""
    return [(e.offset, e.length) for e in reader.extents() if e.allocated]


def _describe(reader: VhdReader, parent_path: str | None) -> VhdFileInfo:
    """`reader` must be opened alone (no parent), so that `allocated` is its own."""
    ref = reader.parent_ref
    return VhdFileInfo(
        path=str(reader.path),
        type=reader.kind,
        virtual_size=reader.size,
        block_size=reader.block_size,
        uuid=str(reader.uuid),
        file_size=os.stat(reader.path).st_size,
        allocated=sum(n for _, n in _own_ranges(reader)),
        parent_uuid=str(ref.uuid) if ref else None,
        parent_path=parent_path,
        parent_name=ref.name if ref else None,
    )


def vhd_info(path: str | os.PathLike[str], allow_backing: bool = False) -> VhdChainInfo:
    """Describe the VHD at `path` and each parent down to the base.

    Raises `VhdError` only if the file at `path` itself is damaged; a damaged,
    missing or mismatched parent ends the list and is named in `problem`.
    """
    info = VhdChainInfo()
    current = Path(os.path.abspath(path))
    seen: set[tuple[int, int]] = set()
    while True:
        try:
            reader = open_vhd(current, parent_resolver=None)
        except VhdError as err:
            if not info.files:
                raise
            info.problem = str(err)
            return info
        try:
            st = os.stat(current)
            seen.add((st.st_dev, st.st_ino))
            ref = reader.parent_ref if reader.kind == "differencing" else None
            parent: Path | None = None
            if ref is not None:
                try:
                    parent = ConfinedParents(allow_backing)(current, ref)
                except VhdError as err:
                    info.problem = str(err)
            info.files.append(_describe(reader, os.path.abspath(parent) if parent else None))
        finally:
            reader.close()
        if ref is None or parent is None:
            return info
        pst = os.stat(parent)
        if (pst.st_dev, pst.st_ino) in seen:
            info.problem = f"VHD parent chain loops back to {parent}"
            return info
        if len(info.files) > MAX_CHAIN:
            info.problem = f"VHD parent chain is longer than {MAX_CHAIN}"
            return info
        try:
            parent_reader = open_vhd(parent, parent_resolver=None)
        except VhdError as err:
            info.problem = str(err)
            return info
        with _closing(parent_reader) as p:
            if p.uuid != ref.uuid:
                info.problem = (
                    f"parent {parent.name} of {current.name} has id {p.uuid},"
                    f" but the child expects {ref.uuid}"
                )
                info.files.append(_describe(p, None))
                return info
        current = parent


class _closing:
    def __init__(self, reader: VhdReader) -> None:
        self.reader = reader

    def __enter__(self) -> VhdReader:
        return self.reader

    def __exit__(self, *exc: object) -> None:
        self.reader.close()


def check_vhd(
    path: str | os.PathLike[str],
    progress: Callable[[int], None] | None = None,
    *,
    allow_backing: bool = False,
) -> VhdCheckResult:
    """Validate the VHD at `path` and its whole chain, and read every allocated block.

    Each file's own data blocks are read once, through that file (so a
    differencing block's sectors that live in the parent are read there too).
    `progress` receives the bytes read so far. Raises `VhdError` at the first problem.
    """
    top = open_vhd(os.path.abspath(path), ConfinedParents(allow_backing))
    files: list[VhdFileInfo] = []
    total = 0
    try:
        layer: VhdReader | None = top
        while layer is not None:
            parent_path = str(layer.parent.path.absolute()) if layer.parent is not None else None
            with _closing(open_vhd(layer.path, parent_resolver=None)) as alone:
                ranges = _own_ranges(alone)  # this file's blocks, not its parents'
                files.append(_describe(alone, parent_path))
            for offset, length in ranges:
                pos, end = offset, offset + length
                while pos < end:
                    n = min(READ_STEP, end - pos)
                    data = layer.read(pos, n)
                    if len(data) != n:
                        raise VhdError(f"VHD {layer.path.name}: short read at offset {pos}")
                    pos += n
                    total += n
                    if progress is not None:
                        progress(total)
            layer = layer.parent
        return VhdCheckResult(files, top.size, total)
    finally:
        top.close()
