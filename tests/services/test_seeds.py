"""Seeds as repository objects: unique names, found by name, kept by prune,
read by check, and a damaged seed object reported and skipped (strict prune
refuses: it cannot know what the seed holds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.errors import IntegrityError, UsageError
from strongroom.model.seed import SeedKind
from strongroom.repository import format as fmt
from strongroom.repository.repo import Repository
from strongroom.services import maintenance
from strongroom.services.seed_add import SeedRequest, add_seed, detect_source
from strongroom.services.seeds import (
    SeedExists,
    SeedNotFound,
    find_seed,
    list_seeds,
    remove_seed,
    show_seed,
)
from strongroom.services.walk import iter_tree


def make_tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "motd").write_text("welcome\n")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_bytes(os.urandom(600_000))
    os.symlink("tool", root / "usr" / "bin" / "alias")
    return root


def test_a_directory_seed_is_rooted_at_the_directory(
    local_repo: Repository, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "golden")
    seed = add_seed(local_repo, SeedRequest("golden", [str(src)], SeedKind.OS, "1"))
    paths = {p for p, _ in iter_tree(local_repo, bytes.fromhex(seed.tree))}
    assert paths == {
        b"/etc",
        b"/etc/motd",
        b"/usr",
        b"/usr/bin",
        b"/usr/bin/tool",
        b"/usr/bin/alias",
    }
    assert seed.summary["files"] == 2 and seed.summary["bytes"] == 600_008
    assert find_seed(local_repo, "golden").id == seed.id
    assert find_seed(local_repo, seed.id[:8]).name == "golden"
    assert show_seed(local_repo, "golden").chunks >= 3
    with pytest.raises(SeedExists):
        add_seed(local_repo, SeedRequest("golden", [str(src)]))
    with pytest.raises(SeedNotFound, match="golden"):
        find_seed(local_repo, "other")


def test_detect_source_reads_magic_not_names(tmp_path: Path) -> None:
    fake = tmp_path / "x.tar"
    fake.write_bytes(b"\0" * 1024)
    assert detect_source(str(fake)) == "image"
    assert detect_source(str(tmp_path)) == "tree"
    with pytest.raises(Exception, match="No such file"):
        detect_source(str(tmp_path / "missing"))


def test_prune_keeps_what_only_a_seed_holds(local_repo: Repository, tmp_path: Path) -> None:
    seed = add_seed(local_repo, SeedRequest("golden", [str(make_tree(tmp_path / "g"))]))
    maintenance.prune(local_repo)
    assert maintenance.check(local_repo, read_data=True).report.ok
    assert sum(1 for _ in iter_tree(local_repo, bytes.fromhex(seed.tree))) == 6
    removal = remove_seed(local_repo, "golden")
    assert removal.freed_chunks >= 3 and not removal.users
    plan = maintenance.prune(local_repo)
    assert plan.as_dict()["packs_delete"] >= 1
    assert list_seeds(local_repo) == []
    assert maintenance.check(local_repo, read_data=True).report.ok


def test_check_reads_a_seeds_trees(local_repo: Repository, tmp_path: Path) -> None:
    seed = add_seed(local_repo, SeedRequest("golden", [str(make_tree(tmp_path / "g"))]))
    result = maintenance.check(local_repo)
    assert result.report.ok and result.report.trees_read >= 3
    # The seed's data packs gone: check names the missing chunks.
    data = [o.name for o in local_repo.backend.list(fmt.DATA_PREFIX)]
    for name in data:
        local_repo.backend.delete(name)
    again = maintenance.check(local_repo)
    assert not again.report.ok
    assert any(e.startswith("seed golden") for e in again.report.errors), again.report.errors
    assert seed.id


def test_a_damaged_seed_is_reported_and_skipped_and_prune_refuses(
    local_repo: Repository, tmp_path: Path
) -> None:
    seed = add_seed(local_repo, SeedRequest("golden", [str(make_tree(tmp_path / "g"))]))
    path = Path(local_repo.backend.location) / fmt.seed_name(seed.id)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 1
    path.write_bytes(bytes(blob))
    seen: list[str] = []
    local_repo.damage.listen(seen.append)
    assert list_seeds(local_repo) == []
    assert seen and seed.id[:16] in seen[0]
    with pytest.raises(IntegrityError, match="seed remove"):
        maintenance.prune(local_repo)
    assert not maintenance.check(local_repo).report.ok
    with pytest.raises(SeedNotFound):
        remove_seed(local_repo, seed.id[:12])  # unread: only with --force
    removal = remove_seed(local_repo, seed.id[:12], force=True)
    assert removal.seed is None and removal.removed_id == seed.id
    maintenance.prune(local_repo)


def test_foreign_objects_under_seeds_are_reported(local_repo: Repository) -> None:
    local_repo.backend.put(fmt.SEEDS_PREFIX + "readme.txt", b"x")
    seen: list[str] = []
    local_repo.damage.listen(seen.append)
    assert list_seeds(local_repo) == []
    assert any("foreign" in s for s in seen)


def test_bad_seed_names_cost_no_work(local_repo: Repository, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a seed name"):
        add_seed(local_repo, SeedRequest("../x", [str(tmp_path)]))
    assert local_repo.stats.chunks_added == 0


def test_prune_in_the_session_that_wrote_the_data_keeps_what_it_repacks(
    local_repo: Repository, tmp_path: Path
) -> None:
    """A prune repacking chunks this same session wrote (a seed's trees beside
    the unused trees above its folder) copies them: it used to take them for
    copies already made, and deleted their only pack."""
    seed = add_seed(local_repo, SeedRequest("golden", [str(make_tree(tmp_path / "g"))]))
    plan = maintenance.prune(local_repo)
    assert plan.as_dict()["packs_repack"] >= 1
    assert maintenance.check(local_repo, read_data=True).report.ok
    assert sum(1 for _ in iter_tree(local_repo, bytes.fromhex(seed.tree))) == 6


def test_two_seed_adds_of_one_name_record_one_seed(
    local_repo: Repository, repo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `seed add` of one name at once (shared locks): each checks the name
    before it saves, so both checks can pass; the one that finds the other's
    seed after saving its own withdraws it."""
    from strongroom.model.seed import Seed
    from strongroom.services.seeds import record_seed
    from tests.conftest import open_local_repository

    tree = make_tree(tmp_path / "tree")
    first = add_seed(local_repo, SeedRequest("base", [str(tree)], SeedKind.OS))
    local_repo.delete_seed(first.id)  # its content stays: only the record matters here

    other = open_local_repository(repo_path)
    try:
        real_save = local_repo.save_seed

        def save_after_the_other(doc: dict[str, object]) -> str:
            # The other adder checks, saves and re-checks between our check and our save.
            record_seed(other, Seed.from_doc({**first.to_doc(), "description": "theirs"}))
            return real_save(doc)

        monkeypatch.setattr(local_repo, "save_seed", save_after_the_other)
        with pytest.raises(SeedExists):
            record_seed(local_repo, Seed.from_doc({**first.to_doc(), "description": "ours"}))
    finally:
        other.close()
    named = [s for s in list_seeds(local_repo) if s.name == "base"]
    assert [s.description for s in named] == ["theirs"]


def test_check_names_an_origin_pointing_past_the_points_seeds(
    local_repo: Repository, tmp_path: Path
) -> None:
    """format.md §12b: an `sd` index outside the point's seeds makes it damaged."""
    from tests.helpers.seeded import i, seeded_point, used_seed

    machine = make_tree(tmp_path / "machine")
    seeded_point(local_repo, machine, [used_seed("os", "os")], {"etc/motd": i(0)})
    assert maintenance.check(local_repo).report.ok
    seeded_point(local_repo, machine, [used_seed("os", "os")], {"usr/bin/tool": i(0, 3)})
    errors = maintenance.check(local_repo).report.errors
    assert any("names seeds [0, 3] of the 1" in e for e in errors), errors
