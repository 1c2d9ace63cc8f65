"""Issue #12's checks on a real Debian machine, through the real `strongroom` program.

The data (tests/helpers/debian.py, built once and cached): a golden Debian
bookworm minbase root from mmdebstrap (the OS seed, added from its tar), the
`.deb` files of nginx-light and sqlite3 with the libraries minbase lacks (two
application seeds), and a machine made by a second mmdebstrap run with those
packages, then edited, patched, pruned and filled with user data. Its
`expected.json` classifies every machine path against the seeds from the tar
and `.deb` contents alone; strongroom's point must say the same, file by file.

One repository is shared by the module (adding the seeds and backing up a
200 MB machine is the expensive part); every test asserts its own outcome on
it, and the one that removes a seed runs last. The module runs in one xdist
worker (`xdist_group`, CI passes `--dist loadgroup`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from strongroom.model.origin import FileClass, decode_lacks
from strongroom.repository.format import BlobType
from strongroom.services.points import find_point
from strongroom.services.walk import iter_tree
from tests.conftest import _CLEARED, init_local_repository, open_local_repository
from tests.helpers.cli import FAST_KDF, PASSWORD, CliResult, run_cli
from tests.helpers.compare import rsync_differences, walk
from tests.helpers.debian import (
    DebianData,
    DebianUnavailable,
    debian_data,
    required,
    resolve_in,
)
from tests.helpers.inotify import IN_ACCESS, IN_ISDIR, IN_OPEN, FileReads
from tests.helpers.libvhdi import open_chain
from tests.helpers.marks import ROOT

pytestmark = [*ROOT, pytest.mark.xdist_group("debian-seeds")]

MiB = 1 << 20
IMAGE_BLOCK = 1 * MiB  # the repository's default block size for images
# Tree metadata of the seeded point: every tree node (about 9,400 entries, ~150 B
# of msgpack each, plus the `sd` origin key) and the lacks list. Measured: 1.41 MB
# of tree chunks for this machine backed up without seeds, about 1.5 MB with the
# origins; test_backup_stores_only_own_and_modified_data measures it on every run
# and asserts it stays below the allowance.
TREE_ALLOWANCE = 2 * MiB
IMAGE_MAP_ALLOWANCE = 1 * MiB  # the image point's block map (400 blocks) and its record


# --------------------------------------------------------------- fixtures


def _env(work: Path) -> dict[str, str]:
    """What tests/conftest.py's `_isolated_env` gives a test, for a module."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    home = work / "home"
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_CONFIG_HOME=str(home / ".config"),
        STRONGROOM_KDF=FAST_KDF,
        STRONGROOM_PASSWORD=PASSWORD,
        STRONGROOM_REPO=str(work / "repo"),
    )
    return env


@dataclass
class Machine:
    data: DebianData
    expected: dict[str, Any]
    work: Path
    env: dict[str, str]
    seeds: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> seed add --json
    backup: dict[str, Any] = field(default_factory=dict)  # summary of the seeded backup
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.data.machine_dir

    @property
    def repo(self) -> Path:
        return self.work / "repo"

    @property
    def point(self) -> str:
        return str(self.backup["point_id"])

    def cli(self, *args: str, timeout: float = 900) -> CliResult:
        return run_cli(list(args), self.env, timeout=timeout)

    def ok(self, *args: str) -> CliResult:
        t0 = time.monotonic()
        result = self.cli(*args)
        self.timings[" ".join(args[:2])] = round(time.monotonic() - t0, 1)
        assert result.rc == 0, f"strongroom {' '.join(args)}: {result.err}"
        return result

    def entries(self, *classes: str, types: str = "flcbps") -> dict[str, dict[str, Any]]:
        return {
            rel: e
            for rel, e in self.expected["entries"].items()
            if e["class"] in classes and e["type"] in types
        }

    def restored(self, target: Path) -> Path:
        """A point's absolute source path is recreated below the restore target."""
        return target / str(self.root).lstrip("/")


@pytest.fixture(scope="module")
def debian() -> DebianData:
    try:
        return debian_data()
    except DebianUnavailable as e:
        if required():
            pytest.fail(f"STRONGROOM_REQUIRE_DEBIAN=1 but the Debian data cannot be built: {e}")
        pytest.skip(f"Debian test data unavailable: {e}")


