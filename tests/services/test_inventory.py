"""Inventory workflows on the three library kinds (the stand-in mtx, a
changer script, the virtual library), each with cartridge files so that the
drives are read end to end: fast inventory (no move), detailed inventory
(ours imported, foreign, suspect, blank, damaged, a drive error, a cartridge
without a barcode, a cleaning cartridge never loaded), offline and back
online, the library lock, and rebuild-catalog after the catalog is deleted."""

from __future__ import annotations

import json
import os
import random
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from strongroom.catalog import Catalog, MediumState
from strongroom.config import NotifySpec
from strongroom.errors import MediaError
from strongroom.media.changer import Changer
from strongroom.media.drive import Drive
from strongroom.media.label import LABEL_MAGIC, write_label
from strongroom.media.mtx import MtxChanger
from strongroom.media.script_changer import ScriptChanger
from strongroom.media.virtual import Layout, VirtualLibrary
from strongroom.media.virtual_drive import VirtualDrive, create_cartridge
from strongroom.media.writer import write_session
from strongroom.repository.keys import KdfParams
from strongroom.repository.repo import Repository
from strongroom.services.inventory import (
    Detailed,
    Keys,
    Report,
    Status,
    inventory,
    library_lock,
)
from strongroom.services.walk import referenced_by_points
from strongroom.storage.local import LocalBackend
from tests.helpers.cli import FAST_KDF, PASSWORD, run_cli
from tests.media.conftest import FILE_CHANGER, mtx_program

RECORD = 4096
SLOTS = 6
IE = 3
DRIVES = 2


@dataclass
class Repo:
    path: Path
    point: str
    foreign: Path


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """Our repository with one point, and another repository (foreign)."""
    base = tmp_path_factory.mktemp("inventory-repos")
    ours, foreign = base / "repo", base / "foreign"
    for path in (ours, foreign):
        Repository.init(LocalBackend(path), PASSWORD.encode(), kdf=KdfParams(1, 8192, 1)).close()
    tree = base / "tree"
    tree.mkdir()
    (tree / "data.bin").write_bytes(random.Random(14).randbytes(200_000))
    env = {
        **os.environ,
        "HOME": str(base),
        "XDG_DATA_HOME": str(base / "data"),
        "XDG_CONFIG_HOME": str(base / "config"),
        "STRONGROOM_KDF": FAST_KDF,
        "STRONGROOM_PASSWORD": PASSWORD,
        "STRONGROOM_REPO": str(ours),
    }
    done = run_cli(["backup", str(tree), "--json"], env)
    assert done.rc == 0, done.err
    return Repo(ours, str(done.summary()["point_id"]), foreign)


@pytest.fixture
def repo(repos: Repo) -> Iterator[Repository]:
    opened = Repository.open(LocalBackend(repos.path), PASSWORD.encode())
    yield opened
    opened.close()


@pytest.fixture
def other(repos: Repo) -> Iterator[Repository]:
    opened = Repository.open(LocalBackend(repos.foreign), PASSWORD.encode())
    yield opened
    opened.close()


# --- the three kinds, with cartridge files -----------------------------------


@dataclass
class Lib:
    """A library and the operator's hands: put a cartridge in an
    import/export slot, take one out, count robot moves."""

    changer: Changer
    moves: Callable[[], int]
    insert: Callable[[str | None], int]  # barcode -> the import/export slot used
    remove: Callable[[str], None]
    shelf: dict[str, object] = field(default_factory=dict)


