"""The chooser, `normalize` and the contract's own checks, without a disk."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import UsageError
from strongroom.trackers.base import ChangeTracker, Span, Unproven, normalize
from strongroom.trackers.choose import TrackerMode, choose_changes, fallback, parse_mode
from strongroom.trackers.testing import TrackerContract

extents = st.lists(st.tuples(st.integers(-100, 5000), st.integers(-10, 2000)), max_size=30)


@given(extents, st.integers(0, 6000))
def test_normalize_is_sorted_disjoint_clipped_and_loses_nothing(
    raw: list[tuple[int, int]], size: int
) -> None:
    out = normalize(raw, size)
    end = -1
    for offset, length in out:
        assert length > 0 and offset > end and offset + length <= size
        end = offset + length
    covered = {b for o, n in out for b in range(o, o + n)}
    wanted = {b for o, n in raw for b in range(max(o, 0), min(o + n, size))}
    assert covered == wanted


def test_parse_mode() -> None:
    assert parse_mode("auto") == (TrackerMode.AUTO, None)
    assert parse_mode("bitmap:mine") == (TrackerMode.BITMAP, "mine")
    for bad in ("sometimes", "overlay:x", "compare:y", ""):
        with pytest.raises(UsageError):
            parse_mode(bad)


class _Fixed:
    name = "fixed"
    note = "told"

    def __init__(self, found: Sequence[Span] | Unproven) -> None:
        self.found = found

    def changed(self) -> Sequence[Span] | Unproven:
        return self.found


def test_choose_uses_proven_extents_rounded_out_to_blocks() -> None:
    changes = choose_changes(
        TrackerMode.AUTO,
        _Fixed([Span(100, 10), Span(4096 * 3 - 1, 2)]),
        has_parent=True,
        size=4096 * 8,
        block_size=4096,
    )
    assert changes.tracker == "fixed" and changes.note == "told"
    assert changes.blocks is not None
    assert changes.blocks.tolist() == [True, False, True, True, False, False, False, False]


def test_choose_falls_back_to_compare_with_the_reason() -> None:
    changes = choose_changes(
        TrackerMode.BITMAP, _Fixed(Unproven("bitmap x is gone")), has_parent=True, size=10,
        block_size=4096,
    )  # fmt: skip
    assert (changes.tracker, changes.blocks) == ("compare", None)
    assert changes.note == "bitmap x is gone: comparing every block with the parent"


def test_choose_without_parent_or_with_none_reads_everything() -> None:
    tracker = _Fixed([Span(0, 1)])
    for mode, parent in ((TrackerMode.AUTO, False), (TrackerMode.NONE, True)):
        changes = choose_changes(mode, tracker, has_parent=parent, size=10, block_size=4096)
        assert (changes.tracker, changes.blocks) == ("full", None)
    changes = choose_changes(
        TrackerMode.COMPARE, tracker, has_parent=True, size=10, block_size=4096
    )
    assert (changes.tracker, changes.blocks, changes.note) == ("compare", None, "")
    assert fallback(TrackerMode.AUTO, True, "").note == ""


class _ChecksOnly(TrackerContract):
    """The contract's checks without a tracker behind them."""

    def start(self, tmp: Path) -> None:
        raise AssertionError("not used")

    def write(self, disk: object, offset: int, length: int, byte: int) -> None:
        raise AssertionError("not used")

    def tracker(self, disk: object) -> AbstractContextManager[ChangeTracker]:
        raise AssertionError("not used")


def test_the_contract_catches_a_missed_write() -> None:
    contract = _ChecksOnly()
    contract.disk_size = 1 << 20
    with pytest.raises(AssertionError, match="missed"):
        contract.check_covers([Span(0, 65536), Span(131072, 65536)], [(65536 - 1, 2)])
    with pytest.raises(AssertionError, match="overlaps"):
        contract.check_shape([Span(0, 65536), Span(65536, 65536)])
    with pytest.raises(AssertionError, match="beyond"):
        contract.check_shape([Span(1 << 20, 65536)])
    with pytest.raises(AssertionError, match="aligned"):
        contract.check_shape([Span(512, 65536)])