@pytest.fixture(scope="module")
def machine(debian: DebianData, tmp_path_factory: pytest.TempPathFactory) -> Machine:
    """The three seeds added to a new repository and the machine backed up."""
    work = tmp_path_factory.mktemp("debian-seeds")
    m = Machine(debian, debian.expected(), work, _env(work))
    init_local_repository(m.repo)
    m.seeds["golden"] = m.ok(
        "seed", "add", "golden", str(debian.golden_tar), "--kind", "os", "--version", "12",
        "--description", "Debian bookworm minbase", "--json",
    ).document()  # fmt: skip
    for app in ("nginx-light", "sqlite3"):
        debs = [str(p) for p in debian.debs(app)]
        m.seeds[app] = m.ok("seed", "add", app, *debs, "--kind", "app", "--json").document()
    m.backup = m.ok("backup", str(m.root), "--seed-root", str(m.root), "--json").summary()
    return m


@dataclass(frozen=True)
class PointView:
    """A point's classification, read in process from its trees."""

    classes: dict[str, tuple[str, frozenset[str], str]]  # rel -> (class, seed names, moved from)
    lacks: set[tuple[str, str]]  # (seed name, seed path)
    tree_bytes: int  # plaintext bytes of the point's tree chunks and lacks list
    record: Any  # the point's PointSeeds


def point_view(m: Machine, point_id: str) -> PointView:
    repo = open_local_repository(m.repo)
    try:
        point = find_point(repo, point_id)
        seeds = point.seeds
        assert seeds is not None, f"point {point_id[:8]} records no seeds"
        names = [u.name for u in seeds.used]
        prefix = os.fsencode(m.root) + b"/"
        classes: dict[str, tuple[str, frozenset[str], str]] = {}
        tree_ids = {bytes.fromhex(point.tree)}
        for path, node in iter_tree(repo, bytes.fromhex(point.tree)):
            if node.subtree is not None:
                tree_ids.add(node.subtree)
            if not path.startswith(prefix):
                continue
            rel = os.fsdecode(path[len(prefix) :])
            origin = node.origin
            if origin is None:
                classes[rel] = ("own", frozenset(), "")
                continue
            moved_from = ""
            if origin.cls is FileClass.MOVED:
                moved_from = f"{names[origin.seeds[0]]}:{os.fsdecode(origin.seed_path)}"
            classes[rel] = (origin.cls.word, frozenset(names[i] for i in origin.seeds), moved_from)
        tree_bytes = sum(len(repo.load_chunk(t, BlobType.TREE)) for t in tree_ids)
        lacks: set[tuple[str, str]] = set()
        if seeds.lacks:
            blob = repo.load_chunk(bytes.fromhex(seeds.lacks), BlobType.TREE)
            tree_bytes += len(blob)
            lacks = {(names[i], os.fsdecode(p)) for i, p in decode_lacks(blob)}
        return PointView(classes, lacks, tree_bytes, seeds)
    finally:
        repo.close()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.hexdigest()


def described(root: Path) -> dict[str, dict[str, object]]:
    """rel -> everything a restore must reproduce (content hash, mode, owner,
    mtime, xattrs, link target, device), atime left out."""
    out = {}
    for rel, _st, info in walk(root):
        info = dict(info)
        info.pop("atime_ns")
        out[os.fsdecode(rel)] = info
    return out


def assert_restored_exactly(m: Machine, restored: Path, wanted: set[str]) -> None:
    """The non-directory entries below `restored` are exactly `wanted`, each equal
    to the machine's (content and metadata); every directory restored is the
    machine's directory with its metadata."""
    got = described(restored)
    files = {rel for rel, info in got.items() if info["type"] != stat.S_IFDIR}
    missing, extra = sorted(wanted - files), sorted(files - wanted)
    assert not missing and not extra, (
        f"missing {missing[:20]} ({len(missing)}), extra {extra[:20]} ({len(extra)})"
    )
    machine = {rel: described_one(m.root, rel) for rel in got}
    differ = [rel for rel, info in got.items() if info != machine[rel]]
    assert not differ, [(rel, got[rel], machine[rel]) for rel in differ[:5]]


