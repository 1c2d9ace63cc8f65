"""Hostile cartridges and changers against the media services (the review of
issue #14): a foreign label whose fields are out of range, a cartridge that is
not the one the catalog names under its barcode, a webhook URL holding a
token, a virtual library interrupted between moving a cartridge file and
rewriting its state."""

from __future__ import annotations

import json
import os
import random
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom.catalog import Catalog, MediumState
from strongroom.config import NotifySpec
from strongroom.errors import MediaError
from strongroom.media.label import Label
from strongroom.media.session import SessionHeader
from strongroom.media.virtual import Layout, VirtualLibrary
from strongroom.repository.keys import KdfParams, MasterKey
from strongroom.repository.repo import Repository
from strongroom.services.copy_to_media import copy_to_media
from strongroom.services.inventory import Detailed, inventory
from strongroom.services.media_pools import create_pool, label_media, recycle
from strongroom.services.notify import Notice, notify
from strongroom.storage.local import LocalBackend
from tests.helpers.cli import FAST_KDF, PASSWORD, run_cli

RECORD = 4096
OTHER = MasterKey(bytes(range(1, 65)))


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog.open(str(tmp_path / "catalog.sqlite")) as opened:
        yield opened


@pytest.fixture
def library(tmp_path: Path) -> VirtualLibrary:
    layout = Layout(slots=4, drives=1, import_export=2, capacity=1 << 22, record_size=RECORD)
    return VirtualLibrary.create(
        "hostile", layout, root=tmp_path / "lib", cartridges=["A00001L8", "A00002L8"]
    )


def _label(library: VirtualLibrary, slot: int, barcode: str, when: int) -> None:
    """Another repository's label, its time as given (write_label refuses
    what no clock gives: this is a forged or corrupted cartridge)."""
    library.load(slot, 0)
    drive = library.drive(0)
    try:
        label = Label(uuid.uuid4().bytes, uuid.uuid4().hex, barcode, "p", slot, when)
        blob = label.encode(OTHER)
        drive.rewind()
        drive.write_record(blob + bytes(RECORD - len(blob)))
        drive.write_filemark()
    finally:
        drive.close()
        library.unload(0)


@pytest.mark.parametrize("when", [2**63, 2**40, 253_402_300_800])
def test_a_foreign_label_from_beyond_year_9999_is_damaged_not_a_crash(
    library: VirtualLibrary, catalog: Catalog, when: int
) -> None:
    _label(library, 1, "A00001L8", when)
    _label(library, 2, "A00002L8", 1_800_000_000)
    report = inventory(catalog, library, detailed=Detailed.ALL)
    got = {line.barcode: line.media_class for line in report.lines}
    assert got == {"A00001L8": "damaged", "A00002L8": "foreign"}
    first = catalog.find_medium("A00001L8")
    assert first is not None and first.state is MediumState.ERROR
    assert "time" in (first.error or "")


# --- notifications: a webhook URL is a secret ---------------------------------


def test_a_failing_webhook_never_repeats_its_url_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Slack/Teams-style webhooks carry their credential in the path or
    query (or user:password@): the failure reason is logged and stored in
    the catalog's events, so it names the host only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: refused
    secret = "T0KEN-s3cr3t"
    for url in (
        f"http://127.0.0.1:{port}/services/{secret}",
        f"http://127.0.0.1:{port}/hook?token={secret}",
        f"http://bot:{secret}@127.0.0.1:{port}/hook",
    ):
        [delivery] = notify(NotifySpec(webhook=url, timeout=2.0), Notice("new-media", "l", "s"))
        assert not delivery.ok and f"127.0.0.1:{port}" in delivery.message
        assert secret not in delivery.message
    assert secret not in caplog.text


# --- the cartridge under a barcode is not the catalog's medium -----------------


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("hostile-repo")
    repo = base / "repo"
    Repository.init(LocalBackend(repo), PASSWORD.encode(), kdf=KdfParams(1, 8192, 1)).close()
    tree = base / "tree"
    tree.mkdir()
    (tree / "f.bin").write_bytes(random.Random(7).randbytes(50_000))
    env = {
        **os.environ,
        "HOME": str(base),
        "XDG_DATA_HOME": str(base / "data"),
        "XDG_CONFIG_HOME": str(base / "config"),
        "STRONGROOM_KDF": FAST_KDF,
        "STRONGROOM_PASSWORD": PASSWORD,
        "STRONGROOM_REPO": str(repo),
    }
    done = run_cli(["backup", str(tree), "--json"], env)
    assert done.rc == 0, done.err
    return repo, str(done.summary()["point_id"])


