"""Seeded points without the match helper: a real tree backed up as usual, its
trees rewritten with the origins a test states (`Node.origin`), and the point
recorded again with a seed record (`PointSeeds`) and a lacks chunk.

    point = seeded_point(repo, machine, [os_seed, app_seed], origins, lacks)

`origins` maps paths relative to `machine` ("usr/bin/ls") to an `Origin`;
entries not named are the machine's own. `lacks` are (seed index, seed path)
pairs. Hostile records are made with `lacks_blob` (any bytes as the lacks
chunk) and `lacks_count`, or by naming seed indexes outside `used`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from strongroom.model.kinds import PointKind
from strongroom.model.origin import FileClass, Origin, PointSeeds, UsedSeed, encode_lacks
from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import DIR, Node, encode_tree
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.recording import record_point
from strongroom.services.walk import load_tree


def used_seed(name: str, kind: str = "app", label: str = "1.0") -> UsedSeed:
    """A seed as a point names it (no seed object is needed to restore by scope)."""
    return UsedSeed(secrets.token_hex(32), name, kind, label)


def i(*seeds: int) -> Origin:
    return Origin(FileClass.IDENTICAL, seeds)


def m(*seeds: int) -> Origin:
    return Origin(FileClass.MODIFIED, seeds)


def v(seed: int, seed_path: str) -> Origin:
    return Origin(FileClass.MOVED, (seed,), seed_path.encode())


def _rewrite(
    repo: Repository, tree_id: bytes, prefix: bytes, origins: Mapping[bytes, Origin]
) -> bytes:
    """The tree `tree_id` (whose entries are at `prefix/NAME`) with origins set."""
    nodes = load_tree(repo, tree_id)
    for node in nodes:
        path = prefix + b"/" + node.name
        node.origin = origins.get(path)
        if node.type == DIR and node.subtree is not None:
            node.subtree = _rewrite(repo, node.subtree, path, origins)
    return repo.put_chunk(BlobType.TREE, encode_tree(nodes))


def seeded_point(
    repo: Repository,
    machine: Path,
    used: list[UsedSeed],
    origins: Mapping[str, Origin],
    lacks: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    *,
    lacks_blob: bytes | None = None,
    lacks_count: int | None = None,
    host: str = "machine",
) -> RecoveryPoint:
    """Back up `machine`, then record it again as a point made against `used`."""
    backed = backup_files(repo, BackupRequest(paths=[str(machine)], host=host))
    assert backed.point is not None
    base = os.fsencode(machine.resolve())
    wanted = {base + b"/" + rel.encode(): origin for rel, origin in origins.items()}
    tree = _rewrite(repo, bytes.fromhex(backed.point.tree), b"", wanted)
    blob = encode_lacks(list(lacks)) if lacks_blob is None else lacks_blob
    lacks_id = repo.put_chunk(BlobType.TREE, blob)
    repo.flush()
    counts: dict[str, dict[str, int]] = {}
    for origin in origins.values():
        entry = counts.setdefault(origin.cls.word, {"files": 0, "bytes": 0})
        entry["files"] += 1
    seeds = PointSeeds(
        used=used,
        root=str(machine.resolve()),
        lacks=lacks_id.hex(),
        lacks_count=len(lacks) if lacks_count is None else lacks_count,
        classes=counts,
    )
    point = record_point(
        repo,
        kind=PointKind.FILES,
        time=backed.point.time,
        host=host,
        paths=backed.point.paths,
        tree=tree.hex(),
        parent=None,
        summary=backed.point.summary,
        seeds=seeds,
    )
    repo.delete_point(backed.point.id)
    return point


# --- a small machine with every class --------------------------------------------

OS, NGINX, SQLITE = 0, 1, 2  # indexes into `Machine.used`


class Machine:
    """A small "machine" on disk (`root`) with an OS seed and two application
    seeds, every class, hard links across classes, xattrs, owners, a FIFO, an
    empty own directory and an empty seed directory; `origins` and `lacks`
    say what a match would have recorded. Tests state their expected lists
    themselves: this only builds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.used = [
            used_seed("debian", "os", "12"),
            used_seed("nginx-light"),
            used_seed("sqlite3"),
        ]
        self.origins: dict[str, Origin] = {}
        self.lacks: list[tuple[int, bytes]] = [
            (OS, b"usr/bin/deleted"),
            (OS, b"etc/weird\nname\\x"),
            (NGINX, b"usr/share/nginx/removed.html"),
        ]
        self._build()

    def _file(self, rel: str, data: bytes, origin: Origin | None = None, mode: int = 0o644) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, mode)
        if origin is not None:
            self.origins[rel] = origin

    def _dir(self, rel: str, origin: Origin | None = None, mode: int = 0o755) -> None:
        (self.root / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / rel, mode)
        if origin is not None:
            self.origins[rel] = origin

    def _build(self) -> None:
        r = self.root
        self._dir("etc", i(OS, NGINX))
        self._dir("etc/nginx", i(NGINX))
        self._dir("usr", i(OS, NGINX, SQLITE))
        self._dir("usr/bin", i(OS, NGINX, SQLITE))
        self._dir("usr/lib", i(OS, SQLITE))
        self._dir("usr/share", i(OS, NGINX))
        self._dir("usr/share/doc", i(OS))
        self._dir("usr/share/nginx", i(NGINX))
        self._dir("var", i(OS))
        self._dir("var/empty-seed-dir", i(OS), mode=0o711)
        self._dir("home", i(OS))
        self._dir("home/ann", mode=0o700)
        self._dir("home/ann/empty")
        self._dir("srv")
        self._file("etc/hostname", b"machine-42\n", m(OS))
        self._file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", i(OS))
        self._file("etc/hl-first", b"linked across classes\n", i(OS))
        self._file("etc/nginx/nginx.conf", b"worker_processes 4;\n", m(NGINX))
        self._file("etc/nginx/mime.types", b"types { text/html html; }\n", i(NGINX))
        self._file("usr/bin/ls", b"\x7fELF ls" * 100, i(OS), 0o755)
        self._file("usr/bin/nginx", b"\x7fELF nginx" * 100, i(NGINX), 0o755)
        self._file("usr/bin/sqlite3", b"\x7fELF sqlite3" * 100, m(SQLITE), 0o4755)
        os.symlink("ls", r / "usr/bin/dir")
        self.origins["usr/bin/dir"] = i(OS)
        self._file("usr/lib/libc.so", b"\x7fELF libc" * 1000, i(OS, SQLITE))
        self._file("usr/share/doc/copyright", b"GPL\n", i(OS))
        self._file("usr/share/nginx/index.html", b"<h1>mine</h1>\n", m(NGINX))
        self._file("usr/local-tool", b"#!/bin/sh\necho own\n", None, 0o755)
        self._file("home/ann/notes.txt", b"my notes\n")
        os.setxattr(r / "home/ann/notes.txt", b"user.tag", b"important")
        self._file("home/ann/big.bin", secrets.token_bytes(3 * 1024 * 1024 + 17))
        os.link(r / "usr/lib/libc.so", r / "home/ann/libc-hl")  # own name first (home < usr)
        os.symlink("../../etc/passwd", r / "home/ann/passwd-link")
        os.mkfifo(r / "home/ann/fifo")
        self._file("srv/old.conf", b"moved here from /etc\n", v(OS, "etc/old.conf"))
        self._file("srv/data/db.sqlite", b"SQLite format 3\x00" + b"\x01" * 5000)
        os.link(r / "etc/hl-first", r / "srv/hl-second")  # seed name first (etc < srv)
        os.link(r / "srv/data/db.sqlite", r / "srv/data/db.sqlite.bak")  # both own
        os.chmod(r / "home/ann/empty", 0o750)
        for rel in ("home/ann", "home/ann/notes.txt", "home/ann/empty", "srv/data/db.sqlite"):
            os.chown(r / rel, 1000, 1000, follow_symlinks=False)
        os.chown(r / "home/ann/passwd-link", 1000, 1001, follow_symlinks=False)
        _set_times(r)

    def point(self, repo: Repository, **kwargs: object) -> RecoveryPoint:
        return seeded_point(repo, self.root, self.used, self.origins, self.lacks, **kwargs)  # type: ignore[arg-type]


def _set_times(root: Path) -> None:
    """Distinct past mtimes (with nanoseconds), directories after their entries."""
    base = 1_600_000_000 * 10**9 + 123
    entries = sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for n, path in enumerate([*entries, root]):
        os.utime(path, ns=(base + 7 * n, base + n * 1_000_003), follow_symlinks=False)


def with_root_entry(repo: Repository, point: RecoveryPoint, node: Node) -> RecoveryPoint:
    """`point` recorded again with `node` added to its root tree (a name a
    restore writes directly into its target)."""
    nodes = [*load_tree(repo, bytes.fromhex(point.tree)), node]
    tree = repo.put_chunk(BlobType.TREE, encode_tree(nodes))
    repo.flush()
    again = record_point(
        repo,
        kind=point.kind,
        time=point.time,
        host=point.host,
        paths=point.paths,
        tree=tree.hex(),
        parent=None,
        summary=point.summary,
        seeds=point.seeds,
    )
    repo.delete_point(point.id)
    return again
