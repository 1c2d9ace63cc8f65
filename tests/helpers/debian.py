"""A real Debian machine and its golden images, built once and cached (issue #12).

What the seed tests and `bench/seeds.py` run on, built with Debian's own tools:

* the golden OS: `mmdebstrap --variant=minbase --mode=root bookworm golden.tar`
  (the machine's apt sources; ~20-40 s, 170 MB), and the same tree extracted;
* the application packages: the `.deb` files of `nginx-light` and `sqlite3` and
  of every library they need that minbase lacks (`apt-get download`), split
  into one set per application by the dependency closure recorded in the
  machine's dpkg database;
* the machine: a second mmdebstrap run with `--include=nginx-light,sqlite3`,
  extracted as root (owners, modes, xattrs), then changed as an administrator
  and its users would: configuration edited, package files modified, files
  deleted, user data added under /home and /srv (some of it a copy of a seed
  file), and one file changed behind its mtime (the `--trust-seed-metadata`
  exception);
* `expected.json`: the classification of every machine path against the
  seeds, computed here from the tar and `.deb` contents alone (sha256 per
  file), independent of strongroom: identical / modified / moved / own, the
  seeds that hold each path, and the seed files the machine lacks;
* ext4 images of both trees (`mke2fs -t ext4 -d`, fixed UUID, hash seed and
  time, so that a rebuild is the same image).

Paths are relative to the tree's root, as seeds record them (`usr/bin/ls`).
Debian bookworm has a merged /usr: packages still ship `lib/...`, `bin/...`,
which the machine holds below `usr/` through the root's `lib -> usr/lib`
symlinks. A seed path is therefore resolved through the machine's directory
symlinks (as dpkg did when it installed the file) before it is compared:
`lib/x86_64-linux-gnu/libreadline.so.8` of the sqlite3 seed *is*
`usr/lib/x86_64-linux-gnu/libreadline.so.8` of the machine, and the machine
does not lack it.

Built once per cache directory (`$STRONGROOM_TEST_CACHE`, default
/var/tmp/strongroom-test-cache) under a file lock, so parallel pytest workers
and later runs share one build. Not root, no mmdebstrap, no network: the
tests skip, except with STRONGROOM_REQUIRE_DEBIAN=1 (CI), where they fail.

`python -m tests.helpers.debian [--rebuild]` builds it and prints a summary.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import random
import re
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 4  # bump when the build changes: a new cache folder is built
SUITE = "bookworm"
APPS = ("nginx-light", "sqlite3")
USER = "alice"
USER_ID = 1000
IMAGE_SIZE = "400M"
IMAGE_UUID = "5eed5eed-0000-4000-8000-00000000c0de"
IMAGE_HASH_SEED = "5eed5eed-0000-4000-8000-0000000000aa"
IMAGE_TIME = "1700000000"  # E2FSPROGS_FAKE_TIME: inode and superblock times
RNG_SEED = 12

# What the machine's administrator and users did (relative paths).
EDITED_CONFIG = ("etc/nginx/nginx.conf", "etc/hostname", "etc/passwd", "etc/group")
MODIFIED_PACKAGE_FILES = ("usr/share/nginx/html/index.html", "usr/sbin/nginx")
DELETED_OS = (
    "usr/share/common-licenses/Artistic",
    "usr/share/doc/apt/changelog.gz",
    "usr/bin/pinky",
)
DELETED_APP = ("etc/nginx/koi-utf",)
MOVED_COPIES = {  # machine path: the seed file it is a copy of
    "srv/tools/sqlite3": "usr/bin/sqlite3",
    "home/alice/old/bash.bashrc": "etc/bash.bashrc",
}
MTIME_KEPT = "usr/share/common-licenses/GPL-3"  # changed in place, size and mtime kept


class DebianUnavailable(Exception):
    """The data cannot be built here (not root, no mmdebstrap, no network)."""


@dataclass(frozen=True)
class DebianData:
    """The built data set (everything below `root`)."""

    root: Path

    @property
    def golden_tar(self) -> Path:
        return self.root / "golden.tar"

    @property
    def golden_dir(self) -> Path:
        return self.root / "golden"

    @property
    def machine_dir(self) -> Path:
        return self.root / "machine"

    @property
    def golden_img(self) -> Path:
        return self.root / "golden.img"

    @property
    def machine_img(self) -> Path:
        return self.root / "machine.img"

    def debs(self, app: str) -> list[Path]:
        """The .deb files of one application seed (the package and its libraries)."""
        names = self.expected()["seeds"][app]["debs"]
        return [self.root / "debs" / name for name in names]

    def expected(self) -> dict[str, Any]:
        with open(self.root / "expected.json", encoding="utf-8") as f:
            doc: dict[str, Any] = json.load(f)
        return doc

    def timings(self) -> dict[str, float]:
        with open(self.root / "timings.json", encoding="utf-8") as f:
            doc: dict[str, float] = json.load(f)
        return doc


def cache_dir() -> Path:
    return Path(os.environ.get("STRONGROOM_TEST_CACHE", "/var/tmp/strongroom-test-cache"))


def required() -> bool:
    return os.environ.get("STRONGROOM_REQUIRE_DEBIAN") == "1"


def unavailable_reason() -> str | None:
    """Why the data cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (mmdebstrap --mode=root, owners of the machine's files)"
    for tool in ("mmdebstrap", "apt-get", "dpkg-deb", "mke2fs", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install mmdebstrap e2fsprogs)"
    return None


def debian_data(rebuild: bool = False) -> DebianData:
    """The cached data set, built now if missing (one builder at a time)."""
    reason = unavailable_reason()
    if reason:
        raise DebianUnavailable(reason)
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    final = base / f"debian-{SUITE}-v{FORMAT}"
    with open(base / f".debian-v{FORMAT}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if rebuild and final.exists():
            shutil.rmtree(final)
        if not (final / "expected.json").exists():
            work = base / f"debian-{SUITE}-v{FORMAT}.building"
            if work.exists():
                shutil.rmtree(work)
            work.mkdir()
            _build(work)
            if final.exists():
                shutil.rmtree(final)
            work.rename(final)
    return DebianData(final)


# ---------------------------------------------------------------- building


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(cmd, capture_output=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise DebianUnavailable(
            f"{' '.join(cmd[:4])} failed ({proc.returncode}): {' | '.join(tail)}"
        )
    return proc


def _build(work: Path) -> None:
    timings: dict[str, float] = {}

    def timed(name: str, cmd: list[str], **kwargs: Any) -> None:
        t0 = time.monotonic()
        _run(cmd, **kwargs)
        timings[name] = round(time.monotonic() - t0, 1)

    timed(
        "golden_tar",
        ["mmdebstrap", "--variant=minbase", "--mode=root", "-q", SUITE, str(work / "golden.tar")],
    )
    timed(
        "machine_tar",
        [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            "-q",
            f"--include={','.join(APPS)}",
            SUITE,
            str(work / "machine.tar"),
        ],
    )
    for name in ("golden", "machine"):
        (work / name).mkdir()
        timed(
            f"extract_{name}",
            [
                "tar",
                "-xf",
                str(work / f"{name}.tar"),
                "-C",
                str(work / name),
                "--numeric-owner",
                "--same-owner",
                "-p",
                "--xattrs",
                "--xattrs-include=*",
                "--acls",
            ],
        )
    t0 = time.monotonic()
    apps = _download_debs(work)
    timings["debs"] = round(time.monotonic() - t0, 1)
    (work / "machine.tar").unlink()  # the extracted tree is the machine; the tar is not needed
    mutations = _change_machine(work / "machine")
    t0 = time.monotonic()
    expected = _classify(work, apps, mutations)
    timings["classify"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    expected["machine_image"] = _images(work)
    timings["images"] = round(time.monotonic() - t0, 1)
    with open(work / "expected.json", "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
    with open(work / "timings.json", "w", encoding="utf-8") as f:
        json.dump(timings, f, indent=1, sort_keys=True)


def _images(work: Path) -> str:
    """golden.img: `mke2fs -d` of the golden tree. machine.img: the golden image
    changed into the machine, as a machine deployed from the golden image is (a
    loop mount and `rsync --checksum --inplace --delete`: unchanged files keep
    their blocks); where loop devices cannot be mounted, `mke2fs -d` of the
    machine tree (a different layout: nearly every block differs). Returns
    which of the two was made."""
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": IMAGE_TIME}
    golden, machine = work / "golden.img", work / "machine.img"
    _run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-U",
            IMAGE_UUID,
            "-E",
            f"hash_seed={IMAGE_HASH_SEED}",
            "-d",
            str(work / "golden"),
            str(golden),
            IMAGE_SIZE,
        ],
        env=env,
    )
    shutil.copyfile(golden, machine)
    mnt = work / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-o", "loop,noatime", str(machine), str(mnt)], capture_output=True, check=False
    )
    try:
        if mounted.returncode == 0:
            _run(
                [
                    "rsync",
                    "-aHAX",
                    "--checksum",
                    "--inplace",
                    "--delete",
                    "--numeric-ids",
                    f"{work / 'machine'}/",
                    f"{mnt}/",
                ]
            )
    finally:
        if mounted.returncode == 0:
            _run(["umount", str(mnt)])
        mnt.rmdir()
    if mounted.returncode == 0:
        _run(["e2fsck", "-fn", str(machine)])
        return "golden image changed in place (loop mount, rsync)"
    _run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-U",
            IMAGE_UUID,
            "-E",
            f"hash_seed={IMAGE_HASH_SEED}",
            "-d",
            str(work / "machine"),
            str(machine),
            IMAGE_SIZE,
        ],
        env=env,
    )
    return "mke2fs -d of the machine tree (no loop mount here)"


