"""The mount's view without FUSE: names for hostile hosts and tags, time folders,
chunk-wise reads, a damaged tree, and the one-line refusals before mounting."""

from __future__ import annotations

import errno
import os
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from strongroom.errors import IntegrityError, UsageError
from strongroom.model import tree as tree_model
from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import Node
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services import mount as mount_service
from strongroom.services import mount_points
from strongroom.services.mount_points import ChunkCache, FilePointView, FileReader
from strongroom.services.mount_view import NAME_MAX, RepositoryView, folder_name, time_names
from tests.helpers.hostile import wire


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("web", b"web"),
        ("a/b", b"a%2Fb"),
        ("50%", b"50%25"),
        ("", b"%"),
        (".", b"%2E"),
        ("..", b"%2E%2E"),
        ("nul\0bell\a", b"nul%00bell%07"),
        ("ünï", "ünï".encode()),
    ],
)
def test_host_and_tag_names_become_one_safe_component(text: str, name: bytes) -> None:
    assert folder_name(text) == name


def test_a_long_name_is_cut_and_stays_distinct() -> None:
    a, b = folder_name("x" * 400 + "a"), folder_name("x" * 400 + "b")
    assert len(a) <= NAME_MAX and len(b) <= NAME_MAX and a != b


def _point(
    pid: str, when: datetime, host: str = "h", tags: list[str] | None = None
) -> RecoveryPoint:
    return RecoveryPoint("files", when, host, "u", ["/x"], "00" * 32, tags=tags or [], id=pid)


def test_equal_seconds_get_restic_suffixes() -> None:
    t = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
    points = [_point("a" * 64, t), _point("b" * 64, t.replace(microsecond=5)), _point("c" * 64, t)]
    names = time_names(points)
    base = t.astimezone().strftime("%Y-%m-%dT%H:%M:%S").encode()
    assert [names[p.id] for p in points] == [base, base + b"-1", base + b"-2"]


def test_layout_groups_by_host_and_tag(memory_repo: Repository) -> None:
    t = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
    points = [
        _point("a" * 64, t, "web", ["daily", "x/y"]),
        _point("b" * 64, t.replace(minute=1), "../etc", ["daily"]),
    ]
    view = RepositoryView(memory_repo, points, uid=1, gid=2, now_ns=0)
    assert view.readdir(b"/") == [b"ids", b"snapshots", b"hosts", b"tags"]
    assert sorted(view.readdir(b"/hosts")) == [b"..%2Fetc", b"web"]
    assert sorted(view.readdir(b"/tags")) == [b"daily", b"x%2Fy"]
    assert len(view.readdir(b"/tags/daily")) == 3
    latest = view.readlink(b"/tags/daily/latest")
    assert view.getattr(b"/tags/daily/" + latest) == view.getattr(b"/ids/" + b"b" * 64)
    assert view.getattr(b"/hosts").uid == 1
    with pytest.raises(FileNotFoundError):
        view.getattr(b"/hosts/nobody")
    with pytest.raises(NotADirectoryError):
        view.getattr(b"/snapshots/latest/x")


def test_new_points_appear_after_the_refresh_interval(memory_repo: Repository) -> None:
    """Listing a top folder lists the points again once `refresh_seconds` have passed:
    a new point appears under ids/, snapshots/ (latest moves) and its host; a point
    already shown keeps its entry; a forgotten one goes."""
    t = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
    first, second = _point("a" * 64, t, "web"), _point("b" * 64, t.replace(minute=5), "db")
    shown = [first]
    now = [100.0]
    view = RepositoryView(
        memory_repo, [first], uid=0, gid=0, now_ns=0,
        reload=lambda: list(shown), refresh_seconds=5, clock=lambda: now[0],
    )  # fmt: skip
    kept = view.root.children[b"ids"].children[first.id.encode()]  # type: ignore[union-attr]
    shown.append(second)
    assert view.readdir(b"/ids") == [first.id.encode()]  # within the interval: as it was
    now[0] += 5
    assert sorted(view.readdir(b"/ids")) == [first.id.encode(), second.id.encode()]
    assert view.getattr(b"/snapshots/latest") is not None
    latest = view.readlink(b"/snapshots/latest")
    assert view.getattr(b"/snapshots/" + latest) == view.getattr(b"/ids/" + second.id.encode())
    assert sorted(view.readdir(b"/hosts")) == [b"db", b"web"]
    assert view.root.children[b"ids"].children[first.id.encode()] is kept  # type: ignore[union-attr]
    shown.remove(first)
    now[0] += 5
    assert view.readdir(b"/ids") == [second.id.encode()]
    with pytest.raises(FileNotFoundError):
        view.getattr(b"/hosts/web")


