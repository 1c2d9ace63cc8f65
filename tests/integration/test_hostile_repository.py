"""Property: a repository written by a hostile key holder (a compromised client)
cannot make the real `strongroom` program write outside its targets, hang,
exceed a memory bound or end in an internal error.

Each example builds a repository through the repository's own write API
(`put_chunk`, `add_sealed`, `save_point`), so everything authenticates: one
honest files point, then hostile points whose documents (kind, tree id, time,
paths, tags, parent, summary), file trees (names, types, modes, sizes, chunk
lists, hard-link groups, symlinks to the outside, nesting), block maps
(geometry, segment counts and contents) and VM manifests (disk names, maps)
are drawn from what the format allows and what it forbids. Then every command
that reads points runs as a subprocess under a wall-clock timeout and an
address-space cap: `snapshots`, `ls`, `diff`, `restore`, `dump`, `export`,
`stats`, `check` (with and without `--read-data`), `repair points`, `forget`,
`backup` (a hostile point of its source is its parent) and `prune`.
Each must exit with a documented code (docs/cli.md), never an internal error
or a traceback, and a sentinel tree around the targets (their parent folder,
and an `outside` folder the hostile symlinks and names point at) must be
identical afterwards, bytes and metadata.

An honest point next to the hostile ones must stay restorable: a hostile
point may be reported and skipped, never block the rest (the commands on the
honest point must succeed, which also shows the normal program fits the cap).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.model.point import RecoveryPoint, now
from strongroom.repository.crypto import content_hash
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.storage.local import LocalBackend
from tests.helpers.cli import PASSWORD, run_cli
from tests.helpers.hostile import put_tree, wire

# More (and random) examples for a longer search: STRONGROOM_HOSTILE_EXAMPLES=200.
EXAMPLES = int(os.environ.get("STRONGROOM_HOSTILE_EXAMPLES", "3"))
DERANDOMIZE = "STRONGROOM_HOSTILE_EXAMPLES" not in os.environ
MEMORY_CAP = 1536 << 20  # bytes of address space per command
TIMEOUT = 90.0  # seconds per command; a normal one takes about one
EXIT_CODES = {0, 1, 2, 3, 10, 11, 12}  # docs/cli.md

Draw = Callable[[st.SearchStrategy[Any]], Any]


# --- what a hostile repository is made of ---------------------------------------


@dataclass
class World:
    """The sentinel tree: `work` holds the targets (and is the cwd), `outside`
    is what hostile names and symlinks aim at."""

    root: Path
    repo: Repository
    data_ids: list[bytes] = field(default_factory=list)  # stored data chunks
    tree_ids: list[bytes] = field(default_factory=list)  # stored tree chunks (any shape)
    map_ids: list[bytes] = field(default_factory=list)  # block map roots
    missing: bytes = bytes(range(32))  # stored nowhere

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    def any_id(self, draw: Draw) -> bytes:
        """An id of a chunk of any shape, or of none."""
        pool = [*self.data_ids, *self.tree_ids, *self.map_ids, self.missing]
        return draw(st.sampled_from(pool))


def build_world(root: Path) -> World:
    (root / "work").mkdir(parents=True)
    outside = root / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "victim").write_bytes(b"precious\n")
    (outside / "dir" / "file").write_bytes(b"also precious\n")
    os.symlink("../outside", root / "work" / "up")  # a link already next to the targets
    (root / "src").mkdir()  # what `backup` reads, with hostile points as its parent
    (root / "src" / "a").write_bytes(b"source\n")
    os.utime(root / "src" / "a", ns=(10**18, 10**18))
    repo = Repository.init(LocalBackend(root / "repo"), PASSWORD.encode())
    return World(root=root, repo=repo)


def _names(world: World) -> st.SearchStrategy[bytes]:
    absolute = os.fsencode(world.outside / "abs")
    return st.one_of(
        st.sampled_from([b"a", b"b", b"evl", b"victim", b"\x1b]0;pwned\x07", b"x\ny", b"\xff"]),
        st.sampled_from([b"..", b".", b"", b"../x", b"a/b", b"x\0y", b"../outside/victim"]),
        st.sampled_from([absolute, b"/etc/cron.d/strongroom-hostile", b"up", b"up/x"]),
    )


def _link_targets(world: World) -> st.SearchStrategy[Any]:
    return st.sampled_from(
        [os.fsencode(world.outside), os.fsencode(world.outside / "victim"), b"../outside",
         b"../../outside/victim", b"/", b"..", b"evl/x", b"up/victim", b"a\0b", b"", "text", 5]
    )  # fmt: skip


def _data_chunk(world: World, content: bytes, raw_length: int | None = None) -> bytes:
    """A data chunk; with `raw_length` the index records that length instead of the
    true one, and the id is forged (not the content's hash)."""
    repo = world.repo
    if raw_length is None:
        chunk_id = repo.put_chunk(BlobType.DATA, content)
    else:
        chunk_id = os.urandom(32)
        sealed = repo.seal_chunk(chunk_id, BlobType.DATA, content)
        repo.add_sealed(chunk_id, BlobType.DATA, sealed, raw_length)
    world.data_ids.append(chunk_id)
    return chunk_id


def _tree_chunk(world: World, doc: Any, *, forged_self: bool = False) -> bytes:
    """A tree chunk holding `doc`; with `forged_self` stored under an id that a
    node of its own names (a tree containing itself, possible only by forging)."""
    repo = world.repo
    if forged_self:
        chunk_id = os.urandom(32)
        nodes = [wire(b"loop", "d", st=chunk_id, m=0o755)]
        blob = msgpack.packb({"v": 1, "nodes": nodes}, use_bin_type=True)
        repo.add_sealed(
            chunk_id, BlobType.TREE, repo.seal_chunk(chunk_id, BlobType.TREE, blob), len(blob)
        )
    else:
        chunk_id = repo.put_chunk(BlobType.TREE, msgpack.packb(doc, use_bin_type=True))
    world.tree_ids.append(chunk_id)
    return chunk_id


# --- file trees ------------------------------------------------------------------

JUNK = st.sampled_from([None, -1, 2**64 - 1, -(2**63), "x", b"\0", 1.5, [1], {"k": 1}])


def _maybe(draw: Draw, honest: Any, junk: st.SearchStrategy[Any] = JUNK) -> Any:
    return draw(junk) if draw(st.integers(0, 9)) == 0 else honest


@st.composite
def file_node(draw: st.DrawFn, world: World, name: bytes) -> dict[str, Any]:
    chunks, sizes = [], []
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["data", "data", "data", "lying", "other", "missing", "short"]))
        content = draw(st.sampled_from([b"attacker\n", b"\0" * 5000, b"x" * 70000]))
        if how == "data":
            chunks.append(_data_chunk(world, content))
        elif how == "lying":  # the index records a size the chunk does not have
            chunks.append(_data_chunk(world, content, draw(st.sampled_from([0, 1, 2**40]))))
        elif how == "other":
            chunks.append(world.any_id(draw))
        elif how == "missing":
            chunks.append(os.urandom(32))
        else:
            chunks.append(os.urandom(7))  # not a whole id
        sizes.append(len(content) + draw(st.sampled_from([0, 0, 0, 1, -1, 2**40, -(2**40)])))
    size = sum(sizes) + draw(st.sampled_from([0, 0, 0, 1, -5, 2**62, 2**64 - 1]))
    size = max(-(2**63), min(size, 2**64 - 1))  # what msgpack can hold
    fields = {"sz": size, "c": b"".join(chunks), "cs": sizes}
    return wire(name, "f", **{k: _maybe(draw, v) for k, v in fields.items()})


