"""services/policies.py: editing the config file keeps the user's file where it is."""

from __future__ import annotations

from pathlib import Path

from strongroom.services.policies import PolicyRequest, add_policy, remove_policy


def test_a_symlinked_config_file_is_edited_through_its_link(tmp_path: Path) -> None:
    """A config kept elsewhere (a dotfiles checkout) and linked into place: the
    edit goes to the file the link names, and the link stays a link."""
    real = tmp_path / "dotfiles" / "strongroom.toml"
    real.parent.mkdir()
    real.write_text('repo = "/r"  # mine\n')
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    tree = tmp_path / "tree"
    tree.mkdir()
    add_policy(PolicyRequest(name="db", sources=[str(tree)]), link)
    assert link.is_symlink()
    assert real.read_text().startswith('repo = "/r"  # mine\n')
    assert "[protect.db]" in real.read_text()
    remove_policy("db", link)
    assert link.is_symlink() and "[protect.db]" not in real.read_text()
