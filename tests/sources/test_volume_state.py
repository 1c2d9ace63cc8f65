"""The volume record is checked on read: it names devices to detach and processes to stop."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import SourceError
from strongroom.sources.volume import _unescape
from strongroom.sources.volume_state import (
    VolumeState,
    iter_states,
    load_state,
    record_path,
    save_state,
)


def _state() -> VolumeState:
    return VolumeState(
        image="/srv/v.qcow2",
        format="qcow2",
        mount="/srv/data",
        run_dir="/tmp/strongroom-vol-1234abcd-xyz",
        pid=4242,
        loop="/dev/loop3",
        mounted=True,
    )


def test_a_record_round_trips_atomically() -> None:
    state = _state()
    save_state(state)
    assert load_state(state.image) == state
    assert [s for s in iter_states()] == [state]
    assert load_state("/srv/other.qcow2") is None


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("loop", "/dev/sda", "loop device"),
        ("loop", "/dev/loop1/../sda", "loop device"),
        ("run_dir", "/home", "run folder"),
        ("run_dir", "/tmp/strongroom-vol-x/../..", "run folder"),
        ("pid", -1, "pid"),
        ("pid", "12", "pid"),
        ("pid", True, "pid"),
        ("image", "relative.qcow2", "absolute"),
        ("mount", "/srv/../etc", "absolute"),
        ("format", "vmdk", "format"),
        ("fs", "ntfs", "file system"),
        ("in_sync", "yes", "in_sync"),
        ("image", "/a\0b", "short string"),
        ("last_error", "x" * 5000, "short string"),
        ("version", 2, "version 1"),
    ],
)
def test_a_hostile_record_is_refused_in_one_line(field: str, value: Any, why: str) -> None:
    doc = _state().to_doc()
    doc[field] = value
    with pytest.raises(SourceError, match=why):
        VolumeState.from_doc(doc, "X")


def test_a_damaged_or_misplaced_record_is_reported_not_used() -> None:
    state = _state()
    save_state(state)
    path = record_path(state.image)
    path.write_text("{not json")
    with pytest.raises(SourceError, match="not JSON"):
        load_state(state.image)
    # A record copied under another image's name is not that image's.
    other = _state()
    other.image = "/srv/other.qcow2"
    path.write_text(json.dumps(other.to_doc()))
    (err,) = list(iter_states())
    assert isinstance(err, SourceError) and "names another image" in str(err)


@given(st.text(alphabet="ab \\\t\n0123", max_size=30))
def test_mountinfo_unescape_inverts_the_kernel_escape(path: str) -> None:
    escaped = "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)
    assert _unescape(escaped) == path
