"""Restore and `check --read-data` with `--jobs`: the worker count changes the
speed, never the outcome (bytes, metadata, damage reported, exit codes)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from strongroom.model.point import RecoveryPoint
from strongroom.repository.format import BlobType, pack_name
from strongroom.repository.repo import Repository
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.maintenance import check
from strongroom.services.restore import restore_files
from tests.conftest import CliRunner, init_local_repository, open_local_repository
from tests.helpers.cli import strongroom_command
from tests.helpers.compare import walk_differences
from tests.helpers.tree import random_bytes, write_file

MiB = 1 << 20


def make_mixed_tree(root: Path) -> None:
    """Tiny files (more than one batch in one folder), multi-chunk and sparse
    files, hard links inside and across folders, xattrs, modes."""
    for i in range(150):
        write_file(root / "many" / f"f{i:03d}", random_bytes(i * 37, i), 0o640 if i % 3 else None)
    write_file(root / "many" / "empty", b"")
    write_file(root / "big" / "random.bin", random_bytes(3 * MiB + 5, 1))
    write_file(root / "big" / "zeros.bin", bytes(MiB))
    sparse = root / "big" / "sparse.img"
    with open(sparse, "wb") as f:
        f.truncate(12 * MiB)
        f.seek(5 * MiB)
        f.write(random_bytes(64 << 10, 2))
    write_file(root / "links" / "a", b"linked\n" * 100)
    os.link(root / "links" / "a", root / "links" / "b")
    os.link(root / "links" / "a", root / "many" / "c")
    os.link(root / "big" / "random.bin", root / "links" / "random_too")
    tagged = write_file(root / "many" / "tagged", b"has xattrs\n")
    os.setxattr(tagged, "user.comment", b"kept")
    os.setxattr(root / "many", "user.on_dir", b"a folder")
    os.chmod(root / "links", 0o750)


@pytest.fixture
def mixed_point(tmp_path: Path, memory_repo: Repository) -> tuple[Path, RecoveryPoint]:
    src = tmp_path / "src"
    make_mixed_tree(src)
    point = backup_files(memory_repo, BackupRequest(paths=[str(src)])).point
    assert point is not None
    return src, point


def test_one_and_two_workers_restore_the_same_tree(
    tmp_path: Path, memory_repo: Repository, mixed_point: tuple[Path, RecoveryPoint]
) -> None:
    src, point = mixed_point
    restored = {}
    for jobs in (1, 2):
        target = tmp_path / f"t{jobs}"
        summary = restore_files(memory_repo, point, str(target), jobs=jobs)
        assert summary.damaged == [] and summary.warnings == []
        restored[jobs] = target / str(src).lstrip("/")
        assert walk_differences(src, restored[jobs], check_atime=False) == []
        sparse = restored[jobs] / "big" / "sparse.img"
        assert sparse.stat().st_blocks * 512 <= 6 * MiB  # all-zero chunks stayed holes
        a, b, c = (os.stat(restored[jobs] / p) for p in ("links/a", "links/b", "many/c"))
        assert a.st_ino == b.st_ino == c.st_ino and a.st_nlink == 3
    assert walk_differences(restored[1], restored[2], check_atime=False) == []


def test_a_damaged_chunk_is_reported_alike_by_one_and_two_workers(
    tmp_path: Path, memory_repo: Repository, mixed_point: tuple[Path, RecoveryPoint]
) -> None:
    src, point = mixed_point
    victim = memory_repo.chunk_id((src / "many" / "f100").read_bytes())
    loc = memory_repo.locate(victim)
    name = pack_name(loc.pack.hex())
    blob = bytearray(memory_repo.backend.get(name))
    blob[loc.offset + loc.length // 2] ^= 0x40
    memory_repo.backend.delete(name)
    memory_repo.backend.put(name, bytes(blob))
    outcomes = []
    for jobs in (1, 2):
        summary = restore_files(memory_repo, point, str(tmp_path / f"t{jobs}"), jobs=jobs)
        outcomes.append((summary.damaged, summary.warnings, summary.files))
    assert outcomes[0] == outcomes[1]
    damaged, warnings, _ = outcomes[0]
    assert damaged == [f"{src}/many/f100"]
    assert len(warnings) == 1 and "failed authentication" in warnings[0]


def _corrupt_one_chunk(repo_path: Path) -> tuple[int, str]:
    """A repository of several packs with one damaged chunk; (chunks, pack hex)."""
    repo = open_local_repository(repo_path)
    try:
        ids = []
        for i in range(12):
            ids.append(repo.put_chunk(BlobType.DATA, random_bytes(200_000, i)))
            if i % 3 == 2:
                repo.flush()  # four packs
        repo.flush()
        loc = repo.locate(ids[7])
    finally:
        repo.close()
    pack = loc.pack.hex()
    path = repo_path / "data" / pack[:2] / pack
    with open(path, "r+b") as f:
        f.seek(loc.offset + 100)
        byte = f.read(1)
        f.seek(loc.offset + 100)
        f.write(bytes([byte[0] ^ 1]))
    return len(ids), pack


def test_check_read_data_reports_the_same_damage_with_any_worker_count(
    repo_path: Path, cli: CliRunner
) -> None:
    init_local_repository(repo_path)
    chunks, pack = _corrupt_one_chunk(repo_path)
    repo = open_local_repository(repo_path)
    try:
        reports = [check(repo, read_data=True, jobs=jobs).report for jobs in (1, 2, 3)]
        subset = check(repo, subset="1/1", jobs=2).report
    finally:
        repo.close()
    for r in reports:
        assert (r.errors, r.damaged_chunks) == (reports[0].errors, reports[0].damaged_chunks)
        assert (r.packs_read, r.chunks_read) == (4, chunks)
    assert any(e.startswith("chunk ") and pack[:16] in e for e in reports[0].errors)
    assert any(f"pack {pack[:16]}: content does not match" in e for e in reports[0].errors)
    one, two = (cli("check", "--read-data", f"--jobs={j}") for j in (1, 2))
    assert one.rc == two.rc == 1
    assert one.err == two.err and "failed authentication" in one.err
    assert one.out == two.out
    assert (subset.errors, subset.packs_read) == (reports[0].errors, 4)


def test_an_interrupted_restore_exits_130_and_leaves_no_worker(
    tmp_path: Path, cli_env: dict[str, str], repo_path: Path
) -> None:
    src = tmp_path / "src"
    for i in range(1500):
        write_file(src / f"d{i // 300}" / f"f{i}", random_bytes(200 + i % 500, i))
    init_local_repository(repo_path)
    repo = open_local_repository(repo_path)
    try:
        backup_files(repo, BackupRequest(paths=[str(src)]))
    finally:
        repo.close()
    target = tmp_path / "t"
    target.mkdir()
    proc = subprocess.Popen(
        [*strongroom_command(), "restore", "latest", "--target", str(target), "--jobs=2"],
        env=cli_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not any(target.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the restore finished before the signal arrived")
    assert proc.returncode == 130
    assert err.decode().strip().splitlines() == ["strongroom: error: interrupted"]
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == proc.pid]
    assert leftovers == []
    assert list((repo_path / "locks").glob("*")) == []


def _parent(proc_dir: Path) -> int:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1
