"""The server's side of agents' backups: one long-lived repository session
that answers which chunks are missing, stores verified uploads, commits
agents' points and serves their chunks and points (docs/server.md, "Agents";
docs/design.md, "Agents write through the server").

Contract:
- `missing` answers from the loaded index; when it finds any chunk
  missing and the index was last refreshed over `REFRESH_SECONDS` ago, it
  first reads the index files other writers (another server process, a
  local backup) added since, so it rarely asks for what is stored;
- `store` verifies every record of a bundle (its payload decompresses to
  its declared size and hashes, keyed, to its id) before it stores any: one
  bad record refuses the bundle (IntegrityError naming it). It returns only
  once the new chunks are durable (packs and index written): an
  acknowledged chunk survives a crash of the server. A chunk another call
  is writing at the moment is not written twice: the call waits for it and
  fails if that write failed (the agent sends it again);
- `commit` validates a point document (the model's codec), forces its host
  to the machine, refuses another host, a kind other than files, block or VM,
  a seed the repository does not hold (services/agent_seeds.py), a lineage on
  a files point, a root that is not stored and a parent that is not one of
  the machine's own points of the same kind and paths (a block point's
  parent may also be of the image its lineage names as its backing file:
  a new overlay's first point, `_block_parent`). A block point's map
  is checked whole: its root decodes (the model's codec: geometry, segment
  count; segments of `SEGMENT_BLOCKS` entries, a disk of at most
  `MAX_AGENT_DISK` bytes), every segment is stored and decodes, and every
  data chunk it names is stored (a point never names a chunk the repository
  lacks). Its `lineage` (bitmap names, image identities: facts about the
  agent's own source, which the server never acts on) is kept as the codec
  reads it. A commit id seen before answers the point it made (a retried
  commit never makes a second point);
- a VM point belongs to the machine's cluster: its host must be the
  cluster's name (a machine in no cluster commits none), it names one VM
  (`vm:NAME`, NAME under the machine name rules), its manifest is stored
  and decodes (the model's codec: disk names; at most `MAX_VM_DISKS` disks;
  the VM of its path), every disk's map is checked whole as a block point's
  is and has the disk's geometry, and its parent is a VM point of the same
  VM and cluster;
- a machine lists (and so restores from) its own points, VM points aside,
  and the VM points of its cluster (`visible`), nothing else;
- nothing here deletes, forgets or rewrites a point or a chunk;
- while agents write (asking, uploading, committing) the session holds a
  shared repository lock, as a local backup does, so a prune cannot delete
  chunks acknowledged but not yet in a point; it is released after
  `IDLE_SECONDS` without a write, so a prune can run between backups. After
  such a gap the session forgets what it wrote and listed (a prune may have
  removed it) and asks the storage again. A prune in such a gap may also
  remove chunks an agent was told are stored and still counts on (a backup
  paused or silent that long): a files point whose machine first wrote for
  it before a gap is committed only when every chunk its trees name is
  stored (block and VM maps are checked whole at every commit);
Thread safety: one lock serialises deciding who writes which chunk (the
claims), index refreshes and point commits. Verification (decompression,
hashing), encryption, the pack and index uploads (each `store` call writes
its own packs and index file: several agents' uploads overlap instead of
queueing) and reads for agents (`read`: the index is safe for readers) run
outside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from strongroom.catalog import Catalog, Machine
from strongroom.errors import (
    ChunkNotFound,
    IntegrityError,
    ObjectNotFound,
    PointNotFound,
    RepositoryError,
    UnsupportedVersion,
    UsageError,
)
from strongroom.model.blockmap import SEGMENT_BLOCKS, decode_root, decode_segment
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.model.vm import VmManifest
from strongroom.repository import bundle
from strongroom.repository.entries import PackedChunk
from strongroom.repository.format import BlobType
from strongroom.repository.pack import blob_ad
from strongroom.repository.repo import is_object_hex
from strongroom.services.agent_seeds import check_point_seeds
from strongroom.services.agent_vm_leases import check_vm_name
from strongroom.services.points import load_point
from strongroom.services.session import LockMode, open_repository
from strongroom.services.vms import vm_path

REFRESH_SECONDS = 1.0  # at most one listing of index/ per second, on a miss
IDLE_SECONDS = 600.0  # the shared lock is released after this long without a write
MAX_IDS = bundle.MAX_IDS  # ids of one `missing` question
MAX_READ = 256  # chunks of one `read`
_COMMIT_ID_LENGTH = range(16, 65)
MAX_AGENT_DISK = 1 << 50  # 1 PiB: a block point's virtual disk, at most
MAX_VM_DISKS = 64  # disks of one VM point an agent commits


@dataclass(frozen=True)
class Stored:
    """What one bundle added: chunks and bytes new to the repository."""

    received: int
    added: int
    bytes_added: int


class Intake:
    """Open on the repository at `location` for the life of the server."""

    def __init__(
        self,
        location: str,
        password: bytes,
        on_commit: Callable[[RecoveryPoint], None] | None = None,
    ) -> None:
        self._on_commit = on_commit  # the server's point list (the dashboard's view)
        self._session = open_repository(location, password, lock=LockMode.NONE)
        self.repo = self._session.__enter__()
        self._lock = threading.Lock()
        self._refreshed = time.monotonic()
        self._last_write = time.monotonic()
        self._gap = False  # the shared lock was released since the index was read
        self._lapses = 0  # how often the shared lock was released
        self._since: dict[str, int] = {}  # machine -> `_lapses` at its first write since a commit
        self._active = 0  # `store` calls between their claim and its release
        self._in_flight: dict[bytes, Future[None]] = {}  # chunk id -> the call writing it
        self._stop = threading.Event()
        self._points: dict[str, RecoveryPoint] = {}  # decoded points by id (immutable)
        self._points_lock = threading.Lock()
        workers = max(1, self.repo.backend.capabilities.parallel_requests)
        self._readers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="intake-read")
        with self._lock:
            self.repo.load_index()
        self._idler = threading.Thread(target=self._release_when_idle, daemon=True)
        self._idler.start()

    def close(self) -> None:
        self._stop.set()
        self._idler.join()
        self._readers.shutdown(wait=True)
        with self._lock:
            self._release()
            self._session.__exit__(None, None, None)

    def _writing(self) -> None:
        """Before a write (under `_lock`): hold the shared lock."""
        self._last_write = time.monotonic()
        if self.repo.held_lock is not None:
            return
        self.repo.held_lock = self.repo.lock()
        if self._gap:
            self.repo.forget_session()
            self.repo.refresh_index()
            self._gap = False

    def _release(self) -> None:
        if self.repo.held_lock is not None:
            self.repo.held_lock.release()
            self.repo.held_lock = None
            self._gap = True
            self._lapses += 1

    def _release_when_idle(self) -> None:
        while not self._stop.wait(min(IDLE_SECONDS / 4, 30.0)):
            self._release_if_idle()

    def _release_if_idle(self) -> None:
        """Release the shared lock after `IDLE_SECONDS` without a write, but
        never while an upload is in flight (its chunks are not indexed yet)."""
        with self._lock:
            idle = time.monotonic() - self._last_write >= IDLE_SECONDS
            if idle and not self._active:
                self._release()

    def info(self) -> dict[str, Any]:
        """What an agent needs to cut and name chunks as a local backup does:
        the chunk-id key and the chunker's seed and sizes (never the master or
        the encryption key)."""
        cfg = self.repo.config
        return {
            "id": cfg.id,
            "id_key": self.repo.master.id_key.hex(),
            "chunker_seed": self.repo.master.chunker_seed,
            "cdc_min": cfg.cdc_min,
            "cdc_avg": cfg.cdc_avg,
            "cdc_max": cfg.cdc_max,
            "compression_level": cfg.compression_level,
            "compression_mode": cfg.compression_mode,
            "block_size": cfg.block_size,
        }

    # --- chunks --------------------------------------------------------------

    def missing(self, ids: list[bytes], machine: str | None = None) -> list[bytes]:
        """The ids of `ids` the repository does not hold, in their order."""
        if len(ids) > MAX_IDS:
            raise UsageError(f"at most {MAX_IDS} ids per question")
        with self._lock:
            self._writing()
            self._began(machine)
            absent = [c for c in ids if not self.repo.has_chunk(c)]
            if absent and time.monotonic() - self._refreshed >= REFRESH_SECONDS:
                self.repo.refresh_index()
                self._refreshed = time.monotonic()
                absent = [c for c in absent if not self.repo.has_chunk(c)]
        return absent

    def store(self, blob: bytes, machine: str | None = None) -> Stored:
        records = bundle.parse(blob)
        for record in records:  # all proven before any is stored
            bundle.verify(record, self.repo.compressor, self.repo.chunk_id)
        if machine is not None:
            with self._lock:
                self._began(machine)
        mine, others, done = self._claim(records)
        try:
            if mine:
                self._write(mine)
        except BaseException as err:
            self._unclaim(mine, done, err)
            raise
        self._unclaim(mine, done, None)
        for other in others:  # acknowledged only once durable, whoever writes it
            if other.exception() is not None:
                raise RepositoryError(
                    "another upload of some of these chunks failed: send them again"
                )
        return Stored(len(records), len(mine), sum(r.raw_length for r in mine))

    def _claim(
        self, records: list[bundle.Record]
    ) -> tuple[list[bundle.Record], list[Future[None]], Future[None]]:
        """Under the lock, split `records` into the ones this call writes
        (neither stored nor being written: now claimed, so no other call
        writes them too) and the writes of other calls to wait for."""
        done: Future[None] = Future()
        mine: list[bundle.Record] = []
        others: dict[int, Future[None]] = {}
        with self._lock:
            self._writing()
            self._active += 1
            for r in records:
                other = self._in_flight.get(r.chunk_id)
                if other is done:
                    continue  # twice in one bundle
                if other is not None:
                    others[id(other)] = other
                elif not self.repo.has_chunk(r.chunk_id):
                    self._in_flight[r.chunk_id] = done
                    mine.append(r)
        return mine, list(others.values()), done

    def _began(self, machine: str | None) -> None:
        """Under `_lock`: note how often the lock had lapsed when `machine`
        first wrote since its last commit (`_check_lapsed`)."""
        if machine is not None:
            self._since.setdefault(machine, self._lapses)

    def _check_lapsed(self, point: RecoveryPoint, machine: str) -> None:
        """Under `_lock`, at a files point's commit: when the shared lock
        lapsed since the machine first wrote for it, a prune may have removed
        chunks acknowledged before the gap (the agent holds them as sent), so
        every chunk the point's trees name must be stored. (Block and VM
        maps are checked whole at every commit.)"""
        started = self._since.pop(machine, None)
        if started is None or started == self._lapses or point.kind != PointKind.FILES:
            return
        from strongroom.services.walk import referenced_by_points

        used, errors = referenced_by_points(self.repo, [point])
        if errors or not all(self.repo.has_chunk(cid) for cid in used):
            raise UsageError(
                "chunks this backup sent were pruned while the server was idle: back up again"
            )

    def _unclaim(
        self, mine: list[bundle.Record], done: Future[None], error: BaseException | None
    ) -> None:
        with self._lock:
            for r in mine:
                del self._in_flight[r.chunk_id]
            self._active -= 1
            self._last_write = time.monotonic()
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def _write(self, records: list[bundle.Record]) -> None:
        """Outside the lock: encrypt `records`, write them as packs of their
        own (at most the repository's pack size) and one index file naming
        them. Several calls write at once; afterwards the chunks are durable
        and in the loaded index."""
        limit = self.repo.config.pack_size
        packs: dict[bytes, list[PackedChunk]] = {}
        for blob_type in (BlobType.DATA, BlobType.TREE):
            batch: list[tuple[bytes, bytes | bytearray, int]] = []
            size = 0
            for r in records:
                if r.blob_type != blob_type:
                    continue
                sealed = self._seal(r)
                batch.append((r.chunk_id, sealed, r.raw_length))
                size += len(sealed)
                if size >= limit:
                    pack_id, entries = self.repo.write_pack(blob_type, batch)
                    packs[pack_id] = entries
                    batch, size = [], 0
            if batch:
                pack_id, entries = self.repo.write_pack(blob_type, batch)
                packs[pack_id] = entries
        self.repo.index_packs(packs)

    def _seal(self, record: bundle.Record) -> bytes | bytearray:
        """A verified record's payload encrypted for its pack."""
        return self.repo.sealer.seal(record.payload, blob_ad(record.chunk_id, record.blob_type))

    def read(self, wanted: list[tuple[bytes, BlobType]]) -> bytes:
        """A bundle of the named chunks, in order, as many as fit in one
        bundle (the caller asks again for the rest; the first always comes).
        Each is authenticated (the pack's AEAD) and sent as stored,
        compressed, with the size it declares: the agent decompresses within
        its bound and checks the keyed id, as for any answer. The chunks are
        read outside the session's lock (the index is safe for readers), in
        parallel (`parallel_requests` of the backend), neighbours in one pack
        with one ranged GET. ChunkNotFound names the first absent one."""
        if len(wanted) > MAX_READ:
            raise UsageError(f"at most {MAX_READ} chunks per read")
        try:
            fitting = self._fitting(wanted)
        except ChunkNotFound:
            with self._lock:  # stored by another writer since the index was read?
                self.repo.refresh_index()
                self._refreshed = time.monotonic()
            fitting = self._fitting(wanted)
        found = self.repo.load_payloads(fitting, self._readers)
        return bundle.encode(
            bundle.Record(cid, blob_type, raw_length, payload)
            for (cid, blob_type), (payload, raw_length) in zip(fitting, found, strict=True)
        )

    def _fitting(self, wanted: list[tuple[bytes, BlobType]]) -> list[tuple[bytes, BlobType]]:
        """The first of `wanted` whose records fit in one bundle (by their
        sealed sizes, which bound their payloads); at least one."""
        size = bundle.empty_size()
        for n, (cid, _blob_type) in enumerate(wanted):
            size += bundle.record_overhead() + self.repo.locate(cid).length
            if n and size > bundle.MAX_BUNDLE:
                return wanted[:n]
        return wanted

    # --- points --------------------------------------------------------------

    def points(self, machine: str, cluster: str | None = None) -> list[dict[str, Any]]:
        """What a machine may see, oldest first, as documents: its own points
        (host `machine`, VM points aside) and its cluster's VM points (host
        `cluster`).

        Every agent's backup asks this first (to find its parent): a point's
        id is the hash of its object, so decoded points are kept by id and
        each call lists `points/` once and reads only the points new since
        (in parallel); forgotten ones drop out of the listing. Damaged points
        are left out (and read again next time)."""
        with self._points_lock:
            ids = self.repo.list_point_ids()
            new = [i for i in ids if i not in self._points]
            if new:
                workers = max(1, min(self.repo.backend.capabilities.parallel_requests, len(new)))
                with ThreadPoolExecutor(workers) as pool:
                    for point_hex, point in zip(new, pool.map(self._read_point, new), strict=True):
                        if point is not None:
                            self._points[point_hex] = point
            listed = set(ids)
            for gone in [i for i in self._points if i not in listed]:
                del self._points[gone]
            found = sorted(self._points.values(), key=lambda p: (p.time, p.id))
        return [{"id": p.id, **p.to_doc()} for p in found if visible(p, machine, cluster)]

    def _read_point(self, point_hex: str) -> RecoveryPoint | None:
        try:
            return load_point(self.repo, point_hex)
        except (ObjectNotFound, IntegrityError):
            return None  # forgotten meanwhile, or damaged (left out, as listing does)

    def commit(self, catalog: Catalog, machine: Machine, doc: Any, commit_id: str) -> str:
        """Save the point `doc` for `machine` (see the module's contract);
        returns its id. UsageError for a document refused."""
        if machine.id is None:
            raise UsageError("unknown machine")
        if len(commit_id) not in _COMMIT_ID_LENGTH or not commit_id.isalnum():
            raise UsageError("commit_id is 16-64 letters and digits")
        made = catalog.find_agent_commit(machine.id, commit_id)
        if made is not None:
            return made
        point = _check_document(doc, machine.name, machine.cluster)
        with self._lock:
            self._writing()
            if point.kind == PointKind.BLOCK:
                self._check_block_map(bytes.fromhex(point.tree))
            elif point.kind == PointKind.VM:
                self._check_vm_manifest(point)
            elif not self._holds(bytes.fromhex(point.tree)):
                raise UsageError("the point's root tree is not stored: upload it first")
            self._check_lapsed(point, machine.name)
            if point.parent is not None:
                self._check_parent(point, point.host)
            check_point_seeds(self.repo, point, self._holds)
            point_id = self.repo.save_point(point.to_doc())
        made = catalog.add_agent_commit(machine.id, commit_id, point_id, datetime.now(UTC))
        if self._on_commit is not None:
            point.id = point_id
            self._on_commit(point)  # listed at once, not after the next refresh
        return made

    def _holds(self, cid: bytes) -> bool:
        if self.repo.has_chunk(cid):
            return True
        self.repo.refresh_index()
        self._refreshed = time.monotonic()
        return self.repo.has_chunk(cid)

    def _check_parent(self, point: RecoveryPoint, machine: str) -> None:
        parent = point.parent or ""
        if not is_object_hex(parent):
            raise UsageError("the parent is not a point id")
        try:
            doc = self.repo.load_point(parent)
        except (PointNotFound, FileNotFoundError, IntegrityError):
            doc = {}
        if doc.get("host") != machine:
            raise UsageError("the parent is not a point of this machine")
        if point.kind == PointKind.BLOCK and not _block_parent(point, doc):
            raise UsageError("the parent is not this machine's image point of the same source")
        if point.kind == PointKind.VM and (
            doc.get("kind") != PointKind.VM.value or doc.get("paths") != point.paths
        ):
            raise UsageError("the parent is not a point of the same VM of this cluster")
        if point.kind != PointKind.VM and doc.get("kind") == PointKind.VM.value:
            raise UsageError("the parent is not a point of this machine")

    def _check_vm_manifest(self, point: RecoveryPoint) -> None:
        """Under `_lock`: the manifest is stored and decodes, names the VM of
        the point's path and at most `MAX_VM_DISKS` disks, and every disk's
        block map is whole (`_check_block_map`) and of the disk's geometry."""
        manifest_id = bytes.fromhex(point.tree)
        if not self._holds(manifest_id):
            raise UsageError("the point's VM manifest is not stored: upload it first")
        try:
            manifest = VmManifest.decode(self.repo.load_chunk(manifest_id, BlobType.TREE))
        except (IntegrityError, ValueError) as err:
            raise UsageError(f"the point's VM manifest is malformed: {str(err)[:100]}") from None
        if point.paths != [vm_path(manifest.vm)]:
            raise UsageError("the point's VM manifest is of another VM")
        if not 1 <= len(manifest.disks) <= MAX_VM_DISKS:
            raise UsageError(f"a VM point has 1 to {MAX_VM_DISKS} disks")
        for disk in manifest.disks:
            root_id = bytes.fromhex(disk.map_root)
            self._check_block_map(root_id)
            root = decode_root(self.repo.load_chunk(root_id, BlobType.TREE))
            if (root.size, root.block_size) != (disk.size, disk.block_size):
                raise UsageError("a disk's block map does not match the VM manifest")

    def _check_block_map(self, root_id: bytes) -> None:
        """Under `_lock`: the map is well formed and all it names is stored
        (see the module's contract); UsageError naming what is wrong."""
        if not self._holds(root_id):
            raise UsageError("the point's block map is not stored: upload it first")
        try:
            root = decode_root(self.repo.load_chunk(root_id, BlobType.TREE))
        except (IntegrityError, UnsupportedVersion) as err:
            raise UsageError(f"the point's block map is malformed: {str(err)[:100]}") from None
        if root.segment_blocks != SEGMENT_BLOCKS or root.size > MAX_AGENT_DISK:
            raise UsageError("the point's block map has a geometry strongroom does not write")
        refreshed = False
        for index, seg_id in enumerate(root.segments):
            if seg_id is None:
                continue
            if not self._holds(seg_id):
                raise UsageError("a segment of the point's block map is not stored")
            try:
                seg = self.repo.load_chunk(seg_id, BlobType.TREE)
                ids = decode_segment(seg, root.segment_length(index))
            except ChunkNotFound:
                raise UsageError("a segment of the point's block map is not stored") from None
            except IntegrityError as err:
                raise UsageError(f"the point's block map is malformed: {str(err)[:100]}") from None
            for row in np.unique(ids[ids.any(axis=1)], axis=0):
                cid = row.tobytes()
                if self.repo.has_chunk(cid):
                    continue
                if not refreshed:  # another server process may have stored it
                    self.repo.refresh_index()
                    self._refreshed = time.monotonic()
                    refreshed = True
                    if self.repo.has_chunk(cid):
                        continue
                raise UsageError("the point's block map names a chunk that is not stored")


def visible(point: RecoveryPoint, machine: str, cluster: str | None) -> bool:
    """Whether `machine` (of `cluster`) may list and read `point`: its own
    points but VM points, and the VM points of its cluster."""
    if point.kind == PointKind.VM:
        return cluster is not None and point.host == cluster
    return point.host == machine


def _block_parent(point: RecoveryPoint, doc: dict[str, Any]) -> bool:
    """Whether the block point `doc` (of the machine: checked by the caller)
    may be `point`'s parent: of the same source, or (the `overlay` tracker's
    first point of a new overlay) of the image that `point`'s lineage names
    as its backing file. Either way the parent is only the agent's word about
    its own images: the map of `point` is checked whole regardless."""
    if doc.get("kind") != PointKind.BLOCK.value:
        return False
    if doc.get("paths") == point.paths:
        return True
    below = point.block_lineage().backing_chain
    try:
        read = RecoveryPoint.from_doc(doc).block_lineage().image_identity
    except (ValueError, TypeError, KeyError, RepositoryError):
        return False
    return bool(below) and bool(read) and read == below[0]


def _check_document(doc: Any, machine: str, cluster: str | None = None) -> RecoveryPoint:
    if not isinstance(doc, dict):
        raise UsageError("the point is not a JSON object")
    try:
        point = RecoveryPoint.from_doc(doc)
    except (ValueError, TypeError, KeyError, RepositoryError) as err:
        raise UsageError(f"the point document is malformed: {str(err)[:100]}") from None
    if point.kind == PointKind.VM:
        if cluster is None:
            raise UsageError("this machine is in no cluster: it commits no VM point")
        if point.host != cluster:
            raise UsageError("a VM point's host is this machine's cluster")
        if len(point.paths) != 1 or not point.paths[0].startswith("vm:"):
            raise UsageError("a VM point names one VM")
        check_vm_name(point.paths[0].removeprefix("vm:"))  # as its lease's
    elif point.host != machine:
        raise UsageError("the point's host is not this machine")
    if point.kind not in (PointKind.FILES, PointKind.BLOCK, PointKind.VM):
        raise UsageError("agents commit files, block image and VM points only")
    if point.lineage is not None and point.kind != PointKind.BLOCK:
        raise UsageError("an agent's files point names no lineage")
    if point.kind == PointKind.BLOCK and len(point.paths) != 1:
        raise UsageError("a block image point names one source")
    if not is_object_hex(point.tree):
        raise UsageError("the point's tree is not a chunk id")
    point.id = ""
    return point


def chunk_type(code: int) -> BlobType:
    """The blob type of a wire code (0 data, 1 tree); UsageError otherwise."""
    if code not in (BlobType.DATA, BlobType.TREE):
        raise UsageError("a chunk type is 0 (data) or 1 (tree)")
    return BlobType(code)


BUNDLE_TYPE = bundle.MEDIA_TYPE
