"""A synthetic OS seed, an application seed and a machine built from them.

The machine is the two seed trees copied with their metadata (as a package
manager installs files with the package's mtimes), then changed so that
every class of docs/seeds.md occurs: identical files, symlinks, a fifo and
an empty file; a modified configuration file, a modified binary (a few bytes
in the middle of a multi-chunk file), a changed symlink and a file turned
into a symlink; files moved elsewhere (one a hard link of a seed file); the
machine's own files under /home and /srv (hard links, an empty file);
deleted seed files (single files and a whole directory); a file that two
seeds hold. `expected` is the classification a backup must record, file by
file; `lacks` the seed files the machine lacks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.tree import compressible_bytes, random_bytes, write_file

KiB = 1024
MiB = 1024 * KiB
SEED_MTIME_NS = 1_700_000_000_123_456_789


@dataclass
class SeededMachine:
    os_seed: Path
    app_seed: Path
    stranger_seed: Path  # fits nothing on the machine
    machine: Path
    # machine-relative path -> (class word, seed names in order, moved seed path)
    expected: dict[str, tuple[str, tuple[str, ...], str]] = field(default_factory=dict)
    lacks: set[tuple[str, str]] = field(default_factory=set)  # (seed name, seed path)
    own_bytes: int = 0
    modified_bytes: int = 0

    def files_of(self, word: str) -> set[str]:
        return {p for p, (w, _, _) in self.expected.items() if w == word}


def _seed_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        write_file(root / rel, data, 0o755 if "/bin/" in rel else 0o644)


def _stamp(root: Path) -> None:
    """A package's mtimes: the same fixed instant on every entry."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(
                os.path.join(dirpath, name),
                ns=(SEED_MTIME_NS, SEED_MTIME_NS),
                follow_symlinks=False,
            )