@st.composite
def node(draw: st.DrawFn, world: World, depth: int) -> Any:
    name = draw(_names(world))
    kinds = ["f", "f", "l", "l", "p", "s", "c", "b", "z", 7] + (
        ["d", "d", "d"] if depth < 3 else []
    )
    kind = draw(st.sampled_from(kinds))
    if kind == "f":
        doc = draw(file_node(world, name))
    elif kind == "d":
        how = draw(st.sampled_from(["tree", "tree", "tree", "any", "forged-self", "absent"]))
        doc = wire(name, "d", m=0o755)
        if how == "tree":
            doc["st"] = _tree_chunk(world, draw(tree_doc(world, depth + 1)))
        elif how == "any":
            doc["st"] = world.any_id(draw)
        elif how == "forged-self":
            doc["st"] = _tree_chunk(world, None, forged_self=True)
    elif kind == "l":
        doc = wire(name, "l", lt=draw(_link_targets(world)), m=0o777)
    else:
        doc = wire(name, kind, rd=draw(st.sampled_from([0, 259, 2**64 - 1])))
    doc["m"] = draw(st.sampled_from([0o644, 0o4755, 0o6777, 0o1777, 0, 0o7777 + 1, -1]))
    doc["u"] = draw(st.sampled_from([0, 1234, 65534, 2**32, -1]))
    if draw(st.booleans()):  # a hard-link group across directories and types
        group = draw(st.integers(1, 2))
        doc.update({"ino": group, "dev": 1, "nl": draw(st.sampled_from([2, 3, 0, -1]))})
    if draw(st.integers(0, 4)) == 0:
        doc["x"] = draw(st.sampled_from([{b"user.a": b"v"}, {b"": b"v"}, {b"a\0": b""}, 5]))
    if draw(st.integers(0, 6)) == 0:
        doc[draw(st.sampled_from(["mt", "at", "n", "t", "zz"]))] = draw(JUNK)
    if draw(st.integers(0, 19)) == 0:
        return draw(JUNK)  # not a map at all
    return doc


