"""The contract suite every change tracker passes.

Use it from a test module by subclassing `TrackerContract` and implementing
its four hooks on a real disk (real qemu tools where the tracker needs them):
`start` makes a disk and records the state a backup would (the parent point's
instant), `write` changes bytes of the disk afterwards, `tracker` opens the
tracker bound to that state, and `lose` destroys the state the way the world
does (a bitmap removed, an overlay's base written). Kept in the package, as
`storage.testing.BackendContract` is, so a new tracker (continuous
protection's, a plugin's) runs exactly the same checks.

What every tracker promises (trackers/base.py):
- never miss a change: every byte written since the state lies in a
  reported extent, or the tracker says it cannot prove its answer;
- after no writes, nothing is reported (or, again, "cannot prove");
- extents are sorted, non-overlapping, within the disk, and aligned to the
  tracker's granularity (the last may end at the disk's end);
- a lost state is "cannot prove", with a reason, and the chooser then
  compares every block and says why.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from strongroom.trackers.base import ChangeTracker, Span, Unproven
from strongroom.trackers.choose import TrackerMode, choose_changes

KiB = 1024
MiB = 1024 * KiB


class TrackerContract(ABC):
    """Tests that hold for every tracker. Subclasses implement the hooks."""

    disk_size = 4 * MiB
    granularity = 64 * KiB  # extents come in multiples of this
    block_size = 64 * KiB  # the backup's block size in the chooser checks
    loses_state = True  # False: the tracker keeps no state the world can take away
    exact = True  # True: with its state intact, the tracker proves its answer

    # --- hooks ---------------------------------------------------------------

    @abstractmethod
    def start(self, tmp: Path) -> Any:
        """Make a disk of `disk_size` bytes holding data, and record the state
        a backup records; return whatever the other hooks need."""
        ...

    @abstractmethod
    def write(self, disk: Any, offset: int, length: int, byte: int) -> None:
        """Write `length` bytes of value `byte` at `offset` (after the state)."""
        ...

    @abstractmethod
    def tracker(self, disk: Any) -> AbstractContextManager[ChangeTracker]:
        """The tracker bound to the recorded state, open while the context is."""
        ...

    def lose(self, disk: Any) -> None:
        """Destroy the recorded state as the world would (only called when
        `loses_state`: a tracker without such state need not override it)."""
        raise AssertionError(f"{type(self).__name__} sets loses_state but does not override lose()")

    # --- helpers -------------------------------------------------------------

    def changed(self, disk: Any) -> Sequence[Span] | Unproven:
        with self.tracker(disk) as tracker:
            return tracker.changed()

    def check_shape(self, found: Sequence[Span]) -> None:
        end = -1
        for offset, length in found:
            assert length > 0, f"empty extent at {offset}"
            assert offset > end, f"extent at {offset} overlaps or touches the one before"
            assert offset % self.granularity == 0, f"extent at {offset} is not aligned"
            stop = offset + length
            assert stop <= self.disk_size, f"extent ending at {stop} is beyond the disk"
            assert stop % self.granularity == 0 or stop == self.disk_size, (
                f"extent ending at {stop} is not aligned"
            )
            end = stop

    def check_covers(self, found: Sequence[Span], writes: Sequence[tuple[int, int]]) -> None:
        for offset, length in writes:
            pos = offset
            for e_offset, e_length in found:
                if e_offset <= pos < e_offset + e_length:
                    pos = min(offset + length, e_offset + e_length)
                if pos >= offset + length:
                    break
            assert pos >= offset + length, f"write of {length} bytes at {offset} missed at {pos}"

    def write_all(self, disk: Any, writes: Sequence[tuple[int, int]], seed: int) -> None:
        rng = random.Random(seed)
        for offset, length in writes:
            self.write(disk, offset, length, rng.randrange(1, 256))

    def written_and_found(
        self, disk: Any, writes: Sequence[tuple[int, int]], seed: int
    ) -> Sequence[Span] | None:
        """Write, ask the tracker, and check its answer covers every write in a
        well-formed shape; None when it honestly could not prove (not exact)."""
        self.write_all(disk, writes, seed)
        found = self.changed(disk)
        if isinstance(found, Unproven):
            assert not self.exact, f"an intact state is not proven: {found.reason}"
            return None
        self.check_shape(found)
        self.check_covers(found, writes)
        return found

    # --- the contract --------------------------------------------------------

    def test_no_writes_reports_nothing(self, tmp_path: Path) -> None:
        disk = self.start(tmp_path)
        found = self.changed(disk)
        if isinstance(found, Unproven):
            assert not self.exact, f"an intact state is not proven: {found.reason}"
            assert found.reason
            return
        assert list(found) == []

    def test_every_written_byte_is_reported(self, tmp_path: Path) -> None:
        disk = self.start(tmp_path)
        size = self.disk_size
        writes = [
            (0, 1),  # the first byte
            (self.granularity - 512, 1024),  # across a boundary
            (size // 2 + 4096, 3 * 4096),  # inside one region, unaligned
            (size - 512, 512),  # the last sector
        ]
        self.written_and_found(disk, writes, seed=1)

    def test_random_writes_are_never_missed(self, tmp_path: Path) -> None:
        rng = random.Random(11)
        disk = self.start(tmp_path)
        writes = []
        for _ in range(12):
            length = rng.choice([512, 4096, 65536, 200_000])
            offset = rng.randrange(0, self.disk_size - length) // 512 * 512
            writes.append((offset, length))
        found = self.written_and_found(disk, writes, seed=2)
        if found is None:
            return
        # Reported, but not wildly more than written (a tracker that reports
        # the whole disk is correct and useless).
        reported = sum(n for _, n in found)
        bound = sum(-(-(n + self.granularity) // self.granularity) for _, n in writes)
        assert reported <= (bound + 1) * self.granularity

    def test_a_write_of_zeros_is_a_change(self, tmp_path: Path) -> None:
        disk = self.start(tmp_path)
        self.write(disk, 0, 8192, 0)  # start() put data there
        found = self.changed(disk)
        if isinstance(found, Unproven):
            assert not self.exact
            return
        self.check_covers(found, [(0, 8192)])

    def test_chooser_reads_the_blocks_reported(self, tmp_path: Path) -> None:
        disk = self.start(tmp_path)
        writes = [(3 * self.block_size + 100, 10), (self.disk_size - 1, 1)]
        self.write_all(disk, writes, seed=3)
        with self.tracker(disk) as tracker:
            changes = choose_changes(
                TrackerMode.AUTO,
                tracker,
                has_parent=True,
                size=self.disk_size,
                block_size=self.block_size,
            )
            name = tracker.name
        if changes.blocks is None:  # fell back to reading everything
            assert not self.exact and changes.note
            return
        assert changes.tracker == name
        assert changes.blocks is not None
        for offset, length in writes:
            for block in range(
                offset // self.block_size, (offset + length - 1) // self.block_size + 1
            ):
                assert changes.blocks[block], f"block {block} written but not read"

    def test_a_lost_state_cannot_be_proven(self, tmp_path: Path) -> None:
        if not self.loses_state:
            import pytest

            pytest.skip("this tracker keeps no state that can be lost")
        disk = self.start(tmp_path)
        self.write(disk, 0, 4096, 7)
        self.lose(disk)
        self.write(disk, self.disk_size // 2, 4096, 9)
        found = self.changed(disk)
        assert isinstance(found, Unproven), f"a lost state still reported {found}"
        assert found.reason and "\n" not in found.reason
        with self.tracker(disk) as tracker:
            changes = choose_changes(
                TrackerMode.AUTO,
                tracker,
                has_parent=True,
                size=self.disk_size,
                block_size=self.block_size,
            )
        assert changes.tracker == "compare" and changes.blocks is None
        assert found.reason in changes.note
