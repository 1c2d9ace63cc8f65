"""Seeds (golden images): OS or application content preloaded into a repository.

A seed is stored like a point (an encrypted JSON document under `seeds/`,
docs/format.md §11a) and names its content the way a point does: `tree` is the
root of a file tree (§10) when `content` is `files`, or of a block map (§10a)
when it is `block`. So everything that walks, checks, prunes or restores a
point's manifests does the same for a seed through `as_point()`, and a seed's
chunks are ordinary chunks that backups deduplicate against.

The document comes from storage: `from_doc` checks every field's type and the
name's shape before anything prints, sorts or compares it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from strongroom.errors import UnsupportedVersion, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint

SEED_VERSION = 1
# A name is typed on command lines, printed in tables and used in `--scope
# app:NAME`: letters, digits and `._+-`, starting with a letter or digit.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_MAX_TEXT = 4096
_MAX_PACKAGES = 100_000


class SeedKind(StrEnum):
    OS = "os"  # an operating system's root file system or disk
    APP = "app"  # an application: its packages or install folder


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a seed (None when it can)."""
    if not _NAME.fullmatch(name):
        return (
            f"{name[:70]!r} is not a seed name (1-64 letters, digits or '._+-', "
            "starting with a letter or digit)"
        )
    return None


def check_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise UsageError(problem)
    return name


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value[:_MAX_TEXT]


@dataclass
class Seed:
    """One seed's document. `id` is set once stored (hex of its object name)."""

    name: str
    kind: SeedKind
    content: PointKind  # FILES or BLOCK: how `tree` is read
    tree: str  # hex id of the root tree or block map root
    time: datetime
    version: str = ""  # the user's label (e.g. "12.8"), not a format version
    description: str = ""
    source: str = ""  # what it was made from, as the user named it
    packages: list[dict[str, str]] = field(default_factory=list)  # .deb: name, version, arch
    summary: dict[str, int] = field(default_factory=dict)  # files, bytes, chunks / size, blocks
    id: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def label(self) -> str:
        """`name` or `name version`, as tables show it."""
        return f"{self.name} {self.version}" if self.version else self.name

    def as_point(self) -> RecoveryPoint:
        """A stand-in point for the walkers of points' manifests (prune, check,
        browse): same root, same kind, never stored."""
        return RecoveryPoint(
            kind=self.content,
            time=self.time,
            host="",
            user="",
            paths=["/"],
            tree=self.tree,
            id=self.id,
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "version": SEED_VERSION,
            "name": self.name,
            "kind": str(self.kind),
            "content": str(self.content),
            "tree": self.tree,
            "time": self.time.isoformat(),
            "label": self.version,
            "description": self.description,
            "source": self.source,
            "packages": self.packages,
            "summary": self.summary,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Seed:
        """The seed of a stored document; ValueError or TypeError if it is malformed."""
        version = doc.get("version", 0)
        if type(version) is not int:
            raise TypeError("version is not an integer")
        if version > SEED_VERSION:
            raise UnsupportedVersion(
                f"seed format {str(version)[:20]} is newer than this strongroom understands"
            )
        name = doc["name"]
        if not isinstance(name, str) or name_problem(name) is not None:
            raise ValueError("the seed's name is malformed")
        content = PointKind(str(doc["content"]))
        if content not in (PointKind.FILES, PointKind.BLOCK):
            raise ValueError(f"seed content {content!r} is not files or block")
        tree = doc["tree"]
        if not isinstance(tree, str) or not re.fullmatch(r"[0-9a-f]{64}", tree):
            raise ValueError("the seed's root is not an id")
        when = datetime.fromisoformat(str(doc["time"]))
        if when.tzinfo is None:
            raise ValueError("the seed's time has no UTC offset")
        packages = doc.get("packages", [])
        if not isinstance(packages, list) or len(packages) > _MAX_PACKAGES:
            raise TypeError("packages is not a list")
        summary = doc.get("summary", {})
        if not isinstance(summary, dict):
            raise TypeError("summary is not an object")
        return cls(
            name=name,
            kind=SeedKind(str(doc["kind"])),
            content=content,
            tree=tree,
            time=when.astimezone(UTC) if when.utcoffset() is None else when,
            version=_text(doc, "label"),
            description=_text(doc, "description"),
            source=_text(doc, "source"),
            packages=[
                {str(k)[:64]: str(v)[:256] for k, v in p.items()}
                for p in packages
                if isinstance(p, dict)
            ],
            summary={str(k): v for k, v in summary.items() if type(v) is int and 0 <= v < 1 << 63},
            id=str(doc.get("id", "")),
        )
