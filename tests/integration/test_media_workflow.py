"""Issue #14's checks end to end, through the real `strongroom` program, with
the catalog on SQLite and on PostgreSQL (docs/media.md):

1. a virtual library made by `library create`; a source tree (mixed files
   with metadata) and an image backed up; `pool create`, `media label
   --all-new`, `copy-to-media` spanning three cartridges; the catalog
   database deleted; `library rebuild-catalog`; the points forgotten and
   pruned; every point restored from the cartridges alone, byte-exactly.
2. the inventory with the stand-in `mtx` and with a changer script (config
   `[library.NAME]`, cartridge files so the drives are read): unknown
   cartridges through the import/export slot, a known one removed and
   returned, no barcode, a swapped label, a damaged label, a cleaning
   cartridge never loaded, notifications.
3. bad input: a copy SIGKILLed mid-session and a drive that errors mid-copy;
   the next copy and the restores work and the catalog matches the tapes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strongroom.media.label import LABEL_MAGIC, write_label
from strongroom.media.virtual_drive import VirtualDrive, create_cartridge
from strongroom.media.writer import write_session
from strongroom.repository.keys import KdfParams
from strongroom.repository.repo import Repository
from strongroom.services.walk import referenced_by_points
from strongroom.storage.local import LocalBackend
from tests.catalog.conftest import pg_cluster  # noqa: F401  (the PostgreSQL fixture)
from tests.helpers.cli import (
    FAST_KDF,
    PASSWORD,
    CliResult,
    assert_one_line_error,
    run_cli,
    strongroom_command,
)
from tests.helpers.compare import walk_differences
from tests.helpers.pause_at_open import kill_at_open
from tests.helpers.pg_cluster import PORT, Cluster
from tests.helpers.tree import _set_times_bottom_up, make_small_tree
from tests.media.conftest import FAKE_MTX, FILE_CHANGER

if sys.platform != "linux":  # pragma: no cover
    pytest.skip("fcntl locks, xattrs and SIGKILL as on Linux", allow_module_level=True)

MiB = 1 << 20
RECORD = 256 << 10  # what `library create` and a configured library use


# --- the sources: three points, backed up once per module ---------------------


@dataclass
class Source:
    repo: Path
    trees: dict[str, Path]  # files point -> the source tree it was made of
    image: Path
    block: str

    @property
    def points(self) -> list[str]:
        return [*self.trees, self.block]


def _env(home: Path, repo: Path, catalog: str) -> dict[str, str]:
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "STRONGROOM_KDF": FAST_KDF,
        "STRONGROOM_PASSWORD": PASSWORD,
        "STRONGROOM_REPO": str(repo),
        "STRONGROOM_CATALOG": catalog,
    }
    return env


def _backup(env: dict[str, str], *args: str) -> str:
    result = run_cli(["backup", *args, "--json"], env)
    assert result.rc == 0, result.err
    return str(result.summary()["point_id"])


def _tree(root: Path, seed: int) -> None:
    """Mixed files (random, compressible, empty, tiny) with metadata: modes,
    a symlink, a hard link pair, an xattr, nanosecond times."""
    make_small_tree(root, seed)
    os.chmod(root / "sub" / "b.bin", 0o640)
    os.chmod(root / "other", 0o750)
    os.symlink("sub/deeper/c.txt", root / "link")
    os.link(root / "a.txt", root / "sub" / "a-again.txt")
    os.setxattr(root / "other" / "e.txt", "user.comment", b"kept on tape")
    now = time.time_ns()
    _set_times_bottom_up(root, now - 10**12, now + 3600 * 10**9)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """Two file trees and an image, each a data pack of 300 to 400 KB (two
    256 KiB records) and a small pack of its trees: a 2 MiB cartridge (its
    last 512 KiB the early-warning zone) holds one point's packs besides its
    label and catalog, so a copy of the three spans three cartridges."""
    base = tmp_path_factory.mktemp("media-workflow")
    repo = base / "repo"
    Repository.init(LocalBackend(repo), PASSWORD.encode(), kdf=KdfParams(1, 8192, 1)).close()
    env = _env(base / "home", repo, str(base / "unused.sqlite"))
    trees = {}
    for seed in (1, 2):
        tree = base / f"tree{seed}"
        _tree(tree, seed)
        trees[_backup(env, str(tree))] = tree
    rng = random.Random(14)
    image = base / "disk.raw"
    with image.open("wb") as f:
        f.write(rng.randbytes(250_000))
        f.seek(2 * MiB)
        f.write(rng.randbytes(150_000))
        f.truncate(3 * MiB)
    return Source(repo, trees, image, _backup(env, "--image", str(image)))


# --- the catalog: SQLite or PostgreSQL ----------------------------------------


@dataclass
class CatalogDb:
    url: str
    pg: Cluster | None
    name: str = ""

    def drop(self) -> None:
        """The catalog lost: the SQLite file deleted, or the database dropped
        and created empty."""
        if self.pg is None:
            Path(self.url).unlink()
            return
        with psycopg.connect(self.pg.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {self.name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {self.name}")


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.xdist_group("postgresql"))]
)
def catalog_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CatalogDb]:
    if request.param == "sqlite":
        yield CatalogDb(str(tmp_path / "catalog.sqlite"), None)
        return
    pg: Cluster = request.getfixturevalue("pg_cluster")
    name = f"workflow_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield CatalogDb(f"postgresql://postgres@/{name}?host={pg.socket_dir}&port={PORT}", pg, name)
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


# --- one test's world -----------------------------------------------------------


@dataclass
class World:
    source: Source
    base: Path
    env: dict[str, str]
    db: CatalogDb

    @property
    def repo(self) -> Path:
        return Path(self.env["STRONGROOM_REPO"])

    @property
    def data(self) -> Path:
        return Path(self.env["XDG_DATA_HOME"]) / "strongroom"

    def cli(self, *args: str, **kwargs: Any) -> CliResult:
        return run_cli(list(args), self.env, **kwargs)

    def ok(self, *args: str) -> CliResult:
        result = self.cli(*args)
        assert result.rc == 0, (args, result.err)
        assert "Traceback" not in result.err, result.err
        return result

    def media(self, *args: str) -> dict[str, dict[str, Any]]:
        listed = self.ok("--json", "media", "list", *args).json()["media"]
        return {m["barcode"] or m["media_id"]: m for m in listed}

    def prune_all(self) -> None:
        self.ok("forget", *self.source.points)
        self.ok("prune")
        assert not any((self.repo / "points").iterdir())

    def restore_all(self, name: str) -> None:
        """Every point restored (from wherever it is) and compared."""
        for point, tree in self.source.trees.items():
            target = self.base / f"{name}-{point[:8]}"
            self.ok("restore", point[:10], "--target", str(target))
            restored = target / tree.relative_to("/")
            assert walk_differences(tree, restored, check_root=False) == []
        image = self.base / f"{name}-disk.raw"
        self.ok("restore", self.source.block, "--target", str(image))
        assert _sha(image) == _sha(self.source.image)

    def config(self, text: str) -> None:
        path = Path(self.env["XDG_CONFIG_HOME"]) / "strongroom" / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def world(source: Source, catalog_db: CatalogDb, tmp_path: Path) -> World:
    repo = tmp_path / "repo"
    shutil.copytree(source.repo, repo)
    return World(source, tmp_path, _env(tmp_path / "home", repo, catalog_db.url), catalog_db)


def _comparable(media: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What a rebuild must bring back of each medium. Not the times (the tape
    keeps whole seconds), the expiry (the pool's retention is not on tape) nor
    bytes_written (a rebuild counts the packs' records only: the records of
    a pack cut short by the end of the cartridge are not listed anywhere)."""
    keys = "media_id state online library slot pool label_sequence sessions repository_id"
    return {b: tuple(m[k] for k in keys.split()) for b, m in media.items()}


