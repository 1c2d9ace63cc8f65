"""The VHD backup mode: a local metadata disk, and one differencing VHD per cycle.

The protected machine keeps, in a state folder, a *metadata disk*: an ext4
file system that mirrors the protected tree, inside a VHD (`meta.vhd`). A
cycle finds the files that changed since the last one (tree_state), turns
them into debugfs edits of that file system (translate), runs them with an
undo file whose keys are exactly the blocks written (formats/e2undo), and
writes those blocks, sector-exact, as a differencing VHD whose parent is the
previous cycle's disk. The first cycle ships the whole disk as a dynamic VHD.
The destination therefore holds a chain any VHD reader opens, and whose
flattened state is, at every cycle, a clean ext4 file system holding the tree.

The local disk is a *fixed* VHD kept as a sparse file, not a dynamic one:
e2fsprogs edits a plain file in place, and a fixed VHD is exactly that plus a
footer, so it costs the same disk space as a dynamic one, needs no second
copy, and Linux loop-mounts it as it stands. What travels is dynamic or
differencing, so transfer cost follows the data, not the disk size.

Crash safety: before editing, the state records the pending cycle (number,
disk id) and the new tree. If the process dies, the next run asks the
destination whether that cycle arrived: if so it is committed, if not the
undo file rolls the metadata disk back and the cycle is done again.
"""

from __future__ import annotations

import contextlib
import os
import uuid as uuidlib
from datetime import UTC, datetime

from strongroom.errors import SourceError, UsageError
from strongroom.formats.e2undo import read_undo_log
from strongroom.formats.vhd.structs import FIXED, Footer
from strongroom.formats.vhd.writer import check_size
from strongroom.model.tree import DIR, FILE
from strongroom.protect import e2fs
from strongroom.protect.cycles import (
    CycleResult,
    CycleRunner,
    ProtectOptions,
    ProtectStateError,
    StateFolder,
    check_name,
    default_name,
    merge_ranges,
    read_ranges,
)
from strongroom.protect.translate import (
    Script,
    build_script,
    metadata_script,
    nanoseconds_script,
)
from strongroom.protect.tree_state import (
    ROOT,
    Tree,
    TreeChanges,
    diff_trees,
    load_tree,
    save_tree,
    scan_tree,
    with_xattrs,
)
from strongroom.sources.block import RawSource
from strongroom.sources.files import read_xattrs_of

GIB = 1 << 30
_TREE = "tree.msgpack"
_TREE_PENDING = "tree.pending.msgpack"

__all__ = [
    "CycleResult",
    "ProtectOptions",
    "StateFolder",
    "VhdProtection",
    "check_name",
    "default_name",
]


