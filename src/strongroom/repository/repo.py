"""The repository facade: open with a password, store and fetch chunks and points.

Write order (docs/design.md): packs, then the index files that name them,
then manifests' root (already inside packs), then the point object. Every
object is immutable, so a crash at any instant leaves a repository whose
references all resolve; what a killed backup wrote but never indexed is just
unreferenced (prune removes it).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from strongroom.errors import (
    ChunkNotFound,
    IntegrityError,
    ObjectNotFound,
    RepositoryError,
    RepositoryExists,
    RepositoryLocked,
    RepositoryNotFound,
    UnsupportedVersion,
    WrongPassword,
)
from strongroom.repository import format as fmt
from strongroom.repository.compress import Compressor
from strongroom.repository.crypto import ChunkHasher, Sealer, content_hash
from strongroom.repository.format import BlobType
from strongroom.repository.keys import (
    KdfParams,
    MasterKey,
    key_file_info,
    unwrap_master_key,
    wrap_master_key,
)
from strongroom.repository.leases import LeaseStore
from strongroom.repository.locks import Lock
from strongroom.repository.pack import PackBuilder, blob_ad
from strongroom.storage import Backend
from strongroom.storage.base import StreamingPut

if TYPE_CHECKING:  # numpy is imported only when an index is needed
    from strongroom.repository.index import ChunkIndex, IndexFile, Location

_CONFIG_AD = b"config"
_INDEX_AD = b"index"
_POINT_AD = b"point"
INDEX_FLUSH_SECONDS = float(os.environ.get("STRONGROOM_INDEX_FLUSH_SECONDS", "15"))
INDEX_FLUSH_PACKS = 64
_MAX_PENDING_UPLOADS = 1  # packs queued for upload beyond the one being filled


@dataclass(frozen=True)
class RepoConfig:
    """Settings fixed at `init` and stored (sealed) in the `config` object."""

    id: str
    version: int = fmt.FORMAT_VERSION
    cdc_min: int = fmt.DEFAULT_CDC_MIN
    cdc_avg: int = fmt.DEFAULT_CDC_AVG
    cdc_max: int = fmt.DEFAULT_CDC_MAX
    block_size: int = fmt.DEFAULT_BLOCK_SIZE
    pack_size: int = fmt.DEFAULT_PACK_SIZE
    compression_level: int = fmt.DEFAULT_COMPRESSION_LEVEL
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def encode(self) -> bytes:
        doc = {
            "version": self.version,
            "id": self.id,
            "created": self.created,
            "chunker": {
                "algorithm": "fastcdc2020-keyed",
                "min": self.cdc_min,
                "avg": self.cdc_avg,
                "max": self.cdc_max,
            },
            "block_size": self.block_size,
            "pack_size": self.pack_size,
            "compression": {"algorithm": "zstd", "level": self.compression_level},
            "cipher": "aes-256-gcm",
            "chunk_id": "blake3-keyed",
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def decode(cls, blob: bytes) -> RepoConfig:
        doc = json.loads(blob)
        version = int(doc["version"])
        if version > fmt.FORMAT_VERSION:
            raise UnsupportedVersion(
                f"repository format {version} is newer than this strongroom "
                f"understands ({fmt.FORMAT_VERSION}); upgrade strongroom"
            )
        return cls(
            id=str(doc["id"]),
            version=version,
            cdc_min=int(doc["chunker"]["min"]),
            cdc_avg=int(doc["chunker"]["avg"]),
            cdc_max=int(doc["chunker"]["max"]),
            block_size=int(doc["block_size"]),
            pack_size=int(doc["pack_size"]),
            compression_level=int(doc["compression"]["level"]),
            created=str(doc["created"]),
        )


@dataclass
class WriteStats:
    """What this session added to the repository."""

    chunks_added: int = 0
    bytes_added_raw: int = 0
    bytes_added_stored: int = 0
    packs_written: int = 0
    index_files_written: int = 0


class Repository:
    """An open, unlocked repository. Chunk writes are buffered until `flush`.

    Thread safety: `chunk_id`, `has_chunk`, `seal_chunk`, `load_chunk` may be
    called from any thread; `add_sealed` and `flush` from one writer thread.
    """

    def __init__(self, backend: Backend, master: MasterKey, config: RepoConfig, key_name: str):
        self.backend = backend
        self.master = master
        self.config = config
        self.key_name = key_name
        self.sealer = Sealer(master.encryption_key)
        self.chunk_id = ChunkHasher(master.id_key)
        self.compressor = Compressor(config.compression_level)
        self._index: ChunkIndex | None = None
        self._index_lock = threading.Lock()
        self.stats = WriteStats()
        self._session_ids: set[bytes] = set()
        self._builders: dict[BlobType, PackBuilder] = {}
        self._uploads: list[Future[None]] = []
        self._uploader: ThreadPoolExecutor | None = None
        self._unindexed: dict[bytes, list[tuple[bytes, int, int, int, int]]] = {}
        self._unindexed_lock = threading.Lock()
        self._last_index_flush = time.monotonic()
        self.held_lock: Lock | None = None  # set by whoever locked this session
        # Session pack tracking (docs/design.md 4.4): what a point of this session
        # may rely on, re-checked before committing if our lock lapsed.
        self.packs_written: set[bytes] = set()
        self.packs_relied_on: set[bytes] = set()  # packs `has_chunk` answered from
        self._present: frozenset[bytes] | None = None  # data packs listed at start
        self._present_lock = threading.Lock()
        self.missing_packs_seen: set[bytes] = set()  # indexed, but not in storage

    # --- creating and opening ------------------------------------------------

    @classmethod
    def init(
        cls,
        backend: Backend,
        password: bytes,
        *,
        compression_level: int = fmt.DEFAULT_COMPRESSION_LEVEL,
        kdf: KdfParams | None = None,
    ) -> Repository:
        if backend.exists(fmt.CONFIG_NAME):
            raise RepositoryExists(f"a repository already exists at {backend.location}")
        master = MasterKey.generate()
        config = RepoConfig(id=uuid.uuid4().hex, compression_level=compression_level)
        key_blob = wrap_master_key(master, password, kdf)
        key_obj = fmt.key_name(content_hash(key_blob).hex())
        backend.create(key_obj, key_blob)
        # config last: its presence is what makes the folder a repository.
        backend.create(
            fmt.CONFIG_NAME, Sealer(master.encryption_key).seal(config.encode(), _CONFIG_AD)
        )
        return cls(backend, master, config, key_obj)

    @classmethod
    def open(cls, backend: Backend, password: bytes) -> Repository:
        if not backend.exists(fmt.CONFIG_NAME):
            raise RepositoryNotFound(f"no repository at {backend.location} (run 'strongroom init')")
        key_names = [o.name for o in backend.list(fmt.KEYS_PREFIX)]
        if not key_names:
            raise RepositoryError(f"repository at {backend.location} has no key files")
        for name in key_names:
            try:
                master = unwrap_master_key(backend.get(name), password)
            except (WrongPassword, RepositoryError):
                continue
            sealed = backend.get(fmt.CONFIG_NAME)
            config = RepoConfig.decode(
                Sealer(master.encryption_key).open(sealed, _CONFIG_AD, "config")
            )
            return cls(backend, master, config, name)
        raise WrongPassword("wrong password: no key in the repository opens with it")

    def close(self) -> None:
        if self._uploader is not None:
            self._uploader.shutdown(wait=True)
            self._uploader = None
        self.backend.close()

    # --- keys ----------------------------------------------------------------

    def add_key(self, password: bytes, kdf: KdfParams | None = None) -> str:
        blob = wrap_master_key(self.master, password, kdf)
        name = fmt.key_name(content_hash(blob).hex())
        self.backend.create(name, blob)
        return name

    def list_keys(self) -> list[dict[str, Any]]:
        keys = []
        for obj in self.backend.list(fmt.KEYS_PREFIX):
            info = key_file_info(self.backend.get(obj.name))
            info["id"] = fmt.pack_hex_from_name(obj.name)
            info["current"] = obj.name == self.key_name
            keys.append(info)
        return keys

    def remove_key(self, key_hex_prefix: str) -> str:
        matches = [
            o.name
            for o in self.backend.list(fmt.KEYS_PREFIX)
            if fmt.pack_hex_from_name(o.name).startswith(key_hex_prefix)
        ]
        if len(matches) != 1:
            raise RepositoryError(f"{len(matches)} keys match {key_hex_prefix!r}; give a longer id")
        if matches[0] == self.key_name:
            raise RepositoryError("refusing to remove the key in use; open with another password")
        self.backend.delete(matches[0])
        return matches[0]

    def change_password(self, new_password: bytes, kdf: KdfParams | None = None) -> str:
        """Add a key for `new_password`, then remove the one in use (in that order)."""
        new_name = self.add_key(new_password, kdf)
        self.backend.delete(self.key_name)
        self.key_name = new_name
        return new_name

    # --- locks ---------------------------------------------------------------

    def lock(self, exclusive: bool = False) -> Lock:
        """Take a lock (RepositoryLocked if a live conflicting one exists)."""
        return Lock(self.backend, self.sealer, exclusive).acquire()

    def verify_lock(self, stopping: str = "stopped before deleting anything more") -> None:
        """For exclusive writers (prune, repair) before each destructive step:
        RepositoryLocked if our lock lapsed, since a backup may have started in
        the gap and rely on what we are about to delete."""
        if self.held_lock is not None:
            self.held_lock.verify(stopping)

    def leases(self) -> LeaseStore:
        return LeaseStore(self.backend, self.sealer)

    def lease_id(self, key: str) -> str:
        """The object name part for the lease on `key`: keyed, so it reveals nothing."""
        return self.chunk_id(b"lease\0" + key.encode()).hex()[:32]

    # --- index ---------------------------------------------------------------

    def list_index_files(self) -> list[str]:
        return [o.name for o in self.backend.list(fmt.INDEX_PREFIX)]

    def read_index_file(self, name: str) -> IndexFile:
        from strongroom.repository.index import IndexFile

        plain = self.sealer.open(self.backend.get(name), _INDEX_AD, name)
        return IndexFile.decode(plain, name)

    @property
    def index(self) -> ChunkIndex:
        """The chunk index, loaded on first use: a backup of an unchanged tree, or
        a listing, never pays for it."""
        if self._index is None:
            with self._index_lock:
                if self._index is None:
                    self._index = self._read_index()
        return self._index

    @property
    def index_loaded(self) -> bool:
        return self._index is not None

    def load_index(self) -> None:
        """Load the index now (rather than on first use)."""
        _ = self.index

    def _read_index(self) -> ChunkIndex:
        """Read every index file (in parallel); superseded ones are skipped."""
        from strongroom.repository.index import ChunkIndex

        index = ChunkIndex()
        names = self.list_index_files()
        workers = max(1, self.backend.capabilities.parallel_requests)
        files: dict[str, IndexFile] = {}

        def read(name: str) -> tuple[str, IndexFile | None]:
            try:
                return name, self.read_index_file(name)
            except ObjectNotFound:
                return name, None  # superseded and removed while we listed

        with ThreadPoolExecutor(workers) as pool:
            for name, idx in pool.map(read, names):
                if idx is not None:
                    files[name] = idx
        superseded = {fmt.index_name(s.hex()) for idx in files.values() for s in idx.supersedes}
        index.add_files([idx for name, idx in files.items() if name not in superseded])
        return index

    def write_index_file(
        self,
        packs: dict[bytes, list[tuple[bytes, int, int, int, int]]],
        supersedes: list[bytes] | tuple[bytes, ...] = (),
    ) -> str:
        from strongroom.repository.index import IndexFile

        sealed = self.sealer.seal(IndexFile.build(packs, supersedes).encode(), _INDEX_AD)
        name = fmt.index_name(content_hash(sealed).hex())
        self.backend.put(name, sealed)
        self.stats.index_files_written += 1
        return name

    # --- chunks: writing -----------------------------------------------------

    def list_packs(self) -> dict[bytes, int]:
        """Every data pack in storage -> its size: one listing of `data/`.
        Names that are not a pack id (hostile or foreign objects) are skipped."""
        sizes: dict[bytes, int] = {}
        for obj in self.backend.list(fmt.DATA_PREFIX):
            pack_hex = fmt.pack_hex_from_name(obj.name)
            if len(pack_hex) != 64 or obj.name != fmt.pack_name(pack_hex):
                continue
            try:
                sizes[bytes.fromhex(pack_hex)] = obj.size
            except ValueError:
                continue
        return sizes

    def present_packs(self) -> frozenset[bytes]:
        """The data packs that existed when this session first asked, after the
        index was loaded (so every pack the loaded index names and that still
        exists is in it). Packs this session writes are in `packs_written`."""
        if self._present is None:
            _ = self.index  # index first: its packs were written before it
            with self._present_lock:
                if self._present is None:
                    self._present = frozenset(self.list_packs())
        return self._present

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether the chunk is stored: queued in this session, or named by the
        index in a pack that exists. An index entry whose pack is gone counts as
        absent, so a backup stores the chunk again (docs/design.md 5a). The pack
        answering is recorded in `packs_relied_on` for the lapse re-check."""
        if chunk_id in self._session_ids:
            return True
        loc = self._present_location(chunk_id)
        if loc is None:
            return False
        self.packs_relied_on.add(loc.pack)
        return True

    def _present_location(self, chunk_id: bytes) -> Location | None:
        """The chunk's location in a pack that exists (or that this session wrote)."""
        locations = self.index.lookup_all(chunk_id)
        if not locations:
            return None
        present = self.present_packs()
        for loc in locations:
            if loc.pack in present or loc.pack in self.packs_written:
                return loc
        self.missing_packs_seen.update(loc.pack for loc in locations)
        return None

    def seal_chunk(
        self, chunk_id: bytes, blob_type: BlobType, data: bytes | memoryview
    ) -> bytes | bytearray:
        """Compress and encrypt one chunk (thread-safe, releases the GIL in native code)."""
        return self.sealer.seal(self.compressor.pack(data), blob_ad(chunk_id, blob_type))

    def add_sealed(
        self, chunk_id: bytes, blob_type: BlobType, sealed: bytes | bytearray, raw_length: int
    ) -> bool:
        """Queue a sealed chunk for its pack; False if the chunk was already stored
        (in this session, or in a pack that exists: see `has_chunk`)."""
        if self.has_chunk(chunk_id):
            return False
        self._queue_sealed(chunk_id, blob_type, sealed, raw_length)
        return True

    def _queue_sealed(
        self, chunk_id: bytes, blob_type: BlobType, sealed: bytes | bytearray, raw_length: int
    ) -> None:
        builder = self._builders.get(blob_type)
        if builder is None:
            builder = self._builders[blob_type] = self._new_builder(blob_type)
        builder.add(chunk_id, sealed, raw_length)
        self._session_ids.add(chunk_id)
        self.stats.chunks_added += 1
        self.stats.bytes_added_raw += raw_length
        self.stats.bytes_added_stored += len(sealed)
        if builder.size >= self.config.pack_size:
            self._upload(self._builders.pop(blob_type))
        self._maybe_flush_index()

    def add_sealed_copy(
        self, chunk_id: bytes, blob_type: BlobType, sealed: bytes | bytearray, raw_length: int
    ) -> bool:
        """Queue a chunk that the index already knows elsewhere (prune's repacking)."""
        if chunk_id in self._session_ids:
            return False
        self._queue_sealed(chunk_id, blob_type, sealed, raw_length)
        return True

    def put_chunk(self, blob_type: BlobType, data: bytes) -> bytes:
        """Hash, seal and queue one chunk; return its id (used for trees)."""
        cid = self.chunk_id(data)
        if not self.has_chunk(cid):
            self._queue_sealed(cid, blob_type, self.seal_chunk(cid, blob_type, data), len(data))
        return cid

    def _new_builder(self, blob_type: BlobType) -> PackBuilder:
        # Data packs stream to storage when the backend can (no 16 MiB buffer);
        # tree packs are small and stay in memory.
        if blob_type is BlobType.DATA and isinstance(self.backend, StreamingPut):
            return PackBuilder(blob_type, self.backend.open_temp())
        return PackBuilder(blob_type)

    def _upload(self, builder: PackBuilder) -> None:
        self._reap_uploads(block=len(self._uploads) >= _MAX_PENDING_UPLOADS)
        entries = [
            (e.chunk_id, e.offset, e.length, e.raw_length, int(e.type)) for e in builder.entries
        ]
        if self._uploader is None:
            self._uploader = ThreadPoolExecutor(1, thread_name_prefix="upload")

        def upload() -> None:
            pack_id, data = builder.finish(self.sealer)  # hashing here, off the walker
            if builder.stream is not None:
                builder.stream.commit(fmt.pack_name(pack_id.hex()))
            else:
                self.backend.put(fmt.pack_name(pack_id.hex()), data)
            self.packs_written.add(pack_id)
            for cid, off, length, _raw, _t in entries:
                self.index.add(cid, pack_id, off, length)
            with self._unindexed_lock:
                self._unindexed[pack_id] = entries
            self.stats.packs_written += 1

        self._uploads.append(self._uploader.submit(upload))

    def _reap_uploads(self, block: bool) -> None:
        """Collect finished uploads, raising the first failure."""
        while self._uploads:
            head = self._uploads[0]
            if not block and not head.done():
                break
            self._uploads.pop(0).result()
            block = len(self._uploads) >= _MAX_PENDING_UPLOADS

    def _maybe_flush_index(self) -> None:
        due = time.monotonic() - self._last_index_flush >= INDEX_FLUSH_SECONDS
        if due or len(self._unindexed) >= INDEX_FLUSH_PACKS:
            self._reap_uploads(block=False)
            self._flush_index()

    def _flush_index(self) -> None:
        with self._unindexed_lock:
            packs, self._unindexed = self._unindexed, {}
        if packs:
            try:
                self.write_index_file(packs)
            except BaseException:
                with self._unindexed_lock:  # keep them for the next attempt (abandon)
                    packs.update(self._unindexed)
                    self._unindexed = packs
                raise
        self._last_index_flush = time.monotonic()

    def flush(self) -> None:
        """Write every buffered chunk and index it: afterwards all are durable."""
        for blob_type in list(self._builders):
            builder = self._builders.pop(blob_type)
            if len(builder):
                self._upload(builder)
        while self._uploads:
            self._uploads.pop(0).result()
        self._flush_index()

    def abandon(self) -> None:
        """After an error: drop buffered chunks, but index the packs already written.

        Indexing them lets the next backup reuse what this one stored. Best
        effort: if even that fails (a full disk), the packs stay unreferenced
        and harmless.
        """
        for builder in self._builders.values():
            builder.abort()
        self._builders.clear()
        for fut in self._uploads:
            fut.exception()
        self._uploads.clear()
        try:
            self._flush_index()
        except Exception:
            pass

    # --- chunks: reading -----------------------------------------------------

    def locate(self, chunk_id: bytes) -> Location:
        """Where to read the chunk. Stored more than once (rare), the copy in a
        pack that exists wins: that costs one listing of packs per session."""
        locations = self.index.lookup_all(chunk_id)
        if not locations:
            raise ChunkNotFound(f"chunk {chunk_id.hex()[:16]} is not in the index")
        if len(locations) > 1:
            return self._present_location(chunk_id) or locations[0]
        return locations[0]

    def load_chunk(
        self, chunk_id: bytes, blob_type: BlobType = BlobType.DATA, raw_length: int | None = None
    ) -> bytes:
        """Fetch, authenticate and decompress one chunk; IntegrityError names pack and chunk."""
        loc = self.locate(chunk_id)
        name = fmt.pack_name(loc.pack.hex())
        sealed = self.backend.get_range(name, loc.offset, loc.length)
        what = f"chunk {chunk_id.hex()[:16]} in pack {loc.pack.hex()[:16]}"
        if len(sealed) != loc.length:
            raise IntegrityError(f"{what} is truncated")
        payload = self.sealer.open(sealed, blob_ad(chunk_id, blob_type), what)
        try:
            return self.compressor.unpack(payload, raw_length)
        except IntegrityError as err:
            raise IntegrityError(f"{what}: {err}") from None

    # --- points --------------------------------------------------------------

    def save_point(self, doc: dict[str, Any]) -> str:
        """Store a point object (after `flush`!); returns its hex id.

        If a lock is held, it is verified first: a point must never be committed
        by a writer whose lock a prune may have broken. If it lapsed, a new lock
        is taken and everything the point relies on is re-checked (docs/design.md
        4.4); RepositoryError, and nothing committed, if any of it is gone."""
        if self.held_lock is not None:
            reason = self.held_lock.lapsed()
            if reason is not None:
                self._recheck_after_lapse(reason, doc.get("parent"))
        sealed = self.sealer.seal(json.dumps(doc, sort_keys=True).encode(), _POINT_AD)
        point_hex = content_hash(sealed).hex()
        self.backend.put(fmt.point_name(point_hex), sealed)
        # The point now protects what it deduplicated against; a later point of
        # this session records its own. Packs written stay recorded: a later
        # point may reuse their chunks through `_session_ids` without asking.
        self.packs_relied_on = set()
        return point_hex

    def _recheck_after_lapse(self, reason: str, parent: object) -> None:
        """Re-lock, then check that the packs this session wrote or deduplicated
        against, and the parent point it reused, still exist and are indexed.

        Under the new lock no prune can start, so what is found now stays until
        the point is written; a prune that ran in the gap deleted only what no
        committed point referenced, and that is exactly what this check finds
        missing."""
        assert self.held_lock is not None
        try:
            self.held_lock.reacquire()
        except RepositoryLocked as err:
            raise RepositoryLocked(f"{reason}, and it cannot be taken again: {err}") from None
        lost = self.lost_session_packs()
        gone_parent = (
            isinstance(parent, str)
            and bool(parent)
            and not self.backend.exists(fmt.point_name(parent))
        )
        if lost or gone_parent:
            what = f"{len(lost)} packs it stored or reused" if lost else ""
            if gone_parent:
                what += (" and " if what else "") + f"its parent point {str(parent)[:8]}"
            raise RepositoryError(
                f"{reason}; meanwhile {what} were removed (by prune?): nothing committed, "
                "run the backup again"
            )

    def lost_session_packs(self) -> set[bytes]:
        """Packs this session wrote or relied on that are now missing from storage
        or from the index (an index read and one listing, fresh)."""
        wanted = self.packs_written | self.packs_relied_on
        if not wanted:
            return set()

        files: dict[str, IndexFile] = {}
        for name in self.list_index_files():
            try:
                files[name] = self.read_index_file(name)
            except ObjectNotFound:
                continue
        superseded = {fmt.index_name(s.hex()) for idx in files.values() for s in idx.supersedes}
        indexed = {p for n, idx in files.items() if n not in superseded for p in idx.packs}
        stored = self.list_packs()
        return {p for p in wanted if p not in stored or p not in indexed}

    def load_point(self, point_hex: str) -> dict[str, Any]:
        name = fmt.point_name(point_hex)
        doc: dict[str, Any] = json.loads(self.sealer.open(self.backend.get(name), _POINT_AD, name))
        doc["id"] = point_hex
        return doc

    def list_point_ids(self) -> list[str]:
        return [o.name[len(fmt.POINTS_PREFIX) :] for o in self.backend.list(fmt.POINTS_PREFIX)]

    def iter_points(self) -> Iterator[dict[str, Any]]:
        for point_hex in self.list_point_ids():
            try:
                yield self.load_point(point_hex)
            except ObjectNotFound:
                continue  # forgotten meanwhile

    def delete_point(self, point_hex: str) -> None:
        self.backend.delete(fmt.point_name(point_hex))
