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
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from strongroom.errors import (
    ChunkNotFound,
    ConfigError,
    IntegrityError,
    InvalidObjectName,
    ObjectNotFound,
    RepositoryError,
    RepositoryExists,
    RepositoryLocked,
    RepositoryNotFound,
    UnsupportedVersion,
    WrongPassword,
)
from strongroom.repository import format as fmt
from strongroom.repository.compress import AUTO, Compressor, compression_mode, declared_size
from strongroom.repository.crypto import OVERHEAD, ChunkHasher, Sealer, content_hash
from strongroom.repository.damage import DamageLog
from strongroom.repository.entries import PackedChunk
from strongroom.repository.format import BlobType
from strongroom.repository.keys import (
    KDF_BUDGET,
    MAX_KEY_FILE_SIZE,
    KdfParams,
    KeyFile,
    MasterKey,
    key_file_info,
    open_key_file,
    parse_key_file,
    wrap_master_key,
)
from strongroom.repository.leases import LeaseStore
from strongroom.repository.locks import Lock
from strongroom.repository.pack import PackBuilder, blob_ad
from strongroom.storage import Backend
from strongroom.storage.base import ObjectInfo, StreamingPut, get_bounded

if TYPE_CHECKING:  # numpy is imported only when an index is needed
    from strongroom.repository.blob_cache import BlobCache
    from strongroom.repository.index import ChunkIndex, IndexFile, Location

_CONFIG_AD = b"config"
_INDEX_AD = b"index"
_POINT_AD = b"point"
_SEED_AD = b"seed"
INDEX_FLUSH_SECONDS = float(os.environ.get("STRONGROOM_INDEX_FLUSH_SECONDS", "15"))
INDEX_FLUSH_PACKS = 64
_MAX_PENDING_UPLOADS = 1  # packs queued for upload beyond the one being filled
# Bounds on objects read whole (docs/format.md): far above what strongroom writes.
MAX_INDEX_FILE_SIZE = 1 << 30  # prune writes <= 200k entries (10 MB); a backup <= 64 packs
MAX_POINT_SIZE = 64 << 20  # a point is a JSON document of a few KiB
MAX_CONFIG_SIZE = 64 << 10  # the config is a JSON document of a few hundred bytes
# Largest plaintext of a chunk whose referrer declares no size (trees, maps,
# manifests) or any chunk at all: data chunks are at most a CDC maximum or a
# block (blockmap.MAX_BLOCK_SIZE); a tree is one directory's listing.
MAX_CHUNK_SIZE = {BlobType.DATA: 64 << 20, BlobType.TREE: 512 << 20}
COALESCE_GAP = 256 << 10  # chunks of one pack this close share one ranged read
COALESCE_MAX = 16 << 20  # bytes of one such read, at most
_OBJECT_HEX = re.compile(r"[0-9a-f]{64}\Z")
# The local cache of a remote repository (`attach_cache`), per kind of object.
CACHE_OBJECTS_BYTES = 256 << 20  # points (a few KiB each)
CACHE_INDEX_BYTES = 1 << 30  # index files (~50 bytes per chunk)
CACHE_TREES_BYTES = 1 << 30  # directory listings


@dataclass
class ObjectCache:
    """The caches `attach_cache` opens: points, index files, trees."""

    documents: BlobCache
    indexes: BlobCache
    trees: BlobCache

    def close(self) -> None:
        for cache in (self.documents, self.indexes, self.trees):
            cache.close()


def is_object_hex(text: str) -> bool:
    """Whether `text` is a name part this program writes (64 lowercase hex digits)."""
    return bool(_OBJECT_HEX.match(text))


def _preferred_params() -> set[KdfParams]:
    """The parameters this program writes: a key file with them is tried first."""
    preferred = {KdfParams()}
    try:
        preferred.add(KdfParams.from_env())
    except ConfigError:
        pass
    return preferred