def _mtx(tmp: Path) -> Lib:
    state_path = tmp / "sg3.json"
    carts = tmp / "carts"
    carts.mkdir()
    counter = [0]

    def new_file() -> str:
        counter[0] += 1
        path = carts / f"c{counter[0]}.tape"
        create_cartridge(path)
        return str(path)

    drives = [str(tmp / f"nst{n}") for n in range(DRIVES)]
    state = {
        "drives": [None] * DRIVES,
        "slots": [None] * (SLOTS + IE),
        "import_export": IE,
        "moves": 0,
        "drive_files": drives,
    }
    state_path.write_text(json.dumps(state))
    shelf: dict[str, object] = {}

    def edit(change: Callable[[dict[str, object]], int | None]) -> int | None:
        doc = json.loads(state_path.read_text())
        out = change(doc)
        state_path.write_text(json.dumps(doc))
        return out

    def insert(barcode: str | None) -> int:
        cart = shelf.pop(barcode, None) if barcode else None
        cart = cart or {"tag": barcode, "file": new_file()}

        def put(doc: dict[str, object]) -> int:
            slots = doc["slots"]
            assert isinstance(slots, list)
            for n in range(SLOTS + 1, SLOTS + IE + 1):
                if slots[n - 1] is None:
                    slots[n - 1] = cart
                    return n
            for n in range(1, SLOTS + 1):
                if slots[n - 1] is None:
                    slots[n - 1] = cart
                    return n
            raise AssertionError("library full")

        slot = edit(put)
        assert slot is not None
        return slot

    def remove(barcode: str) -> None:
        def take(doc: dict[str, object]) -> None:
            slots = doc["slots"]
            assert isinstance(slots, list)
            for n, s in enumerate(slots):
                if s is not None and s["tag"] == barcode:
                    shelf[barcode] = s
                    slots[n] = None
                    return
            raise AssertionError(barcode)

        edit(take)

    changer = MtxChanger(
        "tape", str(state_path), drives=drives, mtx=mtx_program(tmp), timeout=30, record_size=RECORD
    )
    return Lib(changer, lambda: int(json.loads(state_path.read_text())["moves"]), insert, remove)


def _script(tmp: Path) -> Lib:
    control = tmp / "changer"
    control.mkdir()
    inventory_file = control / "inventory"
    lines = [f"D:{d}:E" for d in range(DRIVES)]
    lines += [f"{'S' if n <= SLOTS else 'I'}:{n}:E" for n in range(1, SLOTS + IE + 1)]
    inventory_file.write_text("\n".join(lines) + "\n")
    shelf: dict[str, object] = {}

    def rows() -> list[list[str]]:
        return [line.split(":") for line in inventory_file.read_text().split()]

    def write(table: list[list[str]]) -> None:
        inventory_file.write_text("\n".join(":".join(r) for r in table) + "\n")

    def insert(barcode: str | None) -> int:
        table = rows()
        free = [r for r in table if r[0] in "IS" and r[2] == "E"]
        free.sort(key=lambda r: r[0] != "I")
        row = free[0]
        slot_file = control / f"slot{row[1]}"
        kept = shelf.pop(barcode, None) if barcode else None
        if kept is not None:
            os.replace(str(kept), slot_file)
        else:
            create_cartridge(slot_file)
        row[2:] = ["F", barcode or ""]
        write(table)
        return int(row[1])

    def remove(barcode: str) -> None:
        table = rows()
        for row in table:
            if row[0] in "IS" and row[2] == "F" and row[3] == barcode:
                kept = tmp / f"shelf-{barcode}"
                os.replace(control / f"slot{row[1]}", kept)
                shelf[barcode] = kept
                row[2:] = ["E"]
                write(table)
                return
        raise AssertionError(barcode)

    def moves() -> int:
        path = control / "moves"
        return int(path.read_text()) if path.exists() else 0

    drives = [str(tmp / f"drive{n}") for n in range(DRIVES)]
    changer = ScriptChanger(
        "disks", str(FILE_CHANGER), str(control), drives=drives, timeout=30, record_size=RECORD
    )
    return Lib(changer, moves, insert, remove)


def _virtual(tmp: Path) -> Lib:
    library = VirtualLibrary.create(
        "vlib",
        Layout(SLOTS, DRIVES, IE, capacity=4 << 20, record_size=RECORD),
        root=tmp / "vlib",
    )

    def insert(barcode: str | None) -> int:
        if barcode is None:
            return library.import_cartridges([], unlabelled=1)[0]
        return library.import_cartridges([barcode])[0]

    def remove(barcode: str) -> None:
        library.export_cartridges([barcode])

    return Lib(library, lambda: library.moves, insert, remove)


