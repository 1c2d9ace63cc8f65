"""A protected tree, its state folder and its destination, run through the real CLI,
and the checks every shipped cycle must pass (the acceptance criteria of issue #4).

After each cycle that shipped a VHD:
(a) libvhdi flattens the chain (base, then each differencing disk with its parent
    set) and e2fsck -fn finds the file system in it clean;
(b) debugfs's view of that file system equals the source tree (paths, types,
    permission bits, owners, mtimes, hard links, file bytes, symlink targets);
(c) the flattened disk equals the local metadata disk byte for byte;
(d) the cycle's VHD holds exactly the sectors the cycle changed (its bitmaps count
    `bytes_changed`), every block that changed since the last cycle is among
    them, and its size is bounded by its allocated blocks plus its metadata;
(e) vhdiinfo reads each file and names the previous cycle's disk as its parent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strongroom.cli.units import size_bytes
from strongroom.formats.vhd import read_footer
from strongroom.formats.vhd.structs import FIXED, FOOTER_SIZE
from strongroom.protect.vhd_mode import ProtectOptions
from strongroom.services.protect import chain_destination, protect_once
from tests.conftest import CliRunner
from tests.helpers.cli import CliResult
from tests.protect.mirror import (
    FS_BLOCK,
    SECTOR,
    chain_files,
    changed_blocks,
    flatten,
    fsck_clean,
    same_bytes,
    tree_differences,
    vhd_layout,
    vhdiinfo,
)


@dataclass
class ChainCase:
    """`run()` one cycle of `strongroom protect SRC --to DEST --state STATE`."""

    cli: CliRunner
    root: Path
    name: str = "src"
    size: str = "32M"
    flats: dict[int, Path] = field(default_factory=dict)  # cycle -> flattened chain
    folders: int = 0  # work folders made so far

    @property
    def src(self) -> Path:
        return self.root / self.name

    @property
    def dest(self) -> Path:
        return self.root / "dest"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def disk(self) -> Path:
        return self.state / "meta.vhd"

    def protect(self, *more: str) -> CliResult:
        args = ["protect", str(self.src), "--to", str(self.dest), "--state", str(self.state)]
        return self.cli(*args, "--size", self.size, "--json", *more)

    def run(self, *more: str) -> dict[str, Any]:
        """One cycle that must succeed; its JSON summary."""
        result = self.protect(*more)
        assert result.rc == 0, result.err
        summary: dict[str, Any] = result.summary()
        return summary

    def run_api(self) -> dict[str, Any]:
        """One cycle in this process, through the service the CLI calls (faster:
        for the cycles that set a case up); its summary, as the CLI's."""
        dest = chain_destination(str(self.dest))
        options = ProtectOptions(name=self.name, size=size_bytes(self.size))
        try:
            result = protect_once(str(self.src), dest, options, str(self.state))
        finally:
            dest.close()
        return result.as_dict()

    def files(self) -> list[Path]:
        return chain_files(self.dest, self.name)

    def work(self, what: str) -> Path:
        """A new folder for one check's files."""
        self.folders += 1
        folder = self.root / f"check-{self.folders}-{what}"
        folder.mkdir()
        return folder

    def flat(self, cycle: int) -> Path:
        """The chain up to `cycle`, flattened by libvhdi (once)."""
        if cycle not in self.flats:
            image = self.work(f"flat-{cycle}") / "flat.img"
            flatten(self.files()[: cycle + 1], image)
            self.flats[cycle] = image
        return self.flats[cycle]

    def check_chain(self, skipped: tuple[bytes, ...] = ()) -> Path:
        """(a), (b), (c) for the whole chain as it stands; `skipped` source paths
        are expected to be missing from it. Returns the flattened image."""
        files = self.files()
        cycle = len(files) - 1
        self.flats.pop(cycle, None)  # the last file may have been shipped again
        flat = self.flat(cycle)
        fsck_clean(flat)
        missing = {f"missing in the image: {p!r}" for p in skipped}
        differences = tree_differences(self.src, flat, self.work("tree"))
        assert set(differences) == missing, differences
        size = vhd_layout(files[0]).disk_size
        # The local disk is a fixed VHD: the disk, then a footer.
        assert self.disk.stat().st_size == size + FOOTER_SIZE
        footer = read_footer(self.disk)
        assert (footer.kind, footer.current_size) == (FIXED, size)
        assert same_bytes(flat, self.disk, size), "the chain is not the metadata disk"
        return flat

    def check(self, summary: dict[str, Any], skipped: tuple[bytes, ...] = ()) -> None:
        """Checks (a) to (e) of the module docstring for the cycle just shipped."""
        cycle = summary["cycle"]
        files = self.files()
        assert len(files) == cycle + 1, files
        assert summary["location"] == str(files[-1])
        flat = self.check_chain(skipped)  # (a) (b) (c)
        assert summary["disk_size"] == vhd_layout(files[-1]).disk_size
        self._check_size(summary, files)  # (d)
        info = vhdiinfo(files[-1])  # (e)
        assert info["Identifier"] == summary["uuid"]
        assert f"({summary['disk_size']} bytes)" in info["Media size"]
        if cycle == 0:
            assert info["Disk type"] == "Dynamic"
        else:
            assert info["Disk type"] == "Differential"
            assert info["Parent identifier"] == vhdiinfo(files[-2])["Identifier"]
            assert info["Parent filename"] == files[-2].name
        assert flat == self.flats[cycle]

    def _check_size(self, summary: dict[str, Any], files: list[Path]) -> None:
        cycle, vhd = summary["cycle"], files[-1]
        record = json.loads(vhd.with_suffix(".json").read_text())
        parent = vhd_layout(files[-2]) if cycle else None
        assert record["uuid"] == summary["uuid"] and record["cycle"] == cycle
        assert record["parent_uuid"] == (str(parent.uuid) if parent else None)
        assert record["vhd_bytes"] == summary["vhd_bytes"] == vhd.stat().st_size
        assert record["bytes_changed"] == summary["bytes_changed"]
        layout = vhd_layout(vhd)
        assert str(layout.uuid) == summary["uuid"]
        assert len(layout.blocks) == summary["vhd_allocated_blocks"]
        assert layout.file_size <= len(layout.blocks) * layout.block_span + layout.metadata_bytes
        assert len(layout.blocks) * layout.block_size >= summary["bytes_changed"]
        per_block = layout.block_size // SECTOR
        assert layout.blocks == {s // per_block for s in layout.sectors}, "an empty block"
        per_fs_block = FS_BLOCK // SECTOR
        size = layout.disk_size
        if parent is None:
            assert layout.kind == "dynamic"
            before = self.root / "zeros.img"
            with open(before, "wb") as f:
                f.truncate(size)
        else:
            assert layout.kind == "differencing"
            assert layout.parent_uuid == parent.uuid
            # Exactly what the undo file listed: whole file system blocks.
            assert len(layout.sectors) * SECTOR == summary["bytes_changed"]
            starts = [s for s in layout.sectors if s - 1 not in layout.sectors]
            ends = [s + 1 for s in layout.sectors if s + 1 not in layout.sectors]
            assert all(s % per_fs_block == 0 for s in starts + ends), "not whole fs blocks"
            before = self.flat(cycle - 1)
        for block in changed_blocks(before, self.flat(cycle), size, FS_BLOCK):
            first = block * per_fs_block
            assert set(range(first, first + per_fs_block)) <= layout.sectors, (
                f"cycle {cycle}: changed file system block {block} is not in the VHD"
            )


def warnings_of(result: CliResult) -> list[str]:
    return [d["message"] for d in result.lines() if d.get("message_type") == "warning"]