def _usable_key_files(backend: Backend, damage: DamageLog) -> list[tuple[str, KeyFile]]:
    """Key files that may open: named by the hash of their content, parseable and
    within the KDF bounds. The others go to `damage`, unread or underived."""
    keys = []
    for obj in backend.list(fmt.KEYS_PREFIX):
        name = obj.name
        key_hex = name[len(fmt.KEYS_PREFIX) :]
        try:
            if not is_object_hex(key_hex):
                raise IntegrityError(f"{name} is not a key file name (foreign object)")
            if obj.size > MAX_KEY_FILE_SIZE:
                raise IntegrityError(f"{name} is too large to be a key file ({obj.size} bytes)")
            blob = get_bounded(backend, name, MAX_KEY_FILE_SIZE, obj.size)
            if content_hash(blob).hex() != key_hex:
                raise IntegrityError(f"{name} does not match its name (altered or renamed)")
            keys.append((name, parse_key_file(blob, name)))
        except ObjectNotFound:
            continue  # removed while we listed
        except (IntegrityError, InvalidObjectName, UnsupportedVersion) as err:
            damage.report(name, str(err))
    return keys


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
    compression_mode: str = AUTO  # how writers choose per chunk (compress.py)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def encode(self) -> bytes:
        compression: dict[str, Any] = {"algorithm": "zstd", "level": self.compression_level}
        if self.compression_mode != AUTO:  # absent means auto: configs before modes read alike
            compression["mode"] = self.compression_mode
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
            "compression": compression,
            "cipher": "aes-256-gcm",
            "chunk_id": "blake3-keyed",
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def decode(cls, blob: bytes) -> RepoConfig:
        """The config of a stored object; IntegrityError if malformed or out of the
        bounds below (any key holder can rewrite it: a pack size of 2^50 would
        buffer a whole backup in memory, chunker or zstd parameters the libraries
        refuse would end every backup in an internal error)."""
        try:
            doc = json.loads(blob)
            version = doc["version"]
            if type(version) is not int:
                raise TypeError("version is not an integer")
            if version > fmt.FORMAT_VERSION:
                raise UnsupportedVersion(
                    f"repository format {version} is newer than this strongroom "
                    f"understands ({fmt.FORMAT_VERSION}); upgrade strongroom"
                )
            config = cls(
                id=str(doc["id"]),
                version=version,
                cdc_min=_bounded(doc["chunker"]["min"], *_CDC_MIN, "chunker.min"),
                cdc_avg=_bounded(doc["chunker"]["avg"], *_CDC_AVG, "chunker.avg"),
                cdc_max=_bounded(doc["chunker"]["max"], *_CDC_MAX, "chunker.max"),
                block_size=_bounded(doc["block_size"], *_BLOCK_SIZE, "block_size"),
                pack_size=_bounded(doc["pack_size"], *_PACK_SIZE, "pack_size"),
                compression_level=_bounded(doc["compression"]["level"], 0, 22, "level"),
                compression_mode=compression_mode(doc["compression"].get("mode")),
                created=str(doc["created"]),
            )
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            RecursionError,
            UnicodeDecodeError,
        ) as err:
            raise IntegrityError(f"the repository's config object is malformed: {err}") from None
        problem = config.geometry_problem()
        if problem:
            raise IntegrityError(f"the repository's config object: {problem}")
        return config

    def geometry_problem(self) -> str | None:
        """Why the chunker sizes or the block size cannot be used, or None: the
        bounds below, min <= avg <= max, a block size that is a power of 2."""
        for value, (low, high), what in (
            (self.cdc_min, _CDC_MIN, "the chunker's minimum"),
            (self.cdc_avg, _CDC_AVG, "the chunker's average"),
            (self.cdc_max, _CDC_MAX, "the chunker's maximum"),
            (self.block_size, _BLOCK_SIZE, "the block size"),
        ):
            if not low <= value <= high:
                return f"{what} {value} is not in {low}..{high} bytes"
        if not self.cdc_min <= self.cdc_avg <= self.cdc_max:
            return "the chunker's sizes are not min <= avg <= max"
        if self.block_size & (self.block_size - 1):
            return f"the block size {self.block_size} is not a power of 2"
        return None


# What the libraries accept (pyfastcdc, zstd) and what keeps memory bounded;
# writers of this version use 256 KiB / 768 KiB / 4 MiB, 1 MiB and 16 MiB.
_CDC_MIN = (64, 1 << 20)
_CDC_AVG = (256, 4 << 20)
_CDC_MAX = (1024, 16 << 20)
_BLOCK_SIZE = (4096, 64 << 20)
_PACK_SIZE = (64 << 10, 256 << 20)