def _sessions(world: World, barcode: str) -> list[tuple[int, list[str], str | None]]:
    shown = world.ok("--json", "media", "show", barcode).json()
    return [(s["number"], s["points"], s["continued_from"]) for s in shown["session_list"]]


# --- 1 and 3: spanning, a killed copy, a drive error, rebuild, restores -----


def _killed_mid_session(world: World, *args: str) -> None:
    """`strongroom *args` SIGKILLed between two packs: frozen when it opens
    the second pack file of the repository (the session header and the first
    pack are on the cartridge, its catalog is not)."""
    prefix = str(world.repo / "data") + "/"
    kill_at_open(prefix, 2, list(args), world.env, world.base / "paused")


def _with_file_size_limit(world: World, limit: int, *args: str) -> CliResult:
    """`strongroom *args` unable to grow any file past `limit` bytes (writes
    past it fail with EFBIG: the drive errors mid-cartridge)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [*strongroom_command(), *args],
        env=world.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        preexec_fn=apply,
    )
    return CliResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_spanning_copy_killed_copy_drive_error_rebuild_and_restore_from_tape_alone(
    world: World,
) -> None:
    src = world.source
    world.ok(
        "library", "create", "vlib", "--slots", "5", "--import-export", "1",
        "--capacity", "2M", "--cartridges", "5",
    )  # fmt: skip
    world.ok("pool", "create", "offsite", "--retention", "7y")
    labelled = world.ok("media", "label", "--all-new", "--pool", "offsite", "--json").summary()
    assert [m["barcode"] for m in labelled["media"]] == [f"VT000{n}L8" for n in range(1, 6)]
    world.ok("pool", "create", "vault", "--retention", "30d")
    world.ok("media", "label", "VT0004L8", "VT0005L8", "--pool", "vault", "--force")

    # the three points span three cartridges: VT0001L8 and VT0002L8 fill
    # (a cartridge that fills mid-pack starts that pack again on the next)
    copied = world.ok("copy-to-media", *src.points, "--pool", "offsite", "--json").summary()
    assert copied["written"] == src.points and copied["damaged"] == []
    carts = copied["cartridges"]
    assert [(c["barcode"], c["state"]) for c in carts[:2]] == [
        ("VT0001L8", "full"), ("VT0002L8", "full")
    ]  # fmt: skip
    # the last one is full too when its packs end past the early warning
    # (pack ids, so their order, differ from run to run)
    assert carts[2]["barcode"] == "VT0003L8" and len(carts) == 3
    ids = [c["media_id"] for c in carts]  # one job: each continues from the one before
    assert [_sessions(world, b)[0][2] for b in ("VT0002L8", "VT0003L8")] == ids[:2]

    # a copy to the vault killed mid-session: nothing recorded, VT0004L8 stays free
    _killed_mid_session(world, "copy-to-media", src.block, "--pool", "vault")
    media = world.media()
    assert (media["VT0004L8"]["state"], media["VT0004L8"]["sessions"]) == ("free", 0)

    # a drive that errors mid-pack (the cartridge file may not grow): one line,
    # exit 1, a write-failed event; the cartridge keeps its state
    tape = max(
        (world.data / "libraries" / "vlib" / "cartridges").iterdir(),
        key=lambda p: p.stat().st_mtime_ns,
    )  # VT0004L8: a label and the dead session's first pack
    failed = _with_file_size_limit(
        world, tape.stat().st_size + 300_000, "copy-to-media", src.block, "--pool", "vault"
    )
    assert failed.rc == 1
    assert_one_line_error(failed, "VT0004L8", "File too large")
    shown = world.ok("--json", "media", "show", "VT0004L8").json()
    assert (shown["state"], shown["sessions"]) == ("free", 0)
    assert "File too large" in (shown["error"] or "")
    assert "write-failed" in [e["kind"] for e in shown["events"]]

    # the next copy appends after both dead sessions and is recorded
    vaulted = world.ok("copy-to-media", src.block, "--pool", "vault", "--json").summary()
    assert vaulted["written"] == [src.block]
    assert vaulted["cartridges"][0]["barcode"] == "VT0004L8"
    before = world.media()
    assert before["VT0004L8"]["sessions"] == 1
    before_vault = _sessions(world, "VT0004L8")
    assert [s[1] for s in before_vault] == [[src.block]]

    # the catalog lost, rebuilt from the cartridges alone
    world.db.drop()
    # the retention is not on tape: a pool created again before the rebuild gives
    # its media their expiry; one the rebuild makes from a label has none
    world.ok("pool", "create", "offsite", "--retention", "7y")
    rebuilt = world.ok("--json", "library", "rebuild-catalog", "vlib").json()
    assert {(c["barcode"], c["class"]) for c in rebuilt["cartridges"]} == {
        (f"VT000{n}L8", "ours") for n in range(1, 6)
    }
    after = world.media()
    assert _comparable(after) == _comparable(before)
    seven_years = timedelta(days=7 * 365)
    for barcode in ("VT0001L8", "VT0002L8", "VT0003L8"):
        written = datetime.fromisoformat(after[barcode]["last_written"])
        assert datetime.fromisoformat(after[barcode]["expires_at"]) == written + seven_years
    assert after["VT0004L8"]["expires_at"] is None  # pool vault made from its label
    assert _sessions(world, "VT0003L8") == [(1, src.points, ids[1])]
    assert _sessions(world, "VT0004L8") == before_vault

    # the repository forgets them; the tapes alone restore them byte-exactly
    world.prune_all()
    world.restore_all("tape")
    status = world.ok("--json", "library", "status", "vlib").json()
    where = {e["barcode"]: (e["kind"], e["address"]) for e in status["elements"] if e["full"]}
    assert where == {f"VT000{n}L8": ("slot", n) for n in range(1, 6)}  # drives empty


# --- 2. the inventory with the stand-in mtx and with a changer script ---------


@dataclass
class Changer:
    """A configured library (`[library.tape]`) whose cartridges are files,
    and the operator's hands on it."""

    kind: str
    root: Path
    carts: dict[int, tuple[str | None, Path]]  # slot -> (barcode, cartridge file)

    SLOTS = 4
    IE = 2

    def config(self) -> str:
        drive = self.root / "drive0"
        if self.kind == "mtx":
            wrapper = self.root / "mtx"
            wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_MTX}" "$@"\n')
            wrapper.chmod(0o755)
            return (
                f'[library.tape]\nkind = "mtx"\ndevice = "{self.root / "sg3.json"}"\n'
                f'drives = ["{drive}"]\nmtx = "{wrapper}"\ntimeout = 60\n'
            )
        return (
            f'[library.tape]\nkind = "script"\nscript = "{FILE_CHANGER}"\n'
            f'device = "{self.root}"\ndrives = ["{drive}"]\ntimeout = 60\n'
        )

    def save(self) -> None:
        """Write the robot's state (slots 5 and 6 are import/export)."""
        total = self.SLOTS + self.IE
        if self.kind == "mtx":
            state_path = self.root / "sg3.json"
            moves = json.loads(state_path.read_text())["moves"] if state_path.exists() else 0
            slots = [
                None
                if n not in self.carts
                else {"tag": self.carts[n][0], "file": str(self.carts[n][1])}
                for n in range(1, total + 1)
            ]
            state = {"drives": [None], "slots": slots, "import_export": self.IE, "moves": moves}
            state["drive_files"] = [str(self.root / "drive0")]
            state_path.write_text(json.dumps(state))
            return
        lines = ["D:0:E"]
        for n in range(1, total + 1):
            kind = "S" if n <= self.SLOTS else "I"
            if n in self.carts:
                barcode, path = self.carts[n]
                if path != self.root / f"slot{n}":
                    os.replace(path, self.root / f"slot{n}")
                    self.carts[n] = (barcode, self.root / f"slot{n}")
                lines.append(f"{kind}:{n}:F:{barcode or ''}")
            else:
                lines.append(f"{kind}:{n}:E")
        (self.root / "inventory").write_text("\n".join(lines) + "\n")

    def moves(self) -> int:
        if self.kind == "mtx":
            return int(json.loads((self.root / "sg3.json").read_text())["moves"])
        path = self.root / "moves"
        return int(path.read_text()) if path.exists() else 0

    def drive(self, slot: int) -> VirtualDrive:
        return VirtualDrive(self.carts[slot][1], capacity=64 * MiB, record_size=RECORD)


