"""A VHD chain's records lie in a folder or bucket that is not authenticated:
a record that is not a JSON object (or nests too deeply) says the cycle has not
arrived, never an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.protect.destinations import VhdChain
from strongroom.storage.local import LocalBackend


@pytest.mark.parametrize("record", [b"[1, 2]", b'"text"', b"5", b"[" * 100_000, b"{"])
def test_a_foreign_record_means_not_arrived(tmp_path: Path, record: bytes) -> None:
    chain = VhdChain(LocalBackend(tmp_path / "dest"))
    chain.backend.put("disk-000001.json", record)
    assert chain.arrived("disk", 1, "some-uuid") is None


def test_our_record_means_arrived(tmp_path: Path) -> None:
    chain = VhdChain(LocalBackend(tmp_path / "dest"))
    chain.backend.put("disk-000001.json", b'{"uuid": "some-uuid"}')
    assert chain.arrived("disk", 1, "some-uuid") is not None
