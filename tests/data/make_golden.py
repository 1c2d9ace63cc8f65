#!/usr/bin/env python3
"""Make the golden repository of the current format version (run by hand, never by CI).

    cd <checkout> && sudo env PYTHONPATH=$PWD/src python3 tests/data/make_golden.py

writes `tests/data/repo-v<N>.tar.xz` (the repository, N = FORMAT_VERSION) and
`tests/data/repo-v<N>.json` (what each point must restore to), which
`tests/format/test_golden.py` checks on every CI run. A golden repository is
made ONCE per format version, by the code that introduced that version, and then
never regenerated: it is the evidence that later code still reads what earlier
code wrote (docs/format.md §13). Regenerating it for a version that was already
released would defeat its purpose; a new format version adds a new file.

Everything is made through the real `strongroom` program (subprocesses), so the
points are exactly what users get:

1. `init` with the fixed password (`tests/format/golden.py`) and a cheap KDF;
2. a files point of a small tree holding every entry kind and piece of metadata
   the format records (empty, multi-chunk, sparse and hard-linked files, a
   symlink and a dangling one, a FIFO, a socket, character and block devices, a
   non-UTF-8 name, user and trusted xattrs, setuid/setgid/sticky bits, other
   owners, nanosecond times), then an incremental files point (its parent);
3. a block point of an 8 MiB ext4 image (mke2fs -d; 64 KiB blocks, so it has
   holes), then an incremental one after `debugfs` added a file;
4. two points of a VM (`backup --vm`) whose two qcow2 disks a
   qemu-storage-daemon serves, as in tests/vms: the second found its changes
   through the dirty bitmaps;
5. two cycles of `protect DIR --to-repository`: block points of the ext4
   metadata disk (paths `protect:golden`), the second found by e2undo.

Each point is restored by the same code right away, and its restore must equal
the source (the tree's entries, each disk's bytes): the manifest records what
the restore gave. The sources live under a fixed folder (`golden.WORK`), so the
points record the same absolute paths wherever this runs. Needs root (owners,
devices, trusted xattrs), mke2fs/debugfs and qemu-img/qemu-io/qemu-storage-daemon.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.format.golden import (  # noqa: E402
    KDF,
    PASSWORD,
    VM_NAME,
    WORK,
    golden_text,
    listing,
    sha256_file,
)
from tests.vms.conftest import VmDaemon, write_config  # noqa: E402

from strongroom import __version__  # noqa: E402
from strongroom.chunking.cdc import CdcChunker  # noqa: E402
from strongroom.repository.format import FORMAT_VERSION  # noqa: E402
from strongroom.repository.repo import Repository  # noqa: E402
from strongroom.storage.local import LocalBackend  # noqa: E402

MiB = 1024 * 1024
BASE_NS = 1_700_000_000_123_456_789  # 2023-11-14, with nanoseconds
FUTURE_NS = 4_102_444_800_987_654_321  # 2100-01-01
OWNER = (1234, 5678)
DISKS = {"disk0": 2 * MiB, "disk1": 3 * MiB}


def compressible(n: int, seed: bytes) -> bytes:
    """Numbered text lines with a varying word: varied enough that content-defined
    cuts fall where the data says, squeezable enough by zstd that the repository
    stays a few hundred KiB."""
    words = [b"alpha", b"beta", b"gamma", b"delta"]
    stream = hashlib.shake_256(seed).digest(n // 16 + 1)
    out = bytearray()
    line = 0
    while len(out) < n:
        out += b"%08d %s golden line\n" % (line, words[stream[line % len(stream)] & 3])
        line += 1
    return bytes(out[:n])


TEXT = golden_text()


def init_for_text(sr: Strongroom, work: Path) -> None:
    """`init`, again until the repository's keyed chunker cuts TEXT at least twice
    where its content says (not at the maximum size): the chunker seed comes from
    the random master key, and the multi-chunk file must really be one."""
    for _ in range(32):
        sr.run("init", "--json")
        repo = Repository.open(LocalBackend(work / "repo"), PASSWORD.encode())
        cfg = repo.config
        chunker = CdcChunker(cfg.cdc_min, cfg.cdc_avg, cfg.cdc_max, repo.master.chunker_seed)
        sizes = [len(c) for c in chunker.cut(TEXT)]
        repo.close()
        if len(sizes) >= 3 and max(sizes[:-1]) < cfg.cdc_max:
            print(f"text.txt cuts into {sizes}")
            return
        shutil.rmtree(work / "repo")
    raise SystemExit("no key in 32 cut text.txt into content-defined chunks")


class Strongroom:
    """The real program, with an environment of its own."""

    def __init__(self, work: Path) -> None:
        home = work / "home"
        home.mkdir()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT / "src"),
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "share"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "STRONGROOM_REPO": str(work / "repo"),
            "STRONGROOM_PASSWORD": PASSWORD,
            "STRONGROOM_KDF": KDF,
            "STRONGROOM_CONFIG": str(work / "config.toml"),
            "TZ": "UTC",
        }

    def run(self, *args: str, ok: tuple[int, ...] = (0,)) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "strongroom", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in ok:
            raise SystemExit(f"strongroom {' '.join(args)}: rc {done.returncode}\n{done.stderr}")
        return done.stdout

    def json_lines(self, *args: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.run(*args).splitlines() if line.strip()]

    def backup(self, *args: str) -> str:
        (summary,) = [
            d
            for d in self.json_lines("backup", "--json", *args)
            if d.get("message_type") == "summary"
        ]
        return str(summary["point_id"])


# --- the files points ----------------------------------------------------------


def set_times(path: Path, index: int) -> None:
    """mtimes in 2023; atimes in 2100, so that no read (the backup's listing of a
    directory, under relatime) moves them before the backup records them."""
    mtime = BASE_NS + index * 1_000_000_007
    atime = FUTURE_NS + index * 1_000_000_009
    os.utime(path, ns=(atime, mtime), follow_symlinks=False)


def stamp_tree(root: Path) -> None:
    """Fixed nanosecond times on every entry, children before their directory."""
    entries = sorted(root.rglob("*"), key=str)
    order = {path: i + 1 for i, path in enumerate(entries)}
    for path in sorted(entries, key=lambda p: -len(p.parts)):
        set_times(path, order[path])
    set_times(root, 0)


def make_tree(src: Path) -> None:
    src.mkdir()
    (src / "empty").write_bytes(b"")
    hello = src / "hello.txt"
    hello.write_bytes(b"hello, golden repository\n")
    os.setxattr(hello, "user.comment", b"pinned by tests/data")
    os.setxattr(hello, "user.binary", bytes(range(64)))
    os.setxattr(hello, "trusted.note", b"root only")
    (src / "text.txt").write_bytes(TEXT)
    with open(src / "sparse.img", "wb") as f:
        f.truncate(10 * MiB)
        f.seek(4096)
        f.write(compressible(8192, b"island one"))
        f.seek(9 * MiB + 77)
        f.write(compressible(4096, b"island two"))
    (src / "sub").mkdir()
    (src / "sub" / "hard_a").write_bytes(b"two names, one file\n" * 20)
    os.link(src / "sub" / "hard_a", src / "hard_b")
    os.symlink("hello.txt", src / "link")
    os.symlink("no/such/target", src / "dangling")
    os.mkfifo(src / "fifo", 0o640)
    os.mknod(src / "char", stat.S_IFCHR | 0o620, os.makedev(1, 3))
    os.mknod(src / "block", stat.S_IFBLK | 0o660, os.makedev(7, 200))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(src / "socket"))
    sock.close()
    (src / b"caf\xe9-latin1.txt".decode("utf-8", "surrogateescape")).write_bytes(b"not UTF-8\n")
    setuid = src / "setuid"
    setuid.write_bytes(b"#!/bin/sh\necho golden\n")
    os.chown(setuid, *OWNER)
    os.chmod(setuid, 0o4755)  # after chown, which clears setuid
    setgid = src / "setgid_dir"
    setgid.mkdir()
    os.chmod(setgid, 0o2750)
    sticky = src / "sticky_dir"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    owned = src / "sub" / "owned"
    owned.write_bytes(b"owned by 1234:5678\n")
    os.chown(owned, *OWNER)
    os.chmod(owned, 0o640)
    os.setxattr(src / "sub", "user.dir", b"an xattr on a directory")
    os.lchown(src / "link", *OWNER)
    stamp_tree(src)


def change_tree(src: Path) -> None:
    """What the incremental point sees: one file rewritten, one changed in the
    middle (same size), one added, one removed, one mode changed."""
    (src / "hello.txt").write_bytes(b"hello again, golden repository\n")
    text = bytearray((src / "text.txt").read_bytes())
    text[2_500_000:2_500_100] = b"X" * 100
    (src / "text.txt").write_bytes(bytes(text))
    (src / "sub" / "new.txt").write_bytes(b"added by the second point\n")
    (src / "dangling").unlink()
    os.chmod(src / "empty", 0o600)
    stamp_tree(src)


def stable(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A restore sets no symlink atime the format could promise: leave it out."""
    for entry in entries:
        if entry["type"] == "l":
            entry.pop("atime_ns")
    return entries


