"""A cycle's record in a VHD chain destination is read bounded and checked for
shape: a damaged, foreign or planted huge record means "not arrived" (the cycle
is shipped again), never an uncaught AttributeError or a read of it whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strongroom.protect.destinations import VhdChain
from strongroom.storage.local import LocalBackend


@pytest.mark.parametrize(
    "record",
    [
        b"[1, 2]",
        b'"text"',
        b"null",
        b"{not json",
        b"[" * 100_000,
        "huge",
        json.dumps({"uuid": "u"}),
    ],
)
def test_a_bad_record_means_not_arrived(tmp_path: Path, record: bytes | str) -> None:
    chain = VhdChain(LocalBackend(tmp_path))
    path = tmp_path / "disk-000003.json"
    if record == "huge":
        with open(path, "wb") as f:
            f.truncate(256 << 20)  # sparse; far above the bound of a record
    else:
        path.write_bytes(record if isinstance(record, bytes) else record.encode())
    arrived = chain.arrived("disk", 3, "u")
    if record == json.dumps({"uuid": "u"}):
        assert arrived == chain.absolute_path("disk", 3)  # a sound record still counts
    else:
        assert arrived is None