def described_one(root: Path, rel: str) -> dict[str, object]:
    from tests.helpers.compare import describe

    parent = os.open(
        root / os.path.dirname(rel) if os.path.dirname(rel) else root, os.O_RDONLY | os.O_DIRECTORY
    )
    try:
        name = os.fsencode(os.path.basename(rel))
        info = dict(describe(parent, name, os.stat(name, dir_fd=parent, follow_symlinks=False)))
    finally:
        os.close(parent)
    info.pop("atime_ns")
    return info


# ------------------------------------------- the data itself (no strongroom)


def test_the_debian_data_is_what_the_checks_need(debian: DebianData) -> None:
    """The fixture against independent evidence: dpkg's own md5sums of the installed
    packages, the packages' control data, what the build did, e2fsck."""
    expected = debian.expected()
    entries, mutations = expected["entries"], expected["mutations"]
    machine = debian.machine_dir
    # dpkg's record of every application package's files agrees with the classification
    # (paths as the packages ship them, resolved through the merged /usr).
    checked = 0
    for app in ("nginx-light", "sqlite3"):
        for deb in debian.debs(app):
            package = deb.name.split("_", 1)[0]
            control = subprocess.run(
                ["dpkg-deb", "--field", str(deb), "Package"], capture_output=True, check=True
            )
            assert control.stdout.decode().strip() == package
            info = machine / "var/lib/dpkg/info"
            sums = next(iter(info.glob(f"{package}.md5sums")), None) or next(
                iter(info.glob(f"{package}:*.md5sums")), None
            )
            for line in sums.read_text().splitlines() if sums else []:
                md5, rel = line.split(None, 1)
                where = resolve_in(machine, rel)
                if where in mutations["deleted_app"]:
                    continue
                digest = hashlib.md5((machine / where).read_bytes()).hexdigest()
                e = entries[where]
                wanted = "identical" if digest == md5 else "modified"
                assert (e["class"], app in e["seeds"]) == (wanted, True), (package, rel, e)
                checked += 1
    assert checked > 150
    for rel in mutations["edited_config"] + mutations["modified_package_files"]:
        assert entries[rel]["class"] == "modified", rel
    for rel, source in mutations["moved_copies"].items():
        assert entries[rel]["class"] == "moved"
        assert any(p.endswith(f":{source}") for p in entries[rel]["seed_paths"])
    assert {p for _, p, _ in expected["lacks"]} == {
        *mutations["deleted_os"],
        *mutations["deleted_app"],
    }
    home = [e for rel, e in entries.items() if rel.startswith("home/alice/docs/")]
    assert home and all(e["class"] == "own" for e in home)
    # The file changed behind its mtime: other bytes, the seed's size, mode and mtime.
    kept = mutations["mtime_kept"]
    a, b = os.stat(debian.golden_dir / kept), os.stat(machine / kept)
    assert (a.st_size, a.st_mode, a.st_mtime_ns) == (b.st_size, b.st_mode, b.st_mtime_ns)
    assert sha256(debian.golden_dir / kept) != sha256(machine / kept)
    assert entries[kept]["class"] == "modified"
    # Most seed-identical files keep the package's metadata (what --trust-seed-metadata uses).
    identical = [e for e in entries.values() if e["class"] == "identical" and e["type"] == "f"]
    assert sum(e["meta_equal"] for e in identical) > 0.95 * len(identical)
    totals = expected["totals"]
    assert totals["own"]["bytes"] > 15e6 and totals["identical"]["bytes"] > 150e6
    for image in (debian.golden_img, debian.machine_img):
        fsck = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, check=False)
        assert fsck.returncode == 0, fsck.stdout


# ------------------------------------------------------------------ checks


def test_seeds_hold_the_golden_os_and_the_packages(machine: Machine) -> None:
    listed = {s["name"]: s for s in machine.ok("seed", "list", "--json").json()}
    assert {n: s["kind"] for n, s in listed.items()} == {
        "golden": "os", "nginx-light": "app", "sqlite3": "app",
    }  # fmt: skip
    expected = machine.expected["seeds"]
    for app in ("nginx-light", "sqlite3"):
        packages = {p["name"] for p in listed[app]["packages"]}
        wanted = {deb.split("_", 1)[0] for deb in expected[app]["debs"]}
        assert packages == wanted, app
    # Regular files of the tar: every one in the seed's file list.
    files = sum(1 for e in machine.expected["entries"].values() if e["type"] == "f")
    assert listed["golden"]["summary"]["files"] > 0.9 * files