def files_point(sr: Strongroom, work: Path, src: Path, number: int) -> dict[str, Any]:
    source = stable(listing(src))
    point_id = sr.backup(str(src), "--host", "golden", "--tag", "golden")
    target = work / f"restore-files-{number}"
    sr.run("restore", point_id, "--target", str(target))
    restored = stable(listing(target))
    prefix = str(src).lstrip("/") + "/"
    below = [
        {k: v[len(prefix) :] if k in ("path", "link") else v for k, v in e.items()}
        for e in restored
        if e["path"].startswith(prefix)
    ]
    if below != source:
        diff = [(a, b) for a, b in zip(source, below, strict=False) if a != b]
        raise SystemExit(f"files point {number}: the restore differs from the source: {diff[:3]}")
    return {"id": point_id, "restore": {"listing": restored}}


# --- the block points ------------------------------------------------------------


def image_point(
    sr: Strongroom, work: Path, image: Path, number: int, *extra: str
) -> dict[str, Any]:
    point_id = sr.backup("--image", str(image), "--host", "golden", "--tag", "golden", *extra)
    disk = {"size": image.stat().st_size, "sha256": sha256_file(image)}
    return describe_image_point(sr, work, point_id, disk, f"block-{number}", "/readme.txt")


def describe_image_point(
    sr: Strongroom, work: Path, point_id: str, disk: dict[str, Any], name: str, inside: str
) -> dict[str, Any]:
    """Restore the disk (it must be `disk`), list the file system inside, extract one file."""
    target = work / f"restore-{name}.raw"
    sr.run("restore", point_id, "--target", str(target))
    if sha256_file(target) != disk["sha256"] or target.stat().st_size != disk["size"]:
        raise SystemExit(f"{name}: the restore differs from the disk")
    listed = sr.json_lines("ls", "--json", point_id, "/")
    keys = ("path", "type", "mode", "uid", "gid", "size", "mtime", "link_target")
    ls = [{k: e[k] for k in keys} for e in listed]
    extracted = work / f"extract-{name}"
    sr.run("restore", point_id, "--target", str(extracted), "--include", inside)
    return {
        "id": point_id,
        "restore": disk,
        "ls": ls,
        "files_inside": {inside: sha256_file(extracted / inside.lstrip("/"))},
    }


