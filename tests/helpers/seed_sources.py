"""Seed sources for tests: a small machine-like tree, tar archives of it made by
GNU tar, Debian packages built by dpkg-deb, and a reader of a seed's files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from strongroom.model.tree import Node
from strongroom.repository.repo import Repository
from strongroom.services.walk import iter_tree
from tests.helpers.tree import MiB, compressible_bytes, random_bytes, write_file

CDC_MIN = 256 * 1024  # the default repository's cdc_min
MTIME_NS = 1_700_000_000_123_456_789
TAR_FLAGS = {"": [], "gz": ["--gzip"], "xz": ["--xz"], "zst": ["--zstd"], "bz2": ["--bzip2"]}


def xattrs_supported(path: Path) -> bool:
    probe = path / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def make_machine_tree(root: Path) -> dict[str, bytes]:
    """Files of every size class the chunking rules tell apart (empty, small,
    exactly cdc_min, just above, > 4 MiB random), a hard link, symlinks (one
    pointing outside), xattrs where the file system has them, odd modes and
    nanosecond mtimes. Returns {relative path: content} of the regular files."""
    root.mkdir(parents=True)
    files = {
        "etc/hostname": b"golden\n",
        "etc/empty.conf": b"",
        "usr/lib/exact.so": random_bytes(CDC_MIN, 1),
        "usr/lib/above.so": random_bytes(CDC_MIN + 1, 2),
        "usr/lib/big.so": random_bytes(5 * MiB + 77, 3),
        "usr/share/doc/readme": compressible_bytes(1 * MiB + 5, 4),
        "usr/bin/tool": b"#!/bin/sh\necho tool\n",
    }
    for rel, data in files.items():
        write_file(root / rel, data)
    os.chmod(root / "usr/bin/tool", 0o4755)
    os.link(root / "usr/lib/big.so", root / "usr/lib/big-link.so")
    files["usr/lib/big-link.so"] = files["usr/lib/big.so"]
    os.symlink("../../etc/passwd", root / "usr/lib/outside")
    os.symlink("/etc/hostname", root / "usr/lib/absolute")
    (root / "var/empty-dir").mkdir(parents=True)
    os.chmod(root / "var/empty-dir", 0o700)
    if xattrs_supported(root):
        os.setxattr(root / "etc/hostname", "user.origin", b"seed\x00\xff")
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
    return files


def gnu_tar(src: Path, out: Path, compression: str = "") -> Path:
    """`src`'s content as GNU tar writes it in POSIX format (nanosecond times,
    xattrs as SCHILY.xattr records), members named `./...`."""
    subprocess.run(
        ["tar", "--format=posix", "--xattrs", "--xattrs-include=*", "-C", str(src), "-cf",
         str(out), *TAR_FLAGS[compression], "."],
        check=True,
    )  # fmt: skip
    return out


def build_deb(
    work: Path,
    name: str,
    files: dict[str, bytes],
    version: str = "1.0-1",
    compression: str = "xz",
) -> Path:
    """A real package made by dpkg-deb from `files` ({path below /: content})."""
    root = work / f"{name}-pkg"
    for rel, data in files.items():
        write_file(root / rel, data)
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
        f"Maintainer: Test <test@example.org>\nDescription: test package {name}\n"
        " A package built for strongroom's tests.\n"
    )
    out = work / f"{name}_{version}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def seed_files(repo: Repository, tree_hex: str) -> dict[str, Node]:
    """Every entry of a seed's tree by relative path (names that are not UTF-8,
    as a mutated archive may hold, with their bytes kept as surrogates)."""
    return {
        path.decode("utf-8", "surrogateescape").lstrip("/"): node
        for path, node in iter_tree(repo, bytes.fromhex(tree_hex))
    }
