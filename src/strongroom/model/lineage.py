"""Block lineage: what the next backup of the same disk needs from its parent point.

A block point (and each disk of a VM point) records how it found its changes
and the state the next backup starts from: the dirty bitmap it started and
that bitmap's prefix (trackers/bitmaps.py), and for an image file the format
later backups open it with, its identity after the backup (which the overlay
tracker matches against a new overlay's backing file), the identities of the
files below it and the real paths of every other file the backup read. Format:
docs/format.md §10a (`lineage`).

Points written before the field existed kept the same facts under the same
keys in their `summary`; `read_lineage` is the one reader, and falls back to
those. New points write both: the summary stays what older strongroom reads
and what a user sees, the `lineage` field is what this code reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TEXT = ("tracker", "bitmap", "bitmap_prefix", "image_format", "image_identity")
_LISTS = ("backing_chain", "backing_files")


@dataclass(frozen=True)
class BlockLineage:
    tracker: str = ""  # how the point found its changes: full, compare, bitmap, overlay, ...
    bitmap: str | None = None  # the dirty bitmap started at the point's instant
    bitmap_prefix: str | None = None  # the lineage that bitmap belongs to
    image_format: str | None = None  # image files: the format later backups open it with
    image_identity: str | None = None  # image files: realpath:size:mtime_ns after the backup
    backing_chain: tuple[str, ...] = ()  # identities of the files below it, top first
    backing_files: tuple[str, ...] = ()  # real paths of the other files read

    def parent_bitmap(self, prefix: str) -> str | None:
        """The bitmap the next backup of lineage `prefix` reads from: none if
        this point started no bitmap of that lineage."""
        return self.bitmap if self.bitmap_prefix == prefix and self.bitmap else None

    def to_doc(self) -> dict[str, Any]:
        """The stored map: keys that hold nothing are left out."""
        doc: dict[str, Any] = {}
        for key in _TEXT:
            value = getattr(self, key)
            if value:
                doc[key] = value
        for key in _LISTS:
            values = getattr(self, key)
            if values:
                doc[key] = list(values)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> BlockLineage:
        """Decode a stored `lineage`; ValueError when a field has the wrong type
        (the point is then reported malformed, like any other bad field)."""
        if not isinstance(doc, Mapping):
            raise ValueError("lineage is not a map")
        for key in _TEXT:
            if doc.get(key) is not None and type(doc[key]) is not str:
                raise ValueError(f"lineage field {key} is not a string")
        for key in _LISTS:
            values = doc.get(key, [])
            if type(values) is not list or any(type(v) is not str for v in values):
                raise ValueError(f"lineage field {key} is not a list of strings")
        return cls(
            tracker=doc.get("tracker") or "",
            bitmap=doc.get("bitmap") or None,
            bitmap_prefix=doc.get("bitmap_prefix") or None,
            image_format=doc.get("image_format") or None,
            image_identity=doc.get("image_identity") or None,
            backing_chain=tuple(doc.get("backing_chain", [])),
            backing_files=tuple(doc.get("backing_files", [])),
        )


def read_lineage(recorded: BlockLineage | None, summary: Mapping[str, Any]) -> BlockLineage:
    """The lineage of a block point or VM disk: the recorded field, else (a
    point of older strongroom) the same facts from its summary. A summary
    field of the wrong type counts as absent: the next backup then compares
    instead of trusting it."""
    if recorded is not None:
        return recorded

    def text(key: str) -> str | None:
        value = summary.get(key)
        return value if isinstance(value, str) and value else None

    def strings(key: str) -> tuple[str, ...]:
        values = summary.get(key)
        if not isinstance(values, list):
            return ()
        return tuple(str(v) for v in values)

    return BlockLineage(
        tracker=text("tracker") or "",
        bitmap=text("bitmap"),
        bitmap_prefix=text("bitmap_prefix"),
        image_format=text("image_format"),
        image_identity=text("image_identity"),
        backing_chain=strings("backing_chain"),
        backing_files=strings("backing_files"),
    )
