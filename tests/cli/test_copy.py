"""`strongroom copy` (issue #17): points between repositories with different
passwords, keys and chunker parameters; restores equal to the source's, the
target checks, a second copy copies nothing, filters, image points, refusals."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliRunner, init_local_repository, open_local_repository
from tests.helpers.cli import PASSWORD, assert_one_line_error
from tests.helpers.compare import walk_differences
from tests.helpers.marks import needs_root
from tests.helpers.pause_at_open import kill_at_open
from tests.helpers.tree import make_small_tree, random_bytes, write_file

SOURCE_PASSWORD = "the source's own password"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source-repo"
    init_local_repository(path, SOURCE_PASSWORD)
    return path


@pytest.fixture
def target(initialized_repo: Path) -> Path:
    """The target (the CLI's repository, PASSWORD) with smaller CDC sizes than the
    source's defaults: the config rewritten as any key holder could."""
    from strongroom.storage.local import LocalBackend

    repo = open_local_repository(initialized_repo)
    try:
        config = dataclasses.replace(
            repo.config, cdc_min=64 << 10, cdc_avg=128 << 10, cdc_max=512 << 10
        )
        backend = LocalBackend(initialized_repo)
        backend.delete("config")
        backend.create("config", repo.sealer.seal(config.encode(), b"config"))
    finally:
        repo.close()
    return initialized_repo


def on_source(cli: CliRunner, source: Path, *args: str) -> Any:
    result = cli("-r", str(source), *args, env={"STRONGROOM_PASSWORD": SOURCE_PASSWORD})
    assert result.rc == 0, result.err
    return result


def copy(cli: CliRunner, source: Path, *args: str) -> dict[str, Any]:
    result = cli(
        "copy", "--from-repo", str(source), "--json", *args,
        env={"STRONGROOM_FROM_PASSWORD": SOURCE_PASSWORD},
    )  # fmt: skip
    assert result.rc == 0, result.err
    return result.summary()


def test_copy_files_points_restore_equal_and_idempotent(
    tmp_path: Path, cli: CliRunner, source: Path, target: Path
) -> None:
    src = tmp_path / "src"
    make_small_tree(src)
    write_file(src / "big.bin", random_bytes(3 << 20, 7))
    os.link(src / "a.txt", src / "a-link")
    os.symlink("a.txt", src / "a-sym")
    first = on_source(cli, source, "backup", str(src), "--json").summary()["point_id"]
    write_file(src / "sub" / "new.txt", b"one more file\n")
    second = on_source(cli, source, "backup", str(src), "--tag", "t", "--json").summary()[
        "point_id"
    ]

    one = copy(cli, source, first[:8])
    assert (one["points_copied"], one["points_skipped"]) == (1, 0)
    assert one["bytes_read"] >= 3 << 20 and one["data_added"] >= 3 << 20
    both = copy(cli, source)  # the second point: a mostly unchanged tree
    assert (both["points_copied"], both["points_skipped"]) == (1, 1)
    assert both["data_added"] < 200_000, both
    # an earlier run's copy of the parent is learnt: only the new file is read
    assert both["bytes_read"] == len(b"one more file\n"), both
    assert both["files_reused"] >= 3, both  # unchanged folders are mapped whole
    again = copy(cli, source)
    assert (again["points_copied"], again["points_skipped"], again["data_added"]) == (0, 2, 0)

    points = {p["id"]: p for p in cli("snapshots", "--json").json()}
    by_source = {p["source_id"]: p["target_id"] for p in again["points"]}
    assert set(by_source) == {first, second} and set(by_source.values()) == set(points)
    copied = points[by_source[second]]
    assert copied["tags"] == ["t"] and copied["paths"] == [str(src)]
    repo = open_local_repository(target)
    doc = repo.load_point(by_source[second])
    repo.close()
    assert doc["original"] == second and doc["copied_from"]["point"] == second
    assert doc["parent"] == by_source[first]

    restored = tmp_path / "restored"
    assert cli("restore", by_source[second], "--target", str(restored)).rc == 0
    assert walk_differences(src, restored / str(src).lstrip("/"), check_atime=False) == []
    check = cli("check", "--read-data")
    assert check.rc == 0, check.err

    # Copying back into the source recognises its own points.
    back = on_source(
        cli, source, "copy", "--from-repo", str(target), "--json",
        "--from-password-file", str(_password_file(tmp_path, PASSWORD)),
    ).summary()  # fmt: skip
    assert (back["points_copied"], back["points_skipped"]) == (0, 2)


def _password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "password"
    path.write_text(password + "\n")
    return path


def test_copy_filters_dry_run_and_wrong_password(
    tmp_path: Path, cli: CliRunner, source: Path, target: Path
) -> None:
    src = tmp_path / "src"
    write_file(src / "f", b"data")
    on_source(cli, source, "backup", str(src), "--host", "web")
    on_source(cli, source, "backup", str(src), "--host", "db", "--tag", "keep")

    dry = copy(cli, source, "--dry-run")
    assert (dry["points_would_copy"], dry["points_copied"]) == (2, 0)
    assert cli("snapshots", "--json").json() == []
    web = copy(cli, source, "--host", "web")
    assert web["points_copied"] == 1 and web["points"][0]["host"] == "web"
    kept = cli(
        "copy", "--tag", "keep", "--json", "--from-password-command",
        f"cat {_password_file(tmp_path, SOURCE_PASSWORD)}",
        env={"STRONGROOM_FROM_REPO": str(source)},
    )  # fmt: skip
    assert kept.rc == 0, kept.err
    assert kept.summary()["points_copied"] == 1 and kept.summary()["points"][0]["host"] == "db"
    assert sorted(p["host"] for p in cli("snapshots", "--json").json()) == ["db", "web"]

    wrong = cli(
        "copy", "--from-repo", str(source), env={"STRONGROOM_FROM_PASSWORD": "not the password"}
    )
    assert wrong.rc == 12
    assert_one_line_error(wrong, "source repository", "wrong password", only=True)
    no_password = cli("copy", "--from-repo", str(source))
    assert no_password.rc == 2
    assert_one_line_error(no_password, "no password given for the source repository", only=True)
    missing = cli("copy")
    assert missing.rc == 2 and "--from-repo" in missing.err


def test_copy_image_point_byte_exact_and_refusal(
    tmp_path: Path, cli: CliRunner, source: Path, target: Path
) -> None:
    disk = tmp_path / "disk.raw"
    data = bytearray(random_bytes(5 << 20, 3))
    data[1 << 20 : 3 << 20] = bytes(2 << 20)  # holes
    data += b"tail"  # a short last block
    disk.write_bytes(bytes(data))
    image = on_source(cli, source, "backup", "--image", str(disk), "--json").summary()["point_id"]
    # A point of continuous protection is refused, by name; the others are copied.
    repo = open_local_repository(source, SOURCE_PASSWORD)
    doc = repo.load_point(image)
    doc.pop("id")
    doc["summary"]["protect"] = {"name": "guarded"}
    doc["time"] = "2026-01-01T00:00:00+00:00"
    protected = repo.save_point(doc)
    repo.close()

    result = cli(
        "copy", "--from-repo", str(source), "--json",
        env={"STRONGROOM_FROM_PASSWORD": SOURCE_PASSWORD},
    )  # fmt: skip
    assert result.rc == 3, result.err
    (warning,) = [v for v in result.lines() if v["message_type"] == "warning"]
    assert f"point {protected[:8]}" in warning["message"]
    assert "continuous protection" in warning["message"]
    summary = result.summary()
    assert (summary["points_copied"], summary["points_refused"]) == (1, 1)
    (copied,) = [p["target_id"] for p in summary["points"] if p["status"] == "copied"]

    out = tmp_path / "restored.raw"
    restored = cli("restore", copied, "--target", str(out))
    assert restored.rc == 0, restored.err
    assert out.read_bytes() == bytes(data)

    # An incremental image point, copied in a later run: only its changed block is read.
    data[4 << 20 : (4 << 20) + 5] = b"fresh"
    disk.write_bytes(bytes(data))
    on_source(cli, source, "backup", "--image", str(disk), "--changed-since", "compare")
    again = cli(
        "copy", "--from-repo", str(source), "--json",
        env={"STRONGROOM_FROM_PASSWORD": SOURCE_PASSWORD},
    )  # fmt: skip
    assert again.rc == 3, again.err  # the protected point is refused again
    later = again.summary()
    assert later["points_copied"] == 1 and later["bytes_read"] == 1 << 20, later
    newest = next(p["target_id"] for p in later["points"] if p["status"] == "copied")
    assert cli("restore", newest, "--target", str(out)).rc == 0
    assert out.read_bytes() == bytes(data)
    assert cli("check", "--read-data").rc == 0


def test_copy_failing_midway_leaves_the_target_checkable(
    tmp_path: Path, cli: CliRunner, source: Path, target: Path
) -> None:
    src = tmp_path / "src"
    write_file(src / "small", b"small\n")
    first = on_source(cli, source, "backup", str(src), "--json").summary()["point_id"]
    packs_before = set((source / "data").glob("*/*"))
    write_file(src / "big.bin", random_bytes(2 << 20, 9))
    on_source(cli, source, "backup", str(src))
    for pack in set((source / "data").glob("*/*")) - packs_before:
        pack.unlink()  # the second point's data is lost in the source

    result = cli(
        "copy", "--from-repo", str(source), env={"STRONGROOM_FROM_PASSWORD": SOURCE_PASSWORD}
    )
    assert result.rc == 1
    assert_one_line_error(result, "copying point", "not found")
    (only,) = cli("snapshots", "--json").json()  # the first point, complete
    repo = open_local_repository(target)
    assert repo.load_point(only["id"])["copied_from"]["point"] == first
    repo.close()
    check = cli("check", "--read-data")
    assert check.rc == 0, check.err


def test_copy_into_a_clone_with_another_password_copies_chunks_by_id(
    tmp_path: Path, cli: CliRunner, source: Path, repo_path: Path
) -> None:
    """A clone of the source (same master secret, another password): the fast
    path copies chunks by id, nothing is re-cut, manifests stay byte-equal."""
    src = tmp_path / "src"
    write_file(src / "big.bin", random_bytes(2 << 20, 4))
    on_source(cli, source, "backup", str(src))
    shutil.copytree(source, repo_path)
    clone = open_local_repository(repo_path, SOURCE_PASSWORD)
    clone.change_password(PASSWORD.encode())
    clone.close()
    write_file(src / "more.bin", random_bytes(1 << 20, 5))
    newest = on_source(cli, source, "backup", str(src), "--json").summary()["point_id"]

    done = copy(cli, source)
    assert (done["points_copied"], done["points_skipped"], done["same_keys"]) == (1, 1, True)
    assert done["bytes_read"] == 1 << 20  # only the new file's chunks
    (copied,) = [p for p in done["points"] if p["status"] == "copied"]
    points = {p["id"]: p for p in cli("snapshots", "--json").json()}
    source_points = {p["id"]: p for p in on_source(cli, source, "snapshots", "--json").json()}
    assert points[copied["target_id"]]["tree"] == source_points[newest]["tree"]
    restored = tmp_path / "restored"
    assert cli("restore", copied["target_id"], "--target", str(restored)).rc == 0
    assert walk_differences(src, restored / str(src).lstrip("/"), check_atime=False) == []
    assert cli("check", "--read-data").rc == 0


def test_copy_from_an_sftp_source(tmp_path: Path, cli: CliRunner, target: Path) -> None:
    from tests.helpers.sshd import HOST_ALIAS, available, ssh_server

    if available() is not None:
        pytest.skip(str(available()))
    src = tmp_path / "src"
    make_small_tree(src)
    with ssh_server(tmp_path / "sshd") as server:
        location = f"sftp://{HOST_ALIAS}/{server.folder / 'repo'}"
        env = {**server.env, "STRONGROOM_PASSWORD": SOURCE_PASSWORD}
        assert cli("-r", location, "init", env=env).rc == 0
        assert cli("-r", location, "backup", str(src), env=env).rc == 0
        result = cli(
            "copy", "--from-repo", location, "--json",
            env={**server.env, "STRONGROOM_FROM_PASSWORD": SOURCE_PASSWORD},
        )  # fmt: skip
    assert result.rc == 0, result.err
    (point,) = result.summary()["points"]
    restored = tmp_path / "restored"
    assert cli("restore", point["target_id"], "--target", str(restored)).rc == 0
    assert walk_differences(src, restored / str(src).lstrip("/"), check_atime=False) == []


def test_copy_killed_midway_leaves_the_target_checkable_and_a_rerun_completes(
    tmp_path: Path, cli: CliRunner, cli_env: dict[str, str], source: Path, target: Path
) -> None:
    """SIGKILL (no cleanup at all) while the copy reads its source's packs: the
    target checks, and the next run copies what is missing."""
    src = tmp_path / "src"
    write_file(src / "small", b"small\n")
    on_source(cli, source, "backup", str(src))
    write_file(src / "big.bin", random_bytes(20 << 20, 11))
    on_source(cli, source, "backup", str(src))
    env = {**cli_env, "STRONGROOM_FROM_PASSWORD": SOURCE_PASSWORD}
    args = ["copy", "--from-repo", str(source)]
    kill_at_open(f"{source}/data/", 4, args, env, tmp_path / "paused")
    assert len(cli("snapshots", "--json").json()) < 2
    assert cli("unlock").rc == 0  # the killed copy's lock (stale, or removed)
    check = cli("check")
    assert check.rc == 0, check.err

    done = copy(cli, source)
    assert done["points_copied"] + done["points_skipped"] == 2
    restored = tmp_path / "restored"
    assert cli("restore", "latest", "--target", str(restored)).rc == 0
    assert walk_differences(src, restored / str(src).lstrip("/"), check_atime=False) == []
    assert cli("check", "--read-data").rc == 0


def test_copy_vm_point_restores_every_disk(
    tmp_path: Path, cli: CliRunner, source: Path, target: Path
) -> None:
    """A VM point (made here in process: a VM backup needs a running QEMU) is
    copied disk by disk; `restore --vm` from the target gives every disk back."""
    from datetime import UTC, datetime

    from strongroom.model.blockmap import BlockMap
    from strongroom.model.kinds import PointKind
    from strongroom.model.vm import VmDisk, VmManifest
    from strongroom.pipeline.blockmaps import save_block_map, save_vm_manifest
    from strongroom.repository.format import BlobType
    from strongroom.services.recording import record_point

    block = 64 << 10
    disks, contents = [], {}
    repo = open_local_repository(source, SOURCE_PASSWORD)
    try:
        for name, seed in (("vda", 1), ("vdb", 2)):
            raw = bytearray(random_bytes(4 * block + 100, seed))
            raw[block : 2 * block] = bytes(block)
            block_map = BlockMap.empty(len(raw), block)
            for b in (0, 2, 3, 4):
                piece = bytes(raw[b * block : (b + 1) * block])
                block_map.assign(b, repo.put_chunk(BlobType.DATA, piece))
            root = save_block_map(repo, block_map)
            disks.append(VmDisk(name, len(raw), block, root.hex(), {"size": len(raw)}))
            contents[name] = bytes(raw)
        manifest = save_vm_manifest(repo, VmManifest("guest", disks))
        repo.flush()
        record_point(
            repo, kind=PointKind.VM, time=datetime.now(UTC), host="prod", paths=["vm:guest"],
            tree=manifest.hex(), parent=None, summary={"disks": [d.summary for d in disks]},
        )  # fmt: skip
    finally:
        repo.close()

    done = copy(cli, source)
    assert done["points_copied"] == 1 and done["points"][0]["kind"] == "vm"
    out = tmp_path / "disks"
    restored = cli("restore", "latest", "--vm", "guest", "--target", str(out))
    assert restored.rc == 0, restored.err
    for name, data in contents.items():
        assert (out / f"{name}.raw").read_bytes() == data
    assert cli("check", "--read-data").rc == 0


@pytest.mark.root
@needs_root
def test_copy_from_a_source_it_cannot_write_reads_it_without_a_lock(
    tmp_path: Path, cli: CliRunner, source: Path, target: Path
) -> None:
    """A source whose locks folder is immutable (`chattr +i`: not even root writes
    there, as on read-only storage): copied without a lock, with a warning."""
    src = tmp_path / "src"
    make_small_tree(src)
    on_source(cli, source, "backup", str(src))
    locks = source / "locks"
    locks.mkdir(exist_ok=True)
    if subprocess.run(["chattr", "+i", str(locks)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        result = cli(
            "copy", "--from-repo", str(source), "--json",
            env={"STRONGROOM_FROM_PASSWORD": SOURCE_PASSWORD},
        )  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", str(locks)], check=True)
    assert result.rc == 0, result.err
    assert result.summary()["points_copied"] == 1
    (warning,) = [v for v in result.lines() if v["message_type"] == "warning"]
    assert "no lock could be taken" in warning["message"]
    assert list(locks.iterdir()) == []
    restored = tmp_path / "restored"
    assert cli("restore", "latest", "--target", str(restored)).rc == 0
    assert walk_differences(src, restored / str(src).lstrip("/"), check_atime=False) == []


def test_limit_download_holds_the_source_reads(
    tmp_path: Path, cli: CliRunner, source: Path, target: Path
) -> None:
    """3 MiB of incompressible packs read from the source at 4 MiB/s: 0.75 s at least
    (less the bucket's 0.25 s burst)."""
    src = tmp_path / "src"
    write_file(src / "random.bin", random_bytes(3 << 20, 11))
    on_source(cli, source, "backup", str(src))
    t0 = time.monotonic()
    result = cli(
        "--limit-download", "4M", "copy", "--from-repo", str(source), "--json",
        env={"STRONGROOM_FROM_PASSWORD": SOURCE_PASSWORD},
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert result.rc == 0, result.err
    assert result.summary()["points_copied"] == 1
    assert elapsed >= 0.5
