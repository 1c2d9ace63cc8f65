"""The one decision between a tracker and its fallback, for every block backup.

Image backup and VM backup both end here: given what the user asked
(`--changed-since`), whether there is a parent to compare with, and the
tracker the source offers (or none, with the reason), the result is the set
of blocks the pipeline reads:
- no parent, or `none`: every block is read and stored ("full");
- `compare`, no tracker, or a tracker that cannot prove its changes: every
  block is read and compared with the parent's map ("compare"), and the
  point's note says why a tracker was not used;
- else the blocks the tracker's extents touch (rounded out to whole blocks).
A change is never missed silently: the fallback always reads everything.
"""

from __future__ import annotations

from enum import StrEnum

from strongroom.errors import UsageError
from strongroom.trackers.base import ChangeTracker, Unproven
from strongroom.trackers.changes import ChangeSet, blocks_touched


class TrackerMode(StrEnum):
    """What `--changed-since` asked for."""

    AUTO = "auto"  # the best tracker the source offers, else compare
    NONE = "none"  # read and store everything
    COMPARE = "compare"  # read everything, store what differs from the parent
    BITMAP = "bitmap"  # dirty bitmaps only (refused where there are none)
    OVERLAY = "overlay"  # an overlay's allocation only


def parse_mode(spec: str) -> tuple[TrackerMode, str | None]:
    """`auto`, `none`, `compare`, `bitmap[:NAME]` or `overlay`; the bitmap name if given."""
    kind, _, name = spec.partition(":")
    try:
        mode = TrackerMode(kind)
    except ValueError:
        mode = None
    if mode is None or (name and mode != TrackerMode.BITMAP):
        raise UsageError(
            f"--changed-since {spec!r}: use auto, none, compare, bitmap[:NAME] or overlay"
        )
    return mode, name or None


def fallback(mode: TrackerMode, has_parent: bool, why: str = "") -> ChangeSet:
    """Read everything: compared with the parent when there is one (saying
    `why` no tracker was used, if one was expected), else stored whole."""
    if mode == TrackerMode.NONE or not has_parent:
        return ChangeSet("full")
    note = f"{why}: comparing every block with the parent" if why else ""
    return ChangeSet("compare", None, note)


def choose_changes(
    mode: TrackerMode,
    tracker: ChangeTracker | Unproven | None,
    *,
    has_parent: bool,
    size: int,
    block_size: int,
) -> ChangeSet:
    """The blocks to read: the tracker's if it proves them, else the fallback.

    `tracker` is None when the source offers none (nothing to say), or an
    `Unproven` when one was expected but could not even be set up."""
    if mode in (TrackerMode.NONE, TrackerMode.COMPARE) or not has_parent:
        return fallback(mode, has_parent)
    if tracker is None:
        return fallback(mode, has_parent)
    found = tracker if isinstance(tracker, Unproven) else tracker.changed()
    if isinstance(found, Unproven):
        return fallback(mode, has_parent, found.reason)
    assert not isinstance(tracker, Unproven)
    blocks = -(-size // block_size)
    return ChangeSet(tracker.name, blocks_touched(found, block_size, blocks), tracker.note)
