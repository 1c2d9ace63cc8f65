"""Backups against seeds: classification file by file, lacks, statistics,
new data, incrementals, seed selection, and --trust-seed-metadata (proved
with inotify: the seed-identical files are never opened)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from strongroom.model.origin import FileClass, Origin, UsedSeed, decode_lacks
from strongroom.model.point import RecoveryPoint
from strongroom.model.seed import SeedKind
from strongroom.model.tree import FILE, Node, encode_tree
from strongroom.pipeline.seed_match import (
    SeedMatcher,
    choose_root,
    load_seed_files,
    with_origin,
)
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services.backup import BackupRequest, BackupResult, backup_files
from strongroom.services.restore import restore_files
from strongroom.services.seed_add import SeedRequest, add_seed
from strongroom.services.seeds import find_seed
from strongroom.services.walk import iter_tree
from tests.helpers.compare import rsync_differences
from tests.helpers.inotify import IN_ACCESS, IN_ISDIR, IN_OPEN, FileReads
from tests.helpers.seed_trees import SeededMachine, build

# Trees (one per directory: 14 here) and the lacks list, as stored: far less.
METADATA_ALLOWANCE = 64 * 1024

Classes = dict[str, tuple[str, tuple[str, ...], str]]


@pytest.fixture
def seeded(tmp_path: Path, local_repo: Repository) -> SeededMachine:
    m = build(tmp_path / "trees")
    add_seed(local_repo, SeedRequest("os", [str(m.os_seed)], SeedKind.OS, version="1.0"))
    add_seed(local_repo, SeedRequest("app", [str(m.app_seed)], SeedKind.APP))
    add_seed(local_repo, SeedRequest("other", [str(m.stranger_seed)], SeedKind.APP))
    return m


def _backup(repo: Repository, m: SeededMachine, **kwargs: Any) -> BackupResult:
    return backup_files(repo, BackupRequest(paths=[str(m.machine)], host="h", **kwargs))


def classification(repo: Repository, point: RecoveryPoint, base: Path) -> Classes:
    """Every entry below `base` in the stored point: (class, seed names, seed path)."""
    prefix = os.fsencode(base) + b"/"
    found: Classes = {}
    for path, node in iter_tree(repo, bytes.fromhex(point.tree)):
        if not path.startswith(prefix):
            continue
        rel = os.fsdecode(path[len(prefix) :])
        origin = node.origin
        if origin is None:
            found[rel] = ("own", (), "")
            continue
        assert point.seeds is not None
        names = tuple(s.name for s in point.seeds.origin_seeds(origin))
        found[rel] = (origin.cls.word, names, os.fsdecode(origin.seed_path))
    return found


def lacks_of(repo: Repository, point: RecoveryPoint) -> set[tuple[str, str]]:
    seeds = point.seeds
    assert seeds is not None
    if seeds.lacks is None:
        return set()
    pairs = decode_lacks(repo.load_chunk(bytes.fromhex(seeds.lacks), BlobType.TREE))
    return {(seeds.used[i].name, os.fsdecode(p)) for i, p in pairs}


def expected_counts(m: SeededMachine) -> dict[str, dict[str, int]]:
    counts = {
        w: {"files": 0, "bytes": 0, "other": 0} for w in ("identical", "modified", "moved", "own")
    }
    for rel, (word, _, _) in m.expected.items():
        st = (m.machine / rel).lstat()
        if os.path.isdir(m.machine / rel) and not (m.machine / rel).is_symlink():
            continue
        if (m.machine / rel).is_file() and not (m.machine / rel).is_symlink():
            counts[word]["files"] += 1
            counts[word]["bytes"] += st.st_size
        else:
            counts[word]["other"] += 1
    return counts


def test_every_entry_is_classified_as_the_machine_was_built(
    seeded: SeededMachine, local_repo: Repository, tmp_path: Path
) -> None:
    m = seeded
    result = _backup(local_repo, m)
    point = result.point
    assert point is not None and point.seeds is not None
    assert [u.name for u in point.seeds.used] == ["app", "os"]  # "other" does not fit
    assert result.seeds_skipped == ["other"]
    assert point.seeds.root == str(m.machine)  # the machine's root file system
    assert classification(local_repo, point, m.machine) == m.expected
    assert lacks_of(local_repo, point) == m.lacks
    assert point.seeds.lacks_count == len(m.lacks)
    assert point.seeds.classes == expected_counts(m)
    # Bytes per seed: identical and moved files whole, modified files by shared chunks.
    size = {rel: (m.machine / rel).lstat().st_size for rel in m.expected}
    app = sum(size[p] for p in ("opt/app/bin/app", "opt/app/share/data.bin", "etc/shared.conf"))
    assert point.seeds.seed_bytes["app"] == app
    os_whole = sum(
        size[p]
        for p in m.files_of("identical") | m.files_of("moved")
        if m.expected[p][1][0] == "os"
        and (m.machine / p).is_file()
        and not (m.machine / p).is_symlink()
    )
    # tool2 shares all but the chunk(s) around its 100 changed bytes.
    shared = point.seeds.seed_bytes["os"] - os_whole
    assert 3 * 1024 * 1024 <= shared < size["usr/bin/tool2"]
    # The point restores to exactly the machine.
    target = tmp_path / "restored"
    restore_files(local_repo, point, str(target))
    assert rsync_differences(m.machine, target / str(m.machine).lstrip("/")) == []


def test_a_seeded_backup_stores_only_own_and_modified_data(
    seeded: SeededMachine, local_repo: Repository
) -> None:
    m = seeded
    before = local_repo.stats.bytes_added_raw  # the seeds, added in this session
    summary = _backup(local_repo, m).summary
    added = summary.data_added - before
    budget = 1.1 * (m.own_bytes + m.modified_bytes) + METADATA_ALLOWANCE
    assert added <= budget, (added, budget)
    # The own data is stored (it is new); the seeds' 15 MB of it are not. (The
    # modified binary's changed chunk is up to cdc_max, 4 MiB, long: hence 2x.)
    assert m.own_bytes <= added and 2 * added < summary.total_bytes


def test_incrementals_with_a_parent_and_a_changed_seed_set(
    seeded: SeededMachine, local_repo: Repository
) -> None:
    m = seeded
    first = _backup(local_repo, m).point
    second = _backup(local_repo, m)
    assert second.parent == first.id and second.summary.bytes_read == 0
    assert second.point is not None
    assert classification(local_repo, second.point, m.machine) == m.expected
    assert lacks_of(local_repo, second.point) == m.lacks

    # Only the OS seed now: the application's files are the machine's own,
    # and entries passed through from the parent lose their app origin.
    third = _backup(local_repo, m, seeds=["os"])
    assert third.summary.bytes_read == 0 and third.point is not None
    assert third.point.seeds is not None
    assert [u.name for u in third.point.seeds.used] == ["os"]
    expected = {}
    for rel, (word, names, seed_path) in m.expected.items():
        kept = tuple(n for n in names if n == "os")
        if not kept:
            expected[rel] = ("own", (), "")
        elif word == "identical" and names[0] != "os" and rel == "etc/issue":
            expected[rel] = ("modified", kept, "")
        else:
            expected[rel] = (word, kept, seed_path)
    assert classification(local_repo, third.point, m.machine) == expected
    assert lacks_of(local_repo, third.point) == {p for p in m.lacks if p[0] == "os"}

    # --no-seeds: no origin anywhere, no seeds record.
    fourth = _backup(local_repo, m, no_seeds=True)
    assert fourth.point is not None and fourth.point.seeds is None
    assert set(classification(local_repo, fourth.point, m.machine).values()) == {("own", (), "")}


def test_pinned_seeds_are_used_even_when_they_do_not_fit(
    seeded: SeededMachine, local_repo: Repository
) -> None:
    m = seeded
    point = _backup(local_repo, m, seeds=["os", "other"]).point
    assert point is not None and point.seeds is not None
    assert [u.name for u in point.seeds.used] == ["os", "other"]
    assert {p for p in lacks_of(local_repo, point) if p[0] == "other"} == {
        ("other", f"opt/other/file{i}") for i in range(10)
    }


def test_an_excluded_seed_file_is_not_lacking(
    seeded: SeededMachine, local_repo: Repository
) -> None:
    m = seeded
    point = _backup(local_repo, m, excludes=["*.so.1"]).point
    assert point is not None
    assert lacks_of(local_repo, point) == m.lacks
    assert "usr/lib/libx.so.1" not in classification(local_repo, point, m.machine)


def test_seed_root_rules(seeded: SeededMachine, local_repo: Repository) -> None:
    m = seeded
    os_files = load_seed_files(local_repo, "os", find_seed(local_repo, "os").tree)
    # A part of a machine (/usr/share): a seed has it as a directory.
    assert choose_root([os_files], [b"/usr/share"]) == b"/"
    assert choose_root([os_files], [b"/"]) == b"/"
    assert choose_root([os_files], [os.fsencode(m.machine)]) == os.fsencode(m.machine)
    assert choose_root([os_files], [b"/a", b"/b"]) == b"/"
    # A user's folder is a part of this machine, not a machine's root: "/", so a
    # backup of /home/ann pinned to the OS seed does not lack the whole OS.
    home = m.machine.parent / "home-ann"
    (home / "Documents").mkdir(parents=True)
    assert choose_root([os_files], [os.fsencode(home)]) == b"/"
    # Backing up a subdirectory with --seed-root: same classes below it.
    result = backup_files(
        local_repo,
        BackupRequest(paths=[str(m.machine / "usr")], host="h", seed_root=str(m.machine)),
    )
    assert result.point is not None
    found = classification(local_repo, result.point, m.machine)
    assert found == {k: v for k, v in m.expected.items() if k.startswith("usr/")} | {
        "usr": m.expected["usr"]
    }
    assert lacks_of(local_repo, result.point) == {p for p in m.lacks if p[1].startswith("usr/")}


def _events(reads: FileReads, mask: int) -> set[str]:
    found = set()
    for wd, got, name in reads._events():
        if got & mask and not got & IN_ISDIR and name:
            found.add(str((reads.dirs[wd] / os.fsdecode(name)).relative_to(reads.root)))
    return found


def test_trusted_metadata_opens_none_of_the_seed_identical_files(
    seeded: SeededMachine, local_repo: Repository, tmp_path: Path
) -> None:
    m = seeded
    regular = {
        p for p in m.expected if (m.machine / p).is_file() and not (m.machine / p).is_symlink()
    }
    identical = m.files_of("identical") & regular
    with FileReads(m.machine) as watch:
        result = _backup(local_repo, m, trust_seed_metadata=True)
        touched = _events(watch, IN_OPEN | IN_ACCESS)
    assert identical and not touched & identical, touched & identical
    # tool1-alias is a hard link of tool1 (taken unread): not opened either.
    assert "usr/bin/tool1-alias" not in touched
    # Everything else with content was read (hl2 is a second name of hl1).
    unread_links = {"usr/bin/tool1-alias", "home/ann/hl2"}
    rest = {p for p in regular - identical - unread_links if (m.machine / p).stat().st_size}
    assert rest <= touched, rest - touched
    assert result.summary.files_from_seed == len(identical)
    assert result.summary.bytes_read == sum((m.machine / p).stat().st_size for p in rest)
    point = result.point
    assert point is not None
    assert classification(local_repo, point, m.machine) == m.expected
    target = tmp_path / "restored"
    restore_files(local_repo, point, str(target))
    assert rsync_differences(m.machine, target / str(m.machine).lstrip("/")) == []


def test_a_change_behind_a_restored_mtime_is_the_documented_exception(
    seeded: SeededMachine, local_repo: Repository, tmp_path: Path
) -> None:
    m = seeded
    victim = m.machine / "usr/share/doc/a.txt"
    st = victim.stat()
    original = victim.read_bytes()
    changed = original[:100] + b"X" * 10 + original[110:]
    victim.write_bytes(changed)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    rel = str(victim).lstrip("/")

    trusted = _backup(local_repo, m, trust_seed_metadata=True, force_full=True).point
    normal = _backup(local_repo, m, force_full=True).point
    assert trusted is not None and normal is not None
    restore_files(local_repo, trusted, str(tmp_path / "trusted"))
    restore_files(local_repo, normal, str(tmp_path / "normal"))
    assert (tmp_path / "trusted" / rel).read_bytes() == original  # the seed's content
    assert (tmp_path / "normal" / rel).read_bytes() == changed  # the real content
    assert classification(local_repo, normal, m.machine)["usr/share/doc/a.txt"][0] == "modified"


def test_with_origin_keeps_an_unchanged_map() -> None:
    wire = {"n": b"a", "t": FILE, "sd": ["i", [0]]}
    assert with_origin(wire, Origin(FileClass.IDENTICAL, (0,))) is wire
    assert with_origin(wire, None) == {"n": b"a", "t": FILE}
    assert "sd" in wire  # the parent's map itself is never changed
    assert with_origin(wire, Origin(FileClass.MODIFIED, (1,)))["sd"] == ["m", [1]]


def test_seed_index_memory_for_fifty_thousand_files(memory_repo: Repository) -> None:
    """The stated bound (pipeline/seed_match.py docstring): about 19 MB."""
    dirs = []
    for d in range(500):
        nodes = [
            Node(
                name=b"file-%05d.so" % f,
                type=FILE,
                mode=0o644,
                mtime_ns=1_700_000_000_000_000_000 + f,
                size=1000 + f,
                chunks=[os.urandom(32)],
                chunk_sizes=[1000 + f],
            )
            for f in range(100)
        ]
        tree = memory_repo.put_chunk(BlobType.TREE, encode_tree(nodes))
        dirs.append(Node(name=b"usr-lib-dir-%03d" % d, type="d", mode=0o755, subtree=tree))
    root = memory_repo.put_chunk(BlobType.TREE, encode_tree(dirs))
    memory_repo.flush()
    tracemalloc.start()
    files = load_seed_files(memory_repo, "big", root.hex())
    matcher = SeedMatcher([files], [UsedSeed("x" * 64, "big", "os")], b"/", [b"/"])
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(files.entries) == 50_500 and len(matcher.seeds[0].by_content) == 50_000
    assert current < 22 * 1024 * 1024, current
    print(f"seed index for 50,000 files: {current / 1e6:.1f} MB")
