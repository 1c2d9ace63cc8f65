"""The VHD backup mode on a block source: a qcow2 disk (read through qemu-nbd) and a
raw file. Each shipped chain, flattened by libvhdi, must equal the disk at that
cycle; a cycle ships only the 64 KiB pieces whose content changed; a piece that
became zeros reads as zeros through the chain (explicit zeros hide the parent)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.protect.mirror import chain_files, flatten, vhd_layout

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
    reason="needs qemu-utils (qemu-img, qemu-io, qemu-nbd)",
)

MiB = 1 << 20


def qemu_io(image: Path, *commands: str) -> None:
    args = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        args += ["-c", command]
    subprocess.run([*args, str(image)], check=True, capture_output=True)


def as_raw(image: Path, out: Path) -> Path:
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(out)], check=True)
    return out


def protect(cli: CliRunner, source: Path, tmp: Path, *extra: str) -> dict[str, object]:
    result = cli(
        "--json", "protect", str(source), "--to", str(tmp / "dest"),
        "--state", str(tmp / "state"), *extra,
    )  # fmt: skip
    assert result.rc == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines() if line.strip()]
    summary: dict[str, object] = next(d for d in lines if d.get("message_type") == "summary")
    return summary


def assert_chain_equals(tmp: Path, name: str, disk: Path) -> None:
    flat = tmp / "flat.raw"
    size = flatten(chain_files(tmp / "dest", name), flat)
    reference = as_raw(disk, tmp / "ref.raw") if disk.suffix == ".qcow2" else disk
    assert size == os.path.getsize(reference)
    with open(flat, "rb") as a, open(reference, "rb") as b:
        while True:
            x, y = a.read(MiB), b.read(MiB)
            assert x == y, f"chain differs from the disk near offset {a.tell()}"
            if not x:
                break


def test_qcow2_cycles_ship_only_changed_pieces(cli: CliRunner, tmp_path: Path) -> None:
    disk = tmp_path / "vm.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    qemu_io(disk, "write -P 0xaa 0 3M", "write -P 0xbb 40M 1M")
    first = protect(cli, disk, tmp_path)
    assert first["cycle"] == 0 and first["kind"] == "base"
    assert first["bytes_changed"] == 4 * MiB  # only data, the holes stay out
    assert_chain_equals(tmp_path, "vm.qcow2", disk)

    # 10 KiB in one 64 KiB piece, and a 64 KiB piece zeroed over old data.
    qemu_io(disk, "write -P 0xcc 1M 10k", "write -z 40M 64k")
    second = protect(cli, disk, tmp_path)
    assert second["cycle"] == 1 and second["kind"] == "differencing"
    assert second["bytes_changed"] == 2 * 64 * 1024
    assert second["changes"] == {"pieces": 2}
    assert_chain_equals(tmp_path, "vm.qcow2", disk)  # the zeroed piece hides the parent
    layout = vhd_layout(chain_files(tmp_path / "dest", "vm.qcow2")[1])
    assert len(layout.sectors) * 512 == 2 * 64 * 1024

    again = protect(cli, disk, tmp_path)
    assert again["kind"] == "none" and again["cycle"] is None
    assert len(chain_files(tmp_path / "dest", "vm.qcow2")) == 2


def test_a_raw_file_and_a_size_change(cli: CliRunner, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(8 * MiB)
        f.seek(3 * MiB)
        f.write(os.urandom(200_000))
    protect(cli, disk, tmp_path)
    with open(disk, "r+b") as f:
        f.seek(5 * MiB + 100)
        f.write(b"x" * 1000)
    protect(cli, disk, tmp_path)
    assert_chain_equals(tmp_path, "disk.img", disk)
    with open(disk, "r+b") as f:
        f.truncate(16 * MiB)
    result = cli(
        "protect", str(disk), "--to", str(tmp_path / "dest"), "--state", str(tmp_path / "state")
    )
    assert result.rc == 1
    assert "a VHD chain keeps one size" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_block_source_into_a_repository_is_refused(cli: CliRunner, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(MiB)
    result = cli("protect", str(disk), "--to-repository", "--state", str(tmp_path / "state"))
    assert result.rc == 2
    assert "backup --image" in result.err
