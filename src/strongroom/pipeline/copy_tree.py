"""Translating a point's manifest from one repository into another (`strongroom copy`).

Chunk ids are keyed hashes (docs/format.md §7.1) and the CDC gear table is keyed
too (§7.2), both with keys derived from each repository's master secret: the
same bytes have other ids, and files other boundaries, in another repository.
So nothing can be copied by id. A file's content is streamed from the source
(every chunk verified against its source id) through the TARGET's chunker and
stored there, deduplicated against what the target holds; directories are
rewritten with the target's ids, every other field of every node kept as stored
(unknown keys included). A block map keeps its geometry (block size is per
point, §10a): each block is re-hashed and stored under the target's id, holes
stay holes. A VM manifest is rewritten disk by disk.

Within one `Translator` (one run), work is done once: a source tree, block map
or manifest already translated maps to its target id at once, and a file whose
source chunk list was already translated (another point, a hard link, a copy
of the file elsewhere) takes the target's list without being read again; so
copying ten points of one tree costs about one. The maps live in memory only,
but a later run rebuilds them from the repositories themselves: `learn` walks
a point copied before (its source manifest and the target's copy, found
through the copy's `copied_from`) side by side, metadata only, and maps each
source tree, file content and block to what the copy holds, so an incremental
copy reads only what changed since (checked on the way: names, types and sizes
must agree at every position, else that subtree is not learnt, only read).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from strongroom.chunking import CdcChunker
from strongroom.errors import IntegrityError, StrongroomError, UsageError
from strongroom.model.blockmap import BlockMap
from strongroom.model.origin import ORIGIN_KEY
from strongroom.model.tree import FILE, Node, TreePath, decode_wires, encode_wires
from strongroom.model.vm import VmDisk, VmManifest
from strongroom.pipeline.blockmaps import load_block_map, load_vm_manifest, save_block_map
from strongroom.pipeline.blockmaps import save_vm_manifest as save_manifest
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkStore
from strongroom.types import Progress

LOOKAHEAD = 8  # source chunks fetched ahead of the one being cut (bounded memory)
SEAL_AHEAD = 8  # target chunks sealing in workers ahead of the writer


class SeedBased(UsageError):
    """A point whose tree names seeds (§12b): its seeds are not in the target."""


@dataclass
class CopyCounts:
    """What the translation read and found (the target's own stats say what it added)."""

    bytes_read: int = 0  # plaintext of source data chunks read
    chunks_read: int = 0
    files_translated: int = 0  # file contents streamed through the target's chunker
    files_reused: int = 0  # file contents found in the map (not read again)


class Translator:
    """Source manifests to target manifests, storing data in `dst` (flush after!).

    Either side may be a local `Repository` or an agent's store over its backup
    server (remote/store.py: `copy --server`, `copy --from-server`): only the
    chunk store's contract is used, but for the same-keys fast path, which
    needs two local repositories."""

    def __init__(
        self,
        src: ChunkStore,
        dst: ChunkStore,
        progress: Progress,
        report: Callable[[Progress], None],
        jobs: int = 4,
    ) -> None:
        self.src = src
        self.dst = dst
        cfg = dst.config
        self.chunker = CdcChunker(cfg.cdc_min, cfg.cdc_avg, cfg.cdc_max, dst.master.chunker_seed)
        self.small_file = cfg.cdc_min  # as backup: a file this small is one chunk
        self.progress = progress
        self.report = report
        self.counts = CopyCounts()
        self._trees: dict[bytes, bytes] = {}  # source manifest chunk -> target's
        self._contents: dict[bytes, tuple[list[bytes], list[int]]] = {}  # joined ids -> list
        self._blocks: dict[bytes, bytes] = {}  # source block chunk -> target's
        self._sizes: dict[bytes, tuple[int, int]] = {}  # source manifest -> files, bytes
        self._pool = ThreadPoolExecutor(max(2, jobs), thread_name_prefix="copy")
        # The fast path: both repositories derive their ids and cuts from one
        # master secret (one is a copy of the other, with another password):
        # chunks are copied by id, manifests are byte-equal, nothing is re-cut.
        # (Through a server the chunks are re-cut and the server asked which it
        # lacks: with equal keys that sends nothing it holds, reading all.)
        scfg = src.config
        self._fast: Repository | None = None
        if isinstance(src, Repository) and isinstance(dst, Repository) and (
            src.master.id_key, src.master.chunker_seed, scfg.cdc_min, scfg.cdc_avg,
            scfg.cdc_max) == (dst.master.id_key, dst.master.chunker_seed, cfg.cdc_min,
            cfg.cdc_avg, cfg.cdc_max):  # fmt: skip
            self._fast = dst
        self.same_keys = self._fast is not None

    def forget(self) -> None:
        """After the target dropped what was queued (`abandon`): nothing mapped so
        far may be taken as stored."""
        self._trees.clear()
        self._sizes.clear()
        self._contents.clear()
        self._blocks.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- file trees ----------------------------------------------------------

    def file_tree(self, tree_id: bytes) -> bytes:
        """The target id of source tree `tree_id` (and everything below it)."""
        return self._tree(tree_id, TreePath())

    def _tree(self, tree_id: bytes, path: TreePath) -> bytes:
        done = self._trees.get(tree_id)
        if done is not None:
            files, size = self._sizes[tree_id]
            self.progress.files_done += files
            self.progress.bytes_done += size
            return done
        path.enter(tree_id)
        files_before, bytes_before = self.progress.files_done, self.progress.bytes_done
        size = 0
        wires = decode_wires(self.src.load_chunk(tree_id, BlobType.TREE))
        out: list[dict[str, Any]] = []
        for wire in wires:
            node = Node.from_wire(wire)  # every field checked: the tree is hostile
            if node.origin is not None or ORIGIN_KEY in wire:
                raise SeedBased("its files are recorded against seeds")
            new = dict(wire)
            if node.type == FILE:
                ids, sizes = self._content(node)
                new["c"], new["cs"] = b"".join(ids), sizes
                self.progress.files_done += 1
                size += node.size
            elif node.chunks:
                raise IntegrityError(f"tree {tree_id.hex()[:16]}: a non-file node holds chunks")
            if node.subtree is not None:
                new["st"] = self._tree(node.subtree, path)
                size += self._sizes[node.subtree][1]
            out.append(new)
        path.leave()
        new_id = self.dst.put_chunk(BlobType.TREE, encode_wires(out))
        self._trees[tree_id] = new_id
        # What this tree holds, whatever was read for it (the progress counts
        # each file's size once, read or found in the map).
        self._sizes[tree_id] = (self.progress.files_done - files_before, size)
        self.progress.bytes_done = bytes_before + size
        return new_id

    def _content(self, node: Node) -> tuple[list[bytes], list[int]]:
        if not node.chunks:
            return [], []
        key = b"".join(node.chunks)
        done = self._contents.get(key)
        if done is not None:
            self.counts.files_reused += 1
            self.progress.bytes_done += node.size
            return done
        self.progress.current = node.name.decode("utf-8", "replace")
        wanted = list(zip(node.chunks, node.chunk_sizes, strict=True))
        if self.same_keys:
            self._copy_by_id(wanted)
            self._contents[key] = (node.chunks, node.chunk_sizes)
            return node.chunks, node.chunk_sizes
        stream = _SourceStream(self._fetch(wanted))
        if node.size <= self.small_file:
            pieces: Iterator[bytes | memoryview] = iter([stream.read_all()])
        else:
            pieces = self.chunker.chunks(stream)
        ids: list[bytes] = []
        sizes: list[int] = []
        for cid, length in self._store(pieces):
            ids.append(cid)
            sizes.append(length)
        if sum(sizes) != node.size:
            raise IntegrityError("a file's chunks do not add up to its size")  # checked on read
        self.counts.files_translated += 1
        self._contents[key] = (ids, sizes)
        return ids, sizes

    def _copy_by_id(self, wanted: list[tuple[bytes, int]]) -> None:
        """The fast path: chunks the target lacks, read (verified) and stored
        under the same id; those it has are not read."""
        dst = self._fast
        assert dst is not None
        missing = {cid: size for cid, size in wanted if not dst.has_chunk(cid)}
        self.progress.bytes_done += sum(size for cid, size in wanted if cid not in missing)
        todo = list(missing.items())
        for (cid, _), data in zip(todo, self._fetch(todo), strict=True):
            sealed = dst.seal_chunk(cid, BlobType.DATA, data)
            if dst.add_sealed(cid, BlobType.DATA, sealed, len(data)):
                self.progress.bytes_added += len(data)

    def _fetch(self, wanted: list[tuple[bytes, int]]) -> Iterator[bytes]:
        """The source chunks' plaintext in order, each verified against its id,
        LOOKAHEAD of them read ahead in the pool."""
        queue: deque[Future[bytes]] = deque()
        todo = iter(wanted)
        load = self.src.load_chunk

        def refill() -> None:
            while len(queue) < LOOKAHEAD:
                item = next(todo, None)
                if item is None:
                    return
                queue.append(self._pool.submit(load, item[0], BlobType.DATA, item[1]))

        try:
            refill()
            while queue:
                data = queue.popleft().result()
                refill()
                self.counts.chunks_read += 1
                self.counts.bytes_read += len(data)
                self.progress.bytes_done += len(data)
                self.report(self.progress)
                yield data
        finally:
            for fut in queue:
                fut.cancel()

    def _store(self, pieces: Iterator[bytes | memoryview]) -> Iterator[tuple[bytes, int]]:
        """Store each piece in the target (sealed in the pool, queued in order on
        this thread); yields (target id, length)."""
        queue: deque[tuple[Future[tuple[bytes, bytes | bytearray | None]], int]] = deque()

        def settle() -> tuple[bytes, int]:
            fut, length = queue.popleft()
            cid, sealed = fut.result()
            if sealed is not None and self.dst.add_sealed(cid, BlobType.DATA, sealed, length):
                self.progress.bytes_added += length
            return cid, length

        try:
            for piece in pieces:
                data = bytes(piece)  # the chunker's view is reused for the next piece
                queue.append((self._pool.submit(self.dst.seal_new, data), len(data)))
                if len(queue) >= SEAL_AHEAD:
                    yield settle()
            while queue:
                yield settle()
        finally:
            for fut, _ in queue:
                fut.cancel()

    # --- learning from an earlier copy ----------------------------------------

    def learn(self, kind: str, source_root: bytes, target_root: bytes) -> None:
        """Map what the target's copy `target_root` of the source's manifest
        `source_root` holds (the module docstring); `kind`: a PointKind value.
        What does not line up, or cannot be read, is simply not learnt."""
        if source_root in self._trees or self.same_keys:
            return  # known already; the fast path reads nothing it need not anyway
        try:
            if kind == "files":
                self._learn_tree(source_root, target_root, TreePath())
            elif kind == "block":
                self._learn_map(source_root, target_root)
            elif kind == "vm":
                source = load_vm_manifest(self.src, source_root)
                target = {d.name: d for d in load_vm_manifest(self.dst, target_root).disks}
                for disk in source.disks:
                    twin = target.get(disk.name)
                    if twin is not None:
                        self._learn_map(bytes.fromhex(disk.map_root), bytes.fromhex(twin.map_root))
        except StrongroomError:
            pass  # damage in either manifest: the copy reads what it needs instead

    def _learn_tree(self, source: bytes, target: bytes, path: TreePath) -> tuple[int, int] | None:
        """(files, bytes) under `source` once learnt, None if the two do not line up."""
        if source in self._trees:
            return self._sizes[source]
        path.enter(source)
        theirs = decode_wires(self.src.load_chunk(source, BlobType.TREE))
        ours = decode_wires(self.dst.load_chunk(target, BlobType.TREE))
        if len(theirs) != len(ours):
            return None
        files = size = 0
        contents: list[tuple[bytes, tuple[list[bytes], list[int]]]] = []
        for their_wire, our_wire in zip(theirs, ours, strict=True):
            a, b = Node.from_wire(their_wire), Node.from_wire(our_wire)
            if (a.name, a.type, a.size) != (b.name, b.type, b.size) or a.origin is not None:
                return None
            if a.type == FILE:
                if sum(b.chunk_sizes) != b.size or bool(a.chunks) != bool(b.chunks):
                    return None
                if a.chunks:
                    contents.append((b"".join(a.chunks), (b.chunks, b.chunk_sizes)))
                files += 1
                size += a.size
            if a.subtree is not None:
                if b.subtree is None:
                    return None
                below = self._learn_tree(a.subtree, b.subtree, path)
                if below is None:
                    return None
                files, size = files + below[0], size + below[1]
        path.leave()
        self._contents.update(contents)
        self._trees[source], self._sizes[source] = target, (files, size)
        return files, size

    def _learn_map(self, source_root: bytes, target_root: bytes) -> None:
        source = load_block_map(self.src, source_root)
        target = load_block_map(self.dst, target_root)
        if (source.size, source.block_size) != (target.size, target.block_size):
            return
        learnt = {}
        for block in range(source.blocks):
            theirs, ours = source.get(block), target.get(block)
            if (theirs is None) != (ours is None):
                return
            if theirs is not None and ours is not None:
                learnt[theirs] = ours
        self._blocks.update(learnt)
        self._trees[source_root], self._sizes[source_root] = target_root, (0, source.size)

    # --- block maps and VM manifests ------------------------------------------

    def block_map(self, root_id: bytes) -> bytes:
        """The target id of a block map root: same geometry, each block re-hashed
        and stored under the target's id (a block seen before is not read again)."""
        done = self._trees.get(root_id)
        if done is not None:
            self.progress.bytes_done += self._sizes[root_id][1]
            return done
        bytes_before = self.progress.bytes_done
        source = load_block_map(self.src, root_id)
        target = BlockMap.empty(source.size, source.block_size)
        wanted = []
        for block in range(source.blocks):
            cid = source.get(block)
            if cid is None:
                continue
            known = self._blocks.get(cid)
            if known is not None:
                target.assign(block, known)
            else:
                wanted.append((block, cid))
        # Read each new source chunk once, in map order, LOOKAHEAD ahead.
        unique: dict[bytes, int] = {}
        for block, cid in wanted:
            unique.setdefault(cid, source.extent(block)[1])
        if self.same_keys:
            self._copy_by_id(list(unique.items()))
            self._blocks.update((cid, cid) for cid in unique)
            unique = {}
        fetched = self._fetch(list(unique.items()))
        stored = self._store(fetched)
        for cid, (new_id, _length) in zip(unique, stored, strict=True):
            self._blocks[cid] = new_id
        for block, cid in wanted:
            target.assign(block, self._blocks[cid])
        new_root = save_block_map(self.dst, target)
        self._trees[root_id] = new_root
        self._sizes[root_id] = (0, source.size)  # the progress counts the whole disk
        self.progress.bytes_done = bytes_before + source.size
        return new_root

    def vm_manifest(self, manifest_id: bytes) -> bytes:
        """The target id of a VM manifest: each disk's map translated, the rest kept."""
        done = self._trees.get(manifest_id)
        if done is not None:
            return done
        manifest = load_vm_manifest(self.src, manifest_id)
        disks = [
            VmDisk(
                name=d.name,
                size=d.size,
                block_size=d.block_size,
                map_root=self.block_map(bytes.fromhex(d.map_root)).hex(),
                summary=d.summary,
                lineage=d.lineage,
            )
            for d in manifest.disks
        ]
        new_id = save_manifest(self.dst, VmManifest(vm=manifest.vm, disks=disks))
        self._trees[manifest_id] = new_id
        return new_id


class _SourceStream:
    """Source chunks as one stream, as the chunker reads it (`readinto`)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if not self._buf:
                more = next(self._chunks, None)
                if more is None:
                    break
                self._buf = memoryview(more)
            n = min(len(view) - filled, len(self._buf))
            view[filled : filled + n] = self._buf[:n]
            self._buf = self._buf[n:]
            filled += n
        return filled

    def read_all(self) -> bytes:
        rest = bytes(self._buf)
        return rest + b"".join(self._chunks)