KINDS = {"mtx": _mtx, "script": _script, "virtual": _virtual}


@pytest.fixture(params=list(KINDS))
def lib(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lib:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "library").mkdir()
    return KINDS[request.param](tmp_path / "library")


def _fill(lib: Lib, barcode: str | None, slot: int) -> None:
    """A blank cartridge in storage slot `slot` (in through the mail slot)."""
    got = lib.insert(barcode)
    if got != slot:
        lib.changer.transfer(got, slot)


def _with_drive(lib: Lib, slot: int, use: Callable[[Drive], object]) -> None:
    lib.changer.load(slot, 0)
    drive = lib.changer.drive(0)
    try:
        use(drive)
    finally:
        drive.close()
        lib.changer.unload(0, slot)


def _cartridge_file(lib: Lib, slot: int) -> str:
    found: list[str] = []

    def where(drive: Drive) -> None:
        assert isinstance(drive, VirtualDrive)
        found.append(os.path.realpath(drive.path))

    _with_drive(lib, slot, where)
    return found[0]


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog.open(str(tmp_path / "catalog.sqlite")) as opened:
        yield opened


def _by_barcode(report: Report) -> dict[str | None, tuple[str, str | None]]:
    return {
        (line.barcode or f"slot{line.slot}"): (line.status.value, line.media_class)
        for line in report.lines
    }