class VhdProtection(CycleRunner):
    """Cycles of one directory tree through its metadata disk."""

    mode = "tree"

    def check_source(self) -> None:
        if not os.path.isdir(self.source):
            raise SourceError(f"{self.source}: not a directory")

    # --- local state -------------------------------------------------------------

    def _tree(self) -> Tree:
        try:
            with open(self.state.file(_TREE), "rb") as f:
                return load_tree(f.read())
        except (OSError, ValueError) as err:
            raise ProtectStateError(f"{self.state.path}: tree state unreadable ({err})") from None

    def adopt_pending(self) -> None:
        # Idempotent: a crash between this rename and the state document's
        # update runs it again on recovery.
        if os.path.exists(self.state.file(_TREE_PENDING)):
            self.state.rename(_TREE_PENDING, _TREE)
        self.state.remove("cycle.e2undo")

    def drop_pending(self) -> None:
        if os.path.exists(self.state.undo):
            e2fs.roll_back(self.state.disk, self.state.undo)
        self.state.remove(_TREE_PENDING)

    def discard_first(self) -> None:
        for leftover in ("meta.vhd", _TREE, _TREE_PENDING):
            self.state.remove(leftover)

    # --- cycles --------------------------------------------------------------------

    def first_cycle(self) -> CycleResult:
        scan = scan_tree(self.source)
        size = self.options.size if self.options.size is not None else default_disk_size(scan.tree)
        try:
            check_size(size)
        except ValueError as err:
            raise UsageError(f"--size: {err}") from None
        if size % e2fs.FS_BLOCK:
            raise UsageError(f"--size must be a multiple of {e2fs.FS_BLOCK} bytes")
        disk = self.state.disk
        self.phase("building the metadata disk")
        with open(disk, "wb") as f:
            f.truncate(size)
        inodes = default_inodes(scan.tree, size)
        value_dir = self.state.file("values")
        # mke2fs -d copies the tree in one pass, but stops at the first entry it
        # cannot read; a tree with such entries is built by debugfs instead,
        # which skips them (and says so), like every later cycle.
        everything_readable = not scan.warnings and _all_readable(self.source, scan.tree)
        root = scan.tree[ROOT]
        if everything_readable:
            e2fs.make_filesystem(disk, size, self.source, inodes=inodes)
            # mke2fs -d keeps the root's owner only, and times in whole seconds.
            script = metadata_script(ROOT, root)
            script.lines += nanoseconds_script(scan.tree).lines
            tree = with_xattrs(scan.tree, _xattr_names(self.source, scan.tree))
        else:
            e2fs.make_filesystem(disk, size, None, inodes=inodes, owner=(root.uid, root.gid))
            os.makedirs(value_dir, exist_ok=True)
            empty = {ROOT: root}
            script = build_script(
                diff_trees(empty, scan.tree), empty, scan.tree, self.source, value_dir
            )
            script.lines += metadata_script(ROOT, root).lines
            tree = _settled_tree(empty, scan.tree, script.skipped)
            tree = with_xattrs(tree, script.xattrs)
            scan.warnings += script.warnings
        self._apply(script, None)
        # The local disk's own footer: a fixed VHD, mountable as it stands.
        with open(disk, "r+b") as f:
            f.seek(size)
            f.write(Footer(kind=FIXED, current_size=size, uuid=uuidlib.uuid4()).pack())
        self.state.write(_TREE_PENDING, save_tree(tree))
        with contextlib.closing(RawSource(disk, size)) as source:
            ranges = [(e.offset, e.length) for e in source.allocation() if not e.zero]
        ident = uuidlib.uuid4()
        info = self.write_vhd(size, read_ranges(disk, ranges), ident, None, datetime.now(UTC))
        changed = sum(n for _, n in ranges)
        counts = {"created": len(tree)}
        where, _ = self.ship(0, info, None, counts, None, changed)
        self.commit(self.new_doc(size), 0, info, where)
        self._verify(disk)
        return self.result(0, info, where, counts, changed, scan.warnings)

    def next_cycle(self, doc: dict[str, object]) -> CycleResult:
        size = int(doc["disk_size"])  # type: ignore[call-overload]
        last = self.last(doc)
        old = self._tree()
        scan = scan_tree(self.source, old)
        changes = diff_trees(old, scan.tree)
        if not changes:
            return CycleResult(cycle=None, kind="none", disk_size=size, warnings=scan.warnings)
        value_dir = self.state.file("values")
        os.makedirs(value_dir, exist_ok=True)
        script = build_script(changes, old, scan.tree, self.source, value_dir)
        if not script.lines:  # every change was skipped: nothing to apply or ship
            warnings = scan.warnings + script.warnings
            return CycleResult(cycle=None, kind="none", disk_size=size, warnings=warnings)
        new_tree = with_xattrs(_settled_tree(old, scan.tree, script.skipped), script.xattrs)
        cycle = last.cycle + 1
        self.state.write(_TREE_PENDING, save_tree(new_tree))
        ident, made = self.begin(doc, cycle)
        counts = _counts(changes)
        try:
            self.phase("applying changes")
            self._apply(script, self.state.undo)
            ranges = merge_ranges(read_undo_log(self.state.undo).extents, size)
            parent = self.parent_of(last, size)
            data = read_ranges(self.state.disk, ranges)
            info = self.write_vhd(size, data, ident, parent, made)
            changed = sum(n for _, n in ranges)
            where, _ = self.ship(cycle, info, last.uuid, counts, ranges, changed)
        except BaseException:
            # Commit if the cycle arrived after all, else undo the edits.
            self.recover(doc)
            raise
        self.commit(doc, cycle, info, where)
        self._verify(self.state.disk)
        return self.result(cycle, info, where, counts, changed, scan.warnings + script.warnings)

    def _apply(self, script: Script, undo: str | None) -> None:
        """Run `script` on the metadata disk (recording `undo`), with the xattr
        values it reads from files present only meanwhile."""
        script_path = self.state.file("cycle.debugfs")
        try:
            for holder, value in script.value_files.items():
                with open(holder, "wb") as f:
                    f.write(value)
            with open(script_path, "wb") as f:
                f.write(script.text())
            e2fs.run_debugfs(self.state.disk, script_path, undo)
        finally:
            for holder in script.value_files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(holder)

    def _verify(self, disk: str) -> None:
        if not self.options.verify:
            return
        clean, report = e2fs.check_filesystem(disk)
        if not clean:
            raise e2fs.MirrorError(f"e2fsck found problems in {disk}: {report.strip()[-300:]}")


def default_disk_size(tree: Tree) -> int:
    """Room for the tree twice over (it changes and grows), at least 1 GiB,
    rounded up to a GiB. Sparse: unused space costs nothing anywhere."""
    used = sum(e.size + e2fs.FS_BLOCK for e in tree.values())
    return min(max(GIB, -(-2 * used // GIB) * GIB), 2040 * GIB)


def default_inodes(tree: Tree, size: int) -> int:
    """Enough inodes for the tree four times over, never fewer than mke2fs's default."""
    return max(size // 16384, 4 * len(tree) + 1024)


def _xattr_names(root: str, tree: Tree) -> dict[bytes, tuple[bytes, ...]]:
    base = os.fsencode(root)
    found: dict[bytes, tuple[bytes, ...]] = {}
    for path, entry in tree.items():
        if entry.type in (FILE, DIR):
            try:
                names = tuple(sorted(read_xattrs_of(base + path)))
            except OSError:
                continue
            if names:
                found[path] = names
    return found


def _all_readable(root: str, tree: Tree) -> bool:
    base = os.fsencode(root)
    return all(
        os.access(base + path, os.R_OK | (os.X_OK if e.type == DIR else 0))
        for path, e in tree.items()
        if e.type in (FILE, DIR) and path != ROOT
    )


def _settled_tree(old: Tree, new: Tree, skipped: list[bytes]) -> Tree:
    """The tree the mirror holds once the script ran: skipped paths stay as they were."""
    if not skipped:
        return new
    settled = dict(new)
    for path in skipped:
        if path in old:
            settled[path] = old[path]
        else:
            settled.pop(path, None)
    return settled


def _counts(changes: TreeChanges) -> dict[str, int]:
    return {
        "created": len(changes.created),
        "rewritten": len(changes.rewritten),
        "renamed": len(changes.renamed),
        "removed": len(changes.removed),
        "metadata": len(changes.metadata),
    }
