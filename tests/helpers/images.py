"""Block image test helpers: qemu tools, images written and compared, strongroom's CLI.

Every check compares what strongroom restored with what the disk held at the
backup's instant (`qemu-img compare`, byte for byte), and holds the trackers
to the blocks the test wrote: a tracker that reads more than it must is slow,
one that reads less loses data. Fixtures are in tests/images/conftest.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliRunner
from tests.helpers.cli import CliResult

KiB = 1024
MiB = 1024 * KiB
BS = 64 * KiB  # --block-size of most tests: many blocks in small images
START_TIMEOUT = 20.0


def needs(*tools: str) -> pytest.MarkDecorator:
    """Skip unless every tool is installed."""
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


QEMU = needs("qemu-img", "qemu-io", "qemu-nbd")


# --- running tools -----------------------------------------------------------


def run(*args: object, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(a) for a in args)} failed ({done.returncode}): "
            f"{done.stderr or done.stdout}"
        )
    return done


def qemu_io(target: object, *commands: str, fmt: str = "qcow2") -> None:
    """Run qemu-io commands on an image (or, with fmt="raw", an NBD URI)."""
    args: list[object] = ["qemu-io", "-f", fmt]
    for command in commands:
        args += ["-c", command]
    done = run(*args, target)
    assert "failed" not in done.stdout + done.stderr, done.stdout + done.stderr


def image_info(path: object) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(run("qemu-img", "info", "-U", "--output=json", path).stdout)
    return info


def file_bitmaps(path: object) -> list[dict[str, Any]]:
    """The persistent dirty bitmaps of a qcow2 file, as `qemu-img info` shows them."""
    data = (image_info(path).get("format-specific") or {}).get("data") or {}
    return list(data.get("bitmaps") or [])


def ours(names: Iterable[str], prefix: str = "strongroom-") -> list[str]:
    return sorted(n for n in names if n.startswith(prefix))


def virtual_size(path: object, fmt: str) -> int:
    out = run("qemu-img", "info", "-U", "-f", fmt, "--output=json", path).stdout
    return int(json.loads(out)["virtual-size"])


def image_difference(a: object, b: object, fmt_a: str = "raw", fmt_b: str = "raw") -> str | None:
    """None when the two disks read the same (and have the same size), else why not."""
    size_a, size_b = virtual_size(a, fmt_a), virtual_size(b, fmt_b)
    if size_a != size_b:
        return f"sizes differ: {size_a} != {size_b}"
    done = run("qemu-img", "compare", "-U", "-f", fmt_a, "-F", fmt_b, a, b, check=False)
    if done.returncode == 0:
        return None
    if done.returncode == 1:
        return done.stdout.strip()
    raise AssertionError(f"qemu-img compare {a} {b}: {done.stderr.strip()}")


def assert_same_image(a: object, b: object, fmt_a: str = "raw", fmt_b: str = "raw") -> None:
    diff = image_difference(a, b, fmt_a, fmt_b)
    assert diff is None, f"{b} is not {a}: {diff}"


def to_raw(src: object, dest: Path, fmt: str = "qcow2") -> Path:
    """What a disk reads now, as a raw file (works while the image is in use)."""
    run("qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", src, dest)
    return dest


def touched(writes: Iterable[tuple[int, int]], block_size: int = BS) -> set[int]:
    """Blocks that (offset, length) writes touch."""
    out: set[int] = set()
    for offset, length in writes:
        out.update(range(offset // block_size, (offset + length - 1) // block_size + 1))
    return out


def write_random(path: Path, offset: int, length: int, seed: int) -> bytes:
    """Overwrite part of a raw file with random bytes (the file keeps its other bytes)."""
    data = random.Random(seed).randbytes(length)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
    return data


def sparse_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


# --- strongroom --------------------------------------------------------------


def backup(cli: CliRunner, source: object, *args: str) -> dict[str, Any]:
    """`strongroom backup --image SOURCE --json ARGS`; its summary (must succeed)."""
    result = cli("backup", "--image", str(source), "--json", *args)
    assert result.rc == 0, result.err
    assert "Traceback" not in result.err, result.err
    return result.summary()


def restore(cli: CliRunner, point: str, target: object, *args: str) -> CliResult:
    result = cli("restore", point, "--target", str(target), "--json", *args)
    assert result.rc == 0, result.err
    return result


def restore_and_compare(
    cli: CliRunner, point: str, expected: object, tmp: Path, fmt: str = "raw"
) -> Path:
    """Restore `point` to a raw file below `tmp` and compare it with `expected`."""
    target = tmp / f"restored-{point[:12]}.raw"
    restore(cli, point, target)
    assert_same_image(expected, target, fmt, "raw")
    return target


def list_points(cli: CliRunner) -> list[dict[str, Any]]:
    result = cli("snapshots", "--json")
    assert result.rc == 0, result.err
    points: list[dict[str, Any]] = result.json()
    return points


def check_repository(cli: CliRunner, read_data: bool = True) -> None:
    result = cli("check", *(["--read-data"] if read_data else []))
    assert result.rc == 0, f"check failed:\n{result.out}\n{result.err}"
    assert "Traceback" not in result.err
