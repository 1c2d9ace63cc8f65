"""A point's logical representation against seeds (docs/format.md §12b).

A file backup made against seeds records, besides the file tree it always
records, where each entry came from:

* in the point document, `seeds` (`PointSeeds`): the seeds it builds on (by id,
  with name, kind and label so that scoped restores need no seed object), the
  machine path seed paths are relative to (`root`), a count per class, bytes
  per seed, and the chunk id of the list of seed files the machine lacks;
* in each tree node, the key `sd` (`Origin`): `[class, [seed indexes]]`, and
  for a moved file `[class, [seed index], seed path]`. Indexes point into
  `PointSeeds.used`. An entry with no `sd` is the machine's own.

Classes: *identical* (a seed has this path with this content; for a directory,
a directory at this path), *modified* (a seed has this path with other
content), *moved* (no seed has this path, one has this content elsewhere). A
node lists every used seed that has its path, so `--scope app:NAME` and
`--scope os` select by the seeds' file lists, not by which seed matched first.

Both come from storage and are checked on decode; an index outside `used` is
refused by `PointSeeds.origin_seeds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

from strongroom.errors import IntegrityError
from strongroom.model.names import name_problem

ORIGIN_KEY = "sd"  # the tree node key (docs/format.md §10, §12b)
LACKS_VERSION = 1
MAX_SEEDS_PER_POINT = 1024
_MAX_PATH = 65_536
_HEX = frozenset("0123456789abcdef")


class FileClass(StrEnum):
    IDENTICAL = "i"
    MODIFIED = "m"
    MOVED = "v"
    OWN = "o"  # never stored: the absence of `sd`

    @property
    def word(self) -> str:
        return {"i": "identical", "m": "modified", "v": "moved", "o": "own"}[self.value]

    @classmethod
    def from_word(cls, word: str) -> FileClass:
        for member in cls:
            if member.word == word:
                return member
        raise ValueError(f"unknown class {word!r}")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one entry of a seeded point came from."""

    cls: FileClass
    seeds: tuple[int, ...]  # indexes into PointSeeds.used: every used seed with this path
    seed_path: bytes = b""  # moved only: the path in seed `seeds[0]`

    def to_wire(self) -> list[Any]:
        wire: list[Any] = [self.cls.value, list(self.seeds)]
        if self.cls is FileClass.MOVED:
            wire.append(self.seed_path)
        return wire

    @classmethod
    def from_wire(cls, wire: Any) -> Origin:
        """IntegrityError unless `wire` is a well-formed `sd` value."""
        if not isinstance(wire, list) or len(wire) not in (2, 3):
            raise IntegrityError("malformed seed origin in a tree node")
        code, seeds = wire[0], wire[1]
        if code not in ("i", "m", "v") or not isinstance(seeds, list):
            raise IntegrityError("malformed seed origin in a tree node")
        if (
            not seeds
            or len(seeds) > MAX_SEEDS_PER_POINT
            or not all(type(s) is int and 0 <= s < MAX_SEEDS_PER_POINT for s in seeds)
        ):
            raise IntegrityError("seed origin names no seed, or a seed out of range")
        seed_path = b""
        if code == "v":
            if len(wire) != 3 or not _is_seed_path(wire[2]):
                raise IntegrityError("moved entry has a malformed seed path")
            seed_path = wire[2]
        elif len(wire) != 2:
            raise IntegrityError("malformed seed origin in a tree node")
        return cls(FileClass(code), tuple(seeds), seed_path)


def origin_of(wire: dict[str, Any]) -> Origin | None:
    """The origin recorded in a node's wire map; None for the machine's own."""
    value = wire.get(ORIGIN_KEY)
    return None if value is None else Origin.from_wire(value)


def _is_seed_path(value: Any) -> bool:
    """A seed path: relative, components that a restore could create."""
    if type(value) is not bytes or not value or len(value) > _MAX_PATH:
        return False
    return all(name_problem(part) is None for part in value.split(b"/"))


@dataclass(frozen=True)
class UsedSeed:
    id: str
    name: str
    kind: str  # "os" or "app"
    label: str = ""

    def to_doc(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "label": self.label}


