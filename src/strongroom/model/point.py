"""Recovery points: the immutable record of one source at one instant."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom.errors import UnsupportedVersion

POINT_VERSION = 1


@dataclass
class RecoveryPoint:
    """A point's document. `id` is set once stored (hex of its object name)."""

    kind: str  # "files" now; "block", "vm" later
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
    id: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def to_doc(self) -> dict[str, Any]:
        return {
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

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RecoveryPoint:
        if int(doc.get("version", 0)) > POINT_VERSION:
            raise UnsupportedVersion(
                f"point format {doc.get('version')} is newer than this strongroom understands"
            )
        return cls(
            kind=str(doc["kind"]),
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
            id=str(doc.get("id", "")),
        )


def now() -> datetime:
    return datetime.now(UTC).astimezone()
