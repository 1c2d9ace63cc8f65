"""forget and prune through the CLI: policies, data removal, and what survives."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from strongroom.model.point import RecoveryPoint
from tests.conftest import CliRunner, open_local_repository
from tests.helpers.compare import walk_differences
from tests.helpers.tree import random_bytes, write_file

MiB = 1024 * 1024


def data_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / "data").glob("*/*"))


def point_ids(cli: CliRunner) -> list[str]:
    return [p["id"] for p in cli("snapshots", "--json").json()]


def backup_generations(cli: CliRunner, src: Path, count: int) -> list[str]:
    """`count` points, each with 3 MiB of data of its own plus shared data."""
    write_file(src / "shared.bin", random_bytes(2 * MiB, 999))
    ids = []
    for gen in range(count):
        write_file(src / "changing.bin", random_bytes(3 * MiB, gen))
        result = cli("backup", str(src), "--json")
        assert result.rc == 0, result.err
        ids.append(result.summary()["point_id"])
    return ids


def test_keep_last_then_prune_frees_space_and_keeps_what_remains(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    ids = backup_generations(cli, src, 4)
    before = data_bytes(initialized_repo)

    forget = cli("forget", "--keep-last", "2", "--json")
    assert forget.rc == 0, forget.err
    (group,) = forget.json()["groups"]
    assert [k["id"] for k in group["keep"]] == [ids[3], ids[2]]
    assert sorted(group["remove"]) == sorted(ids[:2])
    assert point_ids(cli) == ids[2:]
    assert data_bytes(initialized_repo) == before  # forget alone deletes no data

    prune = cli("prune", "--json")
    assert prune.rc == 0, prune.err
    plan = prune.json()
    assert plan["unused_bytes"] > 0 and plan["missing_chunks"] == 0
    assert plan["packs_repack"] + plan["packs_delete"] >= 1
    after = data_bytes(initialized_repo)
    assert after < before - 5 * MiB  # two generations of 3 MiB each are gone

    # The remaining points still restore: the newest exactly, the other by content.
    target = tmp_path / "restore"
    assert cli("restore", ids[3], "--target", str(target)).rc == 0
    assert walk_differences(src, target / str(src).lstrip("/"), check_atime=False) == []
    older = tmp_path / "older"
    assert cli("restore", ids[2], "--target", str(older)).rc == 0
    restored = older / str(src).lstrip("/")
    assert (restored / "changing.bin").read_bytes() == random_bytes(3 * MiB, 2)
    check = cli("check", "--read-data")
    assert check.rc == 0, check.err
    assert "not indexed" not in check.err


def test_forget_by_id_dry_run_and_with_prune(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    ids = backup_generations(cli, src, 3)
    dry = cli("forget", ids[0][:8], "--dry-run")
    assert dry.rc == 0 and f"would forget point {ids[0][:8]}" in dry.out
    assert point_ids(cli) == ids

    assert cli("forget", ids[0][:8]).rc == 0
    assert point_ids(cli) == ids[1:]

    before = data_bytes(initialized_repo)
    both = cli("forget", "--keep-last", "1", "--prune", "--json")
    assert both.rc == 0, both.err
    assert both.json()["prune"]["packs_total"] >= 1
    assert point_ids(cli) == ids[2:]
    assert data_bytes(initialized_repo) < before
    assert cli("check", "--read-data").rc == 0


def points_at(
    tmp_path: Path, cli: CliRunner, repo_path: Path, stamps: tuple[str, ...]
) -> dict[str, str]:
    """One point of a small tree per UTC time in `stamps` (copies of a real point
    with the time changed), the real one forgotten: {stamp: point id}."""
    src = tmp_path / "src"
    write_file(src / "f", b"content")
    real = cli("backup", str(src), "--json").summary()["point_id"]
    repo = open_local_repository(repo_path)
    template = RecoveryPoint.from_doc(repo.load_point(real))
    chosen = {}
    for stamp in stamps:
        template.time = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
        chosen[stamp] = repo.save_point(template.to_doc())
    repo.close()
    cli("forget", real)
    return chosen


def test_keep_daily_on_points_with_chosen_times(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    chosen = points_at(tmp_path, cli, initialized_repo, (
        "2026-03-01T08:00", "2026-03-01T20:00", "2026-03-02T12:00", "2026-03-04T07:00",
        "2026-03-04T09:00", "2026-03-05T23:00",
    ))  # fmt: skip

    env = {"TZ": "UTC"}
    result = cli("forget", "--keep-daily", "3", "--json", env=env)
    assert result.rc == 0, result.err
    (group,) = result.json()["groups"]
    kept = {k["id"] for k in group["keep"]}
    assert kept == {chosen[s] for s in ("2026-03-05T23:00", "2026-03-04T09:00", "2026-03-02T12:00")}
    assert set(point_ids(cli)) == kept


def test_prune_dry_run_and_prune_without_garbage_change_nothing(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """A prune with nothing to do changes nothing; a dry run never writes."""
    src = tmp_path / "src"
    ids = backup_generations(cli, src, 2)
    snapshot = {p: p.stat().st_size for p in initialized_repo.rglob("*") if p.is_file()}
    snapshot = {p: s for p, s in snapshot.items() if "locks" not in p.parts}
    plan = cli("prune", "--dry-run", "--json").json()
    assert plan["dry_run"] is True and plan["packs_delete"] == 0 and plan["packs_repack"] == 0
    after = {p: p.stat().st_size for p in initialized_repo.rglob("*") if p.is_file()}
    assert {p: s for p, s in after.items() if "locks" not in p.parts} == snapshot
    assert cli("prune").rc == 0
    assert point_ids(cli) == ids
    assert cli("check", "--read-data").rc == 0


def test_keep_within_through_the_cli(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """`forget --keep-within 2d` and `--keep-within-daily 5d` against the newest
    point's time, not the clock; a malformed duration is a usage error."""
    chosen = points_at(tmp_path, cli, initialized_repo, (
        "2020-03-01T08:00", "2020-03-01T20:00", "2020-03-03T12:00", "2020-03-05T07:00",
        "2020-03-05T09:00", "2020-03-06T23:00",
    ))  # fmt: skip
    env = {"TZ": "UTC"}

    bad = cli("forget", "--keep-within", "2 days", env=env)
    assert bad.rc == 2 and "is not a duration" in bad.err
    dry = cli("forget", "--keep-within", "2d", "--dry-run", "--json", env=env).json()
    (group,) = dry["groups"]
    assert {k["id"] for k in group["keep"]} == {
        chosen[s] for s in ("2020-03-06T23:00", "2020-03-05T09:00", "2020-03-05T07:00")
    }
    result = cli("forget", "--keep-within-daily", "5d", "--json", env=env)
    assert result.rc == 0, result.err
    (group,) = result.json()["groups"]
    assert {k["id"] for k in group["keep"]} == {
        chosen[s] for s in ("2020-03-06T23:00", "2020-03-05T09:00", "2020-03-03T12:00")
    }
    assert set(point_ids(cli)) == {k["id"] for k in group["keep"]}