@st.composite
def tree_doc(draw: st.DrawFn, world: World, depth: int = 0) -> Any:
    nodes = draw(st.lists(node(world, depth), max_size=4))
    order = draw(st.sampled_from(["sorted", "sorted", "as-drawn", "duplicated"]))
    if order == "sorted":
        nodes.sort(
            key=lambda n: (
                n.get("n", b"") if isinstance(n, dict) and isinstance(n.get("n"), bytes) else b""
            )
        )
    elif order == "duplicated" and nodes:
        nodes.append(nodes[0])
    doc: Any = {"v": 1, "nodes": nodes}
    shape = draw(st.integers(0, 19))
    if shape == 0:
        doc = {"v": draw(st.sampled_from([2, 0, "1", None])), "nodes": nodes}
    elif shape == 1:
        doc = draw(st.sampled_from([nodes, {"v": 1}, {"v": 1, "nodes": {"a": 1}}, b"x", 5]))
    return doc


def build_tree(draw: Draw, world: World) -> bytes:
    return _tree_chunk(world, draw(tree_doc(world)))


# --- block maps and VM manifests -------------------------------------------------


def build_block_map(draw: Draw, world: World) -> bytes:
    """A block map root: honest geometry with lying segments, or lying geometry."""
    block_size = draw(st.sampled_from([4096, 4096, 65536, 3000, 0, 2**27]))
    size = draw(st.sampled_from([0, 1, 3 * 4096 + 5, 9 * 4096, 2**40, 2**56, -1, 2**64 - 1]))
    seg_blocks = draw(st.sampled_from([2, 4, 4096, 0, 2**24, 2**25]))
    try:
        blocks = -(-size // block_size)
        count = -(-blocks // seg_blocks)
    except ZeroDivisionError:
        count = 1
    count = max(0, min(count, 1 << 20)) + draw(st.sampled_from([0, 0, 0, 1, -1]))
    segments: list[Any] = []
    for i in range(max(0, count)):
        if i >= 3 or draw(st.integers(0, 2)) == 0:
            segments.append(None)
            continue
        how = draw(st.sampled_from(["entries", "entries", "short", "any", "junk"]))
        if how == "entries":
            length = draw(st.sampled_from([min(seg_blocks, 4), seg_blocks, 1]))
            entries = []
            for _ in range(max(0, min(length, 64))):
                entry = draw(st.sampled_from(["hole", "data", "data", "tree", "missing"]))
                if entry == "hole":
                    entries.append(bytes(32))
                elif entry == "data":
                    content = draw(
                        st.sampled_from([b"\0" * 4096, b"z" * 4096, b"short", b"q" * 70000])
                    )
                    entries.append(_data_chunk(world, content))
                elif entry == "tree":
                    entries.append(world.any_id(draw))
                else:
                    entries.append(os.urandom(32))
            segments.append(_tree_chunk_raw(world, b"".join(entries)))
        elif how == "short":
            segments.append(_tree_chunk_raw(world, os.urandom(33)))
        elif how == "any":
            segments.append(world.any_id(draw))
        else:
            segments.append(draw(st.sampled_from([b"x", 5, "ab" * 32, [None]])))
    root: Any = {"v": 1, "size": size, "block_size": block_size, "segment_blocks": seg_blocks,
                 "segments": segments}  # fmt: skip
    if draw(st.integers(0, 9)) == 0:
        root[draw(st.sampled_from(["v", "size", "block_size", "segments"]))] = draw(JUNK)
    blob = msgpack.packb(root, use_bin_type=True)
    map_id = world.repo.put_chunk(BlobType.TREE, blob)
    world.map_ids.append(map_id)
    return map_id


def _tree_chunk_raw(world: World, blob: bytes) -> bytes:
    chunk_id = world.repo.put_chunk(BlobType.TREE, blob)
    world.tree_ids.append(chunk_id)
    return chunk_id


def build_vm_manifest(draw: Draw, world: World) -> bytes:
    disk_names = st.sampled_from(
        ["vda", "vdb", "..", ".", "", "../x", "a/b", "/etc/cron.d/x", "\x1b[2J", "a\0b", "vda"]
    )
    disks = []
    for _ in range(draw(st.integers(0, 3))):
        map_id = build_block_map(draw, world) if draw(st.booleans()) else world.any_id(draw)
        disks.append(
            {
                "name": draw(disk_names),
                "size": _maybe(draw, draw(st.sampled_from([4096, 2**40]))),
                "block_size": _maybe(draw, 4096),
                "map": draw(st.sampled_from([map_id, map_id, map_id[:5], "ab" * 32])),
                "summary": _maybe(draw, {}),
            }
        )
    doc: Any = {"version": _maybe(draw, 1), "vm": _maybe(draw, "vm1"), "disks": disks}
    if draw(st.integers(0, 9)) == 0:
        doc = draw(JUNK)
    return _tree_chunk(world, doc)


# --- point documents -------------------------------------------------------------

TIMES = st.sampled_from(
    ["2030-01-01T00:00:00+00:00", "2020-05-05T05:05:05", "0001-01-01T00:00:00+14:00",
     "9999-12-31T23:59:59-14:00", "yesterday", 12345, None, float("inf")]
)  # fmt: skip


def hostile_point(draw: Draw, world: World, honest_id: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["files", "files", "block", "block", "vm", "vm", "weird", 7]))
    shape = draw(st.sampled_from(["own", "own", "own", "tree", "map", "vm", "any"]))
    if shape == "own":
        shape = {"files": "tree", "block": "map", "vm": "vm"}.get(str(kind), "tree")
    if shape == "tree":
        root = build_tree(draw, world)
    elif shape == "map":
        root = build_block_map(draw, world)
    elif shape == "vm":
        root = build_vm_manifest(draw, world)
    else:
        root = world.any_id(draw)
    doc: dict[str, Any] = {
        "version": 1,
        "kind": kind,
        "time": now().isoformat(),
        "host": "host",
        "user": "user",
        # A files point of the source `backup` reads is its parent candidate.
        "paths": [draw(st.sampled_from(["/hostile", str(world.root / "src")]))]
        if kind != "vm"
        else ["vm:vm1"],
        "tree": root.hex(),
        "parent": None,
        "tags": [],
        "consistency": "crash-consistent",
        "program": "hostile",
        "summary": {},
    }
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(["version", "time", "paths", "tags", "host", "parent", "tree",
                                    "summary", "kind", "user"]))  # fmt: skip
        choices: dict[str, st.SearchStrategy[Any]] = {
            "version": st.sampled_from([0, 2, 2**70, "1", float("inf"), None]),
            "time": TIMES,
            "paths": st.sampled_from(["/x", [[1, {"a": 2}], None], [], ["\x1b]0;t\x07"], None]),
            "tags": st.sampled_from([{"a": 1}, "abc", ["\x1b[2J", "t\n"], [None, 5]]),
            "host": st.sampled_from([{"x": [1]}, "\x1b]0;pwn\x07\nfake", "", 5]),
            "parent": st.sampled_from([{"a": 1}, 12, "cd" * 32, "../x", honest_id]),
            "tree": st.sampled_from(["../../etc", "", 5, None, "AB" * 32]),
            "summary": st.sampled_from([
                {"total_bytes": "abc", "size": [1], "bytes_changed": 1e308, "disks": 3},
                {"size": 2**80, "protect": [], "backing_chain": 5, "tracker": {"a": 1}},
                [1, 2], "abc"]),
            "kind": st.sampled_from(["", None, "files\0"]),
            "user": st.sampled_from([["a"], "\x1b[31mroot"]),
        }  # fmt: skip
        doc[key] = draw(choices[key])
    return doc


