"""Hostile cartridges and changers against the media services (the review of
issue #14): a foreign label whose fields are out of range, a cartridge that is
not the one the catalog names under its barcode, a webhook URL holding a
token, a virtual library interrupted between moving a cartridge file and
rewriting its state."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.catalog import Catalog, MediumState
from strongroom.config import NotifySpec
from strongroom.media.label import Label
from strongroom.media.virtual import Layout, VirtualLibrary
from strongroom.repository.keys import MasterKey
from strongroom.services.inventory import Detailed, inventory
from strongroom.services.notify import Notice, notify

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
