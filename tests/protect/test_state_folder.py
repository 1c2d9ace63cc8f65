"""The protect state folder writes through atomic_write and sweeps a dead run's temporaries."""

from __future__ import annotations

import os
from pathlib import Path

from strongroom.protect.cycles import StateFolder


def test_write_replaces_and_leaves_only_the_file(tmp_path: Path) -> None:
    state = StateFolder(str(tmp_path / "state"))
    try:
        state.write("state.json", b"one")
        state.write("state.json", b"two")
        assert (tmp_path / "state" / "state.json").read_bytes() == b"two"
        assert sorted(os.listdir(tmp_path / "state")) == ["lock", "state.json"]
    finally:
        state.close()


def test_a_killed_writers_temporary_is_removed_on_open(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    (folder / ".state.json.0123456789abcdef.tmp").write_bytes(b"half")
    (folder / "state.json").write_bytes(b"{}")
    state = StateFolder(str(folder))
    try:
        assert sorted(os.listdir(folder)) == ["lock", "state.json"]
        assert (folder / "state.json").read_bytes() == b"{}"
    finally:
        state.close()