def make_image(work: Path) -> Path:
    fs = work / "fs"
    (fs / "data").mkdir(parents=True)
    (fs / "readme.txt").write_bytes(b"an ext4 file system inside a block point\n")
    (fs / "data" / "numbers.txt").write_bytes(compressible(96 * 1024, b"numbers"))
    os.symlink("../readme.txt", fs / "data" / "readme-link")
    stamp_tree(fs)
    image = work / "disk.img"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-N", "64", "-L", "golden",
         "-U", "5b0d6f3e-0000-4000-8000-676f6c64656e", "-E", "root_owner=0:0",
         "-d", str(fs), str(image), "8M"],
        check=True, stdout=subprocess.DEVNULL,
        env={**os.environ, "E2FSPROGS_FAKE_TIME": str(BASE_NS // 10**9)},
    )  # fmt: skip
    return image


def change_image(work: Path, image: Path) -> None:
    added = work / "added.txt"
    added.write_bytes(b"written by debugfs between the two block points\n" * 30)
    subprocess.run(
        ["debugfs", "-w", "-R", f"write {added} added.txt", str(image)],
        check=True, capture_output=True,
        env={**os.environ, "E2FSPROGS_FAKE_TIME": str(BASE_NS // 10**9 + 60)},
    )  # fmt: skip


# --- the VM points -----------------------------------------------------------------


def vm_point(sr: Strongroom, work: Path, daemon: VmDaemon, number: int) -> dict[str, Any]:
    (summary,) = [
        d for d in sr.json_lines("backup", "--vm", VM_NAME, "--json")
        if d.get("message_type") == "summary"
    ]  # fmt: skip
    point_id = str(summary["point_id"])
    target = work / f"restore-vm-{number}"
    sr.run("restore", point_id, "--target", str(target))
    disks = {}
    for disk, size in DISKS.items():
        raw = target / f"{disk}.raw"
        problem = daemon.difference(disk, raw)
        if problem is not None:
            raise SystemExit(f"VM point {number}, {disk}: the restore differs: {problem}")
        disks[disk] = {"size": size, "sha256": sha256_file(raw)}
    trackers = sorted({d["tracker"] for d in summary["disks"]})
    return {"id": point_id, "restore": {"disks": disks}, "trackers": trackers}


def make_vm_points(sr: Strongroom, work: Path) -> list[dict[str, Any]]:
    run_dir = Path(tempfile.mkdtemp(prefix="srgold-"))  # unix socket paths are short
    daemon = VmDaemon(work / "shared", run_dir / "qsd", list(DISKS))
    try:
        for disk, size in DISKS.items():
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(daemon.file(disk)), str(size)],
                check=True,
            )
        daemon.start()
        write_config(
            work / "config.toml",
            {VM_NAME: {"qmp": daemon.qmp, "nbd": daemon.nbd, "disks": list(DISKS),
                       "scratch": str(work / "scratch")}},
        )  # fmt: skip
        daemon.write("disk0", "write -P 0x61 0 64k", "write -P 0x62 1536k 4k")
        daemon.write("disk1", "write -P 0x63 1M 1M")
        first = vm_point(sr, work, daemon, 1)
        daemon.write("disk1", "write -P 0x64 2M 4k", "write -z 1M 64k")
        second = vm_point(sr, work, daemon, 2)
        if second["trackers"] != ["bitmap"]:
            raise SystemExit(f"the second VM point used {second['trackers']}, not the bitmaps")
        return [first, second]
    finally:
        daemon.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


# --- the protect points (continuous protection of a directory into the repository) --


def protect_point(sr: Strongroom, work: Path, source: Path, number: int) -> dict[str, Any]:
    state = work / "protect-state"
    (summary,) = [
        d for d in sr.json_lines("protect", str(source), "--to-repository", "--name", "golden",
                                 "--size", "8M", "--state", str(state), "--json")
        if d.get("message_type") == "summary"
    ]  # fmt: skip
    size = int(summary["disk_size"])
    with open(state / "meta.vhd", "rb") as f:  # a fixed VHD: the disk, then a footer
        data = f.read(size)
    disk = {"size": size, "sha256": hashlib.sha256(data).hexdigest()}
    return describe_image_point(
        sr, work, summary["location"], disk, f"protect-{number}", "/first.txt"
    )


def make_protect_points(sr: Strongroom, work: Path) -> list[dict[str, Any]]:
    source = work / "protected"
    source.mkdir()
    (source / "first.txt").write_bytes(b"protected continuously\n")
    stamp_tree(source)
    first = protect_point(sr, work, source, 1)
    (source / "second.txt").write_bytes(b"a change of the second cycle\n" * 10)
    stamp_tree(source)
    second = protect_point(sr, work, source, 2)
    return [first, second]


# --- the manifest and the tarball ----------------------------------------------------


FORMAT_FIELDS = ("id", "version", "kind", "paths", "parent", "tree", "host", "user", "tags",
                 "consistency", "program", "time")  # fmt: skip


def tar_repository(repo: Path, out: Path) -> None:
    """Sorted members, fixed owner and times: regenerating changes only what changed."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = BASE_NS // 10**9
        return info

    names = sorted(
        p for p in repo.rglob("*") if p.relative_to(repo).parts[0] not in ("tmp", "locks")
    )
    with tarfile.open(out, "w:xz") as tar:
        tar.add(repo, arcname="repo", recursive=False, filter=clean)
        for path in names:
            tar.add(
                path,
                arcname=str(Path("repo") / path.relative_to(repo)),
                recursive=False,
                filter=clean,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--keep", action="store_true", help=f"leave {WORK} in place")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the tree holds other owners, devices and trusted xattrs")
    work = Path(WORK)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sr = Strongroom(work)
    init_for_text(sr, work)

    src = work / "src"
    make_tree(src)
    files1 = files_point(sr, work, src, 1)
    change_tree(src)
    files2 = files_point(sr, work, src, 2)

    image = make_image(work)
    block1 = image_point(sr, work, image, 1, "--block-size", "65536")
    change_image(work, image)
    block2 = image_point(sr, work, image, 2)

    vm1, vm2 = make_vm_points(sr, work)
    protect1, protect2 = make_protect_points(sr, work)
    made = [files1, files2, block1, block2, vm1, vm2, protect1, protect2]

    docs = {d["id"]: d for d in json.loads(sr.run("snapshots", "--json"))}
    points = []
    for entry in made:
        doc = docs[entry["id"]]
        points.append(
            {k: doc[k] for k in FORMAT_FIELDS} | {k: v for k, v in entry.items() if k != "id"}
        )
    check = sr.run("check", "--read-data")
    manifest = {
        "format_version": FORMAT_VERSION,
        "made_by": f"strongroom {__version__}",
        "generator": "tests/data/make_golden.py",
        "password": PASSWORD,
        "repository": f"repo-v{FORMAT_VERSION}.tar.xz",
        "points": points,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    tar_repository(work / "repo", args.output / f"repo-v{FORMAT_VERSION}.tar.xz")
    (args.output / f"repo-v{FORMAT_VERSION}.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(check.strip())
    print(f"wrote {args.output}/repo-v{FORMAT_VERSION}.tar.xz and .json ({len(points)} points)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
