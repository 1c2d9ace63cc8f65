"""Recovery points: the immutable record of one source at one instant."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom.errors import UnsupportedVersion
from strongroom.model.kinds import PointKind
from strongroom.model.lineage import BlockLineage, read_lineage

POINT_VERSION = 1


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
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RecoveryPoint:
        if int(doc.get("version", 0)) > POINT_VERSION:
            raise UnsupportedVersion(
                f"point format {doc.get('version')} is newer than this strongroom understands"
            )
        return cls(
            kind=PointKind.parse(str(doc["kind"])),
            time=datetime.fromisoformat(doc["time"]),
            host=str(doc["host"]),
            user=str(doc.get("user", "")),
            paths=[str(p) for p in doc["paths"]],
            tree=str(doc["tree"]),
            parent=doc.get("parent"),
            tags=[str(t) for t in doc.get("tags", [])],
            consistency=str(doc.get("consistency", "crash-consistent")),
            program=str(doc.get("program", "")),
            summary=dict(doc.get("summary", {})),
            lineage=BlockLineage.from_doc(doc["lineage"]) if "lineage" in doc else None,
            id=str(doc.get("id", "")),
        )


def now() -> datetime:
    return datetime.now(UTC).astimezone()
