"""pipeline/copy_tree.py: manifests translated between repositories with other
keys; work done once per run; VM manifests; seeded trees refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from strongroom.model.blockmap import BlockMap
from strongroom.model.origin import ORIGIN_KEY
from strongroom.model.tree import DIR, FILE, Node, decode_tree, encode_tree, encode_wires
from strongroom.model.vm import VmDisk, VmManifest
from strongroom.pipeline.blockmaps import (
    load_block_map,
    load_vm_manifest,
    save_block_map,
    save_vm_manifest,
)
from strongroom.pipeline.copy_tree import SeedBased, Translator
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.storage.memory import MemoryBackend
from strongroom.types import Progress
from tests.helpers.tree import random_bytes

BLOCK = 64 << 10


@pytest.fixture
def pair() -> Iterator[tuple[Repository, Repository]]:
    src = Repository.init(MemoryBackend(), b"source password")
    dst = Repository.init(MemoryBackend(), b"target password")
    yield src, dst
    src.close()
    dst.close()


def translator(src: Repository, dst: Repository) -> Translator:
    return Translator(src, dst, Progress(job="copy"), lambda _: None)


def _file(repo: Repository, name: bytes, data: bytes) -> Node:
    node = Node(name=name, type=FILE, size=len(data), mtime_ns=123)
    for start in range(0, len(data), 100_000):  # the source's own cut
        piece = data[start : start + 100_000]
        node.chunks.append(repo.put_chunk(BlobType.DATA, piece))
        node.chunk_sizes.append(len(piece))
    return node


def _read_file(repo: Repository, node: Node) -> bytes:
    return b"".join(
        repo.load_chunk(c, BlobType.DATA, s)
        for c, s in zip(node.chunks, node.chunk_sizes, strict=True)
    )


def test_file_tree_translated_once_per_run(pair: tuple[Repository, Repository]) -> None:
    src, dst = pair
    data = random_bytes(1_500_000, 1)
    inner = src.put_chunk(BlobType.TREE, encode_tree([_file(src, b"f", data)]))
    roots = [
        src.put_chunk(
            BlobType.TREE,
            encode_tree([Node(name=b"d", type=DIR, subtree=inner), _file(src, b"g", data)]),
        ),
        src.put_chunk(BlobType.TREE, encode_tree([_file(src, b"h", data)])),
    ]
    src.flush()
    work = translator(src, dst)
    try:
        targets = [work.file_tree(root) for root in roots]
        dst.flush()
    finally:
        work.close()
    assert work.counts.bytes_read == len(data)  # three files of one content: read once
    assert work.counts.files_reused == 2
    assert (work.progress.files_done, work.progress.bytes_done) == (3, 3 * len(data))
    added = dst.stats.chunks_added
    again = translator(src, dst)  # a new run: read again, nothing stored anew
    try:
        assert again.file_tree(roots[0]) == targets[0]
    finally:
        again.close()
    assert again.counts.bytes_read == len(data) and dst.stats.chunks_added == added
    (h,) = decode_tree(dst.load_chunk(targets[1], BlobType.TREE))
    d, g = decode_tree(dst.load_chunk(targets[0], BlobType.TREE))
    assert _read_file(dst, h) == data and g.chunks == h.chunks
    assert h.chunks != _file(src, b"h", data).chunks  # the target's own ids and cuts
    assert (h.mtime_ns, h.size) == (123, len(data))
    assert d.subtree is not None
    (f,) = decode_tree(dst.load_chunk(d.subtree, BlobType.TREE))
    assert _read_file(dst, f) == data


def test_vm_manifest_disks_translated(pair: tuple[Repository, Repository]) -> None:
    src, dst = pair
    disks = []
    contents = {}
    for name, seed in (("system", 2), ("data", 3)):
        raw = bytearray(random_bytes(5 * BLOCK, seed))
        raw[BLOCK : 2 * BLOCK] = bytes(BLOCK)  # a hole
        block_map = BlockMap.empty(len(raw), BLOCK)
        for block in (0, 2, 3, 4):
            block_map.assign(
                block, src.put_chunk(BlobType.DATA, bytes(raw[block * BLOCK :][:BLOCK]))
            )
        root = save_block_map(src, block_map)
        disks.append(VmDisk(name, len(raw), BLOCK, root.hex(), {"tracker": "full"}))
        contents[name] = bytes(raw)
    manifest = save_vm_manifest(src, VmManifest("guest", disks))
    src.flush()
    work = translator(src, dst)
    try:
        new = work.vm_manifest(manifest)
        dst.flush()
    finally:
        work.close()
    assert work.progress.bytes_done == sum(len(c) for c in contents.values())
    copied = load_vm_manifest(dst, new)
    assert copied.vm == "guest" and [d.name for d in copied.disks] == ["system", "data"]
    for disk in copied.disks:
        assert disk.summary == {"tracker": "full"}
        block_map = load_block_map(dst, bytes.fromhex(disk.map_root))
        assert block_map.get(1) is None  # the hole stays a hole
        raw = b"".join(
            bytes(BLOCK) if block_map.get(b) is None else dst.load_chunk(block_map.get(b) or b"")
            for b in range(block_map.blocks)
        )
        assert raw == contents[disk.name]


def test_a_seeded_tree_is_refused(pair: tuple[Repository, Repository]) -> None:
    src, dst = pair
    wire = Node(name=b"f", type=FILE).to_wire()
    wire[ORIGIN_KEY] = ["i", [0]]
    root = src.put_chunk(BlobType.TREE, encode_wires([wire]))
    src.flush()
    work = translator(src, dst)
    try:
        with pytest.raises(SeedBased):
            work.file_tree(root)
    finally:
        work.close()


def test_a_later_run_learns_an_earlier_copy_and_only_what_lines_up(
    pair: tuple[Repository, Repository],
) -> None:
    """A new run given (source parent, its copy) reads only what changed; a copy whose
    tree does not line up with the source (another name at one position) is not
    learnt, and the file is read instead: never a wrong mapping."""
    src, dst = pair
    old, new = random_bytes(600_000, 2), random_bytes(300_000, 3)
    unchanged = src.put_chunk(BlobType.TREE, encode_tree([_file(src, b"keep", old)]))
    parent = src.put_chunk(
        BlobType.TREE, encode_tree([Node(name=b"d", type=DIR, subtree=unchanged)])
    )
    src.flush()
    first = translator(src, dst)
    copy = first.file_tree(parent)
    dst.flush()
    first.close()

    child = src.put_chunk(
        BlobType.TREE,
        encode_tree([Node(name=b"d", type=DIR, subtree=unchanged), _file(src, b"more", new)]),
    )
    src.flush()
    later = translator(src, dst)
    later.learn("files", parent, copy)
    later.file_tree(child)
    dst.flush()
    later.close()
    assert later.counts.bytes_read == len(new)  # the unchanged folder was mapped whole
    assert (later.progress.files_done, later.progress.bytes_done) == (2, len(old) + len(new))

    # A "copy" whose entry has another name does not line up: nothing learnt.
    wrong = dst.put_chunk(BlobType.TREE, encode_tree([Node(name=b"other", type=DIR, subtree=None)]))
    dst.flush()
    fresh = translator(src, dst)
    fresh.learn("files", parent, wrong)
    fresh.file_tree(parent)
    fresh.close()
    assert fresh.counts.bytes_read == len(old)