def test_inventory_workflow(
    lib: Lib,
    catalog: Catalog,
    repo: Repository,
    other: Repository,
    repos: Repo,
    tmp_path: Path,
) -> None:
    for n, barcode in enumerate(["A00001L8", "A00002L8", "A00003L8", "A00004L8", None], 1):
        _fill(lib, barcode, n)
    _fill(lib, "A00006L8", 6)

    def ours(drive: Drive) -> None:
        write_label(drive, repo.master, repo.config.id, "A00001L8", "offsite", 1)
        write_session(drive, repo, [repos.point], reach=referenced_by_points)

    _with_drive(lib, 1, ours)
    _with_drive(
        lib,
        2,
        lambda d: write_label(d, other.master, other.config.id, "A00002L8", "theirs", 1),
    )
    # labelled under another barcode: the label and the changer disagree
    _with_drive(lib, 3, lambda d: write_label(d, repo.master, repo.config.id, "B00003L8", "p", 2))
    _with_drive(lib, 5, lambda d: write_label(d, repo.master, repo.config.id, "NOBAR1", "p", 3))

    def damaged(drive: Drive) -> None:
        drive.rewind()
        drive.write_record(LABEL_MAGIC + b"\x07\x00" + bytes(RECORD - 10))
        drive.write_filemark()

    _with_drive(lib, 6, damaged)
    assert lib.insert("CLN001L1") == 7
    assert lib.insert("A00008L8") == 8
    broken = _cartridge_file(lib, 8)
    with open(broken, "ab") as f:  # an entry cut short: the drive fails reading it
        f.write(b"\x00\x10\x00\x00partial")

    hook_out = tmp_path / "hook.env"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\nenv | grep ^STRONGROOM_NOTIFY_ | sort > "{hook_out}"\n')
    hook.chmod(0o755)
    notifiers = NotifySpec(command=str(hook), timeout=20)
    keys = Keys(repo.config.id, repo.master)

    # fast only: nothing moves, the new ones are queued
    before = lib.moves()
    fast = inventory(catalog, lib.changer, detailed=Detailed.NONE, keys=keys)
    assert lib.moves() == before
    assert _by_barcode(fast) == {
        "A00001L8": ("new", None),
        "A00002L8": ("new", None),
        "A00003L8": ("new", None),
        "A00004L8": ("new", None),
        "slot5": ("no barcode", None),
        "A00006L8": ("new", None),
        "CLN001L1": ("cleaning", "cleaning"),
        "A00008L8": ("new", None),
    }
    cleaning = catalog.get_medium("CLN001L1")
    assert (cleaning.state, cleaning.online, cleaning.slot) == (MediumState.CLEANING, True, 7)

    # detailed: every queued cartridge loaded once and put back; never the cleaning one
    status_before = lib.changer.status()
    report = inventory(catalog, lib.changer, keys=keys, notifiers=notifiers)
    assert lib.moves() == before + 2 * 7
    assert lib.changer.status() == status_before
    assert _by_barcode(report) == {
        "A00001L8": ("new", "ours"),
        "A00002L8": ("new", "foreign"),
        "A00003L8": ("new", "suspect"),
        "A00004L8": ("new", "blank"),
        "slot5": ("no barcode", "ours"),
        "A00006L8": ("new", "damaged"),
        "CLN001L1": ("cleaning", None),
        "A00008L8": ("new", "error"),
    }
    lines = {line.barcode: line for line in report.lines}
    assert lines["A00001L8"].sessions == 1
    assert "is damaged at byte 8" in lines["A00008L8"].reason
    assert "labelled 'B00003L8'" in lines["A00003L8"].reason
    states = {m.name: (m.state, m.slot, m.online) for m in catalog.list_media()}
    nobar = str(lines[None].media_id)
    assert states == {
        "A00001L8": (MediumState.APPENDING, 1, True),
        "A00002L8": (MediumState.FOREIGN, 2, True),
        "A00003L8": (MediumState.SUSPECT, 3, True),
        "A00004L8": (MediumState.BLANK, 4, True),
        nobar: (MediumState.FREE, 5, True),
        "A00006L8": (MediumState.ERROR, 6, True),
        "CLN001L1": (MediumState.CLEANING, 7, True),
        "A00008L8": (MediumState.ERROR, 8, True),
    }
    assert catalog.get_medium("A00002L8").repository_id == other.config.id
    placements = catalog.find_point(repos.point)
    assert [(p.barcode, p.slot) for p in placements] == [("A00001L8", 1)]
    assert catalog.get_medium("A00001L8").pool == "offsite"
    env = dict(line.split("=", 1) for line in hook_out.read_text().splitlines())
    assert env["STRONGROOM_NOTIFY_COUNT"] == "7"
    assert env["STRONGROOM_NOTIFY_BARCODES"].split() == [
        "A00001L8", "A00002L8", "A00003L8", "A00004L8", "-", "A00006L8", "A00008L8"
    ]  # fmt: skip
    assert [d.ok for d in report.notifications] == [True]

    # known media removed and returned: offline, then back online, with events
    lib.remove("A00004L8")
    before = lib.moves()
    gone = inventory(catalog, lib.changer, detailed=Detailed.NONE, keys=keys)
    assert ("A00004L8", Status.WENT_OFFLINE) in [(x.barcode, x.status) for x in gone.lines]
    assert not catalog.get_medium("A00004L8").online
    assert {x.status for x in gone.lines if x.barcode} == {
        Status.KNOWN,
        Status.WENT_OFFLINE,
        Status.CLEANING,
    }
    # the cartridge without a barcode is not seen by a status either: named by its media id
    assert gone.as_dict()["went_offline"] == ["A00004L8", nobar]
    assert not catalog.get_medium(uuid.UUID(nobar)).online
    back_slot = lib.insert("A00004L8")
    back = inventory(catalog, lib.changer, detailed=Detailed.NONE, keys=keys)
    assert lib.moves() == before
    assert [x.barcode for x in back.having(Status.BACK_ONLINE)] == ["A00004L8"]
    medium = catalog.get_medium("A00004L8")
    assert (medium.online, medium.slot) == (True, back_slot)
    kinds = [e.kind for e in catalog.list_events(barcode="A00004L8")]
    assert kinds[:2] == ["online", "offline"]

    # rebuild-catalog after the catalog database is deleted
    def snapshot(c: Catalog) -> dict[str, object]:
        # a label's media id comes back; the others (blank, suspect...) get new ones
        media = {
            m.name: (m.state in labelled and m.media_id, m.state, m.slot, m.pool, m.sessions)
            for m in c.list_media()
        }
        contents = {m.name: c.contents(m.media_id) for m in c.list_media()}
        return {"media": media, "contents": contents}

    labelled = (MediumState.APPENDING, MediumState.FREE, MediumState.FOREIGN)
    # a cartridge without a barcode is placed by a detailed read only: read it again
    again = inventory(catalog, lib.changer, keys=keys)
    assert [(x.slot, x.media_class, x.new_medium) for x in again.detailed] == [(5, "ours", False)]
    expected = snapshot(catalog)
    catalog.close()
    os.remove(tmp_path / "catalog.sqlite")
    with Catalog.open(str(tmp_path / "catalog.sqlite")) as fresh:
        rebuilt = inventory(fresh, lib.changer, keys=keys, rebuild=True)
        assert rebuilt.forgotten == 0
        assert rebuilt.as_dict()["went_offline"] == []
        assert snapshot(fresh) == expected
        assert [(p.barcode, p.slot) for p in fresh.find_point(repos.point)] == [("A00001L8", 1)]