def save(repo: Repository, doc: dict[str, Any]) -> str:
    repo.flush()
    return repo.save_point(doc)


# --- running the program ---------------------------------------------------------


@dataclass
class Run:
    args: list[str]
    rc: int
    out: bytes
    err: str

    def __str__(self) -> str:
        return f"strongroom {' '.join(self.args)} -> {self.rc}\n{self.err[-2000:]}"


def run(world: World, *args: str) -> Run:
    env = dict(os.environ)
    env["STRONGROOM_REPO"] = str(world.root / "repo")
    try:
        proc = run_cli(
            list(args), env, binary=True, timeout=TIMEOUT, cwd=world.work, address_space=MEMORY_CAP
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"strongroom {' '.join(args)} hung (over {TIMEOUT} s)") from None
    result = Run(list(args), proc.rc, proc.out, proc.err)
    assert result.rc in EXIT_CODES, str(result)
    assert "internal error" not in result.err, str(result)
    assert "Traceback" not in result.err, str(result)
    assert "MemoryError" not in result.err, str(result)
    return result


Snapshot = dict[str, tuple[Any, ...]]


def snapshot(world: World, targets: set[str]) -> Snapshot:
    """Type, mode, owner, times, link count, content or link target and xattrs of
    every entry of the sentinel tree, but the targets (by name in `work`) and the
    repository. `work`'s own times and listing leave the targets out."""
    found: Snapshot = {}
    skip = {world.root / "repo", *(world.work / t for t in targets)}

    def record(path: Path) -> None:
        st_ = os.lstat(path)
        detail: Any = None
        if stat.S_ISREG(st_.st_mode):
            detail = path.read_bytes()
        elif stat.S_ISLNK(st_.st_mode):
            detail = os.readlink(path)
        elif stat.S_ISDIR(st_.st_mode):
            detail = sorted(n for n in os.listdir(path) if path / n not in skip)
        loose = path == world.work  # creating a target changes its times
        found[str(path.relative_to(world.root))] = (
            stat.S_IFMT(st_.st_mode),
            stat.S_IMODE(st_.st_mode),
            st_.st_uid,
            st_.st_gid,
            None if loose else st_.st_mtime_ns,
            None if loose else st_.st_ctime_ns,
            st_.st_nlink if not stat.S_ISDIR(st_.st_mode) else None,
            detail,
            tuple(sorted(os.listxattr(path, follow_symlinks=False))),
        )
        if stat.S_ISDIR(st_.st_mode):
            for child in sorted(path.iterdir()):
                if child not in skip:
                    record(child)

    record(world.root)
    return found