def test_backup_stores_only_own_and_modified_data(machine: Machine) -> None:
    """Bytes newly stored (chunk plaintext, `data_added`) = the own and modified
    files' bytes within 10 %, plus the point's tree metadata (TREE_ALLOWANCE,
    measured here: the tree chunks and the lacks list in plaintext)."""
    totals = machine.expected["totals"]
    own_modified = totals["own"]["bytes"] + totals["modified"]["bytes"]
    view = point_view(machine, machine.point)
    assert view.tree_bytes <= TREE_ALLOWANCE, view.tree_bytes
    added = machine.backup["data_added"]
    assert 0.9 * own_modified <= added <= 1.1 * own_modified + TREE_ALLOWANCE, (
        f"data_added {added} for {own_modified} own+modified bytes, trees {view.tree_bytes}"
    )
    # Without seeds the same machine stores all of it: the seeds are what saved it.
    identical = totals["identical"]["bytes"]
    assert added < 0.2 * identical


def test_classification_matches_the_machine_file_by_file(machine: Machine) -> None:
    """Every regular file: class, the seeds that hold its path, and for a moved
    file a seed path with its content."""
    view = point_view(machine, machine.point)
    wrong = []
    for rel, e in machine.entries("identical", "modified", "moved", "own", types="f").items():
        got = view.classes.get(rel)
        if got is None:
            wrong.append(f"{rel}: not in the point")
            continue
        cls, seeds, moved_from = got
        if cls != e["class"]:
            wrong.append(f"{rel}: {cls}, expected {e['class']} {e['seeds']}")
        elif cls in ("identical", "modified") and seeds != set(e["seeds"]):
            wrong.append(f"{rel}: seeds {sorted(seeds)}, expected {e['seeds']}")
        elif cls == "moved" and moved_from not in e["seed_paths"]:
            wrong.append(f"{rel}: moved from {moved_from}, expected one of {e['seed_paths'][:3]}")
    assert not wrong, f"{len(wrong)} files classified otherwise:\n" + "\n".join(wrong[:40])
    counts = {c: view.record.classes.get(c, {}).get("files", 0) for c in machine.expected["totals"]}
    assert counts == {c: t["files"] for c, t in machine.expected["totals"].items()}


def test_classification_of_directories_links_and_devices(machine: Machine) -> None:
    view = point_view(machine, machine.point)
    wrong = []
    for rel, e in machine.entries("identical", "modified", "own", types="dlcbps").items():
        got = view.classes.get(rel)
        if got is None or got[0] != e["class"]:
            wrong.append(f"{e['type']} {rel}: {got and got[0]}, expected {e['class']} {e['seeds']}")
    assert not wrong, f"{len(wrong)} entries classified otherwise:\n" + "\n".join(wrong[:40])


def test_lacks_lists_exactly_the_deleted_seed_files(machine: Machine) -> None:
    view = point_view(machine, machine.point)
    wanted = {(s, p) for s, p, t in machine.expected["lacks"] if t != "d"}
    mutations = machine.expected["mutations"]
    deleted = {("golden", p) for p in mutations["deleted_os"]}
    deleted |= {("nginx-light", p) for p in mutations["deleted_app"]}
    assert wanted == deleted  # the fixture's own consistency: nothing else is missing
    assert view.lacks == wanted


def test_restore_scope_user_is_exactly_own_modified_and_moved(
    machine: Machine, tmp_path: Path
) -> None:
    target, lacks_file = tmp_path / "user", tmp_path / "lacks.txt"
    machine.ok(
        "restore", machine.point, "--scope", "user", "--target", str(target),
        "--lacks-file", str(lacks_file),
    )  # fmt: skip
    wanted = set(machine.entries("own", "modified", "moved", types="flcbps"))
    assert_restored_exactly(machine, machine.restored(target), wanted)
    prefix = str(machine.root) + "/"
    listed = {line[len(prefix) :] for line in lacks_file.read_text().splitlines() if line}
    mutations = machine.expected["mutations"]
    assert listed == {*mutations["deleted_os"], *mutations["deleted_app"]}