_mode_of = compression_mode  # Repository.init's parameter shadows the name


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON: a point holding them would be printed as
    invalid JSON by `--json` (strongroom never writes them)."""
    raise ValueError(f"{name} is not a JSON value")


def _bounded(value: Any, low: int, high: int, what: str) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{what} is not an integer in {low}..{high}")
    return value


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
        self.compressor = Compressor(config.compression_level, config.compression_mode)
        self._index: ChunkIndex | None = None
        self._index_lock = threading.Lock()
        self._index_names: set[str] = set()  # index files read into `_index` or written
        self.stats = WriteStats()
        self._session_ids: set[bytes] = set()
        self._copied_ids: set[bytes] = set()  # chunks copied by a repacking (prune)
        self._builders: dict[BlobType, PackBuilder] = {}
        self._uploads: list[Future[None]] = []
        self._uploader: ThreadPoolExecutor | None = None
        self._unindexed: dict[bytes, list[PackedChunk]] = {}
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
        self.damage = DamageLog()  # damaged or foreign objects met so far (reported once)
        self.cache: ObjectCache | None = None  # remote storage: `attach_cache`

    # --- creating and opening ------------------------------------------------

    @classmethod
    def init(
        cls,
        backend: Backend,
        password: bytes,
        *,
        compression_level: int = fmt.DEFAULT_COMPRESSION_LEVEL,
        compression_mode: str = AUTO,
        kdf: KdfParams | None = None,
        chunker: tuple[int, int, int] | None = None,
        block_size: int | None = None,
    ) -> Repository:
        """A new repository. `chunker` (min, avg, max bytes of content-defined
        chunks) and `block_size` (image blocks) default to the format's; ValueError
        naming what is wrong when they cannot be used (`RepoConfig.geometry_problem`)."""
        config = RepoConfig(
            id=uuid.uuid4().hex,
            compression_level=compression_level,
            compression_mode=_mode_of(compression_mode),
        )
        if chunker is not None:
            config = replace(config, cdc_min=chunker[0], cdc_avg=chunker[1], cdc_max=chunker[2])
        if block_size is not None:
            config = replace(config, block_size=block_size)
        problem = config.geometry_problem()
        if problem:
            raise ValueError(problem)
        if backend.exists(fmt.CONFIG_NAME):
            raise RepositoryExists(f"a repository already exists at {backend.location}")
        master = MasterKey.generate()
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
        """Unlock with `password`: key files are tried cheapest-first within a total
        KDF budget (keys/ is hostile: a planted file must not cost more than that).

        Malformed, renamed or out-of-bounds key files are skipped without deriving
        anything; they are in the returned repository's `damage` log, and named in
        the error when no key opens (IntegrityError if every key file is damaged,
        else WrongPassword)."""
        if not backend.exists(fmt.CONFIG_NAME):
            raise RepositoryNotFound(f"no repository at {backend.location} (run 'strongroom init')")
        damage = DamageLog()
        keys = _usable_key_files(backend, damage)
        if not keys and not damage:
            raise RepositoryError(f"repository at {backend.location} has no key files")
        preferred = _preferred_params()
        # Keys with the parameters this program writes first (the usual case), then cheapest.
        keys.sort(key=lambda nk: (nk[1].params not in preferred, nk[1].params.work, nk[0]))
        spent = 0
        tried = 0
        for name, key in keys:
            if spent + key.params.work > KDF_BUDGET and tried:
                damage.report(name, f"{name} not tried: the key derivation budget is spent")
                continue
            spent += key.params.work
            tried += 1
            try:
                master = open_key_file(key, password)
            except WrongPassword:
                continue
            sealed = get_bounded(backend, fmt.CONFIG_NAME, MAX_CONFIG_SIZE)
            config = RepoConfig.decode(
                Sealer(master.encryption_key).open(sealed, _CONFIG_AD, "config")
            )
            repo = cls(backend, master, config, name)
            repo.damage = damage
            return repo
        first = next(iter(damage.found.values()), "")
        skipped = f" (key files skipped: {len(damage)}; first: {first})"
        if not tried:
            raise IntegrityError(f"no usable key file in the repository{skipped}")
        raise WrongPassword(
            "wrong password: no key in the repository opens with it" + (skipped if damage else "")
        )

    def close(self) -> None:
        if self._uploader is not None:
            self._uploader.shutdown(wait=True)
            self._uploader = None
        if self.cache is not None:
            self.cache.close()
        self.backend.close()

    # --- the local cache of a remote repository ------------------------------

    def attach_cache(self, home: str | None = None) -> None:
        """Keep index files, points and trees read from remote storage in
        `$XDG_CACHE_HOME/strongroom/repository/<id>/` (restic's cache): they are
        immutable and named by their content (index files and points) or id
        (trees), and every hit is verified exactly as a read from storage is,
        so a damaged or planted entry is dropped and read again, never used."""
        from strongroom.repository.blob_cache import BlobCache, repository_folder

        folder = repository_folder("repository", self.config.id, home)
        if folder is None:
            return
        self.cache = ObjectCache(
            documents=BlobCache(
                f"{folder}/objects", limit=CACHE_OBJECTS_BYTES, max_blob=MAX_POINT_SIZE
            ),
            indexes=BlobCache(
                f"{folder}/index", limit=CACHE_INDEX_BYTES, max_blob=CACHE_INDEX_BYTES
            ),
            trees=BlobCache(
                f"{folder}/trees",
                limit=CACHE_TREES_BYTES,
                max_blob=MAX_CHUNK_SIZE[BlobType.TREE] + OVERHEAD,
            ),
        )

    def _named_object(
        self, cache: BlobCache | None, name: str, object_hex: str, limit: int, damaged: str
    ) -> bytes:
        """The sealed object `name`, named by the hash of its bytes: from the cache
        when its bytes still hash to the name, else from storage (bounded), checked
        against the name (IntegrityError "NAME does not match its name (DAMAGED)")
        and kept for next time. Each read is hashed once."""
        key = bytes.fromhex(object_hex)
        if cache is not None:
            cached = cache.get(key)
            if cached is not None:
                if content_hash(cached).hex() == object_hex:
                    return cached
                cache.drop(key)
        sealed = get_bounded(self.backend, name, limit)
        if content_hash(sealed).hex() != object_hex:
            raise IntegrityError(f"{name} does not match its name ({damaged})")
        if cache is not None:
            cache.put_soon(key, sealed)
        return sealed

    # --- keys ----------------------------------------------------------------

    def add_key(self, password: bytes, kdf: KdfParams | None = None) -> str:
        blob = wrap_master_key(self.master, password, kdf)
        name = fmt.key_name(content_hash(blob).hex())
        self.backend.create(name, blob)
        return name

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key file; a damaged or foreign one is listed with `damaged` set (so it
        can be removed by id) and reported."""
        good = dict(_usable_key_files(self.backend, self.damage))
        keys = []
        for obj in self.backend.list(fmt.KEYS_PREFIX):
            key = good.get(obj.name)
            info = key_file_info(key)
            info["damaged"] = None if key else self.damage.found.get(obj.name, "unreadable")
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
        """Fetch, verify against its name, authenticate and decode one index file.

        IntegrityError if the name is foreign, the content does not hash to the
        name (altered, or another index file renamed), or it does not decrypt."""
        from strongroom.repository.index import IndexFile

        index_hex = name[len(fmt.INDEX_PREFIX) :]
        if not name.startswith(fmt.INDEX_PREFIX) or not is_object_hex(index_hex):
            raise IntegrityError(f"{name} is not an index file name (foreign object)")
        cache = None if self.cache is None else self.cache.indexes
        sealed = self._named_object(cache, name, index_hex, MAX_INDEX_FILE_SIZE, "damaged")
        plain = self.sealer.open(sealed, _INDEX_AD, name)
        return IndexFile.decode(plain, name)

    def read_index_files(self) -> dict[str, IndexFile]:
        """Every readable index file, read in parallel, by name (superseded ones included).

        A damaged or foreign one is reported to `damage` and left out: its chunks
        are unknown to this session (a backup stores them again; prune refuses if
        a point needs one, as the chunk is then missing)."""
        objects = list(self.backend.list(fmt.INDEX_PREFIX))
        workers = max(1, self.backend.capabilities.parallel_requests)
        files: dict[str, IndexFile] = {}

        def read(obj: ObjectInfo) -> tuple[str, IndexFile | None]:
            try:
                if obj.size > MAX_INDEX_FILE_SIZE:
                    raise IntegrityError(
                        f"{obj.name} is too large to be an index file ({obj.size} bytes)"
                    )
                return obj.name, self.read_index_file(obj.name)
            except ObjectNotFound:
                return obj.name, None  # superseded and removed while we listed
            except (IntegrityError, InvalidObjectName) as err:
                self.damage.report(obj.name, str(err))
                return obj.name, None

        with ThreadPoolExecutor(workers) as pool:
            for name, idx in pool.map(read, objects):
                if idx is not None:
                    files[name] = idx
        return files

    def current_index_files(
        self, files: dict[str, IndexFile] | None = None
    ) -> dict[str, IndexFile]:
        """The index files that count: those no other file supersedes. `files` as
        `read_index_files` returns them (read now if not given)."""
        if files is None:
            files = self.read_index_files()
        superseded = {fmt.index_name(s.hex()) for idx in files.values() for s in idx.supersedes}
        return {name: idx for name, idx in files.items() if name not in superseded}

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
        """Read every index file (in parallel); superseded and damaged ones are skipped."""
        from strongroom.repository.index import ChunkIndex

        index = ChunkIndex()
        files = self.read_index_files()
        self._index_names = set(files)
        index.add_files(list(self.current_index_files(files).values()))
        with self._unindexed_lock:  # written by this session, index file not yet
            for pack_id, entries in self._unindexed.items():
                for cid, off, length, _raw, _t in entries:
                    index.add(cid, pack_id, off, length)
        return index

    def list_packs(self) -> dict[bytes, int]:
        """{pack id: size} of every object under data/ named as a pack; foreign names
        are reported to `damage` and left out (they are no pack of ours)."""
        packs = {}
        for obj in self.backend.list(fmt.DATA_PREFIX):
            pack_hex = fmt.pack_hex_from_name(obj.name)
            if not is_object_hex(pack_hex) or obj.name != fmt.pack_name(pack_hex):
                self.damage.report(obj.name, f"{obj.name} is not a pack name (foreign object)")
                continue
            packs[bytes.fromhex(pack_hex)] = obj.size
        return packs

    def write_index_file(
        self,
        packs: dict[bytes, list[PackedChunk]],
        supersedes: list[bytes] | tuple[bytes, ...] = (),
    ) -> str:
        from strongroom.repository.index import IndexFile

        sealed = self.sealer.seal(IndexFile.build(packs, supersedes).encode(), _INDEX_AD)
        name = fmt.index_name(content_hash(sealed).hex())
        self.backend.put(name, sealed)
        self._index_names.add(name)
        self.stats.index_files_written += 1
        return name

    def refresh_index(self) -> int:
        """Read into the loaded index the index files other writers added
        since (a long-lived session: the backup server's intake), and list
        the packs again; returns how many index files were new. Call it from
        the writing thread, with nothing queued (after `flush`). Entries of
        index files a prune superseded stay, harmlessly: `has_chunk` counts
        only chunks in packs that exist."""
        if self._index is None:
            return 0
        new = sorted(set(self.list_index_files()) - self._index_names)
        files = []
        for name in new:
            try:
                files.append(self.read_index_file(name))
            except ObjectNotFound:
                pass  # superseded and removed meanwhile
            except (IntegrityError, InvalidObjectName) as err:
                self.damage.report(name, str(err))
            self._index_names.add(name)
        if files:
            self._index.add_files(files)
            # their packs were written before them (write order), and exist
            # unless a prune ran: the caller holds a lock that keeps it out
            with self._present_lock:
                if self._present is not None:
                    self._present = self._present | {p for f in files for p in f.packs}
        return len(new)

    def settle(self) -> None:
        """After `flush`, for a long-lived writer (the backup server's
        intake): drop the per-chunk set of what this session queued. Its
        chunks are found through the index and `packs_written` from now on,
        so memory stays bounded by packs, not chunks."""
        if not self._builders and not self._uploads and not self._unindexed:
            self._session_ids = set()

    def forget_session(self) -> None:
        """After a gap without a lock (a prune may have run in it): forget
        which chunks and packs this session wrote or relied on and the packs
        listed, so nothing is taken as stored on their word. The index stays:
        its entries count only for packs that are listed again."""
        self._session_ids = set()
        self.packs_written = set()
        self.packs_relied_on = set()
        with self._present_lock:
            self._present = None
        self.missing_packs_seen = set()

    # --- chunks: writing -----------------------------------------------------

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

    def seal_new(
        self, data: bytes | memoryview, *, dry_run: bool = False
    ) -> tuple[bytes, bytes | bytearray | None]:
        """A data chunk's id, and its sealed form unless the repository has it
        already (or `dry_run`): the worker half of storing a chunk, whose other
        half (`add_sealed`) runs in order on the writing thread."""
        cid = self.chunk_id(data)
        if dry_run or self.has_chunk(cid):
            return cid, None
        return cid, self.seal_chunk(cid, BlobType.DATA, data)

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
        """Queue a chunk that the index already knows elsewhere (prune's repacking).

        Only a copy made by this repacking counts as done: a chunk this session
        wrote before (a backup, then a prune in one process) lives in a pack
        that the repacking is about to delete, so it must be copied too."""
        if chunk_id in self._copied_ids:
            return False
        self._copied_ids.add(chunk_id)
        self._queue_sealed(chunk_id, blob_type, sealed, raw_length)
        return True

    def add_compressed(
        self, chunk_id: bytes, blob_type: BlobType, payload: bytes, raw_length: int
    ) -> bool:
        """Queue a chunk that arrives compressed (`Compressor.pack`'s format)
        and whose id the caller has verified against its content (an agent's
        upload, repository/bundle.py `verify`): encrypt only. False if the
        chunk is stored already (see `has_chunk`)."""
        if self.has_chunk(chunk_id):
            return False
        sealed = self.sealer.seal(payload, blob_ad(chunk_id, blob_type))
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
            PackedChunk(e.chunk_id, e.offset, e.length, e.raw_length, int(e.type))
            for e in builder.entries
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

    # --- chunks: several writers at once (the backup server's intake) --------

    def write_pack(
        self, blob_type: BlobType, chunks: Sequence[tuple[bytes, bytes | bytearray, int]]
    ) -> tuple[bytes, list[PackedChunk]]:
        """Write `chunks` (id, sealed form, raw length) as one pack now and
        return its id and entries, not indexed yet (`index_packs`).

        Unlike `add_sealed`, which queues into this session's one pack per
        type, any number of threads may call this at once, each with its own
        pack, so several callers' uploads overlap instead of queueing. Which
        chunks each caller writes (none twice) is the caller's business."""
        builder = PackBuilder(blob_type)
        for chunk_id, sealed, raw_length in chunks:
            builder.add(chunk_id, sealed, raw_length)
        pack_id, parts = builder.finish(self.sealer)
        self.backend.put(fmt.pack_name(pack_id.hex()), parts)
        return pack_id, [
            PackedChunk(e.chunk_id, e.offset, e.length, e.raw_length, int(e.type))
            for e in builder.entries
        ]

    def index_packs(self, packs: dict[bytes, list[PackedChunk]]) -> None:
        """Write one index file for packs `write_pack` wrote, then take them
        into the loaded index: afterwards their chunks are durable and
        `has_chunk` finds them. Thread-safe, as `write_pack`."""
        self.write_index_file(packs)
        for pack_id, entries in packs.items():
            self.packs_written.add(pack_id)  # before the index names it (has_chunk)
            for chunk_id, offset, length, _raw, _type in entries:
                self.index.add(chunk_id, pack_id, offset, length)

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
        # The aborted builders' chunks (and a failed upload's) were never
        # written: a later backup of this session (a server, a protection
        # service) must not take them as stored. What was written is found
        # through the index and `packs_written` (or, if even indexing failed,
        # stored again: a duplicate, never a hole).
        self._session_ids = set()

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
        """Fetch, authenticate, decompress and verify one chunk; IntegrityError names
        pack and chunk.

        `raw_length` is the size the referencing tree or map declares; without it
        the chunk may be at most MAX_CHUNK_SIZE of its type. The plaintext must hash
        to `chunk_id` (keyed BLAKE3): authentication alone proves only that a key
        holder sealed it under that id, not that the id is the content's, so a
        tree that names itself, or any chunk sealed under a wrong id, is refused."""
        trees = self.cache.trees if self.cache is not None and blob_type == BlobType.TREE else None
        if trees is not None:
            cached = trees.get(chunk_id)
            if cached is not None:
                try:
                    return self._open_chunk(cached, chunk_id, blob_type, raw_length, "cached")
                except IntegrityError:
                    trees.drop(chunk_id)  # damaged or planted: read it from storage
        loc = self.locate(chunk_id)
        name = fmt.pack_name(loc.pack.hex())
        sealed = self.backend.get_range(name, loc.offset, loc.length)
        what = f"chunk {chunk_id.hex()[:16]} in pack {loc.pack.hex()[:16]}"
        if len(sealed) != loc.length:
            raise IntegrityError(f"{what} is truncated")
        data = self._open_chunk(sealed, chunk_id, blob_type, raw_length, what)
        if trees is not None:
            trees.put_soon(chunk_id, sealed)
        return data

    def _open_chunk(
        self,
        sealed: bytes,
        chunk_id: bytes,
        blob_type: BlobType,
        raw_length: int | None,
        what: str,
    ) -> bytes:
        """Authenticate, decompress and verify a chunk's sealed bytes."""
        if what == "cached":
            what = f"cached chunk {chunk_id.hex()[:16]}"
        bound = MAX_CHUNK_SIZE[blob_type]
        if raw_length is not None:
            if not 0 <= raw_length <= bound:  # a tree's claim sets what zstd allocates
                raise IntegrityError(f"{what}: declared size {raw_length} is impossible")
            bound = raw_length
        payload = self.sealer.open(sealed, blob_ad(chunk_id, blob_type), what)
        try:
            data = self.compressor.unpack(payload, bound)
        except IntegrityError as err:
            raise IntegrityError(f"{what}: {err}") from None
        if self.chunk_id(data) != chunk_id:
            raise IntegrityError(f"{what}: content does not hash to its id")
        return data

    def load_payloads(
        self, wanted: list[tuple[bytes, BlobType]], pool: Executor | None = None
    ) -> list[tuple[bytes, int]]:
        """Each chunk of `wanted` as (its compressed payload, the size it
        declares), in order: authenticated (the pack's AEAD under the chunk's
        id and type) but not decompressed nor hashed, for a reader that
        verifies anyway (an agent through the backup server). Chunks of one
        pack that lie close are read with one ranged GET (`COALESCE_GAP`,
        `COALESCE_MAX`), the reads run on `pool` when given. Every chunk is
        located first: ChunkNotFound names the first absent one before anything
        is read. Thread-safe as `load_chunk`."""
        located = [(self.locate(cid), cid, blob_type) for cid, blob_type in wanted]
        order = sorted(
            range(len(located)), key=lambda i: (located[i][0].pack, located[i][0].offset)
        )
        runs: list[list[int]] = []
        for i in order:
            loc = located[i][0]
            if runs:
                first = located[runs[-1][0]][0]
                last = located[runs[-1][-1]][0]
                end = max(last.offset + last.length, loc.offset + loc.length)
                if (
                    loc.pack == first.pack
                    and loc.offset <= last.offset + last.length + COALESCE_GAP
                    and end - first.offset <= COALESCE_MAX
                ):
                    runs[-1].append(i)
                    continue
            runs.append([i])

        def read(run: list[int]) -> list[tuple[int, bytes, int]]:
            start = located[run[0]][0].offset
            end = max(located[i][0].offset + located[i][0].length for i in run)
            pack_hex = located[run[0]][0].pack.hex()
            blob = self.backend.get_range(fmt.pack_name(pack_hex), start, end - start)
            out = []
            for i in run:
                loc, cid, blob_type = located[i]
                what = f"chunk {cid.hex()[:16]} in pack {pack_hex[:16]}"
                sealed = blob[loc.offset - start : loc.offset - start + loc.length]
                if len(sealed) != loc.length:
                    raise IntegrityError(f"{what} is truncated")
                payload = self.sealer.open(sealed, blob_ad(cid, blob_type), what)
                try:
                    size = declared_size(payload, MAX_CHUNK_SIZE[blob_type])
                except IntegrityError as err:
                    raise IntegrityError(f"{what}: {err}") from None
                out.append((i, payload, size))
            return out

        found: list[tuple[bytes, int]] = [(b"", 0)] * len(located)
        results = pool.map(read, runs) if pool is not None and len(runs) > 1 else map(read, runs)
        for part in results:
            for i, payload, size in part:
                found[i] = (payload, size)
        return found

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
        self._forget_listings()

    def _forget_listings(self) -> None:
        """Drop the index and pack listing read before a lapse: a prune in the gap
        may have deleted packs this session did not use yet, and a later point
        must not deduplicate against them (they are read again when next asked)."""
        with self._index_lock:
            self._index = None
        with self._present_lock:
            self._present = None
        self.missing_packs_seen = set()

    def lost_session_packs(self) -> set[bytes]:
        """Packs this session wrote or relied on that are now missing from storage
        or from the index (an index read and one listing, fresh)."""
        wanted = self.packs_written | self.packs_relied_on
        if not wanted:
            return set()

        indexed = {p for idx in self.current_index_files().values() for p in idx.packs}
        stored = self.list_packs()
        return {p for p in wanted if p not in stored or p not in indexed}

    def load_point(self, point_hex: str) -> dict[str, Any]:
        """Fetch, verify and decode one point; IntegrityError if it is damaged.

        The name is the hash of the sealed object, so a point renamed to another's
        id (two point files swapped) is refused rather than restored in its place."""
        return self._load_document(fmt.point_name(point_hex), point_hex, _POINT_AD, "point")

    def _load_document(self, name: str, doc_hex: str, ad: bytes, what: str) -> dict[str, Any]:
        if not is_object_hex(doc_hex):
            raise IntegrityError(f"{name} is not a {what} name (foreign object)")
        cache = None if self.cache is None else self.cache.documents
        sealed = self._named_object(cache, name, doc_hex, MAX_POINT_SIZE, "damaged or renamed")
        try:
            doc = json.loads(self.sealer.open(sealed, ad, name), parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nesting: a forged document
            raise IntegrityError(f"{name} is not a JSON document") from None
        if not isinstance(doc, dict):
            raise IntegrityError(f"{name} is not a JSON object")
        doc["id"] = doc_hex
        return doc

    def list_point_ids(self) -> list[str]:
        """Ids of every object under points/ named as a point (damaged ones included:
        they can still be named and forgotten); foreign names go to `damage`."""
        return self._list_document_ids(fmt.POINTS_PREFIX, "point")

    def _list_document_ids(self, prefix: str, what: str) -> list[str]:
        ids = []
        for obj in self.backend.list(prefix):
            doc_hex = obj.name[len(prefix) :]
            if is_object_hex(doc_hex):
                ids.append(doc_hex)
            else:
                self.damage.report(obj.name, f"{obj.name} is not a {what} name (foreign object)")
        return ids

    def iter_points(self) -> Iterator[dict[str, Any]]:
        """Every readable point; damaged ones are reported to `damage` and skipped."""
        for point_hex in self.list_point_ids():
            try:
                yield self.load_point(point_hex)
            except ObjectNotFound:
                continue  # forgotten meanwhile
            except IntegrityError as err:
                self.damage.report(fmt.point_name(point_hex), str(err))

    def delete_point(self, point_hex: str) -> None:
        """Remove a point object by id, readable or not (a damaged point can be
        named and forgotten without being decrypted)."""
        if not is_object_hex(point_hex):
            raise IntegrityError(f"{point_hex!r} is not a point id")
        self.backend.delete(fmt.point_name(point_hex))

    # --- seeds (docs/format.md §11a) ---------------------------------------------

    def save_seed(self, doc: dict[str, Any]) -> str:
        """Store a seed object (after `flush`); returns its hex id. Like a point,
        it is committed only while this session's lock holds (or, after a lapse,
        once everything the seed relies on is found again)."""
        if self.held_lock is not None:
            reason = self.held_lock.lapsed()
            if reason is not None:
                self._recheck_after_lapse(reason, None)
        sealed = self.sealer.seal(json.dumps(doc, sort_keys=True).encode(), _SEED_AD)
        seed_hex = content_hash(sealed).hex()
        self.backend.put(fmt.seed_name(seed_hex), sealed)
        self.packs_relied_on = set()
        return seed_hex

    def load_seed(self, seed_hex: str) -> dict[str, Any]:
        """Fetch, verify and decode one seed; IntegrityError if it is damaged."""
        return self._load_document(fmt.seed_name(seed_hex), seed_hex, _SEED_AD, "seed")

    def list_seed_ids(self) -> list[str]:
        return self._list_document_ids(fmt.SEEDS_PREFIX, "seed")

    def delete_seed(self, seed_hex: str) -> None:
        if not is_object_hex(seed_hex):
            raise IntegrityError(f"{seed_hex!r} is not a seed id")
        self.backend.delete(fmt.seed_name(seed_hex))
