"""Every command meets a damaged or foreign object (issue #10): reported once in
one line, skipped where the command can go on, and `check` exits 1 naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import BackedUp
from tests.conftest import CliRunner


def _victim(repo: Path, folder: str) -> Path:
    files = sorted(p for p in (repo / folder).rglob("*") if p.is_file())
    return files[0]


def _damage(repo: Path, folder: str, kind: str) -> str:
    """Damage one object of `folder`; returns the object name a message must give."""
    if kind == "junk":
        where = repo / folder / ("aa" if folder == "data" else "")
        where.mkdir(parents=True, exist_ok=True)
        (where / "junk").write_bytes(b"junk!")
        return str((where / "junk").relative_to(repo))
    victim = _victim(repo, folder)
    blob = victim.read_bytes()
    if kind == "flip":
        victim.write_bytes(blob[:30] + bytes([blob[30] ^ 1]) + blob[31:])
    elif kind == "truncate":
        victim.write_bytes(blob[: len(blob) // 2])
    elif kind == "empty":
        victim.write_bytes(b"")
    elif kind == "renamed":
        other = victim.with_name("0" * 64)
        victim.rename(other)
        victim = other
    return str(victim.relative_to(repo))


KINDS = ["junk", "flip", "truncate", "empty", "renamed"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("folder", ["index", "points", "locks"])
def test_commands_go_on_past_a_damaged_object(
    backed_up: BackedUp,
    cli: CliRunner,
    initialized_repo: Path,
    tmp_path: Path,
    folder: str,
    kind: str,
) -> None:
    # A second point, so that one damaged point leaves another to restore.
    second = cli("backup", str(backed_up.src), "--json")
    assert second.rc == 0, second.err
    if folder == "locks" and kind != "junk":
        pytest.skip("no lock is left between commands")
    name = _damage(initialized_repo, folder, kind)

    snapshots = cli("snapshots", "--json")
    assert snapshots.rc == 0, snapshots.err
    if folder in ("index", "locks"):
        assert len(snapshots.json()) == 2

    check = cli("check")
    assert check.rc == 1 if folder != "locks" else check.rc in (0, 1), check.err
    if folder != "locks":
        assert name in check.err
    assert "internal error" not in check.err

    if folder == "points":
        target = tmp_path / "restored"
        restored = cli("restore", "latest", "--target", str(target))
        assert restored.rc == 0, restored.err
        assert (target / backed_up.src.relative_to("/") / "hello.txt").exists() or any(
            target.rglob("*")
        )
        pruned = cli("prune")
        if kind == "junk":
            assert pruned.rc == 0, pruned.err
        else:
            assert pruned.rc == 1 and "forget" in pruned.err and pruned.err.count("\n") == 1
            point_id = name.rsplit("/", 1)[-1]
            assert cli("forget", point_id[:16]).rc == 0
            assert cli("prune").rc == 0
            assert cli("check").rc == 0
    for command in (["stats"], ["key", "list"], ["unlock"], ["ls", "latest"]):
        result = cli(*command)
        assert "internal error" not in result.err, (command, result.err)
        assert result.err.count(name) <= 1, (command, result.err)  # reported once


def test_junk_under_data_does_not_stop_check_or_prune(
    backed_up: BackedUp, cli: CliRunner, initialized_repo: Path
) -> None:
    """The attack: check complained about --read-data-subset (not given), prune died
    with "internal error: ValueError"."""
    name = _damage(initialized_repo, "data", "junk")
    check = cli("check", "--read-data")
    assert check.rc == 1 and name in check.err and "subset" not in check.err
    pruned = cli("prune")
    assert pruned.rc == 0, pruned.err
    assert (initialized_repo / name).exists()  # not ours: left alone
    assert cli("restore", "latest", "--target", str(initialized_repo.parent / "t")).rc == 0


def test_init_refuses_a_short_password(cli: CliRunner, repo_path: Path) -> None:
    refused = cli("init", env={"STRONGROOM_PASSWORD": "short"})
    assert refused.rc == 2 and "--insecure-password" in refused.err
    assert not repo_path.exists()
    accepted = cli("init", "--insecure-password", env={"STRONGROOM_PASSWORD": "short"})
    assert accepted.rc == 0 and "shorter than" in accepted.err


def test_key_add_warns_about_a_short_password(cli: CliRunner, initialized_repo: Path) -> None:
    added = cli("key", "add", env={"STRONGROOM_NEW_PASSWORD": "short"})
    assert added.rc == 0 and "shorter than" in added.err


@pytest.mark.parametrize("folder", ["index", "points", "keys", "data"])
def test_an_object_name_cannot_fake_a_line_of_output(
    backed_up: BackedUp, cli: CliRunner, initialized_repo: Path, folder: str
) -> None:
    """Storage names reach messages (damage findings, check's report): a line
    break in one is escaped, never a line of its own."""
    fake = "FAKE: no errors were found"
    (initialized_repo / folder / f"x\n{fake}").write_bytes(b"junk!")
    for command in (["check"], ["snapshots"], ["stats"], ["key", "list"], ["ls", "latest"]):
        result = cli(*command)
        assert "internal error" not in result.err, (command, result.err)
        lines = (result.out + result.err).splitlines()
        assert not any(line.startswith("FAKE") for line in lines), (command, lines)
    check = cli("check")
    assert check.rc == 1 and "x\\x0aFAKE" in check.err, check.err
