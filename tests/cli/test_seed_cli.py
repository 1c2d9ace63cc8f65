"""`strongroom seed add/list/show/remove` through the real program: seeds from a
directory, a tar archive and .deb packages; bad input is one line, a non-zero
exit and an unchanged repository; prune frees a removed seed's data; check
--read-data reads seed data."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.seed_sources import build_deb, gnu_tar, make_machine_tree
from tests.helpers.tree import random_bytes, write_file

MiB = 1024 * 1024


def data_files(repo: Path) -> set[Path]:
    return set((repo / "data").glob("*/*"))


def seed_names(cli: CliRunner) -> list[str]:
    listed = cli("seed", "list", "--json")
    assert listed.rc == 0, listed.err
    return [s["name"] for s in listed.json()]


def one_line_error(result: object) -> str:
    err = result.err  # type: ignore[attr-defined]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "internal error" not in err and "Traceback" not in err
    return lines[0]


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    root = tmp_path / "machine"
    make_machine_tree(root)
    return root


def test_seed_from_a_tar_then_the_same_tree_adds_no_data(
    cli: CliRunner, initialized_repo: Path, machine: Path, tmp_path: Path
) -> None:
    archive = gnu_tar(machine, tmp_path / "os.tar.zst", "zst")
    added = cli("seed", "add", "debian", str(archive), "--version", "12.8", "--json")
    assert added.rc == 0, added.err
    doc = added.document()
    assert doc["name"] == "debian" and doc["kind"] == "os" and doc["content"] == "files"
    assert doc["summary"]["files"] == 8 and doc["summary"]["data_added"] > 6 * MiB
    again = cli("seed", "add", "from-dir", str(machine), "--json")
    assert again.rc == 0, again.err
    assert again.document()["summary"]["data_added"] < 64 * 1024  # trees only
    assert seed_names(cli) == ["debian", "from-dir"]
    shown = cli("seed", "show", "debian", "--json")
    assert shown.rc == 0 and shown.json()["version"] == "12.8" and shown.json()["points"] == []
    text = cli("seed", "show", "debian")
    assert text.rc == 0 and "12.8" in text.out and str(archive) in text.out
    listed = cli("seed", "list")
    assert listed.rc == 0 and "debian" in listed.out and "from-dir" in listed.out
    check = cli("check", "--read-data")  # the tar seed's trees (hard links too) and data
    assert check.rc == 0, check.err


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_seed_from_debs_lists_its_packages_and_warns_of_a_shared_path(
    cli: CliRunner, initialized_repo: Path, tmp_path: Path
) -> None:
    one = build_deb(tmp_path, "libone1", {"usr/lib/libone.so.1": random_bytes(300_000, 1),
                                          "etc/shared.conf": b"one\n"})  # fmt: skip
    two = build_deb(tmp_path, "two-bin", {"usr/bin/two": b"two", "etc/shared.conf": b"two\n"})
    added = cli("seed", "add", "app-two", str(one), str(two), "--kind", "app")
    assert added.rc == 0, added.err
    assert "etc/shared.conf: given by libone1 and two-bin; two-bin's kept" in added.err
    assert "seed app-two (app) added" in added.out
    shown = cli("seed", "show", "app-two", "--json").json()
    assert [p["name"] for p in shown["packages"]] == ["libone1", "two-bin"]
    assert shown["summary"]["replaced"] == 1 and shown["kind"] == "app"
    assert "2: libone1, two-bin" in cli("seed", "show", "app-two").out


def test_a_name_that_exists_is_refused_and_costs_nothing(
    cli: CliRunner, initialized_repo: Path, tmp_path: Path
) -> None:
    write_file(tmp_path / "a/f", b"first")
    assert cli("seed", "add", "base", str(tmp_path / "a")).rc == 0
    before = data_files(initialized_repo)
    write_file(tmp_path / "b/big", random_bytes(2 * MiB, 5))
    again = cli("seed", "add", "base", str(tmp_path / "b"))
    assert again.rc == 2
    assert "exists already" in one_line_error(again)
    assert data_files(initialized_repo) == before
    assert seed_names(cli) == ["base"]


@pytest.mark.parametrize("what", ["truncated tar", "damaged deb"])
def test_bad_sources_are_one_line_and_change_nothing(
    cli: CliRunner, initialized_repo: Path, machine: Path, tmp_path: Path, what: str
) -> None:
    write_file(tmp_path / "base/f", b"x")
    assert cli("seed", "add", "base", str(tmp_path / "base")).rc == 0
    if what == "truncated tar":
        whole = gnu_tar(machine, tmp_path / "os.tar", "")
        bad = tmp_path / "os.tar.gz"
        bad.write_bytes(gzip.compress(whole.read_bytes())[: 3 * MiB])
        sources = [str(bad)]
    else:
        if shutil.which("dpkg-deb") is None:
            pytest.skip("needs dpkg-deb")
        good = build_deb(tmp_path, "fine", {"usr/share/fine": random_bytes(500_000, 2)})
        blob = good.read_bytes()
        bad = tmp_path / "broken_1.0_amd64.deb"
        bad.write_bytes(blob[: len(blob) - 1000])
        sources = [str(good), str(bad)]
    failed = cli("seed", "add", "broken", *sources)
    assert failed.rc not in (0, 2)
    line = one_line_error(failed)
    assert str(bad) in line and ("truncated" in line or "damaged" in line), line
    assert seed_names(cli) == ["base"]
    check = cli("check")
    assert check.rc == 0, check.err


def test_remove_an_unused_seed_then_prune_frees_its_data(
    cli: CliRunner, initialized_repo: Path, tmp_path: Path
) -> None:
    write_file(tmp_path / "seed/big", random_bytes(4 * MiB, 11))
    assert cli("seed", "add", "temp", str(tmp_path / "seed")).rc == 0
    size = sum(p.stat().st_size for p in data_files(initialized_repo))
    assert size > 4 * MiB
    removed = cli("seed", "remove", "temp")
    assert removed.rc == 0, removed.err
    assert "frees" in removed.out
    assert seed_names(cli) == []
    pruned = cli("prune")
    assert pruned.rc == 0, pruned.err
    after = sum(p.stat().st_size for p in data_files(initialized_repo))
    assert after < size - 4 * MiB
    assert cli("check", "--read-data").rc == 0


def test_check_read_data_reads_seed_data(
    cli: CliRunner, initialized_repo: Path, tmp_path: Path
) -> None:
    write_file(tmp_path / "seed/big", random_bytes(3 * MiB, 12))
    before = data_files(initialized_repo)
    assert cli("seed", "add", "only-seed", str(tmp_path / "seed")).rc == 0
    assert cli("check", "--read-data").rc == 0
    packs = sorted(data_files(initialized_repo) - before, key=lambda p: -p.stat().st_size)
    victim = packs[0]  # the largest new pack holds the seed's file data
    blob = bytearray(victim.read_bytes())
    blob[len(blob) // 3] ^= 0xFF
    victim.write_bytes(bytes(blob))
    check = cli("check", "--read-data")
    assert check.rc == 1, (check.out, check.err)
    assert victim.name in check.err or victim.name[:16] in check.err
