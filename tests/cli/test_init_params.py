"""`init --chunker-params` and `--block-size`: a repository with its own geometry
(as borg's --chunker-params), used by backups and images, refused in one line when
unusable; copying between repositories of different geometry re-cuts and restores
equal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import CliRunner, open_local_repository
from tests.helpers.cli import PASSWORD, assert_one_line_error
from tests.helpers.tree import random_bytes, write_file


def test_a_repository_with_its_own_chunker_and_block_sizes(
    tmp_path: Path, cli: CliRunner, repo_path: Path
) -> None:
    made = cli("init", "--chunker-params", "64K,128K,512K", "--block-size", "64K")
    assert made.rc == 0, made.err
    repo = open_local_repository(repo_path)
    try:
        config = repo.config
        assert (config.cdc_min, config.cdc_avg, config.cdc_max) == (64 << 10, 128 << 10, 512 << 10)
        assert config.block_size == 64 << 10
    finally:
        repo.close()
    src = tmp_path / "src"
    data = random_bytes(4 << 20, 3)
    write_file(src / "big.bin", data)
    files = cli("backup", str(src), "--json").summary()
    assert files["chunks_new"] >= 8  # at most 512 KiB each: the default cuts ~4
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(1 << 20))
    imaged = cli("backup", "--image", str(image), "--json").summary()
    assert imaged["blocks"] == 16, imaged  # 1 MiB in blocks of 64 KiB
    restored = tmp_path / "restored.raw"
    assert cli("restore", "latest", "--target", str(restored)).rc == 0
    assert restored.read_bytes() == image.read_bytes()
    shown = cli("snapshots", "--json").json()[-1]
    assert shown["kind"] == "block"
    assert cli("check", "--read-data").rc == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--chunker-params", "1M,512K,4M"], "min <= avg <= max"),
        (["--chunker-params", "256K,1M"], "three sizes"),
        (["--chunker-params", "16,1M,4M"], "minimum 16"),
        (["--chunker-params", "256K,1M,64M"], "maximum"),
        (["--block-size", "3000"], "block size"),
        (["--block-size", "3M"], "power of 2"),
    ],
)
def test_unusable_sizes_are_refused_in_one_line(
    cli: CliRunner, repo_path: Path, args: list[str], words: str
) -> None:
    result = cli("init", *args)
    assert result.rc == 2
    assert_one_line_error(result, words)
    assert not repo_path.exists() or not (repo_path / "config").exists()


def test_copy_into_a_repository_of_other_sizes_restores_equal(
    tmp_path: Path, cli: CliRunner, repo_path: Path
) -> None:
    src = tmp_path / "src"
    write_file(src / "big.bin", random_bytes(3 << 20, 9))
    write_file(src / "small.txt", b"small\n")
    assert cli("init").rc == 0
    assert cli("backup", str(src)).rc == 0
    other = tmp_path / "other"
    env = {"STRONGROOM_REPO": str(other), "STRONGROOM_FROM_PASSWORD": PASSWORD}
    assert cli("init", "--chunker-params", "64K,128K,256K", env=env).rc == 0
    done = cli("copy", "--from-repo", str(repo_path), "--json", env=env)
    assert done.rc == 0, done.err
    assert done.summary()["points_copied"] == 1 and done.summary()["chunks_added"] >= 12
    out = tmp_path / "out"
    assert cli("restore", "latest", "--target", str(out), env=env).rc == 0
    assert (out / str(src).lstrip("/") / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert cli("check", "--read-data", env=env).rc == 0