def test_rebuild_forgets_only_the_media_present_and_keeps_offline_ones(
    tmp_path: Path,
    catalog: Catalog,
    repo: Repository,
    repos: Repo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "library").mkdir()
    lib = _virtual(tmp_path / "library")
    for n, barcode in enumerate(["A00001L8", "A00002L8", None], 1):
        _fill(lib, barcode, n)
    for slot, name in ((1, "A00001L8"), (2, "A00002L8"), (3, "NOBAR1")):

        def ours(drive: Drive, name: str = name, slot: int = slot) -> None:
            write_label(drive, repo.master, repo.config.id, name, "offsite", slot)
            write_session(drive, repo, [repos.point], reach=referenced_by_points)

        _with_drive(lib, slot, ours)
    keys = Keys(repo.config.id, repo.master)
    first = inventory(catalog, lib.changer, keys=keys)
    nobar = next(x.media_id for x in first.lines if x.barcode is None)
    assert nobar is not None
    catalog.update_medium("A00001L8", error="stale")
    lib.remove("A00002L8")  # to the vault

    rebuilt = inventory(catalog, lib.changer, keys=keys, rebuild=True)
    assert rebuilt.forgotten == 2  # A00001L8 and the one without a barcode, read again
    assert catalog.get_medium("A00001L8").error is None
    vaulted = catalog.get_medium("A00002L8")
    assert (vaulted.online, vaulted.sessions, vaulted.pool) == (False, 1, "offsite")
    assert sorted(p.barcode or str(p.media_id) for p in catalog.find_point(repos.point)) == sorted(
        ["A00001L8", "A00002L8", nobar]
    )
    assert rebuilt.as_dict()["went_offline"] == ["A00002L8"]
    assert {m.name for m in catalog.list_media()} == {"A00001L8", "A00002L8", nobar}


def test_a_second_inventory_fails_with_one_line_while_the_library_is_busy(
    lib: Lib, catalog: Catalog
) -> None:
    with library_lock(lib.changer), pytest.raises(MediaError, match="is busy") as caught:
        inventory(catalog, lib.changer)
    assert "\n" not in str(caught.value)
    assert inventory(catalog, lib.changer).lines == []


def test_label_only_and_no_free_drive(lib: Lib, catalog: Catalog, repo: Repository) -> None:
    """Without the repository's key a label is never `ours`; with both drives
    loaded, one is unloaded to its slot to read a new cartridge."""
    for n, barcode in enumerate(["A00001L8", "A00002L8", "A00003L8"], 1):
        _fill(lib, barcode, n)
    _with_drive(lib, 3, lambda d: write_label(d, repo.master, repo.config.id, "A00003L8", "p", 1))
    lib.changer.load(1, 0)
    lib.changer.load(2, 1)
    report = inventory(catalog, lib.changer)
    got = {x.barcode: (x.drive, x.media_class) for x in report.lines}
    assert got["A00001L8"] == (0, "blank") and got["A00002L8"] == (1, "blank")
    assert got["A00003L8"][1] == "foreign"
    assert "not verified" in report.lines[-1].reason
    drives = [e.full for e in lib.changer.status().drives]
    assert drives.count(True) == 1  # one drive gave way, the cartridge went back to its slot
    assert catalog.get_medium("A00003L8").slot == 3


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("fcntl locks and the st driver are Linux's")
