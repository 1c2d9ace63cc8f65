"""Zero runs inside chunks come back as holes: a sparse file stays sparse."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import CliRunner

MiB = 1 << 20


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_zero_runs_inside_chunks_are_holes(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "tail.img", "wb") as f:  # 12 MiB of holes, 3 bytes at the end
        f.truncate(12 * MiB)
        f.seek(12 * MiB - 3)
        f.write(b"end")
    middle = os.urandom(64 << 10) + bytes(MiB) + os.urandom(64 << 10)
    (src / "middle.bin").write_bytes(middle)  # zeros between data, in one chunk or a few
    assert cli("backup", str(src)).rc == 0
    target = tmp_path / "t"
    result = cli("restore", "latest", "--target", str(target))
    assert result.rc == 0, result.err
    restored = target / str(src).lstrip("/")
    tail = restored / "tail.img"
    with open(tail, "rb") as f:
        assert os.path.getsize(tail) == 12 * MiB
        f.seek(12 * MiB - 3)
        assert f.read() == b"end"
        assert os.lseek(f.fileno(), 0, os.SEEK_DATA) >= 12 * MiB - (64 << 10)
        f.seek(0)
        assert f.read(12 * MiB - 3) == bytes(12 * MiB - 3)
    # The last chunk (up to 4 MiB, at least 256 KiB) was written densely before.
    assert allocated(tail) <= 64 << 10
    got = restored / "middle.bin"
    assert got.read_bytes() == middle
    assert allocated(got) <= len(middle) - MiB + (16 << 10)
    with open(got, "rb") as f:
        hole = os.lseek(f.fileno(), 0, os.SEEK_HOLE)
        assert (64 << 10) <= hole < (64 << 10) + 4096
