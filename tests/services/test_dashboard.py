"""services/dashboard.py: the cached, incremental point list (a new point
is seen after the cache's time and its files are readable: a fresh handle
reads the new index), sources and health, the path checks, and archives
that are planned before their first byte."""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.catalog import Catalog
from strongroom.errors import PathNotFound, PointNotFound, UsageError
from strongroom.model.point import RecoveryPoint
from strongroom.repository.repo import Repository
from strongroom.services import points as points_module
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.dashboard import (
    FAILING_AFTER,
    STALE_AFTER,
    RepositoryView,
    Source,
    cadence,
    checked_path,
    health_of,
    thresholds,
)
from tests.catalog.conftest import catalog, catalog_url, pg_cluster  # noqa: F401 (fixtures)
from tests.conftest import init_local_repository, open_local_repository
from tests.helpers.cli import PASSWORD


def _backup(repo_path: Path, tree: Path, host: str = "h1") -> str:
    repo = open_local_repository(repo_path)
    try:
        result = backup_files(repo, BackupRequest(paths=[str(tree)], host=host))
        assert result.point is not None
        return result.point.id
    finally:
        repo.close()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_new_points_appear_after_the_cache_time_and_their_files_read(tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    init_local_repository(repo_path)
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "one.txt").write_bytes(b"one")
    first = _backup(repo_path, tree)
    clock = Clock()
    view = RepositoryView(str(repo_path), PASSWORD.encode(), ttl=2.0, clock=clock)
    assert [p.id for p in view.points()] == [first]
    assert [e.name for e in view.folder(first, str(tree)).entries] == ["one.txt"]

    (tree / "two.bin").write_bytes(os.urandom(50_000))  # a new pack the index must know
    second = _backup(repo_path, tree)
    assert [p.id for p in view.points()] == [first]  # cached
    clock.now = 2.5
    assert [p.id for p in view.points()] == [first, second]
    data = b"".join(view.archive(second, [f"{tree}/two.bin"], "tar"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmembers()[0]
        assert tar.extractfile(member).read() == (tree / "two.bin").read_bytes()  # type: ignore[union-attr]

    repo = open_local_repository(repo_path)
    repo.delete_point(first)
    repo.close()
    clock.now = 5.0
    assert [p.id for p in view.points()] == [second]
    with pytest.raises(PointNotFound):
        view.point(first)
    with pytest.raises(PointNotFound):
        view.point("../" + "0" * 61)
    source = view.sources()[0]
    assert source.host == "h1" and source.paths == (str(tree),) and source.last.id == second
    assert source.health(datetime.now(UTC)) == "ok"


def test_archives_are_planned_before_their_first_byte(tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    init_local_repository(repo_path)
    tree = tmp_path / "src"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(b"x")
    os.symlink("d/f", tree / "link")
    point = _backup(repo_path, tree)
    view = RepositoryView(str(repo_path), PASSWORD.encode())
    with pytest.raises(PathNotFound):
        view.archive(point, [f"{tree}/d/f", f"{tree}/missing"], "tar")
    with pytest.raises(UsageError):
        view.archive(point, ["/"], "tar")
    with pytest.raises(UsageError):
        view.archive(point, [], "tar")
    with pytest.raises(UsageError):
        view.archive(point, [f"{tree}/d/f"], "rar")
    with pytest.raises(UsageError):
        view.archive(point, [f"{tree}/d/f"] * 1001, "zip")
    data = b"".join(view.archive(point, [str(tree)], "tar"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        base = str(tree).lstrip("/")
        link = tar.getmember(f"{base}/link")
        assert link.issym() and link.linkname == "d/f"
        assert tar.getmember(f"{base}/d").isdir()
        assert tar.extractfile(f"{base}/d/f").read() == b"x"  # type: ignore[union-attr]


def test_health_by_the_age_of_the_last_point() -> None:
    assert health_of(timedelta(0)) == "ok"
    assert health_of(STALE_AFTER) == "ok"
    assert health_of(STALE_AFTER + timedelta(seconds=1)) == "stale"
    assert health_of(FAILING_AFTER) == "stale"
    assert health_of(FAILING_AFTER + timedelta(seconds=1)) == "failing"


def test_health_follows_the_sources_own_cadence() -> None:
    """A source protected every 5 minutes is stale after two missed runs (here the
    15-minute floor: 20 minutes), failing after an hour more; a weekly one is fine
    after two days; with fewer than three points the daily defaults apply."""
    start = datetime(2026, 12, 1, tzinfo=UTC)

    def source(step: timedelta, count: int) -> Source:
        points = tuple(
            RecoveryPoint("files", start + i * step, "h", "u", ["/x"], "00" * 32, id=f"{i:064x}")
            for i in range(count)
        )
        return Source("h", ("/x",), "files", points)

    often, weekly, young = (
        source(timedelta(minutes=5), 10),
        source(timedelta(days=7), 4),
        source(timedelta(minutes=5), 2),
    )
    assert cadence(often.points) == timedelta(minutes=5) and cadence(young.points) is None
    last = often.last.time
    assert often.health(last + timedelta(minutes=20)) == "ok"
    assert often.health(last + timedelta(minutes=21)) == "stale"
    assert often.health(last + timedelta(minutes=66)) == "failing"
    assert weekly.health(weekly.last.time + timedelta(days=2)) == "ok"
    assert weekly.health(weekly.last.time + timedelta(days=15)) == "stale"
    assert young.health(young.last.time + timedelta(hours=25)) == "ok"  # the daily defaults
    assert thresholds(None) == (STALE_AFTER, FAILING_AFTER)


@given(st.text(max_size=300))
def test_checked_paths_are_absolute_and_clean_or_refused(text: str) -> None:
    try:
        path = checked_path(text)
    except UsageError:
        return
    parts = path.split("/")
    assert path.startswith("/") and "\0" not in path and len(path) <= 4096
    assert ".." not in parts and "." not in parts and "" not in parts[1:-1]
    assert path == "/" or not path.endswith("/")


def test_the_catalog_remembers_points_across_starts(tmp_path: Path, catalog: Catalog) -> None:  # noqa: F811
    """A second server start reads no point object the first one read: the
    documents come from the catalog; a forgotten point leaves it; a row that
    does not decode is read again from the repository."""
    repo_path = tmp_path / "repo"
    init_local_repository(repo_path)
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "a").write_bytes(b"a")
    first = _backup(repo_path, tree)
    (tree / "b").write_bytes(b"b")
    second = _backup(repo_path, tree, host="h2")
    view = RepositoryView(str(repo_path), PASSWORD.encode(), memo=catalog)
    before = view.points()
    repo_id = view.repository().config.id
    assert set(catalog.recall_points(repo_id, [first, second])) == {first, second}

    reads: list[str] = []
    real = points_module.load_point

    def counting(repo: Repository, pid: str) -> RecoveryPoint:
        reads.append(pid)
        return real(repo, pid)

    again = RepositoryView(str(repo_path), PASSWORD.encode(), memo=catalog)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("strongroom.services.dashboard.load_point", counting)
        after = again.points()
        assert reads == []
        assert [p.to_doc() | {"id": p.id} for p in after] == [
            p.to_doc() | {"id": p.id} for p in before
        ]
        # a kept row that does not decode is ignored and read again
        catalog.forget_point_memos(repo_id, [second])
        catalog.remember_points(repo_id, {second: {"kind": "files"}})
        third = RepositoryView(str(repo_path), PASSWORD.encode(), memo=catalog)
        assert [p.id for p in third.points()] == [first, second]
        assert reads == [second]

    repo = open_local_repository(repo_path)
    repo.delete_point(first)
    repo.close()
    third._checked = None  # the next call lists again
    assert [p.id for p in third.points()] == [second]
    assert set(catalog.recall_points(repo_id, [first, second])) == {second}


def test_background_refresh_answers_at_once_and_noted_points_list_at_once(
    tmp_path: Path,
) -> None:
    """In background mode a stale list is answered at once while one refresh
    runs behind it; a point the server commits (`note`) is listed at once and
    its files read (the handle's index knows its packs); a refresh whose
    listing began before the note keeps it."""
    repo_path = tmp_path / "repo"
    init_local_repository(repo_path)
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "a").write_bytes(b"a")
    first = _backup(repo_path, tree)
    clock = Clock()
    view = RepositoryView(str(repo_path), PASSWORD.encode(), clock=clock, background=True)
    assert [p.id for p in view.points()] == [first]  # the first list is waited for

    (tree / "b").write_bytes(os.urandom(20_000))
    second = _backup(repo_path, tree)
    clock.now = 2.5
    assert [p.id for p in view.points()] == [first]  # stale, at once; a refresh started
    deadline = time.monotonic() + 30
    while [p.id for p in view.points()] != [first, second]:
        assert time.monotonic() < deadline, "the refresh behind never ended"
        time.sleep(0.01)

    (tree / "c").write_bytes(os.urandom(20_000))
    repo = open_local_repository(repo_path)
    try:
        made = backup_files(repo, BackupRequest(paths=[str(tree)], host="h1")).point
    finally:
        repo.close()
    assert made is not None
    view._refresh_lock.acquire()  # a refresh "in flight" whose listing began earlier
    view.note(made)
    assert [p.id for p in view.points()] == [first, second, made.id]  # no refresh needed
    view._refresh_lock.release()
    names = [e.name for e in view.folder(made.id, str(tree)).entries]
    assert names == ["a", "b", "c"]
    ghost = dataclasses.replace(made, id="f" * 64)  # committed, not listed yet
    clock.now = 5.0
    view.note(ghost)
    view._refresh(4.0)  # a listing that began before the note: the note stays
    assert ghost.id in [p.id for p in view.points()]
    view._refresh(6.0)  # the first listing after it decides: it is not there
    assert [p.id for p in view.points()] == [first, second, made.id]
