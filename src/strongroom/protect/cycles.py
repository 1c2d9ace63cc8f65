"""What every VHD backup mode cycle shares: the state folder, the pending-cycle
protocol that makes a crash harmless, and writing and shipping the cycle's VHD.

A cycle runs in three durable steps:
1. `begin`: the state records the pending cycle (number, disk id, time
   stamp) and the mode writes its new state beside the old (`*.pending`);
2. the VHD is written and shipped;
3. `commit`: the pending state replaces the old one, and the cycle becomes
   the parent of the next.
A run that dies anywhere is settled by the next run (`recover`): if the
destination has the pending cycle, it is committed; if not, the mode undoes
what it did locally (`drop_pending`) and the cycle is done again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import uuid as uuidlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

from strongroom.atomic import TEMP_SUFFIX, atomic_write, durable_replace
from strongroom.errors import StrongroomError, UsageError
from strongroom.formats.vhd.structs import MAX_BLOCK_SIZE, SECTOR, vhd_time
from strongroom.formats.vhd.writer import (
    MIN_WRITE_BLOCK_SIZE,
    Data,
    Kind,
    ParentInfo,
    VhdInfo,
    write_vhd,
)
from strongroom.protect.destinations import Destination, Shipment
from strongroom.types import Progress, ProgressCallback, no_progress

STATE_VERSION = 1
_NAME = re.compile(r"[^a-z0-9_.-]+")


class ProtectStateError(StrongroomError):
    """The state folder is unusable (locked, damaged, or for another source)."""


def default_name(source: str) -> str:
    """An object-safe name for `source`: its file or folder name, lowercased."""
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
    bytes_changed: int = 0  # disk bytes the cycle changed
    bytes_read: int = 0  # source bytes read to find them (block sources)
    vhd_bytes: int = 0  # size of the VHD shipped
    vhd_allocated_blocks: int = 0
    disk_size: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    recovered: str = ""  # what the start of this run found and did

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


@dataclass
class Last:
    """The last committed cycle: the parent of the next differencing disk."""

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
        # Temporary files of a run that died mid-write (atomic_write's hidden
        # `.<name>.<random>.tmp`): no writer is left now that we hold the lock.
        for entry in os.listdir(self.path):
            if entry.startswith(".") and entry.endswith(TEMP_SUFFIX):
                with contextlib.suppress(OSError):  # not ours to judge: leave it
                    os.unlink(self.file(entry))

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def disk(self) -> str:
        return self.file("meta.vhd")

    @property
    def undo(self) -> str:
        return self.file("cycle.e2undo")

    @property
    def outgoing(self) -> str:
        return self.file("outgoing.vhd")

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
        self.write_with(name, lambda f: f.write(data))

    def write_with(self, name: str, writer: Callable[[BinaryIO], object]) -> None:
        """Replace `name` by what `writer` writes, atomically and durably."""
        atomic_write(self.file(name), writer)

    def rename(self, old: str, new: str) -> None:
        """Move `old` over `new` atomically and durably."""
        durable_replace(self.file(old), self.file(new))

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
    size: int | None = None  # metadata disk size (tree mode); default from the data
    block_size: int = 2 << 20  # VHD block size of the shipped disks
    verify: bool = False  # tree mode: e2fsck -fn on the metadata disk after each cycle
    image_format: str | None = None  # block mode: the source's format (--format), never probed
    allow_backing: bool = False  # block mode: read the files the image names


class CycleRunner(ABC):
    """The cycle protocol; modes supply the first and next cycles and their
    pending state (`adopt_pending`, `drop_pending`, `discard_first`)."""

    mode = ""

    def __init__(
        self,
        source: str,
        destination: Destination,
        state: StateFolder,
        options: ProtectOptions,
        progress: ProgressCallback = no_progress,
    ) -> None:
        self.source = os.path.abspath(source)
        self.check_source()
        bs = options.block_size
        if not MIN_WRITE_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE or bs & (bs - 1):
            raise UsageError(
                f"--vhd-block-size {bs}: the block size must be a power of two, 4 KiB-256 MiB"
            )
        if options.size is not None and options.size <= 0:
            raise UsageError("--size must be positive")
        self.dest = destination
        self.state = state
        self.options = options
        self.report = progress
        self.progress = Progress(job="protect")

    # --- hooks -----------------------------------------------------------------

    @abstractmethod
    def check_source(self) -> None:
        """Raise SourceError if `self.source` is not what this mode protects."""

    @abstractmethod
    def first_cycle(self) -> CycleResult:
        """Build the local state and ship the whole disk (cycle 0)."""

    @abstractmethod
    def next_cycle(self, doc: dict[str, object]) -> CycleResult:
        """Ship what changed since the cycle `doc` records as last."""

    @abstractmethod
    def adopt_pending(self) -> None:
        """Make the pending local state the current one."""

    @abstractmethod
    def drop_pending(self) -> None:
        """Undo what the pending cycle did locally."""

    @abstractmethod
    def discard_first(self) -> None:
        """Forget a first cycle that never committed."""

    # --- the protocol ------------------------------------------------------------

    def run_cycle(self) -> CycleResult:
        t0 = time.monotonic()
        doc = self.load_doc()
        recovered = self.recover(doc)
        if recovered:
            doc = self.load_doc()
        result = self.next_cycle(doc) if doc else self.first_cycle()
        result.recovered = recovered
        result.seconds = time.monotonic() - t0
        return result

    def load_doc(self) -> dict[str, object] | None:
        doc = self.state.read_json("state.json")
        if doc is None:
            return None
        if doc.get("version") != STATE_VERSION:
            raise ProtectStateError(f"{self.state.path}: state version {doc.get('version')}")
        mine = (self.source, self.options.name, self.mode)
        if (doc.get("source"), doc.get("name"), doc.get("mode", "tree")) != mine:
            raise ProtectStateError(
                f"{self.state.path} protects {doc.get('source')} as {doc.get('name')!r}, "
                f"not {self.source} as {self.options.name!r}; use another --state folder"
            )
        return doc

    def new_doc(self, size: int) -> dict[str, object]:
        return {
            "version": STATE_VERSION,
            "mode": self.mode,
            "source": self.source,
            "name": self.options.name,
            "disk_size": size,
            "block_size": self.options.block_size,
            "destination": self.dest.description,
        }

    def save_doc(self, doc: dict[str, object]) -> None:
        self.state.write("state.json", json.dumps(doc, indent=1).encode())

    def recover(self, doc: dict[str, object] | None) -> str:
        """Settle a cycle a previous run left pending; says what it did."""
        if doc is None:
            self.discard_first()
            self.state.remove("outgoing.vhd")
            return ""
        pending = doc.get("pending")
        if not isinstance(pending, dict):
            return ""
        cycle = int(pending["cycle"])
        where = self.dest.arrived(self.options.name, cycle, str(pending["uuid"]))
        if where is not None:
            self.adopt_pending()
            doc["last"] = {**pending, "location": where}
            doc.pop("pending")
            self.save_doc(doc)
            self.state.remove("outgoing.vhd")
            return f"cycle {cycle} had arrived at {where} before the last run stopped; committed it"
        self.drop_pending()
        doc.pop("pending")
        self.save_doc(doc)
        self.state.remove("outgoing.vhd")
        return f"cycle {cycle} did not arrive before the last run stopped; rolled it back"

    def begin(self, doc: dict[str, object], cycle: int) -> tuple[uuidlib.UUID, datetime]:
        """Record cycle `cycle` as pending: its disk id and time stamp are fixed now,
        so a committed-after-crash cycle is the parent its child names."""
        ident = uuidlib.uuid4()
        made = datetime.now(UTC)
        doc["pending"] = {
            "cycle": cycle,
            "uuid": str(ident),
            "timestamp": vhd_time(made.timestamp()),
        }
        self.save_doc(doc)
        return ident, made

    def commit(self, doc: dict[str, object], cycle: int, info: VhdInfo, where: str) -> None:
        self.adopt_pending()
        doc["last"] = {
            "cycle": cycle,
            "uuid": str(info.uuid),
            "timestamp": info.timestamp,
            "location": where,
        }
        doc.pop("pending", None)
        self.save_doc(doc)
        self.state.remove("outgoing.vhd")

    def last(self, doc: dict[str, object]) -> Last:
        # Every disk of a chain keeps the block size of its first.
        self.options.block_size = int(doc["block_size"])  # type: ignore[call-overload]
        return Last(**doc["last"])  # type: ignore[arg-type]

    # --- the cycle's VHD -----------------------------------------------------------

    def parent_of(self, last: Last, size: int) -> ParentInfo:
        name = self.dest.object_name(self.options.name, last.cycle)
        return ParentInfo(
            uuid=uuidlib.UUID(last.uuid),
            size=size,
            timestamp=last.timestamp,
            name=name,
            absolute_path=self.dest.absolute_path(self.options.name, last.cycle),
            relative_path=".\\" + name,
        )

    def write_vhd(
        self,
        size: int,
        extents: Iterable[tuple[int, Data]],
        ident: uuidlib.UUID,
        parent: ParentInfo | None,
        made: datetime,
    ) -> VhdInfo:
        """The cycle's VHD in the state folder: dynamic for the first cycle,
        differencing after. A destination that keeps blocks gets no file."""
        kind: Kind = "differencing" if parent else "dynamic"
        if not self.dest.wants_vhd:
            stamp = vhd_time(made.timestamp())
            return VhdInfo(kind, size, ident, stamp, None, 0, 0, parent.uuid if parent else None)
        with open(self.state.outgoing, "wb") as out:
            return write_vhd(
                out,
                size,
                extents,
                kind=kind,
                block_size=self.options.block_size,
                parent=parent,
                uuid=ident,
                timestamp=made,
            )

    def ship(
        self,
        cycle: int,
        info: VhdInfo,
        parent_uuid: str | None,
        counts: dict[str, int],
        changed: list[tuple[int, int]] | None,
        bytes_changed: int,
    ) -> tuple[str, dict[str, object]]:
        """Send the cycle; returns where it went and the record stored with it."""
        self.phase("shipping")
        record: dict[str, object] = {
            "name": self.options.name,
            "mode": self.mode,
            "cycle": cycle,
            "kind": info.kind,
            "uuid": str(info.uuid),
            "parent_uuid": parent_uuid,
            "timestamp": info.timestamp,
            "time": datetime.now(UTC).isoformat(),
            "source": self.source,
            "disk_size": info.size,
            "vhd_bytes": info.file_size,
            "bytes_changed": bytes_changed,
            "changes": counts,
            "parent": self.dest.object_name(self.options.name, cycle - 1) if cycle else None,
        }
        vhd = self.state.outgoing if self.dest.wants_vhd else ""
        shipment = Shipment(
            self.options.name, cycle, vhd, record, self.state.disk, info.size, changed
        )
        return self.dest.ship(shipment), record

    def result(
        self,
        cycle: int,
        info: VhdInfo,
        where: str,
        counts: dict[str, int],
        bytes_changed: int,
        warnings: list[str],
        bytes_read: int = 0,
    ) -> CycleResult:
        """What a shipped cycle did, for the user."""
        return CycleResult(
            cycle=cycle,
            kind="base" if cycle == 0 else "differencing",
            location=where,
            uuid=str(info.uuid),
            changes=counts,
            bytes_changed=bytes_changed,
            bytes_read=bytes_read,
            vhd_bytes=info.file_size,
            vhd_allocated_blocks=info.allocated_blocks,
            disk_size=info.size,
            warnings=warnings,
        )

    def phase(self, what: str) -> None:
        self.progress.current = what
        self.report(self.progress)


def merge_ranges(extents: Iterable[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Sorted, merged, sector-aligned byte ranges inside the disk."""
    out: list[tuple[int, int]] = []
    for offset, length in sorted(extents):
        start = offset - offset % SECTOR
        end = min(-(-(offset + length) // SECTOR) * SECTOR, size)
        if start >= end:
            continue
        if out and start <= out[-1][0] + out[-1][1]:
            prev_start, prev_len = out[-1]
            out[-1] = (prev_start, max(prev_start + prev_len, end) - prev_start)
        else:
            out.append((start, end - start))
    return out


def read_ranges(
    path: str, ranges: list[tuple[int, int]], piece: int = 2 << 20
) -> Iterator[tuple[int, bytes]]:
    """The bytes of `ranges` of the file at `path`, in pieces, for the VHD writer."""
    with open(path, "rb", buffering=0) as f:
        for offset, length in ranges:
            pos = offset
            while pos < offset + length:
                n = min(piece, offset + length - pos)
                data = os.pread(f.fileno(), n, pos)
                if len(data) != n:
                    raise ProtectStateError(f"{path}: ended at {pos + len(data)} while reading")
                yield pos, data
                pos += n