@pytest.mark.parametrize(
    ("kind", "catalog_db"),
    [("mtx", "sqlite"), ("script", "postgresql")],
    indirect=["catalog_db"],
)
def test_inventory_through_the_cli(world: World, kind: str) -> None:
    src = world.source
    root = world.base / "changer"
    root.mkdir()
    carts: dict[int, tuple[str | None, Path]] = {}
    for slot, barcode in [
        (1, "A00001L8"), (2, "A00002L8"), (3, "CLN001L1"), (4, "A00004L8"),
        (5, "NEW005L8"), (6, None),
    ]:  # fmt: skip
        path = world.base / f"cart{slot}.tape"
        create_cartridge(path)
        carts[slot] = (barcode, path)
    lib = Changer(kind, root, carts)

    repo = Repository.open(LocalBackend(world.repo), PASSWORD.encode())
    try:
        with lib.drive(1) as d:  # ours, with a point: written elsewhere, unknown here
            write_label(d, repo.master, repo.config.id, "A00001L8", "offsite", 1)
            write_session(d, repo, [src.block], reach=referenced_by_points)
        with lib.drive(4) as d:  # labelled under another barcode: swapped labels
            write_label(d, repo.master, repo.config.id, "B00004L8", "offsite", 2)
        with lib.drive(5) as d:  # our magic, a label that does not parse: damaged
            d.write_record(LABEL_MAGIC + b"\x07\x00" + bytes(RECORD - 10))
            d.write_filemark()
        with lib.drive(6) as d:  # no barcode: known by its label's media id
            write_label(d, repo.master, repo.config.id, "NOBAR1", "offsite", 3)
    finally:
        repo.close()
    lib.save()
    hook_out = world.base / "hook.env"
    hook = world.base / "hook.sh"
    hook.write_text(f'#!/bin/sh\nenv | grep ^STRONGROOM_NOTIFY_ | sort > "{hook_out}"\n')
    hook.chmod(0o755)
    world.config(lib.config() + f'\n[notify]\ncommand = "{hook}"\ntimeout = 20\n')

    # unknown cartridges (two through the import/export slots): a detailed
    # inventory loads each once, never the cleaning one, and classifies them
    doc = world.ok("--json", "library", "inventory", "tape").json()
    assert doc["new"] == ["A00001L8", "A00002L8", "A00004L8", "NEW005L8"]
    assert doc["no_barcode"] == [6] and doc["cleaning"] == ["CLN001L1"]
    classes = {(d["barcode"], d["slot"]): (d["class"], d["sessions"]) for d in doc["detailed"]}
    assert classes == {
        ("A00001L8", 1): ("ours", 1),
        ("A00002L8", 2): ("blank", 0),
        ("A00004L8", 4): ("suspect", 0),
        ("NEW005L8", 5): ("damaged", 0),
        (None, 6): ("ours", 0),
    }
    assert lib.moves() == 2 * 5  # each loaded and put back; CLN001L1 never
    assert [n["ok"] for n in doc["notifications"]] == [True]
    notified = dict(line.split("=", 1) for line in hook_out.read_text().splitlines())
    # one notice for the six new media (the cleaning cartridge is new too)
    assert notified["STRONGROOM_NOTIFY_BARCODES"].split() == [
        "A00001L8", "A00002L8", "CLN001L1", "A00004L8", "NEW005L8", "-"
    ]  # fmt: skip
    assert len(doc["new_media"]) == 6
    media = world.media()
    states = {b: (m["state"], m["slot"], m["online"]) for b, m in media.items()}
    nobar = next(b for b in states if b not in {c[0] for c in carts.values()})
    assert states == {
        "A00001L8": ("appending", 1, True),
        "A00002L8": ("blank", 2, True),
        "CLN001L1": ("cleaning", 3, True),
        "A00004L8": ("suspect", 4, True),
        "NEW005L8": ("error", 5, True),
        nobar: ("free", 6, True),
    }
    assert _sessions(world, "A00001L8") == [(1, [src.block], None)]

    # a known cartridge taken out: offline, without a move
    taken = lib.carts.pop(2)
    lib.save()
    gone = world.ok("--json", "library", "inventory", "tape", "--no-detailed").json()
    # a cartridge without a barcode is placed by a detailed read only
    # (docs/media.md): a fast-only inventory takes it offline as well, named by its media id
    assert gone["went_offline"] == ["A00002L8", nobar] and gone["new"] == []
    assert set(world.media("--offline")) == {"A00002L8", nobar}
    # ... and put back: online again, an event in `media show`
    lib.carts[2] = taken
    lib.save()
    back = world.ok("--json", "library", "inventory", "tape", "--no-detailed").json()
    assert back["back_online"] == ["A00002L8"] and back["went_offline"] == []
    assert lib.moves() == 2 * 5
    shown = world.ok("--json", "media", "show", "A00002L8").json()
    assert (shown["online"], shown["slot"]) == (True, 2)
    assert [e["kind"] for e in shown["events"]][:2] == ["online", "offline"]