def test_reads_touch_only_the_chunks_they_overlap(memory_repo: Repository) -> None:
    parts = [os.urandom(1000), bytes(4000), os.urandom(10), bytes(4000)]
    ids = [memory_repo.put_chunk(BlobType.DATA, p) for p in parts]
    memory_repo.flush()
    node = Node(
        b"f", "f", size=sum(map(len, parts)), chunks=ids, chunk_sizes=[len(p) for p in parts]
    )
    whole = b"".join(parts)
    cache = ChunkCache(memory_repo)
    reader = FileReader(node, cache)
    assert reader.read(990, 20) == whole[990:1010]
    assert cache.loads == 2
    assert reader.read(0, 1 << 20) == whole
    assert reader.read(5005, 10) == whole[5005:5015]
    assert reader.read(len(whole), 10) == b""
    assert cache.loads == 3  # the zero chunk (both places) loaded once, then known
    for offset in range(0, len(whole), 777):
        assert reader.read(offset, 1500) == whole[offset : offset + 1500]
    assert cache.loads == 3


class _SelfContaining:
    LOOP = b"\x01" * 32

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.blob = tree_model.encode_wires([wire(b"again", "d", st=self.LOOP, m=0o755)])

    def load_chunk(
        self, cid: bytes, blob_type: BlobType = BlobType.DATA, raw: int | None = None
    ) -> bytes:
        return self.blob if cid == self.LOOP else self.repo.load_chunk(cid, blob_type, raw)


def test_a_tree_containing_itself_is_damage_not_a_loop(memory_repo: Repository) -> None:
    fake = _SelfContaining(memory_repo)
    view = FilePointView(fake, "p", fake.LOOP, ChunkCache(memory_repo))  # type: ignore[arg-type]
    assert view.names([]) == [b"again"]
    with pytest.raises(IntegrityError, match="contains itself"):
        view.node([b"again"])


def test_refusals_before_mounting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        mount_service.check_mountpoint(str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    mount_service.check_mountpoint(str(tmp_path / "empty"))
    real = os.path.exists
    monkeypatch.setattr(mount_service.os.path, "exists", lambda p: p != "/dev/fuse" and real(p))
    with pytest.raises(mount_service.FuseUnavailable, match="/dev/fuse is missing"):
        mount_service._load_fuse()


def _stored_tree(repo: Repository, nodes: list[Node]) -> bytes:
    return repo.put_chunk(BlobType.TREE, tree_model.encode_tree(nodes))


def test_the_tree_cache_is_bounded_and_lookups_stay_right(
    memory_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mount_points, "TREE_CACHE_NODES", 2)
    leaves = {
        name: _stored_tree(memory_repo, [Node(b"f" + name, "f"), Node(b"g", "f")])
        for name in (b"a", b"b", b"c")
    }
    root = _stored_tree(memory_repo, [Node(n, "d", subtree=t) for n, t in leaves.items()])
    memory_repo.flush()
    view = FilePointView(memory_repo, "p", root, ChunkCache(memory_repo))
    for _ in range(2):
        for name in leaves:
            assert view.names([name]) == [b"f" + name, b"g"]
            assert view.node([name, b"f" + name]) is not None
    assert view._nodes <= 3 and len(view._trees) == 1


def test_reads_from_many_threads_agree(memory_repo: Repository) -> None:
    parts = [os.urandom(3000 + i) for i in range(40)]
    ids = [memory_repo.put_chunk(BlobType.DATA, p) for p in parts]
    memory_repo.flush()
    node = Node(
        b"f", "f", size=sum(map(len, parts)), chunks=ids, chunk_sizes=[len(p) for p in parts]
    )
    whole = b"".join(parts)
    reader = FileReader(node, ChunkCache(memory_repo, capacity=20_000))  # evicts all the time

    def check(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(200):
            offset, size = rng.randrange(len(whole)), rng.randrange(1, 20_000)
            assert reader.read(offset, size) == whole[offset : offset + size]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, range(8)))


def test_lookup_errors_carry_their_errno(memory_repo: Repository) -> None:
    sub = _stored_tree(memory_repo, [Node(b"file", "f")])
    root = _stored_tree(memory_repo, [Node(b"dir", "d", subtree=sub)])
    memory_repo.flush()
    view = FilePointView(memory_repo, "p", root, ChunkCache(memory_repo))
    for parts, kind, number in (
        ([b"dir", b"file", b"x"], NotADirectoryError, errno.ENOTDIR),
        ([b"dir", b"none"], FileNotFoundError, None),
    ):
        with pytest.raises(kind) as caught:
            view.node(parts)
        assert caught.value.errno == number
    with pytest.raises(IsADirectoryError) as opened:
        view.open([b"dir"])
    assert opened.value.errno == errno.EISDIR
    with pytest.raises(NotADirectoryError) as listed:
        view.names([b"dir", b"file"])
    assert listed.value.errno == errno.ENOTDIR