def test_restore_scope_app_is_exactly_that_package_set_as_the_machine_has_it(
    machine: Machine, tmp_path: Path
) -> None:
    target = tmp_path / "nginx"
    machine.ok("restore", machine.point, "--scope", "app:nginx-light", "--target", str(target))
    wanted = {
        rel
        for rel, e in machine.entries("identical", "modified", types="flcbps").items()
        if "nginx-light" in e["seeds"]
    }
    assert "usr/sbin/nginx" in wanted and "etc/nginx/nginx.conf" in wanted
    assert_restored_exactly(machine, machine.restored(target), wanted)
    restored = machine.restored(target)
    # The machine's edits, not the package's bytes.
    assert b"worker_connections 4096;" in (restored / "etc/nginx/nginx.conf").read_bytes()
    assert sha256(restored / "usr/sbin/nginx") == sha256(machine.root / "usr/sbin/nginx")
    assert not (restored / "etc/nginx/koi-utf").exists()  # deleted on the machine


def test_restore_scope_full_is_identical_to_the_machine(machine: Machine, tmp_path: Path) -> None:
    """rsync -aHAXn --checksum --delete compares contents, types, modes, owners
    (numeric), mtimes (also of directories and symlinks), hard links, ACLs,
    xattrs, device numbers and symlink targets; not atimes or ctimes."""
    target = tmp_path / "full"
    machine.ok("restore", machine.point, "--scope", "full", "--target", str(target))
    assert rsync_differences(machine.root, machine.restored(target)) == []


class Touches:
    """Regular files opened or read below `root` (inotify IN_OPEN / IN_ACCESS)."""

    def __init__(self, root: Path) -> None:
        self.reads = FileReads(root)

    def __enter__(self) -> Touches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reads.close()

    def collect(self) -> tuple[set[str], set[str]]:
        opened, read = set(), set()
        for wd, mask, name in self.reads._events():
            if mask & IN_ISDIR or not name:
                continue
            rel = str((self.reads.dirs[wd] / os.fsdecode(name)).relative_to(self.reads.root))
            if mask & IN_OPEN:
                opened.add(rel)
            if mask & IN_ACCESS:
                read.add(rel)
        return opened, read


def dump(m: Machine, point: str, rel: str) -> bytes:
    result = run_cli(["dump", point, str(m.root / rel)], m.env, binary=True)
    assert result.rc == 0, result.err
    out: bytes = result.out
    return out


def test_trust_seed_metadata_opens_no_seed_identical_file(machine: Machine) -> None:
    """A first backup (another host: no parent point) with --trust-seed-metadata
    opens none of the files whose path, size, mode and mtime equal a seed's; the
    file changed behind its mtime is the documented exception: taken from the
    seed, so that point has the seed's bytes there."""
    with Touches(machine.root) as touches:
        summary = machine.ok(
            "backup", str(machine.root), "--seed-root", str(machine.root),
            "--trust-seed-metadata", "--host", "trust-first", "--json",
        ).summary()  # fmt: skip
        opened, read = touches.collect()
    assert summary["parent"] is None
    trusted = {
        rel for rel, e in machine.entries("identical", types="f").items() if e.get("meta_equal")
    }
    kept = machine.expected["mutations"]["mtime_kept"]
    trusted.add(kept)  # its path, size, mode and mtime are still the seed's
    assert len(trusted) > 7000
    assert not (opened | read) & trusted, sorted((opened | read) & trusted)[:20]
    # The watch works: the machine's own non-empty files were read.
    own = {rel for rel, e in machine.entries("own", types="f").items() if e["size"] > 0}
    assert own <= read, sorted(own - read)[:10]
    # The exception, documented: the trusted point takes the seed's bytes ...
    trusted_view = point_view(machine, summary["point_id"])
    assert trusted_view.classes[kept][0] == "identical"
    golden_bytes = (machine.data.golden_dir / kept).read_bytes()
    machine_bytes = (machine.root / kept).read_bytes()
    assert golden_bytes != machine_bytes and len(golden_bytes) == len(machine_bytes)
    assert dump(machine, summary["point_id"], kept) == golden_bytes
    # ... while the default backup reads it and records the change.
    assert point_view(machine, machine.point).classes[kept][0] == "modified"
    assert dump(machine, machine.point, kept) == machine_bytes


# ------------------------------------------------------------------ images