@dataclass
class PointSeeds:
    """The `seeds` field of a point document."""

    used: list[UsedSeed]
    root: str  # the backed-up path that seed paths are relative to ("/" for a whole machine)
    lacks: str | None = None  # hex id of a TREE chunk: the seed files the machine lacks
    lacks_count: int = 0
    classes: dict[str, dict[str, int]] = field(default_factory=dict)  # word -> files, bytes
    seed_bytes: dict[str, int] = field(default_factory=dict)  # seed name -> bytes taken from it

    def index_of(self, name: str) -> int | None:
        for i, seed in enumerate(self.used):
            if seed.name == name:
                return i
        return None

    def origin_seeds(self, origin: Origin) -> list[UsedSeed]:
        """The seeds an origin names; IntegrityError for an index outside `used`."""
        if any(i >= len(self.used) for i in origin.seeds):
            raise IntegrityError("a tree node names a seed the point does not build on")
        return [self.used[i] for i in origin.seeds]

    def to_doc(self) -> dict[str, Any]:
        return {
            "used": [s.to_doc() for s in self.used],
            "root": self.root,
            "lacks": self.lacks,
            "lacks_count": self.lacks_count,
            "classes": self.classes,
            "seed_bytes": self.seed_bytes,
        }

    @classmethod
    def from_doc(cls, doc: Any) -> PointSeeds:
        """ValueError or TypeError if malformed (the point is then reported damaged)."""
        if not isinstance(doc, dict) or not isinstance(doc.get("used"), list):
            raise TypeError("seeds is not an object with a list of seeds")
        used_docs = doc["used"]
        if len(used_docs) > MAX_SEEDS_PER_POINT:
            raise ValueError("the point names too many seeds")
        used = []
        for item in used_docs:
            if not isinstance(item, dict) or not all(
                isinstance(item.get(k, ""), str) for k in ("id", "name", "kind", "label")
            ):
                raise TypeError("a used seed is malformed")
            used.append(UsedSeed(item["id"], item["name"], item["kind"], item.get("label", "")))
        root = doc.get("root", "/")
        lacks = doc.get("lacks")
        count = doc.get("lacks_count", 0)
        if not isinstance(root, str) or not root.startswith("/"):
            raise TypeError("seeds root is not an absolute path")
        if lacks is not None and not (
            isinstance(lacks, str) and len(lacks) == 64 and all(c in _HEX for c in lacks)
        ):
            raise TypeError("seeds lacks is not an id")
        if type(count) is not int or count < 0:
            raise TypeError("seeds lacks_count is not a count")
        classes = doc.get("classes", {})
        seed_bytes = doc.get("seed_bytes", {})
        if not isinstance(classes, dict) or not isinstance(seed_bytes, dict):
            raise TypeError("seeds statistics are malformed")
        return cls(
            used=used,
            root=root,
            lacks=lacks,
            lacks_count=count,
            classes={
                str(k): {str(a): b for a, b in v.items() if type(b) is int}
                for k, v in classes.items()
                if isinstance(v, dict)
            },
            seed_bytes={str(k): v for k, v in seed_bytes.items() if type(v) is int},
        )


def encode_lacks(lacks: list[tuple[int, bytes]]) -> bytes:
    """The lacks list: (seed index, seed path) pairs, sorted."""
    packed: bytes = msgpack.packb(
        {"v": LACKS_VERSION, "lacks": [[i, p] for i, p in sorted(lacks)]}, use_bin_type=True
    )
    return packed


def decode_lacks(blob: bytes) -> list[tuple[int, bytes]]:
    try:
        doc = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise IntegrityError("the list of lacking seed files does not decode") from None
    if not isinstance(doc, dict) or type(doc.get("v")) is not int or doc["v"] > LACKS_VERSION:
        raise IntegrityError("the list of lacking seed files has an unknown version")
    items = doc.get("lacks")
    if not isinstance(items, list):
        raise IntegrityError("the list of lacking seed files is malformed")
    out = []
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or type(item[0]) is not int
            or not 0 <= item[0] < MAX_SEEDS_PER_POINT
            or not _is_seed_path(item[1])
        ):
            raise IntegrityError("the list of lacking seed files holds a malformed entry")
        out.append((item[0], item[1]))
    return out
