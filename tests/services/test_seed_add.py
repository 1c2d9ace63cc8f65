"""`seed add` from a directory given by a path that is not its own: a symlink
to the directory, or a path through a symlinked parent."""

from __future__ import annotations

from pathlib import Path

from strongroom.model.seed import SeedKind
from strongroom.repository.repo import Repository
from strongroom.services.seed_add import SeedRequest, add_seed
from strongroom.services.walk import iter_tree


def test_a_symlink_to_a_directory_seeds_the_directory(
    local_repo: Repository, tmp_path: Path
) -> None:
    real = tmp_path / "golden" / "bookworm-2024"
    (real / "etc").mkdir(parents=True)
    (real / "etc" / "motd").write_text("welcome\n")
    (tmp_path / "golden" / "current").symlink_to("bookworm-2024")
    (tmp_path / "via").symlink_to(tmp_path / "golden")

    for name, source in (
        ("current", tmp_path / "golden" / "current"),
        ("parent-link", tmp_path / "via" / "bookworm-2024"),
    ):
        seed = add_seed(local_repo, SeedRequest(name, [str(source)], SeedKind.OS))
        paths = sorted(p for p, _ in iter_tree(local_repo, bytes.fromhex(seed.tree)))
        assert paths == [b"/etc", b"/etc/motd"], name
        assert seed.summary["files"] == 1
        assert seed.source == str(source)