@dataclass
class Images:
    golden: Path
    machine: Path
    differing: int  # 1 MiB blocks where the machine's image differs from the golden one
    new: int  # of those, blocks whose content the golden image has nowhere


def block_difference(golden: Path, machine: Path) -> tuple[int, int]:
    seen, differing, new = set(), [], 0
    with open(golden, "rb") as g, open(machine, "rb") as m:
        while block := g.read(IMAGE_BLOCK):
            seen.add(hashlib.sha256(block).digest())
            mine = m.read(IMAGE_BLOCK)
            if mine != block:
                differing.append(hashlib.sha256(mine).digest())
    new = len({d for d in differing if d not in seen})
    return len(differing), new


@pytest.fixture(scope="module")
def images(machine: Machine) -> Iterator[Images]:
    data = machine.data
    differing, new = block_difference(data.golden_img, data.machine_img)
    yield Images(data.golden_img, data.machine_img, differing, new)


def test_image_backup_against_the_golden_image_stores_only_differing_blocks(
    machine: Machine, images: Images, tmp_path: Path
) -> None:
    machine.ok("seed", "add", "golden-img", str(images.golden), "--kind", "os", "--json")
    summary = machine.ok(
        "backup", "--image", str(images.machine), "--seed", "golden-img", "--json"
    ).summary()
    assert images.differing < 0.5 * images.golden.stat().st_size / IMAGE_BLOCK
    assert images.new * IMAGE_BLOCK * 0.9 <= summary["data_added"]
    assert summary["data_added"] <= images.differing * IMAGE_BLOCK + IMAGE_MAP_ALLOWANCE
    point = summary["point_id"]

    # The machine's own part as a qcow2 overlay on the golden image.
    overlay = tmp_path / "machine.qcow2"
    machine.ok(
        "restore", point, "--scope", "user", "--format", "qcow2",
        "--backing", str(images.golden), "--target", str(overlay),
    )  # fmt: skip
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(overlay)], capture_output=True, check=True
    )
    assert str(images.golden) in info.stdout.decode()
    compare = subprocess.run(
        ["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(overlay), str(images.machine)],
        capture_output=True, check=False,
    )  # fmt: skip
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert overlay.stat().st_size <= (images.differing + 8) * IMAGE_BLOCK

    # A differencing VHD whose parent is the golden VHD, read with libvhdi.
    golden_vhd, out = tmp_path / "golden.vhd", tmp_path / "machine.vhd"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on",
         str(images.golden), str(golden_vhd)],
        check=True,
    )  # fmt: skip
    machine.ok(
        "export", point, "--incremental-from", "seed:golden-img", "--parent", str(golden_vhd),
        str(out),
    )  # fmt: skip
    assert out.stat().st_size <= (images.differing * 2 + 4) * IMAGE_BLOCK  # 2 MiB VHD blocks
    with open_chain([golden_vhd, out]) as top, open(images.machine, "rb") as want:
        size = int(top.get_media_size())
        assert size == images.machine.stat().st_size
        for offset in range(0, size, 16 * MiB):
            length = min(16 * MiB, size - offset)
            assert bytes(top.read_buffer_at_offset(length, offset)) == want.read(length), offset


# ------------------------------------------------- maintenance (runs last)


def test_prune_keeps_seeds_and_forced_removal_leaves_points_restorable(
    machine: Machine, tmp_path: Path
) -> None:
    """prune keeps every chunk a seed holds; `check --read-data` verifies seeds;
    `seed remove --force` of a seed in use, then prune, leaves every remaining
    point restorable (the chunks points use stay)."""
    refused = machine.cli("seed", "remove", "sqlite3")
    assert refused.rc != 0 and "Traceback" not in refused.err
    machine.ok("prune")
    machine.ok("check", "--read-data")
    # The seeds are whole: a new repository user could still build on them.
    show = machine.ok("seed", "show", "golden", "--json").json()
    assert show["chunks"] > 0

    for name in ("golden", "nginx-light", "sqlite3"):
        machine.ok("seed", "remove", name, "--force")
    machine.ok("prune")
    machine.ok("check", "--read-data")
    target = tmp_path / "after"
    machine.ok("restore", machine.point, "--target", str(target))
    assert rsync_differences(machine.root, machine.restored(target)) == []
    shutil.rmtree(target)
