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
import fcntl
import json
import os
import re
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from strongroom.errors import SourceError, StrongroomError, UsageError
from strongroom.formats.e2undo import read_undo_log
from strongroom.formats.vhd.structs import FIXED, Footer, vhd_time
from strongroom.formats.vhd.writer import Kind, ParentInfo, VhdInfo, check_size, write_vhd
from strongroom.model.tree import DIR, FILE
from strongroom.protect import e2fs
from strongroom.protect.destinations import Destination, Shipment
from strongroom.protect.translate import build_script, metadata_script
from strongroom.protect.tree_state import (
    ROOT,
    Scan,
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
from strongroom.types import Progress, ProgressCallback, no_progress

STATE_VERSION = 1
GIB = 1 << 30
_PIECE = 2 << 20
_NAME = re.compile(r"[^a-z0-9_.-]+")


class ProtectStateError(StrongroomError):
    """The state folder is unusable (locked, damaged, or for another source)."""


def default_name(source: str) -> str:
    """An object-safe name for `source`: its folder name, lowercased."""
    base = os.path.basename(os.path.abspath(source).rstrip("/")) or "root"
    return _NAME.sub("-", base.lower()).strip("-.") or "root"


def check_name(name: str) -> str:
    if not name or _NAME.search(name) or name[0] in ".-":
        raise UsageError(f"--name {name!r}: use lowercase letters, digits, '.', '_' and '-'")
    return name


@dataclass
class CycleResult:
    cycle: int | None  # None: nothing changed, nothing shipped
    kind: str  # "base", "differencing" or "none"
    location: str = ""
    uuid: str = ""
    changes: dict[str, int] = field(default_factory=dict)
    bytes_changed: int = 0  # file system bytes the cycle wrote (undo keys)
    vhd_bytes: int = 0  # size of the VHD shipped
    vhd_allocated_blocks: int = 0
    disk_size: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    recovered: str = ""  # what the start of this run found and did

    def as_dict(self) -> dict[str, object]:
        return {
            "cycle": self.cycle,
            "kind": self.kind,
            "location": self.location,
            "uuid": self.uuid,
            "changes": self.changes,
            "bytes_changed": self.bytes_changed,
            "vhd_bytes": self.vhd_bytes,
            "vhd_allocated_blocks": self.vhd_allocated_blocks,
            "disk_size": self.disk_size,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
            "recovered": self.recovered,
        }


@dataclass
class _Last:
    cycle: int
    uuid: str
    timestamp: int  # VHD time stamp of that disk
    location: str


class StateFolder:
    """The local state of one protected source; one run at a time (flock)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self._lock_fd = os.open(self.file("lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise ProtectStateError(
                f"{self.path} is in use by another 'strongroom protect' run"
            ) from None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def disk(self) -> str:
        return self.file("meta.vhd")

    @property
    def undo(self) -> str:
        return self.file("cycle.e2undo")

    def read_json(self, name: str) -> dict[str, object] | None:
        try:
            with open(self.file(name), "rb") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise ProtectStateError(f"{self.file(name)}: unreadable state ({err})") from None
        if not isinstance(doc, dict):
            raise ProtectStateError(f"{self.file(name)}: not a state document")
        return doc

    def write(self, name: str, data: bytes) -> None:
        """Replace `name` atomically and durably."""
        temp = self.file(f".{name}.tmp")
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self.file(name))
        dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def remove(self, name: str) -> None:
        try:
            os.unlink(self.file(name))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


@dataclass
class ProtectOptions:
    name: str
    size: int | None = None  # metadata disk size; default from the source's size
    block_size: int = 2 << 20  # VHD block size of the shipped disks
    verify: bool = False  # run e2fsck -fn on the metadata disk after each cycle


class VhdProtection:
    """Cycles of one source into one destination, with its state folder."""

    def __init__(
        self,
        source: str,
        destination: Destination,
        state: StateFolder,
        options: ProtectOptions,
        progress: ProgressCallback = no_progress,
    ) -> None:
        self.source = os.path.abspath(source)
        if not os.path.isdir(self.source):
            raise SourceError(f"{source}: not a directory")
        self.dest = destination
        self.state = state
        self.options = options
        self.report = progress
        self.progress = Progress(job="protect")

    # --- state ---------------------------------------------------------------

    def _load(self) -> tuple[dict[str, object] | None, Tree]:
        doc = self.state.read_json("state.json")
        if doc is None:
            return None, {}
        if doc.get("version") != STATE_VERSION:
            raise ProtectStateError(f"{self.state.path}: state version {doc.get('version')}")
        if doc.get("source") != self.source or doc.get("name") != self.options.name:
            raise ProtectStateError(
                f"{self.state.path} protects {doc.get('source')} as {doc.get('name')!r}, "
                f"not {self.source} as {self.options.name!r}; use another --state folder"
            )
        try:
            with open(self.state.file("tree.msgpack"), "rb") as f:
                tree = load_tree(f.read())
        except (OSError, ValueError) as err:
            raise ProtectStateError(f"{self.state.path}: tree state unreadable ({err})") from None
        return doc, tree

    def _commit(self, doc: dict[str, object], tree: Tree) -> None:
        self.state.write("tree.msgpack", save_tree(tree))
        doc.pop("pending", None)
        self.state.write("state.json", json.dumps(doc, indent=1).encode())
        self.state.remove("tree.pending.msgpack")
        self.state.remove("cycle.e2undo")
        self.state.remove("outgoing.vhd")

    def _recover(self, doc: dict[str, object] | None) -> str:
        """Settle a cycle a previous run left pending; says what it did."""
        if doc is None:
            # A first cycle that never committed: start it again from scratch.
            for leftover in ("meta.vhd", "tree.msgpack", "tree.pending.msgpack", "outgoing.vhd"):
                self.state.remove(leftover)
            return ""
        pending = doc.get("pending")
        if not isinstance(pending, dict):
            return ""
        cycle = int(pending["cycle"])
        where = self.dest.arrived(self.options.name, cycle, str(pending["uuid"]))
        if where is not None:
            with open(self.state.file("tree.pending.msgpack"), "rb") as f:
                tree = load_tree(f.read())
            doc["last"] = {**pending, "location": where}
            self._commit(doc, tree)
            return f"cycle {cycle} had arrived at {where} before the last run stopped; committed it"
        if os.path.exists(self.state.undo):
            e2fs.roll_back(self.state.disk, self.state.undo)
        doc.pop("pending", None)
        self.state.write("state.json", json.dumps(doc, indent=1).encode())
        self.state.remove("tree.pending.msgpack")
        return f"cycle {cycle} did not arrive before the last run stopped; rolled it back"

    # --- cycles --------------------------------------------------------------

    def run_cycle(self) -> CycleResult:
        t0 = time.monotonic()
        doc, old_tree = self._load()
        recovered = self._recover(doc)
        if recovered:
            doc, old_tree = self._load()
        scan = scan_tree(self.source, old_tree or None)
        result = self._next_cycle(doc, old_tree, scan) if doc else self._first_cycle(scan)
        result.recovered = recovered
        result.warnings[:0] = scan.warnings
        result.seconds = time.monotonic() - t0
        return result

    def _first_cycle(self, scan: Scan) -> CycleResult:
        size = self.options.size or default_disk_size(scan.tree)
        try:
            check_size(size)
        except ValueError as err:
            raise UsageError(f"--size: {err}") from None
        if size % e2fs.FS_BLOCK:
            raise UsageError(f"--size must be a multiple of {e2fs.FS_BLOCK} bytes")
        disk = self.state.disk
        self._phase("building the metadata disk")
        with open(disk, "wb") as f:
            f.truncate(size)
        e2fs.make_filesystem(disk, size, self.source, inodes=default_inodes(scan.tree, size))
        # mke2fs -d sets the root's owner only; the rest of its metadata comes here.
        script_path = self.state.file("cycle.debugfs")
        with open(script_path, "wb") as f:
            f.write(metadata_script(ROOT, scan.tree[ROOT]).text())
        e2fs.run_debugfs(disk, script_path, None)
        # The local disk's own footer: a fixed VHD, mountable as it stands.
        with open(disk, "r+b") as f:
            f.seek(size)
            f.write(Footer(kind=FIXED, current_size=size, uuid=uuidlib.uuid4()).pack())
        tree = with_xattrs(scan.tree, _xattr_names(self.source, scan.tree))
        ident = uuidlib.uuid4()
        with contextlib.closing(RawSource(disk, size)) as source:
            ranges = [(e.offset, e.length) for e in source.allocation() if not e.zero]
        info = self._write_vhd(size, ranges, ident, None, datetime.now(UTC))
        record = self._record(0, info, None, {"created": len(tree)}, ranges)
        where = self._ship(0, record, size, None)
        doc: dict[str, object] = {
            "version": STATE_VERSION,
            "source": self.source,
            "name": self.options.name,
            "disk_size": size,
            "block_size": self.options.block_size,
            "destination": self.dest.description,
            "last": {
                "cycle": 0,
                "uuid": str(ident),
                "timestamp": info.timestamp,
                "location": where,
            },
        }
        self._commit(doc, tree)
        self._verify(disk)
        return CycleResult(
            cycle=0,
            kind="base",
            location=where,
            uuid=str(ident),
            changes={"created": len(tree)},
            bytes_changed=int(record["bytes_changed"]),  # type: ignore[call-overload]
            vhd_bytes=info.file_size,
            vhd_allocated_blocks=info.allocated_blocks,
            disk_size=size,
        )

    def _next_cycle(self, doc: dict[str, object], old: Tree, scan: Scan) -> CycleResult:
        size = int(doc["disk_size"])  # type: ignore[call-overload]
        # Every disk of a chain keeps the block size of its first.
        self.options.block_size = int(doc["block_size"])  # type: ignore[call-overload]
        last = _Last(**doc["last"])  # type: ignore[arg-type]
        changes = diff_trees(old, scan.tree)
        if not changes:
            return CycleResult(cycle=None, kind="none", disk_size=size)
        value_dir = self.state.file("values")
        os.makedirs(value_dir, exist_ok=True)
        script = build_script(changes, old, scan.tree, self.source, value_dir)
        new_tree = _settled_tree(old, scan.tree, script.skipped)
        new_tree = with_xattrs(new_tree, script.xattrs)
        cycle = last.cycle + 1
        ident = uuidlib.uuid4()
        made = datetime.now(UTC)
        self.state.write("tree.pending.msgpack", save_tree(new_tree))
        stamp = vhd_time(made.timestamp())
        doc["pending"] = {"cycle": cycle, "uuid": str(ident), "timestamp": stamp}
        self.state.write("state.json", json.dumps(doc, indent=1).encode())
        try:
            for holder, value in script.value_files.items():
                with open(holder, "wb") as f:
                    f.write(value)
            script_path = self.state.file("cycle.debugfs")
            with open(script_path, "wb") as f:
                f.write(script.text())
            self._phase("applying changes")
            e2fs.run_debugfs(self.state.disk, script_path, self.state.undo)
            log = read_undo_log(self.state.undo)
            ranges = _merge(log.extents, size)
            parent = ParentInfo(
                uuid=uuidlib.UUID(last.uuid),
                size=size,
                timestamp=last.timestamp,
                name=self.dest.object_name(self.options.name, last.cycle),
                absolute_path=self.dest.absolute_path(self.options.name, last.cycle),
                relative_path=".\\" + self.dest.object_name(self.options.name, last.cycle),
            )
            info = self._write_vhd(size, ranges, ident, parent, made)
            counts = _counts(changes)
            record = self._record(cycle, info, last.uuid, counts, ranges)
            where = self._ship(cycle, record, size, ranges)
        except BaseException:
            # Commit if the cycle arrived after all, else undo the edits.
            self._recover(doc)
            raise
        finally:
            for holder in script.value_files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(holder)
        doc["last"] = {
            "cycle": cycle,
            "uuid": str(ident),
            "timestamp": info.timestamp,
            "location": where,
        }
        self._commit(doc, new_tree)
        self._verify(self.state.disk)
        warnings = list(script.warnings)
        warnings += [f"{os.fsdecode(p)}: name cannot be mirrored; skipped" for p in script.skipped]
        return CycleResult(
            cycle=cycle,
            kind="differencing",
            location=where,
            uuid=str(ident),
            changes=counts,
            bytes_changed=int(record["bytes_changed"]),  # type: ignore[call-overload]
            vhd_bytes=info.file_size,
            vhd_allocated_blocks=info.allocated_blocks,
            disk_size=size,
            warnings=warnings,
        )

    def _write_vhd(
        self,
        size: int,
        ranges: list[tuple[int, int]],
        ident: uuidlib.UUID,
        parent: ParentInfo | None,
        made: datetime,
    ) -> VhdInfo:
        """The cycle's VHD in the state folder: dynamic for the first, differencing
        after. A destination that keeps blocks gets no file, only its description."""
        if not self.dest.wants_vhd:
            kind: Kind = "differencing" if parent else "dynamic"
            stamp = vhd_time(made.timestamp())
            return VhdInfo(kind, size, ident, stamp, None, 0, 0, parent.uuid if parent else None)
        with open(self.state.file("outgoing.vhd"), "wb") as out:
            return write_vhd(
                out,
                size,
                _read(self.state.disk, ranges),
                kind="differencing" if parent else "dynamic",
                block_size=self.options.block_size,
                parent=parent,
                uuid=ident,
                timestamp=made,
            )

    def _record(
        self,
        cycle: int,
        info: VhdInfo,
        parent_uuid: str | None,
        counts: dict[str, int],
        ranges: list[tuple[int, int]],
    ) -> dict[str, object]:
        return {
            "name": self.options.name,
            "cycle": cycle,
            "kind": info.kind,
            "uuid": str(info.uuid),
            "parent_uuid": parent_uuid,
            "timestamp": info.timestamp,
            "time": datetime.now(UTC).isoformat(),
            "source": self.source,
            "disk_size": info.size,
            "vhd_bytes": info.file_size,
            "bytes_changed": sum(n for _, n in ranges),
            "changes": counts,
            "parent": self.dest.object_name(self.options.name, cycle - 1) if cycle else None,
        }

    def _ship(
        self,
        cycle: int,
        record: dict[str, object],
        size: int,
        changed: list[tuple[int, int]] | None,
    ) -> str:
        self._phase("shipping")
        vhd = self.state.file("outgoing.vhd") if self.dest.wants_vhd else ""
        shipment = Shipment(self.options.name, cycle, vhd, record, self.state.disk, size, changed)
        return self.dest.ship(shipment)

    def _phase(self, what: str) -> None:
        self.progress.current = what
        self.report(self.progress)

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


def _merge(extents: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Sorted, merged, sector-aligned byte ranges inside the disk."""
    out: list[tuple[int, int]] = []
    for offset, length in sorted(extents):
        start = offset - offset % 512
        end = min(-(-(offset + length) // 512) * 512, size)
        if start >= end:
            continue
        if out and start <= out[-1][0] + out[-1][1]:
            prev_start, prev_len = out[-1]
            out[-1] = (prev_start, max(prev_start + prev_len, end) - prev_start)
        else:
            out.append((start, end - start))
    return out


def _read(path: str, ranges: list[tuple[int, int]]) -> Iterator[tuple[int, bytes]]:
    """The bytes of `ranges`, in pieces of at most 2 MiB, for the VHD writer."""
    with open(path, "rb", buffering=0) as f:
        for offset, length in ranges:
            pos = offset
            while pos < offset + length:
                n = min(_PIECE, offset + length - pos)
                data = os.pread(f.fileno(), n, pos)
                if len(data) != n:
                    raise e2fs.MirrorError(f"{path}: short read at {pos}")
                yield pos, data
                pos += n
