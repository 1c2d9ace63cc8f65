"""Golden disk images as seeds: `seed add` of an image, a machine's image backed
up against it (only its own blocks stored), restored as a qcow2 overlay on the
golden image (`qemu-img compare` judges it) and exported as a differencing
VHD whose parent is the golden VHD (libvhdi judges it).

The images are real ext4 file systems made by `mke2fs -d` from a golden tree
and from a machine tree (tests/helpers/golden_images.py); every number
strongroom reports is held to what the test computes from the two images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from strongroom.services.image_seeds import SAMPLE_BLOCKS, sample_blocks, suggest_image
from strongroom.services.seeds import list_seeds
from tests.conftest import CliRunner, open_local_repository
from tests.helpers.cli import CliResult, assert_one_line_error
from tests.helpers.golden_images import (
    REPO_BS,
    Pair,
    difference,
    make_pair,
)
from tests.helpers.images import (
    QEMU,
    MiB,
    assert_same_image,
    backup,
    check_repository,
    image_info,
    needs,
    run,
    sparse_file,
    write_random,
)
from tests.helpers.libvhdi import open_chain

pytestmark = [QEMU, needs("mke2fs")]
MAP_ALLOWANCE = 64 * 1024  # a backup also stores its block map's root and segments


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return make_pair(tmp_path)


def seed_add(cli: CliRunner, name: str, *sources: object) -> dict[str, Any]:
    result = cli("seed", "add", name, *(str(s) for s in sources), "--json")
    assert result.rc == 0, result.err
    doc: dict[str, Any] = result.values()[-1]
    return doc


def restore_overlay(
    cli: CliRunner, point: str, golden: Path, target: Path, *args: str
) -> CliResult:
    return cli(
        "restore", point, "--scope", "user", "--format", "qcow2",
        "--backing", str(golden), "--target", str(target), "--json", *args,
    )  # fmt: skip


def seed_names(cli: CliRunner) -> list[str]:
    result = cli("seed", "list", "--json")
    assert result.rc == 0, result.err
    return [s["name"] for s in result.json()]


# --- seed add and the seeded backup ---------------------------------------------


def test_machine_image_stores_only_the_blocks_that_differ_from_its_golden_image(
    cli: CliRunner, initialized_repo: Path, pair: Pair
) -> None:
    diff = difference(pair.golden, pair.machine)
    assert diff.identical > 3 * len(diff.differing), "the test images share too little"
    seed = seed_add(cli, "debian-golden", pair.golden)
    summary = seed["summary"]
    assert seed["content"] == "block"
    assert summary["size"] == pair.golden.stat().st_size
    assert summary["block_size"] == REPO_BS
    golden_data = diff.identical + sum(
        1 for b in diff.differing if any(pair.golden.read_bytes()[b * REPO_BS : (b + 1) * REPO_BS])
    )
    assert summary["data_blocks"] == golden_data

    s = backup(cli, pair.machine)  # no --seed: chosen automatically
    assert s["tracker"] == "compare"
    assert s["seeds"]["used"][0]["name"] == "debian-golden"
    assert s["seeds"]["root"] == "/"
    classes = s["seeds"]["classes"]
    assert classes["identical"]["blocks"] == diff.identical
    assert classes["own"]["blocks"] == len(diff.own)
    assert classes["zeroed"]["blocks"] == len(diff.zeroed)
    assert s["seeds"]["seed_bytes"] == {"debian-golden": diff.identical * REPO_BS}
    # Only the machine's own blocks are new to the repository.
    assert s["blocks_new"] == diff.new_contents
    own_bytes = diff.new_contents * REPO_BS
    assert own_bytes <= s["data_added"] <= own_bytes + MAP_ALLOWANCE
    assert s["blocks_changed"] == len(diff.differing)

    point = cli("snapshots", "--json").json()[-1]
    assert point["seeds"]["used"][0]["name"] == "debian-golden"


def test_pinned_seed_no_seeds_and_incrementals_keep_the_record(
    cli: CliRunner, initialized_repo: Path, pair: Pair, tmp_path: Path
) -> None:
    seed_add(cli, "golden", pair.golden)
    alone = backup(cli, pair.machine, "--no-seeds", "--host", "other")
    assert alone["seeds"] is None
    assert alone["data_added"] >= len(difference(pair.golden, pair.machine).own) * REPO_BS

    first = backup(cli, pair.machine, "--seed", "golden")
    assert first["seeds"]["used"][0]["name"] == "golden"
    assert first["parent"] is None  # another host's point is no parent
    write_random(pair.machine, 40 * MiB, 4096, seed=9)  # one more own block
    second = backup(cli, pair.machine)
    assert second["parent"] == first["point_id"]
    assert second["seeds"]["used"] == first["seeds"]["used"]
    own = first["seeds"]["classes"]["own"]["blocks"]
    assert second["seeds"]["classes"]["own"]["blocks"] in (own, own + 1)
    assert second["blocks_new"] == 1
    # --no-seeds on an incremental: the new point builds on no seed either.
    third = backup(cli, pair.machine, "--no-seeds")
    assert third["parent"] == second["point_id"] and third["seeds"] is None


def test_a_seed_of_another_size_is_not_chosen_and_is_refused_when_pinned(
    cli: CliRunner, initialized_repo: Path, pair: Pair, tmp_path: Path
) -> None:
    small = Path(shutil.copy(pair.golden, tmp_path / "small.img"))
    with open(small, "r+b") as f:
        f.truncate(32 * MiB)
    seed_add(cli, "small", small)
    s = backup(cli, pair.machine)
    assert s["seeds"] is None
    result = cli("backup", "--image", str(pair.machine), "--seed", "small", "--host", "h2")
    assert result.rc != 0
    assert_one_line_error(result, "small")


# --- restore as a qcow2 overlay ---------------------------------------------------


@pytest.mark.parametrize("golden_format", ["raw", "qcow2"])
def test_overlay_on_the_golden_image_reads_as_the_machine(
    cli: CliRunner, initialized_repo: Path, pair: Pair, tmp_path: Path, golden_format: str
) -> None:
    diff = difference(pair.golden, pair.machine)
    seed_add(cli, "golden", pair.golden)
    point = backup(cli, pair.machine)["point_id"]
    golden = pair.golden
    if golden_format == "qcow2":
        golden = tmp_path / "golden.qcow2"
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", pair.golden, golden)
    overlay = tmp_path / "machine-overlay.qcow2"
    result = restore_overlay(cli, point, golden, overlay)
    assert result.rc == 0, result.err
    done = result.summary()
    assert done["backing"] == str(golden)
    assert done["bytes_written"] == len(diff.own) * REPO_BS
    info = image_info(overlay)
    assert info["format"] == "qcow2"
    assert info["full-backing-filename"] == str(golden.resolve())
    assert info["backing-filename-format"] == golden_format
    assert_same_image(pair.machine, overlay, "raw", "qcow2")
    # The overlay holds the differing blocks and little else.
    assert info["actual-size"] <= len(diff.differing) * REPO_BS + 1 * MiB
    assert info["actual-size"] >= len(diff.own) * REPO_BS


def test_blocks_the_machine_zeroed_are_written_as_zeros_over_the_seed(
    cli: CliRunner, initialized_repo: Path, tmp_path: Path
) -> None:
    golden = sparse_file(tmp_path / "golden.raw", 16 * MiB)
    write_random(golden, 0, 12 * MiB, seed=1)
    machine = Path(shutil.copy(golden, tmp_path / "machine.raw"))
    with open(machine, "r+b") as f:
        f.seek(3 * MiB)
        f.write(bytes(2 * MiB))  # blocks 3 and 4: data in the seed, zeros now
    write_random(machine, 7 * MiB, 1000, seed=2)
    write_random(machine, 14 * MiB, MiB, seed=3)  # a hole in the seed gets data
    seed_add(cli, "golden", golden)
    s = backup(cli, machine, "--seed", "golden")
    assert s["seeds"]["classes"]["zeroed"] == {"blocks": 2, "bytes": 2 * MiB}
    assert s["seeds"]["classes"]["own"]["blocks"] == 2
    overlay = tmp_path / "overlay.qcow2"
    result = restore_overlay(cli, s["point_id"], golden, overlay)
    assert result.rc == 0, result.err
    assert result.summary()["holes"] == 2
    assert_same_image(machine, overlay, "raw", "qcow2")
    # Read through the overlay, the zeroed blocks hide the golden image's data.
    raw = tmp_path / "read-back.raw"
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", overlay, raw)
    assert raw.read_bytes()[3 * MiB : 5 * MiB] == bytes(2 * MiB)


def test_a_wrong_or_missing_backing_image_is_refused_in_one_line(
    cli: CliRunner, initialized_repo: Path, pair: Pair, tmp_path: Path
) -> None:
    seed_add(cli, "golden", pair.golden)
    point = backup(cli, pair.machine)["point_id"]
    target = tmp_path / "overlay.qcow2"
    wrong = restore_overlay(cli, point, pair.machine, target)
    assert wrong.rc == 2
    assert_one_line_error(wrong, "is not the image of seed golden")
    other_size = sparse_file(tmp_path / "other.img", 32 * MiB)
    sized = restore_overlay(cli, point, other_size, target)
    assert_one_line_error(sized, "33554432 bytes")
    missing = cli("restore", point, "--scope", "user", "--target", str(target))
    assert missing.rc == 2
    assert_one_line_error(missing, "--backing")
    raw = cli(
        "restore", point, "--scope", "user", "--backing", str(pair.golden), "--target", str(target)
    )
    assert_one_line_error(raw, "--format qcow2")
    # A golden qcow2 with a backing file of its own: refused without advice
    # meant for backup (--allow-backing, --format raw mean nothing here).
    base = tmp_path / "base.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", pair.golden, base)
    top = tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    chained = restore_overlay(cli, point, top, target)
    assert chained.rc == 2
    assert_one_line_error(chained, "give the golden image as one raw or qcow2 file")
    assert "--allow-backing" not in chained.err
    assert not target.exists()
    # --scope full is today's restore: the whole disk.
    full = tmp_path / "full.raw"
    assert cli("restore", point, "--scope", "full", "--target", str(full)).rc == 0
    assert_same_image(pair.machine, full)


def test_verify_backing_reads_every_block_where_the_sample_misses_one(
    cli: CliRunner, initialized_repo: Path, tmp_path: Path
) -> None:
    blocks = 512  # more than the sample
    golden = sparse_file(tmp_path / "golden.raw", blocks * MiB)
    for b in range(0, blocks, 7):
        write_random(golden, b * MiB, 4096, seed=b)
    sampled = set(sample_blocks(blocks, SAMPLE_BLOCKS))
    missed = next(b for b in range(blocks) if b not in sampled and b % 7)
    seed_add(cli, "golden", golden)
    machine = Path(shutil.copy(golden, tmp_path / "machine.raw"))
    write_random(machine, 5 * MiB, 4096, seed=99)
    point = backup(cli, machine)["point_id"]
    tampered = Path(shutil.copy(golden, tmp_path / "tampered.raw"))
    write_random(tampered, missed * MiB, 4096, seed=100)
    sample_ok = restore_overlay(cli, point, tampered, tmp_path / "a.qcow2")
    assert sample_ok.rc == 0, sample_ok.err  # the sample cannot see that block
    full = restore_overlay(cli, point, tampered, tmp_path / "b.qcow2", "--verify-backing")
    assert_one_line_error(full, f"offset {missed * MiB}")
    good = restore_overlay(cli, point, golden, tmp_path / "c.qcow2", "--verify-backing")
    assert good.rc == 0, good.err
    assert_same_image(machine, tmp_path / "c.qcow2", "raw", "qcow2")


# --- export as a differencing VHD ------------------------------------------------


def test_differencing_vhd_on_the_golden_vhd_opens_in_libvhdi(
    cli: CliRunner, initialized_repo: Path, pair: Pair, tmp_path: Path
) -> None:
    diff = difference(pair.golden, pair.machine)
    seed_add(cli, "golden", pair.golden)
    point = backup(cli, pair.machine)["point_id"]
    golden_vhd = tmp_path / "golden.vhd"
    run(
        "qemu-img", "convert", "-f", "raw", "-O", "vpc",
        "-o", "subformat=dynamic,force_size=on", pair.golden, golden_vhd,
    )  # fmt: skip
    out = tmp_path / "machine.vhd"
    result = cli(
        "export", point, str(out), "--incremental-from", "seed:golden",
        "--parent", str(golden_vhd), "--json",
    )  # fmt: skip
    assert result.rc == 0, result.err
    doc = result.values()[-1]
    assert doc["type"] == "differencing"
    assert doc["base_seed"] == "golden"
    assert doc["blocks_written"] == len(diff.differing)
    info = run("vhdiinfo", out).stdout
    assert "Differential" in info
    golden_id = [
        line for line in run("vhdiinfo", golden_vhd).stdout.splitlines() if "Identifier" in line
    ]
    assert golden_id[0].split(":", 1)[1].strip() in info  # the parent's unique id
    with open_chain([golden_vhd, out]) as top:
        data = bytes(top.read_buffer_at_offset(int(top.get_media_size()), 0))
    assert data == pair.machine.read_bytes()
    # Only the differing blocks are in the file (VHD blocks are 2 MiB).
    assert out.stat().st_size <= (len(diff.differing) * 2 + 2) * MiB


def test_export_refuses_a_parent_vhd_that_is_not_the_seed(
    cli: CliRunner, initialized_repo: Path, pair: Pair, tmp_path: Path
) -> None:
    seed_add(cli, "golden", pair.golden)
    point = backup(cli, pair.machine)["point_id"]
    not_golden = tmp_path / "machine-as-parent.vhd"
    run(
        "qemu-img", "convert", "-f", "raw", "-O", "vpc",
        "-o", "subformat=dynamic,force_size=on", pair.machine, not_golden,
    )  # fmt: skip
    out = tmp_path / "out.vhd"
    result = cli(
        "export", point, str(out), "--incremental-from", "seed:golden", "--parent", str(not_golden)
    )
    assert result.rc == 2
    assert_one_line_error(result, "is not the image of seed golden")
    assert not out.exists()
    unknown = cli(
        "export", point, str(out), "--incremental-from", "seed:nope", "--parent", str(not_golden)
    )
    assert_one_line_error(unknown, "no seed named nope")


# --- bad sources, prune, check, suggest -----------------------------------------------


@pytest.mark.parametrize("fmt", ["qcow2", "vpc"])
def test_a_truncated_image_is_refused_as_seed_source_and_nothing_is_recorded(
    cli: CliRunner, initialized_repo: Path, pair: Pair, tmp_path: Path, fmt: str
) -> None:
    image = tmp_path / f"golden.{fmt}"
    extra = ["-o", "subformat=dynamic,force_size=on"] if fmt == "vpc" else []
    run("qemu-img", "convert", "-f", "raw", "-O", fmt, *extra, pair.golden, image)
    with open(image, "r+b") as f:
        f.truncate(image.stat().st_size // 2)
    packs_before = sorted(p.name for p in (initialized_repo / "data").rglob("*") if p.is_file())
    result = cli("seed", "add", "golden", str(image))
    assert result.rc != 0
    assert_one_line_error(result, str(image.name))
    assert seed_names(cli) == []
    packs = sorted(p.name for p in (initialized_repo / "data").rglob("*") if p.is_file())
    assert packs == packs_before


def test_prune_keeps_the_seed_blocks_and_check_reads_them(
    cli: CliRunner, initialized_repo: Path, pair: Pair, tmp_path: Path
) -> None:
    seed_add(cli, "golden", pair.golden)
    point = backup(cli, pair.machine)["point_id"]
    assert cli("forget", point).rc == 0
    assert cli("prune").rc == 0
    check_repository(cli, read_data=True)
    # Every block of the golden image is still in the repository.
    again = backup(cli, pair.golden, "--no-seeds")
    assert again["data_added"] <= MAP_ALLOWANCE
    assert again["blocks_new"] == 0
    # Removing the seed and pruning leaves the other point whole.
    assert cli("seed", "remove", "golden", "--force").rc == 0
    assert cli("prune").rc == 0
    check_repository(cli, read_data=True)
    restored = tmp_path / "golden-restored.raw"
    assert cli("restore", again["point_id"], "--target", str(restored)).rc == 0
    assert_same_image(pair.golden, restored)


def test_suggest_image_measures_each_block_seed_on_a_sample(
    cli: CliRunner, initialized_repo: Path, pair: Pair, tmp_path: Path
) -> None:
    seed_add(cli, "golden", pair.golden)
    unrelated = sparse_file(tmp_path / "unrelated.raw", 8 * MiB)
    write_random(unrelated, 0, 8 * MiB, seed=5)
    seed_add(cli, "unrelated", unrelated)
    diff = difference(pair.golden, pair.machine)
    repo = open_local_repository(initialized_repo)
    try:
        seeds = list_seeds(repo)
        found = suggest_image(repo, seeds, str(pair.machine))
    finally:
        repo.close()
    by_name = {seed.name: (share, sampled) for seed, share, sampled in found}
    data_blocks = diff.identical + len(diff.own)
    assert by_name["golden"][1] == data_blocks  # 64 blocks: every one is sampled
    expected = (data_blocks - diff.new_contents) / data_blocks
    assert by_name["golden"][0] == pytest.approx(expected, abs=1 / data_blocks)
    assert by_name["unrelated"][0] == 0.0
    assert found[0][0].name == "golden"


def test_point_record_lists_the_seed_for_stats(
    cli: CliRunner, initialized_repo: Path, pair: Pair
) -> None:
    seed_add(cli, "golden", pair.golden)
    backup(cli, pair.machine)
    points = cli("snapshots", "--json").json()
    record = points[-1]["seeds"]
    assert set(record["classes"]) == {"identical", "own", "zeroed"}
    assert all(set(v) == {"blocks", "bytes"} for v in record["classes"].values())
    assert json.dumps(record)  # plain JSON for `stats POINT --json`


def test_an_interrupted_overlay_restore_leaves_no_overlay(
    cli: CliRunner, initialized_repo: Path, pair: Pair, tmp_path: Path
) -> None:
    """A half-written overlay reads its missing blocks from the golden image: a
    wrong disk that looks right. It is written under a temporary name and
    renamed when complete, so an interruption leaves nothing at the target."""
    import threading

    from strongroom.errors import Interrupted
    from strongroom.services import image_restore
    from strongroom.services.points import find_point

    seed_add(cli, "golden", pair.golden)
    point_id = backup(cli, pair.machine)["point_id"]
    overlay = tmp_path / "out" / "machine.qcow2"
    overlay.parent.mkdir()
    cancel = threading.Event()
    cancel.set()
    repo = open_local_repository(initialized_repo)
    try:
        with pytest.raises(Interrupted):
            image_restore.restore_overlay(
                repo,
                find_point(repo, point_id),
                str(pair.golden),
                str(overlay),
                seeds=repo,
                cancel=cancel,
            )
    finally:
        repo.close()
    assert list(overlay.parent.iterdir()) == []
    done = restore_overlay(cli, point_id, pair.golden, overlay)
    assert done.rc == 0, done.err
    assert_same_image(pair.machine, overlay, "raw", "qcow2")
    assert sorted(p.name for p in overlay.parent.iterdir()) == ["machine.qcow2"]
