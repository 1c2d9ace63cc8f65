"""`RemoteStore`: a `ChunkStore` (repository/store.py) whose chunks live in
the backup server's repository, for the unchanged file pipelines.

Contract:
- chunks are cut and named exactly as a local backup does (the enrolled
  id key and chunker seed), so they deduplicate with the whole repository;
- `seal_new` only names a chunk (what it returns is the chunk's plain
  bytes); `add_sealed` queues it. `UPLOADERS` background threads send the
  batches, two in flight at once (one asks while the other uploads): first
  which of a batch's ids the server lacks (`/agent/chunks/missing`, at most
  `bundle.MAX_IDS` per question), then they compress only those (on
  `COMPRESSORS` threads: zstd releases the GIL) and send them in bundles.
  A chunk the server holds is never compressed nor sent (the server only
  encrypts). Trees are compressed at once (the tree cache keeps them so).
  `flush` returns once the server acknowledged every queued chunk as
  durable (it raises the first failure);
- resume is the same negotiation: after an interruption, what the server
  acknowledged is reported present and not sent again;
- `load_chunk` reads through `/agent/chunks/read` and verifies what comes
  back (size and keyed id) as a local read does. Reads are batched: each
  tree loaded adds its files' chunk ids to a plan, and a data chunk missed
  is fetched with up to `PREFETCH` chunks that follow it in the plan (at
  most `PREFETCH_BYTES`), kept in a bounded cache until asked for;
- with a tree cache (repository/blob_cache.py; `open_agent` makes one per
  repository id), every tree the agent stores or reads is kept on disk as
  its compressed payload, and a tree is looked up there before the server
  is asked. A cached tree is verified as a server's answer is (it
  decompresses within the bound and hashes, keyed, to its id); one that
  fails is dropped and fetched again. So a backup of an unchanged tree
  reads no tree from the server;
- `save_point` commits the point with a random commit id, retried with the
  same id, so a lost answer never makes two points.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from strongroom.errors import IntegrityError, RemoteError, RemoteRefused, StrongroomError
from strongroom.model.tree import ID_SIZE, decode_wires
from strongroom.remote.client import Client
from strongroom.remote.config import RepositoryInfo
from strongroom.repository import bundle
from strongroom.repository.blob_cache import BlobCache
from strongroom.repository.compress import Compressor
from strongroom.repository.crypto import ChunkHasher
from strongroom.repository.format import BlobType
from strongroom.repository.repo import MAX_CHUNK_SIZE, RepoConfig, WriteStats

BATCH_BYTES = 8 << 20  # chunk bytes queued before a batch is negotiated
UPLOADERS = 2  # batches negotiated and sent at once
COMPRESSORS = 2  # threads compressing the chunks a batch lacks
PREFETCH = 64  # chunks of one read
PREFETCH_BYTES = 16 << 20
TREE_PREFETCH = 32  # trees of one read (a tree is at most a few MiB; the server splits)
CACHE_BYTES = 64 << 20  # chunks fetched ahead and not asked for yet
MAX_PLAN = 1 << 20  # chunk ids planned ahead (beyond: no read-ahead)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Keys:
    chunker_seed: int


@dataclass(frozen=True)
class _Queued:
    """A chunk waiting for its batch: `data` is its plain bytes, or its
    payload in the compressor's format when `packed` (trees)."""

    chunk_id: bytes
    blob_type: BlobType
    raw_length: int
    data: bytes
    packed: bool

    @property
    def size(self) -> int:
        return bundle.record_overhead() + len(self.data)


@dataclass
class Traffic:
    """What went over the wire (tests, `--json` summaries and bench/server.py's
    negotiation overhead: bodies only, without HTTP headers)."""

    asked: int = 0  # ids asked about
    missing: int = 0  # of those, missing on the server
    questions: int = 0  # `missing` round trips
    question_bytes: int = 0  # their request bodies
    answer_bytes: int = 0  # and the answers' bodies
    bundles: int = 0
    bytes_sent: int = 0  # bundle bytes uploaded
    compressed: int = 0  # data chunks compressed for upload (only those missing)
    chunks_read: int = 0  # from the server
    trees_cached: int = 0  # trees read from the local tree cache instead