def honest_point(world: World) -> str:
    content = _data_chunk(world, b"honest content\n")
    root = put_tree(world.repo, [wire(b"a", "f", sz=15, c=content, cs=[15])])
    point = RecoveryPoint("files", now(), "host", "user", ["/honest"], root.hex())
    return save(world.repo, point.to_doc())


# --- the property ----------------------------------------------------------------


@settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE)
@given(st.data())
def test_hostile_repository_cannot_hurt_the_host(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        world = build_world(Path(tmp) / "world")
        try:
            honest = honest_point(world)
            hostile = [
                save(world.repo, hostile_point(data.draw, world, honest))
                for _ in range(data.draw(st.integers(1, 3), label="hostile points"))
            ]
        finally:
            world.repo.close()
        check_commands(world, honest, data.draw(st.sampled_from(hostile), label="under test"))
        shutil.rmtree(tmp, ignore_errors=True)


# Each of these once ended commands in an internal error (a traceback-less crash
# that also kept `check`, `prune` and `forget --keep-*` from running at all).
KNOWN_DOCUMENTS = [
    {"time": "2020-05-05T05:05:05"},  # no UTC offset: cannot be sorted with the rest
    {"time": "9999-12-31T23:59:59-14:00"},  # forget's buckets overflowed
    {"version": float("inf")},  # int(inf)
    {"summary": {"total_bytes": "abc", "size": [1], "bytes_changed": 1e308, "disks": 3}},
    {"kind": "weird"},
    {"parent": {"a": 1}, "paths": [[1, {"a": 2}], None], "tags": {"a": 1}},
]
KNOWN_LOCKS = [
    {"time": 1e300},  # beyond localtime(): even `unlock --remove-all` failed
    {"time": float("nan")},
    {"pid": 2**70, "host": socket.gethostname()},  # beyond kill()
]


def test_known_hostile_objects_cannot_hurt_the_host(tmp_path: Path) -> None:
    """The classes found by the property, each present at once (deterministic)."""
    world = build_world(tmp_path / "world")
    repo = world.repo
    try:
        honest = honest_point(world)
        hostile = []
        good_root = put_tree(repo, [])
        for fields in KNOWN_DOCUMENTS:
            doc = RecoveryPoint("files", now(), "h", "u", ["/x"], good_root.hex()).to_doc()
            hostile.append(save(repo, {**doc, **fields}))
        # A point too deeply nested to decode, sealed as save_point seals.
        sealed = repo.sealer.seal(b"[" * 100_000, b"point")
        repo.backend.put(f"points/{content_hash(sealed).hex()}", sealed)
        # A block map of holes whose ids would need 512 TiB of memory.
        holes = {"v": 1, "size": 2**56, "block_size": 4096, "segment_blocks": 2**24,
                 "segments": [None] * 2**20}  # fmt: skip
        root = repo.put_chunk(BlobType.TREE, msgpack.packb(holes, use_bin_type=True))
        doc = RecoveryPoint("block", now(), "h", "u", ["/img"], root.hex()).to_doc()
        hostile.append(save(repo, doc))
        for fields in KNOWN_LOCKS:
            lock = {"exclusive": True, "host": "elsewhere", "pid": 1, "user": "u",
                    "time": time.time(), **fields}  # fmt: skip
            name = f"locks/{secrets.token_hex(32)}"
            repo.backend.put(name, repo.sealer.seal(json.dumps(lock).encode(), b"lock"))
    finally:
        repo.close()
    for h in hostile[3:5]:  # junk counts, an unknown kind: listed, walked, restored
        run(world, "ls", "-l", h[:16])
        run(world, "restore", h[:16], "--target", str(world.work / "r-hostile"))
    check_commands(world, honest, hostile[-1])  # the map, and every point for the rest


def check_commands(world: World, honest: str, h: str) -> None:
    h = h[:16]
    out = world.outside
    targets = {"r-hostile", "r-latest", "r-honest", "x.vhd"}
    before = snapshot(world, targets)
    run(world, "snapshots")
    run(world, "snapshots", "--json")
    run(world, "ls", "-l", "--recursive", h)
    run(world, "diff", honest[:16], h)
    run(world, "restore", h, "--target", str(world.work / "r-hostile"))
    run(world, "restore", "latest", "--target", str(world.work / "r-latest"))
    run(world, "dump", h, "/a")
    run(world, "export", h, str(world.work / "x.vhd"))
    run(world, "stats")
    run(world, "check")
    run(world, "check", "--read-data")
    run(world, "repair", "points", h)
    run(world, "forget", "--keep-last", "1", "--keep-daily", "1", "--dry-run")
    run(world, "forget", h)
    run(world, "backup", str(world.root / "src"))
    run(world, "prune")
    # The honest point survived all of it, whole.
    restored = run(world, "restore", honest[:16], "--target", str(world.work / "r-honest"))
    assert restored.rc == 0, str(restored)
    assert (world.work / "r-honest" / "a").read_bytes() == b"honest content\n"
    assert snapshot(world, targets) == before
    assert (out / "victim").read_bytes() == b"precious\n"
    assert not Path("/etc/cron.d/strongroom-hostile").exists()
