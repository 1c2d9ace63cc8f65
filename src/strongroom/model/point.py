"""Recovery points: the immutable record of one source at one instant.

A point document comes from storage, so `from_doc` holds it to docs/format.md
§11 before anything sorts, groups or prints it: `time` is an ISO 8601 string
with a UTC offset inside the years every calendar operation can reach (a naive
or far-off time made sorting, `forget`'s buckets and `snapshots` end in an
internal error); `version` an integer; `parent` a string or null. Anything else
raises ValueError/TypeError, which `services.points` reports as a damaged
point. `summary` is informational: a field whose type is not the documented
one is dropped, so no command trips over a hostile count (`int("abc")`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom.errors import UnsupportedVersion
from strongroom.model.kinds import PointKind
from strongroom.model.lineage import BlockLineage, read_lineage
from strongroom.model.origin import PointSeeds

POINT_VERSION = 1
# Far enough from datetime's ends that astimezone() to any offset stays valid.
_EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
_LATEST = datetime(9998, 12, 31, tzinfo=UTC)
_MAX_COUNT = (1 << 63) - 1

# Summary fields that commands compute with or compare, and their types
# (docs/format.md §10a, §10b, §11); other fields are kept as they are.
_COUNT_FIELDS = frozenset(
    {
        "files_new", "files_changed", "files_unmodified", "dirs", "other_entries",
        "total_files", "total_bytes", "bytes_read", "chunks_new", "data_added",
        "data_added_stored", "warnings", "unreadable", "size", "block_size", "blocks",
        "blocks_examined", "blocks_read", "blocks_changed", "bytes_changed", "blocks_new",
        "holes",
    }
)  # fmt: skip
_TEXT_FIELDS = frozenset(
    {"tracker", "tracker_note", "bitmap", "bitmap_prefix", "image_format", "image_identity",
     "repaired_from", "quiesce"}
)  # fmt: skip
_LIST_FIELDS = frozenset({"disks", "backing_chain"})
_MAP_FIELDS = frozenset({"protect"})


def _fits(key: str, value: Any) -> bool:
    if key in _COUNT_FIELDS:
        return type(value) is int and 0 <= value <= _MAX_COUNT
    if key in _TEXT_FIELDS:
        return isinstance(value, str)
    if key in _LIST_FIELDS:
        return isinstance(value, list)
    if key in _MAP_FIELDS:
        return isinstance(value, dict)
    return True


def _summary(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("summary is not an object")
    return {str(k): v for k, v in value.items() if _fits(str(k), v)}


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError("time is not a string")
    when = datetime.fromisoformat(value)
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"time {value[:40]!r} has no UTC offset")
    if not _EARLIEST <= when <= _LATEST:
        raise ValueError(f"time {value[:40]!r} is out of range")
    return when


def _version(value: Any) -> int:
    if type(value) is not int:
        raise TypeError("version is not an integer")
    return value


@dataclass
class RecoveryPoint:
    """A point's document. `id` is set once stored (hex of its object name).

    `kind` is a `PointKind`, or the stored string for a kind this version does
    not know. `lineage` is set on block points (docs/format.md §10a); read it
    through `model.lineage.read_lineage`, which also reads older points.
    """

    kind: PointKind | str
    time: datetime
    host: str
    user: str
    paths: list[str]
    tree: str  # hex id of the root tree chunk
    parent: str | None = None
    tags: list[str] = field(default_factory=list)
    consistency: str = "crash-consistent"
    program: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    lineage: BlockLineage | None = None
    seeds: PointSeeds | None = None  # points made against seeds (§12b)
    id: str = ""

    def block_lineage(self) -> BlockLineage:
        """What a block point recorded for the next backup (older points: from
        their summary)."""
        return read_lineage(self.lineage, self.summary)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "version": POINT_VERSION,
            "kind": self.kind,
            "time": self.time.isoformat(),
            "host": self.host,
            "user": self.user,
            "paths": self.paths,
            "tree": self.tree,
            "parent": self.parent,
            "tags": self.tags,
            "consistency": self.consistency,
            "program": self.program,
            "summary": self.summary,
        }
        if self.lineage is not None:  # absent otherwise: other points keep format 1's bytes
            doc["lineage"] = self.lineage.to_doc()
        if self.seeds is not None:
            doc["seeds"] = self.seeds.to_doc()
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RecoveryPoint:
        """The point of a stored document; ValueError or TypeError if it is malformed."""
        version = _version(doc.get("version", 0))
        if version > POINT_VERSION:
            raise UnsupportedVersion(
                f"point format {str(version)[:20]} is newer than this strongroom understands"
            )
        parent = doc.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise TypeError("parent is neither an id nor null")
        return cls(
            kind=PointKind.parse(str(doc["kind"])),
            time=_time(doc["time"]),
            host=str(doc["host"]),
            user=str(doc.get("user", "")),
            paths=[str(p) for p in doc["paths"]],
            tree=str(doc["tree"]),
            parent=parent,
            tags=[str(t) for t in doc.get("tags", [])],
            consistency=str(doc.get("consistency", "crash-consistent")),
            program=str(doc.get("program", "")),
            summary=_summary(doc.get("summary", {})),
            lineage=BlockLineage.from_doc(doc["lineage"]) if "lineage" in doc else None,
            seeds=PointSeeds.from_doc(doc["seeds"]) if "seeds" in doc else None,
            id=str(doc.get("id", "")),
        )


def now() -> datetime:
    return datetime.now(UTC).astimezone()


def at_instant(instant: float | None, fallback: datetime) -> datetime:
    """A point's time from the wall-clock instant its source was frozen at
    (what `restore --at` compares with), or `fallback` when none was taken."""
    if instant is None:
        return fallback
    return datetime.fromtimestamp(instant, UTC).astimezone()
