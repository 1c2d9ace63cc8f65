"""The real program against seeds: `backup` summaries, `stats POINT`, `seed
suggest`, the option rules, and `seed remove` of a seed in use followed by
`prune` (every remaining point still restores exactly)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error
from tests.helpers.compare import rsync_differences
from tests.helpers.seed_trees import SeededMachine, build


@pytest.fixture
def seeded(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> SeededMachine:
    m = build(tmp_path / "trees")
    for name, tree, kind in (
        ("os", m.os_seed, "os"),
        ("app", m.app_seed, "app"),
        ("other", m.stranger_seed, "app"),
    ):
        result = cli("seed", "add", name, str(tree), "--kind", kind)
        assert result.rc == 0, result.err
    return m


def _counts(m: SeededMachine) -> dict[str, tuple[int, int]]:
    """(files, bytes) per class of the regular files the machine holds."""
    out = {w: (0, 0) for w in ("identical", "modified", "moved", "own")}
    for rel, (word, _, _) in m.expected.items():
        path = m.machine / rel
        if path.is_file() and not path.is_symlink():
            files, size = out[word]
            out[word] = (files + 1, size + path.stat().st_size)
    return out


def test_backup_reports_classes_and_stats_point_shows_them(
    seeded: SeededMachine, cli: CliRunner
) -> None:
    m = seeded
    result = cli("backup", str(m.machine), "--json")
    assert result.rc == 0, result.err
    summary = result.summary()
    seeds = summary["seeds"]
    assert [u["name"] for u in seeds["used"]] == ["app", "os"]
    assert summary["seeds_skipped"] == ["other"]
    expected = _counts(m)
    for word, (files, size) in expected.items():
        assert (seeds["classes"][word]["files"], seeds["classes"][word]["bytes"]) == (files, size)
    assert seeds["lacks_count"] == len(m.lacks)

    stats = cli("stats", summary["point_id"][:8], "--json")
    assert stats.rc == 0, stats.err
    doc = stats.json()
    assert doc["point"] == summary["point_id"]
    assert doc["new_bytes"] == summary["data_added"]
    assert doc["new_stored_bytes"] == summary["data_added_stored"]
    assert doc["seeds"]["own_bytes"] == expected["own"][1]
    assert doc["seeds"]["lacks_count"] == len(m.lacks)
    assert doc["seeds"]["seed_bytes"] == seeds["seed_bytes"]
    assert doc["seeds"]["classes"] == seeds["classes"]
    assert doc["seeds"]["root"] == str(m.machine)

    human = cli("stats", summary["point_id"][:8])
    assert human.rc == 0, human.err
    assert "lacking seed files" in human.out and "from seed os" in human.out
    assert "points" in cli("stats", "--json").json()  # the repository's stats as before

    again = cli("backup", str(m.machine))
    assert again.rc == 0, again.err
    files_line = next(line for line in again.out.splitlines() if "identical (" in line)
    ident = expected["identical"][0]
    assert f"{ident} identical" in files_line and f"{expected['own'][0]} own" in files_line
    assert f"Seed files the machine lacks: {len(m.lacks)}" in again.out


def test_no_seeds_and_trust_options(seeded: SeededMachine, cli: CliRunner) -> None:
    m = seeded
    plain = cli("backup", str(m.machine), "--no-seeds", "--json").summary()
    assert plain["seeds"] is None
    trusted = cli("backup", str(m.machine), "--trust-seed-metadata", "--force", "--json")
    assert trusted.rc == 0, trusted.err
    summary = trusted.summary()
    identical = {
        p
        for p in m.files_of("identical")
        if (m.machine / p).is_file() and not (m.machine / p).is_symlink()
    }
    assert summary["files_from_seed"] == len(identical)
    assert summary["seeds"]["classes"]["identical"]["files"] == len(identical)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seed", "nope"], "no seed named"),
        (["--seed", "os", "--no-seeds"], "--no-seeds"),
        (["--seed-root", "relative/dir"], "absolute"),
    ],
)
def test_bad_seed_options_record_nothing(
    seeded: SeededMachine, cli: CliRunner, args: list[str], needle: str
) -> None:
    result = cli("backup", str(seeded.machine), *args)
    assert result.rc == 2, result.err
    assert_one_line_error(result, needle)
    assert cli("snapshots", "--json").json() == []


def test_file_seed_options_do_not_go_with_an_image(cli: CliRunner, initialized_repo: Path) -> None:
    result = cli("backup", "--image", "/dev/null", "--trust-seed-metadata")
    assert result.rc == 2
    assert_one_line_error(result, "--trust-seed-metadata")


def test_seed_suggest_measures_coverage_and_guesses_the_root(
    seeded: SeededMachine, cli: CliRunner
) -> None:
    m = seeded
    # A file changed behind its size and mtime: covered by metadata, not by content.
    victim = m.machine / "usr/share/doc/a.txt"
    st = victim.stat()
    victim.write_bytes(b"Z" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = cli("seed", "suggest", str(m.machine), "--sample", "1000", "--json")
    assert result.rc == 0, result.err
    doc = result.json()
    by_name = {c["seed"]: c for c in doc["seeds"]}
    assert doc["seeds"][0]["seed"] == "os"  # the most bytes
    untouched_os = [
        p
        for p, (word, names, _) in m.expected.items()
        if word == "identical"
        and "os" in names
        and (m.machine / p).is_file()
        and not (m.machine / p).is_symlink()
    ]
    os_cov = by_name["os"]
    assert os_cov["root"] == str(m.machine)
    assert os_cov["files"] == len(untouched_os)
    assert os_cov["bytes"] == sum((m.machine / p).stat().st_size for p in untouched_os)
    assert (os_cov["sampled"], os_cov["confirmed"]) == (len(untouched_os), len(untouched_os) - 1)
    assert by_name["other"]["files"] == 0 and by_name["other"]["bytes"] == 0
    total = sum(
        p.stat().st_size for p in m.machine.rglob("*") if p.is_file() and not p.is_symlink()
    )
    assert doc["bytes"] == total
    human = cli("seed", "suggest", str(m.machine))
    assert human.rc == 0 and "best: os covers" in human.out


def test_seed_suggest_on_an_image_reports_each_image_seed(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(4 << 20)
        f.write(os.urandom(1 << 20))  # one data block of the repository's 1 MiB blocks
    assert cli("seed", "add", "gold", str(image), "--format", "raw").rc == 0
    result = cli("seed", "suggest", str(image), "--json")
    assert result.rc == 0, result.err
    doc = result.json()
    assert doc["image"] == [{"seed": "gold", "kind": "os", "percent": 100.0, "sampled": 1}]
    human = cli("seed", "suggest", str(image))
    assert human.rc == 0, human.err
    assert "Seed(" not in human.out
    assert "best: gold holds 100.0% of the sample" in human.out


def test_removing_a_seed_in_use_then_pruning_keeps_every_point_restorable(
    seeded: SeededMachine, cli: CliRunner, tmp_path: Path
) -> None:
    m = seeded
    points = [
        cli("backup", str(m.machine), "--json").summary()["point_id"],
        cli("backup", str(m.machine), "--seed", "os", "--force", "--json").summary()["point_id"],
        cli("backup", str(m.machine), "--no-seeds", "--force", "--json").summary()["point_id"],
    ]
    refused = cli("seed", "remove", "os")
    assert refused.rc == 2
    assert_one_line_error(refused, "in use")
    assert "os" in {s["name"] for s in cli("seed", "list", "--json").json()}

    forced = cli("seed", "remove", "os", "--force")
    assert forced.rc == 0, forced.err
    assert "2 points build on it" in forced.err + forced.out
    assert "os" not in {s["name"] for s in cli("seed", "list", "--json").json()}
    assert cli("seed", "remove", "app", "--force").rc == 0
    pruned = cli("prune")
    assert pruned.rc == 0, pruned.err
    for point in points:
        target = tmp_path / f"restore-{point[:8]}"
        result = cli("restore", point, "--target", str(target))
        assert result.rc == 0, result.err
        assert rsync_differences(m.machine, target / str(m.machine).lstrip("/")) == []
    assert cli("check", "--read-data").rc == 0


def test_a_merged_usr_machine_matches_package_paths_through_its_links(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """Debian packages ship `lib/...`; a merged-/usr machine holds those files in
    `usr/lib/...` through `lib -> usr/lib`. They are the package's files
    (identical), not moved ones. A link that leaves the machine's root, or an
    absolute one, is resolved inside the root, never on this host."""
    app = tmp_path / "app"
    (app / "lib" / "x").mkdir(parents=True)
    (app / "lib" / "x" / "libz.so").write_bytes(b"z" * 5000)
    (app / "bin").mkdir()
    (app / "bin" / "tool").write_bytes(b"t" * 5000)
    (app / "sbin").mkdir()
    (app / "sbin" / "daemon").write_bytes(b"d" * 5000)
    (app / "conf").mkdir()
    (app / "conf" / "passwd").write_bytes(b"p" * 5000)
    machine = tmp_path / "machine"
    (machine / "usr" / "lib" / "x").mkdir(parents=True)
    (machine / "usr" / "lib" / "x" / "libz.so").write_bytes(b"z" * 5000)
    (machine / "usr" / "bin").mkdir()
    (machine / "usr" / "bin" / "tool").write_bytes(b"t" * 5000)
    os.symlink("usr/lib", machine / "lib")
    os.symlink("/usr/bin", machine / "bin")  # absolute: relative to the machine's root
    os.symlink("../../../..", machine / "sbin")  # `..` stops at the machine's root
    os.symlink("/etc", machine / "conf")  # the machine's /etc (absent), not this host's
    assert cli("seed", "add", "app", str(app), "--kind", "app").rc == 0
    result = cli("backup", str(machine), "--seed", "app", "--json")
    assert result.rc == 0, result.err
    listing = cli("ls", "latest", "--json")
    assert listing.rc == 0, listing.err
    classes = {
        e["path"].split("/machine/", 1)[-1]: e.get("class")
        for e in (json.loads(line) for line in listing.out.splitlines() if line.strip())
        if isinstance(e, dict) and "path" in e
    }
    assert classes["usr/lib/x/libz.so"] == "identical"
    assert classes["usr/bin/tool"] == "identical"
    # sbin/daemon and conf/passwd: resolved inside the machine's root, where
    # they are not (this host's /etc/passwd does not count).
    assert result.summary()["seeds"]["lacks_count"] == 2