def build(base: Path) -> SeededMachine:
    os_files = {
        "etc/hostname": b"seedhost\n",
        "etc/app.conf": b"# app configuration\nlisten = 80\nworkers = 4\n" * 20,
        "etc/shared.conf": b"shared = yes\n" * 10,
        "etc/fstab": b"proc /proc proc defaults 0 0\n",
        "etc/motd": b"welcome\n",
        "etc/issue": b"Debian GNU/Linux\n",
        "usr/bin/tool1": random_bytes(3 * MiB, 1),
        "usr/bin/tool2": random_bytes(6 * MiB, 2),
        "usr/lib/libx.so.1": random_bytes(300 * KiB, 3),
        "usr/share/doc/a.txt": compressible_bytes(40 * KiB, 4),
        "usr/share/doc/b.txt": compressible_bytes(30 * KiB, 5),
        "usr/share/doc/c.txt": compressible_bytes(50 * KiB, 6),
        "usr/share/empty": b"",
        "usr/share/gone/x1": b"gone one\n",
        "usr/share/gone/x2": b"gone two\n",
    }
    app_files = {
        "opt/app/bin/app": random_bytes(1 * MiB, 7),
        "opt/app/share/data.bin": random_bytes(2 * MiB, 8),
        "opt/app/readme": b"read me\n",
        "opt/app/conf.ini": b"[main]\nmode = default\n",
        "etc/shared.conf": os_files["etc/shared.conf"],
        "etc/issue": b"AppOS\n",  # the OS's version is on the machine
    }
    stranger_files = {f"opt/other/file{i}": b"other %d\n" % i for i in range(10)}
    m = SeededMachine(base / "seed-os", base / "seed-app", base / "seed-other", base / "machine")
    _seed_tree(m.os_seed, os_files)
    os.symlink("libx.so.1", m.os_seed / "usr/lib/libx.so")
    os.symlink("libx.so.1", m.os_seed / "usr/lib/current")
    os.symlink("usr/bin", m.os_seed / "bin")
    os.mkfifo(m.os_seed / "usr/share/fifo")
    _seed_tree(m.app_seed, app_files)
    _seed_tree(m.stranger_seed, stranger_files)
    for tree in (m.os_seed, m.app_seed, m.stranger_seed):
        _stamp(tree)

    # The machine: both seeds installed with their metadata...
    m.machine.mkdir()
    for tree in (m.os_seed, m.app_seed):
        subprocess.run(["cp", "-a", f"{tree}/.", f"{m.machine}/"], check=True)
    shutil.copy2(m.os_seed / "etc/issue", m.machine / "etc/issue")
    mc = m.machine
    # ... then changed.
    (mc / "etc/hostname").write_bytes(b"machine-7\n")
    (mc / "etc/app.conf").write_bytes(os_files["etc/app.conf"].replace(b"80", b"8080"))
    (mc / "etc/motd").unlink()
    os.symlink("/run/motd", mc / "etc/motd")
    tool2 = bytearray(os_files["usr/bin/tool2"])
    tool2[3 * MiB : 3 * MiB + 100] = random_bytes(100, 9)
    (mc / "usr/bin/tool2").write_bytes(bytes(tool2))
    (mc / "usr/lib/current").unlink()
    os.symlink("libx.so.2", mc / "usr/lib/current")
    (mc / "opt/app/conf.ini").write_bytes(b"[main]\nmode = custom\n")
    os.link(mc / "usr/bin/tool1", mc / "usr/bin/tool1-alias")
    write_file(mc / "srv/archive/c.txt", b"")
    os.replace(mc / "usr/share/doc/c.txt", mc / "srv/archive/c.txt")
    (mc / "usr/share/doc/b.txt").unlink()
    (mc / "opt/app/readme").unlink()
    shutil.rmtree(mc / "usr/share/gone")
    own = {
        "home/ann/notes.txt": b"my notes\n" * 100,
        "home/ann/big.bin": random_bytes(1536 * KiB, 10),
        "home/ann/empty": b"",
        "home/ann/hl1": random_bytes(20 * KiB, 11),
        "srv/www/index.html": b"<html>machine</html>\n",
        "srv/data.bin": random_bytes(3 * MiB, 12),
    }
    for rel, data in own.items():
        write_file(mc / rel, data)
    os.link(mc / "home/ann/hl1", mc / "home/ann/hl2")
    write_file(mc / "home/ann/app.conf.orig", os_files["etc/app.conf"])  # a copy: moved

    ident = "identical"
    m.expected = {
        "bin": (ident, ("os",), ""),
        "etc": (ident, ("app", "os"), ""),
        "etc/issue": (ident, ("os", "app"), ""),
        "etc/hostname": ("modified", ("os",), ""),
        "etc/app.conf": ("modified", ("os",), ""),
        "etc/shared.conf": (ident, ("app", "os"), ""),
        "etc/fstab": (ident, ("os",), ""),
        "etc/motd": ("modified", ("os",), ""),
        "usr": (ident, ("os",), ""),
        "usr/bin": (ident, ("os",), ""),
        "usr/bin/tool1": (ident, ("os",), ""),
        "usr/bin/tool1-alias": ("moved", ("os",), "usr/bin/tool1"),
        "usr/bin/tool2": ("modified", ("os",), ""),
        "usr/lib": (ident, ("os",), ""),
        "usr/lib/libx.so.1": (ident, ("os",), ""),
        "usr/lib/libx.so": (ident, ("os",), ""),
        "usr/lib/current": ("modified", ("os",), ""),
        "usr/share": (ident, ("os",), ""),
        "usr/share/doc": (ident, ("os",), ""),
        "usr/share/doc/a.txt": (ident, ("os",), ""),
        "usr/share/empty": (ident, ("os",), ""),
        "usr/share/fifo": (ident, ("os",), ""),
        "opt": (ident, ("app",), ""),
        "opt/app": (ident, ("app",), ""),
        "opt/app/bin": (ident, ("app",), ""),
        "opt/app/bin/app": (ident, ("app",), ""),
        "opt/app/share": (ident, ("app",), ""),
        "opt/app/share/data.bin": (ident, ("app",), ""),
        "opt/app/conf.ini": ("modified", ("app",), ""),
        "srv": ("own", (), ""),
        "srv/archive": ("own", (), ""),
        "srv/archive/c.txt": ("moved", ("os",), "usr/share/doc/c.txt"),
        "srv/www": ("own", (), ""),
        "srv/www/index.html": ("own", (), ""),
        "srv/data.bin": ("own", (), ""),
        "home": ("own", (), ""),
        "home/ann": ("own", (), ""),
        "home/ann/app.conf.orig": ("moved", ("os",), "etc/app.conf"),
        **{rel: ("own", (), "") for rel in own},
        "home/ann/hl2": ("own", (), ""),
    }
    m.lacks = {
        ("os", "usr/share/doc/b.txt"),
        ("os", "usr/share/doc/c.txt"),
        ("os", "usr/share/gone/x1"),
        ("os", "usr/share/gone/x2"),
        ("app", "opt/app/readme"),
    }
    m.own_bytes = sum(len(d) for d in own.values()) + len(own["home/ann/hl1"])
    m.modified_bytes = sum(
        (mc / rel).stat().st_size
        for rel in ("etc/hostname", "etc/app.conf", "usr/bin/tool2", "opt/app/conf.ini")
    )
    return m