# ------------------------------------------------------- packages and .debs


def _dpkg_status(root: Path) -> dict[str, dict[str, str]]:
    """Installed packages of a root: name -> fields (Version, Depends, ...)."""
    text = (root / "var/lib/dpkg/status").read_text(encoding="utf-8")
    packages: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields and "installed" in fields.get("Status", ""):
            packages[fields["Package"]] = fields
    return packages


def _depends(fields: dict[str, str], installed: dict[str, dict[str, str]]) -> set[str]:
    """The installed packages that satisfy a package's Depends and Pre-Depends."""
    found: set[str] = set()
    for key in ("Depends", "Pre-Depends"):
        for clause in fields.get(key, "").split(","):
            for alternative in clause.split("|"):
                name = re.sub(r"[\s(:].*", "", alternative.strip())
                if name in installed:
                    found.add(name)
                    break
                providers = [
                    p
                    for p, f in installed.items()
                    if re.search(rf"(^|[\s,]){re.escape(name)}([\s(,]|$)", f.get("Provides", ""))
                ]
                if providers:
                    found.add(providers[0])
                    break
    return found


def _closure(start: str, installed: dict[str, dict[str, str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_depends(installed[name], installed) - seen)
    return seen


def _download_debs(work: Path) -> dict[str, list[str]]:
    """Fetch the packages the machine has and the golden OS lacks; return the
    .deb file names of each application seed (its package and the libraries
    it needs that the OS lacks)."""
    golden = _dpkg_status(work / "golden")
    machine = _dpkg_status(work / "machine")
    extra = sorted(set(machine) - set(golden))
    debs = work / "debs"
    debs.mkdir()
    os.chmod(debs, 0o777)  # apt's _apt sandbox user writes the downloads
    wanted = [f"{name}={machine[name]['Version']}" for name in extra]
    _run(["apt-get", "download", "-q", *wanted], cwd=debs)
    files = {deb.name.split("_", 1)[0]: deb.name for deb in debs.glob("*.deb")}
    missing = [name for name in extra if name not in files]
    if missing:
        raise DebianUnavailable(f"apt-get download did not fetch {missing}")
    apps: dict[str, list[str]] = {}
    for app in APPS:
        members = sorted(_closure(app, machine) & set(extra))
        apps[app] = [files[name] for name in members]
    return apps


# ----------------------------------------------------------- the machine


def _words(rng: random.Random, count: int) -> str:
    vocabulary = [
        "backup",
        "seed",
        "golden",
        "image",
        "machine",
        "restore",
        "scope",
        "nginx",
        "sqlite",
        "debian",
        "package",
        "file",
        "chunk",
        "repository",
        "server",
        "user",
        "data",
        "config",
        "report",
        "invoice",
        "meeting",
        "notes",
        "project",
        "delta",
        "origin",
        "modified",
        "identical",
        "moved",
        "own",
        "lacks",
        "tree",
        "block",
        "volume",
    ]
    lines = []
    for _ in range(count // 8):
        lines.append(
            " ".join(rng.choice(vocabulary) for _ in range(8)) + f" {rng.randrange(10**9)}"
        )
    return "\n".join(lines) + "\n"


def _write(path: Path, data: bytes, uid: int = 0, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chown(path, uid, uid)
    os.chmod(path, mode)


def _change_machine(machine: Path) -> dict[str, Any]:
    """Change the freshly installed machine the way the issue describes; return
    what was done (recorded in expected.json)."""
    rng = random.Random(RNG_SEED)
    # Configuration edited.
    conf = machine / "etc/nginx/nginx.conf"
    conf.write_text(
        conf.read_text().replace("worker_connections 768;", "worker_connections 4096;")
        + "# tuned\n"
    )
    (machine / "etc/hostname").write_text("web-042\n")
    with open(machine / "etc/passwd", "a") as f:
        f.write(f"{USER}:x:{USER_ID}:{USER_ID}:Alice:/home/{USER}:/bin/bash\n")
    with open(machine / "etc/group", "a") as f:
        f.write(f"{USER}:x:{USER_ID}:\n")
    # Package files modified: a page of nginx's, and bytes in its binary.
    index = machine / "usr/share/nginx/html/index.html"
    index.write_text(index.read_text().replace("Welcome to nginx!", "Welcome to web-042!"))
    with open(machine / "usr/sbin/nginx", "r+b") as f:
        f.seek(os.path.getsize(machine / "usr/sbin/nginx") // 2)
        f.write(b"\xde\xad\xbe\xef")
    # Files deleted, from the OS and from nginx.
    for rel in (*DELETED_OS, *DELETED_APP):
        (machine / rel).unlink()
    # The user's own data: text, random ("photos", a database), a web site.
    home = machine / "home" / USER
    home.mkdir(parents=True)
    os.chown(home, USER_ID, USER_ID)
    os.chmod(home, 0o750)
    for i in range(24):
        _write(home / "docs" / f"report-{i:02d}.txt", _words(rng, 16_000).encode(), USER_ID)
    for i in range(4):
        _write(
            home / "photos" / f"IMG_{1000 + i}.jpg", rng.randbytes(2_500_000 + i * 1000), USER_ID
        )
    _write(home / ".bash_history", b"ls -la\nsudo systemctl reload nginx\n", USER_ID, 0o600)
    os.setxattr(home / "docs" / "report-00.txt", "user.project", b"golden-images")
    _write(machine / "srv/data/app.db", rng.randbytes(5_000_000))
    for i in range(40):
        _write(
            machine / "srv/www" / f"page-{i}.html",
            f"<h1>page {i}</h1>\n{_words(rng, 400)}".encode(),
        )
    os.symlink("../www/page-0.html", machine / "srv/data/home-page")
    # Copies of seed files at other paths (moved), metadata kept like `cp -a`.
    for rel, source in MOVED_COPIES.items():
        (machine / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(machine / source, machine / rel)
    # A seed file changed in place behind its mtime: same size, same mtime.
    target = machine / MTIME_KEPT
    st = os.stat(target)
    data = bytearray(target.read_bytes())
    data[100:104] = b"XXXX" if bytes(data[100:104]) != b"XXXX" else b"YYYY"
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    return {
        "edited_config": list(EDITED_CONFIG),
        "modified_package_files": list(MODIFIED_PACKAGE_FILES),
        "deleted_os": list(DELETED_OS),
        "deleted_app": list(DELETED_APP),
        "moved_copies": MOVED_COPIES,
        "mtime_kept": MTIME_KEPT,
        "user": USER,
    }


# ------------------------------------------------------------ classification


@dataclass(frozen=True)
class SeedEntry:
    type: str  # f d l c b p s (the tree node letters)
    key: str  # what "same content" means: sha256, link target, device number
    size: int
    mode: int
    mtime: int  # seconds (tar and .deb members carry whole seconds)


def _sha256_stream(f: io.BufferedIOBase | Any) -> str:
    h = hashlib.sha256()
    while block := f.read(1 << 20):
        h.update(block)
    return h.hexdigest()


def _tar_entries(tf: tarfile.TarFile) -> dict[str, SeedEntry]:
    """Path -> entry of every member (hard links take their target's content)."""
    entries: dict[str, SeedEntry] = {}
    for m in tf:
        path = m.name[2:] if m.name.startswith("./") else m.name
        path = path.rstrip("/")
        if not path or path == ".":
            continue
        if m.isreg():
            f = tf.extractfile(m)
            assert f is not None
            entries[path] = SeedEntry("f", _sha256_stream(f), m.size, m.mode, int(m.mtime))
        elif m.islnk():
            target = m.linkname[2:] if m.linkname.startswith("./") else m.linkname
            linked = entries[target.rstrip("/")]
            entries[path] = SeedEntry("f", linked.key, linked.size, m.mode, int(m.mtime))
        elif m.isdir():
            entries[path] = SeedEntry("d", "", 0, m.mode, int(m.mtime))
        elif m.issym():
            entries[path] = SeedEntry("l", m.linkname, 0, m.mode, int(m.mtime))
        elif m.ischr() or m.isblk():
            kind = "c" if m.ischr() else "b"
            entries[path] = SeedEntry(
                kind, f"{kind}{m.devmajor}:{m.devminor}", 0, m.mode, int(m.mtime)
            )
        elif m.isfifo():
            entries[path] = SeedEntry("p", "p", 0, m.mode, int(m.mtime))
    return entries


def _deb_entries(deb: Path) -> dict[str, SeedEntry]:
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
        entries = _tar_entries(tf)
    if proc.wait() != 0:
        raise DebianUnavailable(f"dpkg-deb --fsys-tarfile {deb.name} failed")
    return entries


def _machine_entries(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, root), os.lstat(full)


def _type_of(st: os.stat_result) -> str:
    mode = st.st_mode
    for test, letter in (
        (stat.S_ISREG, "f"),
        (stat.S_ISDIR, "d"),
        (stat.S_ISLNK, "l"),
        (stat.S_ISCHR, "c"),
        (stat.S_ISBLK, "b"),
        (stat.S_ISFIFO, "p"),
    ):
        if test(mode):
            return letter
    return "s"


def _key_of(root: Path, rel: str, st: os.stat_result) -> str:
    kind = _type_of(st)
    if kind == "f":
        with open(root / rel, "rb") as f:
            return _sha256_stream(f)
    if kind == "l":
        return os.readlink(root / rel)
    if kind in ("c", "b"):
        return f"{kind}{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return kind


def resolve_in(root: Path, rel: str, follow_last: bool = False, _depth: int = 0) -> str:
    """A seed path as the machine holds it: every directory symlink on the way
    followed inside `root` (an absolute target is taken relative to `root`), the
    way dpkg's `lib/x/libz.so.1` lands in `usr/lib/x/libz.so.1` through the
    root's `lib -> usr/lib`. The last component is followed only with
    `follow_last` (a seed *directory* where the machine has a symlink to one)
    and only if it leads to a directory inside `root`."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink() and hops + _depth < 40 and (parts or follow_last):
            target = os.readlink(candidate)
            base = [] if target.startswith("/") else list(done)
            resolved = resolve_in(root, "/".join([*base, target]), True, _depth + hops + 1)
            real = root / resolved
            if real.is_dir() and not real.is_symlink():
                hops += 1
                done = resolved.split("/") if resolved else []
                continue
        done.append(part)
    return "/".join(done)


def _classify(work: Path, apps: dict[str, list[str]], mutations: dict[str, Any]) -> dict[str, Any]:
    machine = work / "machine"
    with tarfile.open(work / "golden.tar") as tf:
        seeds: dict[str, dict[str, SeedEntry]] = {"golden": _tar_entries(tf)}
    for app, debs in apps.items():
        merged: dict[str, SeedEntry] = {}
        for deb in debs:
            merged.update(_deb_entries(work / "debs" / deb))
        seeds[app] = merged
    # Seed paths as the machine holds them, and seed content by hash (for moved).
    at_path: dict[
        str, list[tuple[str, str, SeedEntry]]
    ] = {}  # machine path -> (seed, seed path, entry)
    by_hash: dict[str, list[tuple[str, str]]] = {}
    for seed, entries in seeds.items():
        for path, entry in entries.items():
            where = resolve_in(machine, path, follow_last=entry.type == "d")
            at_path.setdefault(where, []).append((seed, path, entry))
            if where != resolve_in(machine, path):
                # A seed directory where the machine has a symlink to one (`lib`):
                # the seed has that path too (app:NAME restores the link).
                at_path.setdefault(resolve_in(machine, path), []).append((seed, path, entry))
            if entry.type == "f" and entry.size > 0:
                by_hash.setdefault(entry.key, []).append((seed, path))
    result: dict[str, dict[str, Any]] = {}
    present: set[str] = set()
    for rel, st in _machine_entries(machine):
        present.add(rel)
        kind = _type_of(st)
        key = _key_of(machine, rel, st) if kind != "d" else ""
        holders = at_path.get(rel, [])
        record: dict[str, Any] = {"type": kind, "size": st.st_size if kind == "f" else 0}
        if kind == "d":
            # As a seed's file at a directory's path: a seed directory there makes
            # it identical, another seed entry there modified, none own.
            dir_seeds = sorted({s for s, _, e in holders if e.type == "d"})
            other_seeds = sorted({s for s, _, _ in holders})
            cls = "identical" if dir_seeds else "modified" if other_seeds else "own"
            record.update({"class": cls, "seeds": dir_seeds or other_seeds})
        elif holders:
            same = [(s, p, e) for s, p, e in holders if e.type == kind and e.key == key]
            record["seeds"] = sorted({s for s, _, _ in holders})
            record["class"] = "identical" if same else "modified"
            if same and kind == "f":
                # --trust-seed-metadata may take it unread: path, size, mode, mtime equal.
                record["meta_equal"] = any(
                    e.size == st.st_size
                    and stat.S_IMODE(e.mode) == stat.S_IMODE(st.st_mode)
                    and e.mtime * 1_000_000_000 == st.st_mtime_ns
                    for _, _, e in same
                )
        elif kind == "f" and st.st_size > 0 and key in by_hash:
            record.update(
                {
                    "class": "moved",
                    "seeds": sorted({s for s, _ in by_hash[key]}),
                    "seed_paths": sorted({f"{s}:{p}" for s, p in by_hash[key]}),
                }
            )
        else:
            record.update({"class": "own", "seeds": []})
        result[rel] = record
    lacks = sorted(
        [seed, path, entry.type]
        for seed, entries in seeds.items()
        for path, entry in entries.items()
        if resolve_in(machine, path, follow_last=entry.type == "d") not in present
    )
    totals: dict[str, dict[str, int]] = {}
    for record in result.values():
        if record["type"] == "f":
            t = totals.setdefault(record["class"], {"files": 0, "bytes": 0})
            t["files"] += 1
            t["bytes"] += record["size"]
    golden_pk = sorted(_dpkg_status(work / "golden"))
    return {
        "format": FORMAT,
        "suite": SUITE,
        "seeds": {
            "golden": {
                "kind": "os",
                "source": "golden.tar",
                "packages": len(golden_pk),
                "entries": len(seeds["golden"]),
            },
            **{
                app: {"kind": "app", "debs": debs, "entries": len(seeds[app])}
                for app, debs in apps.items()
            },
        },
        "entries": result,
        "lacks": lacks,
        "totals": totals,
        "mutations": mutations,
    }


def main() -> None:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Build the cached Debian test data.")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    t0 = time.monotonic()
    try:
        data = debian_data(rebuild=args.rebuild)
    except DebianUnavailable as e:
        sys.exit(f"cannot build: {e}")
    doc = data.expected()
    print(f"{data.root} ({time.monotonic() - t0:.1f} s)")
    print("timings:", data.timings())
    print(
        "seeds:", {k: (v["kind"], v.get("debs", v.get("source"))) for k, v in doc["seeds"].items()}
    )
    print("totals:", doc["totals"])
    print("lacks:", [f"{s}:{p}" for s, p, t in doc["lacks"] if t != "d"])


if __name__ == "__main__":
    main()