@pytest.fixture
def repo(small_repo: tuple[Path, str]) -> Iterator[Repository]:
    opened = Repository.open(LocalBackend(small_repo[0]), PASSWORD.encode())
    yield opened
    opened.close()


def _swap_stickers(catalog: Catalog, library: VirtualLibrary, a: str, b: str) -> None:
    """The operator moves the barcode stickers between two cartridges."""
    path = library.root / "state.json"
    state = json.loads(path.read_text())
    for info in state["cartridges"].values():
        info["barcode"] = {a: b, b: a}.get(info["barcode"], info["barcode"])
    path.write_text(json.dumps(state))
    inventory(catalog, library, detailed=Detailed.NONE)  # the catalog sees the barcodes move


def _tape_bytes(library: VirtualLibrary) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (library.root / "cartridges").iterdir()}


def test_copy_refuses_a_cartridge_that_is_not_the_catalogs_medium(
    library: VirtualLibrary, catalog: Catalog, repo: Repository, small_repo: tuple[Path, str]
) -> None:
    """Stickers swapped after labelling: the catalog's A00001L8 (pool p) is
    now read as A00002L8 and the other way round. A copy must not append to
    a cartridge and record the session under another medium (a restore
    would then look for the point on the wrong cartridge, and recycling
    would erase it on the other's schedule)."""
    create_pool(catalog, "p", "30d", None)
    create_pool(catalog, "q", "1d", None)
    label_media(catalog, library, repo, "p", ["A00001L8"])
    label_media(catalog, library, repo, "q", ["A00002L8"])
    _swap_stickers(catalog, library, "A00001L8", "A00002L8")
    before = _tape_bytes(library)
    with pytest.raises(MediaError, match="A00001L8"):
        copy_to_media(catalog, library, repo, [small_repo[1]], "p")
    assert _tape_bytes(library) == before  # nothing written
    medium = catalog.find_medium("A00001L8")
    assert medium is not None and catalog.sessions(medium.media_id) == []


def test_recycling_never_erases_another_cartridge(
    library: VirtualLibrary, catalog: Catalog, repo: Repository, small_repo: tuple[Path, str]
) -> None:
    """An expired medium is relabelled (its tape erased) only if the
    cartridge under its barcode is that medium: here the sticker of the
    expired one is on a cartridge holding a fresh copy."""
    create_pool(catalog, "p", "1d", None)
    label_media(catalog, library, repo, "p", ["A00001L8", "A00002L8"])
    copy_to_media(catalog, library, repo, [small_repo[1]], "p")  # on A00001L8
    old = datetime.now(UTC) - timedelta(days=30)
    first = catalog.find_medium("A00001L8")
    assert first is not None
    catalog.update_medium(first.media_id, state=MediumState.FULL, expires_at=old)
    second = catalog.find_medium("A00002L8")
    assert second is not None
    catalog.update_medium(second.media_id, state=MediumState.FULL)
    _swap_stickers(catalog, library, "A00001L8", "A00002L8")
    before = _tape_bytes(library)
    with pytest.raises(MediaError):
        recycle(catalog, library, repo, first, datetime.now(UTC))
    assert _tape_bytes(library) == before


def test_a_session_header_claiming_the_last_session_number_is_refused(
    library: VirtualLibrary, catalog: Catalog, repo: Repository, small_repo: tuple[Path, str]
) -> None:
    """Session headers are not authenticated: one claiming session 2**32-1
    made the next session number overflow its 32-bit field (struct.error)."""
    create_pool(catalog, "p", "30d", None)
    [done] = label_media(catalog, library, repo, "p", ["A00001L8"])
    library.load(1, 0)
    with library.drive(0) as drive:
        drive.space_to_end_of_data()
        header = SessionHeader(uuid.UUID(done.media_id).bytes, 2**32 - 1, bytes(16), 0)
        drive.write_record(header.encode() + bytes(RECORD - len(header.encode())))
        drive.write_filemark()
    library.unload(0)
    with pytest.raises(MediaError, match="session"):
        copy_to_media(catalog, library, repo, [small_repo[1]], "p")