class RemoteStore:
    def __init__(
        self,
        client: Client,
        info: RepositoryInfo,
        *,
        batch_bytes: int = BATCH_BYTES,
        tree_cache: BlobCache | None = None,
    ) -> None:
        self.client = client
        self.tree_cache = tree_cache
        self.config = RepoConfig(
            id=info.id,
            cdc_min=info.cdc_min,
            cdc_avg=info.cdc_avg,
            cdc_max=info.cdc_max,
            compression_level=info.compression_level,
            compression_mode=info.compression_mode,
        )
        self.master = _Keys(info.chunker_seed)
        self.stats = WriteStats()
        self.traffic = Traffic()
        self.chunk_id = ChunkHasher(bytes.fromhex(info.id_key))
        self.compressor = Compressor(info.compression_level, info.compression_mode)
        self._batch_bytes = batch_bytes
        self._known: set[bytes] = set()  # queued in this session, or acknowledged
        self._known_lock = threading.Lock()
        self._pending: list[_Queued] = []
        self._pending_size = 0
        self._batches: queue.Queue[list[_Queued] | None] = queue.Queue(maxsize=UPLOADERS)
        self._error: BaseException | None = None
        self._dropping = False
        self._senders: list[threading.Thread] = []
        self._packers: ThreadPoolExecutor | None = None
        self._traffic_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._plan: list[tuple[bytes, int]] = []  # data chunks in tree order, sizes
        self._planned: dict[bytes, int] = {}  # id -> first place in the plan
        self._plan_by_trees = True  # each loaded tree's files planned (False: `plan_walk`)
        # Subtrees of the trees loaded, in tree order: a folder's loading also
        # fetches its siblings' trees (a walk over a parent point reads them
        # all, one request per folder otherwise).
        self._tree_plan: list[bytes] = []
        self._tree_planned: dict[bytes, int] = {}
        self._cache: dict[bytes, bytes] = {}
        self._cache_bytes = 0
        self._inflight: dict[bytes, threading.Event] = {}  # being fetched by some thread

    # --- ChunkStore: naming and queueing -----------------------------------------

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Queued or acknowledged in this session (no question to the server:
        the batched negotiation asks for many ids at once)."""
        with self._known_lock:
            return chunk_id in self._known

    def assume_stored(self, chunk_ids: Iterable[bytes]) -> None:
        """Count `chunk_ids` as held by the server (see the module's contract)."""
        with self._known_lock:
            self._known.update(chunk_ids)

    def seal_new(
        self, data: bytes | memoryview, *, dry_run: bool = False
    ) -> tuple[bytes, bytes | bytearray | None]:
        """The chunk's id, and its plain bytes unless it is queued or known:
        compressing waits until the server says it lacks the chunk."""
        cid = self.chunk_id(data)
        if dry_run or self.has_chunk(cid):
            return cid, None
        return cid, bytes(data)

    def add_sealed(
        self, chunk_id: bytes, blob_type: BlobType, sealed: bytes | bytearray, raw_length: int
    ) -> bool:
        """Queue what `seal_new` returned (the plain bytes)."""
        return self._queue(_Queued(chunk_id, blob_type, raw_length, bytes(sealed), packed=False))

    def _queue(self, item: _Queued) -> bool:
        with self._known_lock:
            if item.chunk_id in self._known:
                return False
            self._known.add(item.chunk_id)
        self._pending.append(item)
        self._pending_size += item.size
        if self._pending_size >= self._batch_bytes:
            self._send_pending()
        return True

    def put_chunk(self, blob_type: BlobType, data: bytes) -> bytes:
        cid = self.chunk_id(data)
        cache = self.tree_cache if blob_type is BlobType.TREE else None
        known = self.has_chunk(cid)
        if known and (cache is None or cache.has(cid)):
            return cid
        payload = self.compressor.pack(data)
        if cache is not None:
            cache.put_soon(cid, payload)
        if not known:
            self._queue(_Queued(cid, blob_type, len(data), payload, packed=True))
        return cid

    def flush(self) -> None:
        self._send_pending()
        self._batches.join()
        self._raise_failure()

    def abandon(self) -> None:
        self._pending, self._pending_size = [], 0
        self._dropping = True
        try:
            self._batches.join()
        finally:
            self._dropping = False

    def close(self) -> None:
        for _ in self._senders:
            self._batches.put(None)
        for sender in self._senders:
            sender.join()
        self._senders = []
        if self._packers is not None:
            self._packers.shutdown()
            self._packers = None
        if self.tree_cache is not None:
            self.tree_cache.close()  # the trees handed to it are on disk

    # --- sending -----------------------------------------------------------------

    def _send_pending(self) -> None:
        self._raise_failure()
        if not self._pending:
            return
        batch, self._pending, self._pending_size = self._pending, [], 0
        if not self._senders:
            self._packers = ThreadPoolExecutor(COMPRESSORS, thread_name_prefix="agent-compress")
            for n in range(UPLOADERS):
                sender = threading.Thread(
                    target=self._send_loop, name=f"agent-upload-{n}", daemon=True
                )
                sender.start()
                self._senders.append(sender)
        self._batches.put(batch)

    def _raise_failure(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _send_loop(self) -> None:
        while True:
            batch = self._batches.get()
            try:
                if batch is None:
                    return
                if self._error is None and not self._dropping:
                    self._send_batch(batch)
            except BaseException as err:  # handed to the writer at its next call
                self._error = err
            finally:
                self._batches.task_done()

    def lacking(self, chunk_ids: list[bytes]) -> set[bytes]:
        """Which of `chunk_ids` the server lacks: `/agent/chunks/missing`, at most
        bundle.MAX_IDS a question (the uploads' negotiation, and `backup
        --dry-run` through a server, which asks and sends nothing). Only ids
        asked for count; a malformed answer is a RemoteError."""
        lacking: set[bytes] = set()
        for start in range(0, len(chunk_ids), bundle.MAX_IDS):
            ids = [c.hex() for c in chunk_ids[start : start + bundle.MAX_IDS]]
            question = json.dumps({"ids": ids}, separators=(",", ":")).encode()
            reply = self.client.request(
                "POST",
                "/api/v1/agent/chunks/missing",
                content=question,
                content_type="application/json",
            )
            lacking.update(_among(reply.json(), chunk_ids[start : start + bundle.MAX_IDS]))
            with self._traffic_lock:
                self.traffic.asked += len(ids)
                self.traffic.questions += 1
                self.traffic.question_bytes += len(question)
                self.traffic.answer_bytes += len(reply.content)
        return lacking

    def _send_batch(self, batch: list[_Queued]) -> None:
        lacking = self.lacking([r.chunk_id for r in batch])
        wanted = [item for item in batch if item.chunk_id in lacking]
        with self._traffic_lock:
            self.traffic.missing += len(lacking)
            self.traffic.compressed += sum(not item.packed for item in wanted)
        group: list[bundle.Record] = []
        size = bundle.empty_size()
        for record in self._records(wanted):
            full = len(group) >= bundle.MAX_RECORDS
            if group and (full or size + record.size > bundle.MAX_BUNDLE):
                self._upload(group)
                group, size = [], bundle.empty_size()
            group.append(record)
            size += record.size
        if group:
            self._upload(group)

    def _records(self, items: list[_Queued]) -> Iterable[bundle.Record]:
        """The bundle records of `items`, in order: plain chunks compressed on
        the compressing threads."""
        assert self._packers is not None

        def record(item: _Queued) -> bundle.Record:
            payload = item.data if item.packed else self.compressor.pack(item.data)
            return bundle.Record(item.chunk_id, item.blob_type, item.raw_length, payload)

        return self._packers.map(record, items)

    def _upload(self, records: list[bundle.Record]) -> None:
        if self._dropping:
            return
        blob = bundle.encode(records)
        answer = self.client.request(
            "PUT", "/api/v1/agent/chunks", content=blob, content_type=bundle.MEDIA_TYPE
        ).json()
        with self._traffic_lock:
            self.traffic.bundles += 1
            self.traffic.bytes_sent += len(blob)
            self.stats.chunks_added += int(answer["added"])
            self.stats.bytes_added_raw += int(answer["bytes"])
            self.stats.bytes_added_stored += sum(len(r.payload) for r in records)

    # --- reading -----------------------------------------------------------------

    def load_chunk(
        self, chunk_id: bytes, blob_type: BlobType = BlobType.DATA, raw_length: int | None = None
    ) -> bytes:
        bound = MAX_CHUNK_SIZE[blob_type] if raw_length is None else raw_length
        if blob_type is BlobType.TREE and self.tree_cache is not None:
            kept = self._cached_tree(chunk_id, bound)
            if kept is not None:
                self._plan_tree(kept)
                return kept
        waited = False
        while True:
            with self._read_lock:
                cached = self._cache.pop(chunk_id, None)
                busy = self._inflight.get(chunk_id) if cached is None and not waited else None
                if cached is not None:
                    self._cache_bytes -= len(cached)
                elif busy is None:
                    wanted = self._batch_from(chunk_id, blob_type)
                    for cid in wanted:
                        self._inflight.setdefault(cid, threading.Event())
            if busy is None:
                break
            busy.wait()  # another thread fetches it: take it from the cache
            waited = True
        if cached is not None:
            if len(cached) > bound:
                raise IntegrityError(f"chunk {chunk_id.hex()[:16]}: larger than its tree says")
            if blob_type is BlobType.TREE:
                self._plan_tree(cached)  # its subtrees come next
            return cached
        try:
            data = self._fetch(wanted, blob_type, bound)
        finally:
            with self._read_lock:
                for cid in wanted:
                    done = self._inflight.pop(cid, None)
                    if done is not None:
                        done.set()
        if blob_type is BlobType.TREE:
            self._plan_tree(data)
        return data

    def _cached_tree(self, chunk_id: bytes, bound: int) -> bytes | None:
        """The tree from the local cache, verified; None (the entry dropped if
        it was there) when it is absent or fails verification."""
        assert self.tree_cache is not None
        payload = self.tree_cache.get(chunk_id)
        if payload is None:
            return None
        try:
            data = self.compressor.unpack(payload, bound)
        except IntegrityError:
            data = None
        if data is None or self.chunk_id(data) != chunk_id:
            self.tree_cache.drop(chunk_id)
            return None
        with self._read_lock:
            self.traffic.trees_cached += 1
        return data

    def plan_walk(self, root: bytes) -> None:
        """Before a restore walks the point whose root tree is `root`: plan
        every file's chunks in the walk's own order (depth first, entries in
        node order, a folder's files after the folders before them), so a
        data read fetches the `PREFETCH` chunks the restore needs next at
        once. Planned as trees arrive (each tree's files, then its subtrees'),
        the plan ran ahead of the walk only as far as the walk had gone, and
        chunks fetched long before their turn filled the read-ahead cache:
        a restore of many small folders made a request per two chunks.
        Only with the tree cache (the walk then finds each tree there, not
        asking the server twice); bounded by `MAX_PLAN`, each tree once."""
        if self.tree_cache is None:
            return
        self._plan_by_trees = False  # from now on, this plan's order only
        stack = [iter(self._wires(root))]
        seen = {root}
        while stack and len(self._plan) < MAX_PLAN:
            wire = next(stack[-1], None)
            if wire is None:
                stack.pop()
                continue
            subtree = wire.get("st")
            if type(subtree) is bytes and len(subtree) == ID_SIZE:
                if subtree not in seen:
                    seen.add(subtree)
                    stack.append(iter(self._wires(subtree)))
                continue
            with self._read_lock:
                self._plan_content(wire)
        self.tree_cache.wait()

    def _wires(self, tree: bytes) -> list[dict[Any, Any]]:
        try:
            return list(decode_wires(self.load_chunk(tree, BlobType.TREE)))
        except (StrongroomError, ValueError, TypeError, KeyError):
            return []  # the walk meets it too, and reports it

    def plan_reads(self, chunks: Iterable[tuple[bytes, int]]) -> None:
        """Data chunks (id, size) in the order they will be loaded: a load of
        one also fetches those after it (an image's blocks in address order)."""
        with self._read_lock:
            for cid, size in chunks:
                if len(self._plan) >= MAX_PLAN:
                    return
                if cid not in self._planned:
                    self._planned[cid] = len(self._plan)
                    self._plan.append((cid, size))

    def _batch_from(self, chunk_id: bytes, blob_type: BlobType) -> list[bytes]:
        """`chunk_id` and the planned chunks of its type after it, not cached yet."""
        wanted = [chunk_id]
        if blob_type is BlobType.TREE:
            at_tree = self._tree_planned.get(chunk_id)
            if at_tree is not None:
                # a bounded look ahead: cached siblings are skipped, not asked for
                ahead = self._tree_plan[at_tree + 1 : at_tree + 1 + 8 * TREE_PREFETCH]
                for cid in ahead:
                    if len(wanted) >= TREE_PREFETCH:
                        break
                    if cid in self._cache or cid in self._inflight or cid in wanted:
                        continue
                    if self.tree_cache is None or not self.tree_cache.has(cid):
                        wanted.append(cid)
            return wanted
        at = self._planned.get(chunk_id) if blob_type is BlobType.DATA else None
        if at is None or self._cache_bytes + PREFETCH_BYTES > CACHE_BYTES:
            return wanted  # what it fetched ahead would not be kept
        # The next PREFETCH places of the plan only: skipping what is cached
        # or in flight without a bound reached ever further ahead, filled the
        # cache with chunks needed much later, and then every read fetched 64
        # chunks to keep one (a files restore read its data dozens of times).
        size = 0
        for cid, length in self._plan[at + 1 : at + 1 + PREFETCH]:
            if size + length > PREFETCH_BYTES:
                break
            if cid not in self._cache and cid not in self._inflight and cid not in wanted:
                wanted.append(cid)
                size += length
        return wanted

    def _fetch(self, wanted: list[bytes], blob_type: BlobType, bound: int) -> bytes:
        chunk_type = int(blob_type)
        answer = self.client.request(
            "POST",
            "/api/v1/agent/chunks/read",
            json={"chunks": [{"id": c.hex(), "type": chunk_type} for c in wanted]},
        )
        records = bundle.parse(answer.content)
        first = wanted[0]
        if not records or records[0].chunk_id != first or len(records) > len(wanted):
            raise IntegrityError(f"chunk {first.hex()[:16]}: the server sent another")
        found: bytes | None = None
        for record, cid in zip(records, wanted, strict=False):
            limit = bound if cid == first else MAX_CHUNK_SIZE[blob_type]
            if record.chunk_id != cid or record.blob_type is not blob_type:
                raise IntegrityError(f"chunk {cid.hex()[:16]}: the server sent another")
            if record.raw_length > limit:
                raise IntegrityError(f"chunk {cid.hex()[:16]}: larger than its tree says")
            data = bundle.verify(record, self.compressor, self.chunk_id)
            self.traffic.chunks_read += 1
            if blob_type is BlobType.TREE and self.tree_cache is not None:
                self.tree_cache.put_soon(cid, record.payload)
            if cid == first:
                found = data
            else:
                self._keep(cid, data)
        assert found is not None
        return found

    def _keep(self, chunk_id: bytes, data: bytes) -> None:
        with self._read_lock:
            if chunk_id in self._cache or self._cache_bytes + len(data) > CACHE_BYTES:
                return
            self._cache[chunk_id] = data
            self._cache_bytes += len(data)

    def _plan_tree(self, blob: bytes) -> None:
        """Best effort, from the raw node maps (a walk decodes each tree
        anyway; building nodes twice costs more than the walk): a tree that
        does not decode plans nothing, a malformed field is skipped (the
        pipeline that asked for the tree reports it)."""
        try:
            wires = decode_wires(blob)
        except (StrongroomError, ValueError, TypeError, KeyError):
            return
        with self._read_lock:
            for wire in wires:
                subtree = wire.get("st")
                if (
                    type(subtree) is bytes
                    and len(subtree) == ID_SIZE
                    and subtree not in self._tree_planned
                    and len(self._tree_plan) < MAX_PLAN
                ):
                    self._tree_planned[subtree] = len(self._tree_plan)
                    self._tree_plan.append(subtree)
                if self._plan_by_trees:
                    self._plan_content(wire)

    def _plan_content(self, wire: dict[Any, Any]) -> None:
        """Under `_read_lock`: a file node's chunks, at the plan's end."""
        content, sizes = wire.get("c"), wire.get("cs")
        if type(content) is not bytes or type(sizes) is not list:
            return
        if len(content) != ID_SIZE * len(sizes):
            return
        for n, size in enumerate(sizes):
            if len(self._plan) >= MAX_PLAN:
                return
            cid = content[n * ID_SIZE : (n + 1) * ID_SIZE]
            if type(size) is int and cid not in self._planned:
                self._planned[cid] = len(self._plan)
                self._plan.append((cid, size))

    # --- points ------------------------------------------------------------------

    def save_point(self, doc: dict[str, Any]) -> str:
        """Commit the point (after `flush`); its id."""
        commit_id = secrets.token_hex(16)
        answer = self.client.post_json(
            "/api/v1/agent/points", {"point": doc, "commit_id": commit_id}
        )
        point_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(point_id, str):
            raise RemoteError("the server's answer to a commit names no point")
        return point_id

    def points(self) -> list[dict[str, Any]]:
        """This machine's points, oldest first, as the server lists them."""
        found = self.client.get_json("/api/v1/agent/points")
        if not isinstance(found, list):
            raise RemoteError("the server's list of points is not a list")
        return [p for p in found if isinstance(p, dict)]

    # --- seeds (services/agent_seeds.py verifies and decodes them) ------------------

    def seeds(self) -> list[dict[str, Any]]:
        """The repository's seeds, as the server lists them (objects only).
        A server older than seeds through agents answers 404: none, said in
        one warning, so an upgraded agent still backs up to it."""
        try:
            found = self.client.get_json("/api/v1/agent/seeds")
        except RemoteRefused as err:
            if err.status != 404:
                raise
            log.warning("the server lists no seeds (an older version): backing up without seeds")
            return []
        if not isinstance(found, list):
            raise RemoteError("the server's list of seeds is not a list")
        return [s for s in found if isinstance(s, dict)]

    def seed(self, ref: str) -> dict[str, Any]:
        """One seed's document by name or id prefix (RemoteError: the server has none)."""
        from urllib.parse import quote

        found = self.client.get_json(f"/api/v1/agent/seeds/{quote(ref, safe='')}")
        if not isinstance(found, dict):
            raise RemoteError("the server's seed document is not an object")
        return found


def _among(answer: Any, asked: list[bytes]) -> set[bytes]:
    """The ids of a `missing` answer that were asked for (a server's word
    about others is ignored); RemoteError when the answer is malformed."""
    found = answer.get("missing") if isinstance(answer, dict) else None
    if not isinstance(found, list) or not all(isinstance(h, str) for h in found):
        raise RemoteError("the server's answer of missing chunks is malformed")
    wanted = {c.hex(): c for c in asked}
    return {wanted[h] for h in found if h in wanted}
