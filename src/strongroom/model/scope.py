"""Scopes of a recovery: which part of a seeded point a restore writes.

A point made against seeds records, per entry, where it came from
(model/origin.py). A scope selects by that record alone, so `restore`, `ls`,
`diff` and `dump` given the same scope agree on every entry (they all ask the
one `Scope` below):

* `full`: everything (the default).
* `user`: what is the machine's own: entries with no origin, and *modified*
  and *moved* ones (their content differs from any seed at their path).
* `app:NAME`: the entries at the paths of seed NAME as they are in the point
  (*identical* and *modified* entries whose origin lists NAME; a moved file
  is at a path of no seed, so it is the user's).
* `os`: likewise for every seed of kind `os` the point builds on.

`Scope.selects` says whether an entry itself is written; `Scope.enters`
whether a walker must look inside a directory at all. A directory that is
entered but not selected is written only when something below it is (it is
"on the way"), with its recorded metadata.

The origins come from storage: a node naming a seed index the point does not
have is an IntegrityError (in every scope but `full`, which reads no origin).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from strongroom.errors import IntegrityError, UsageError
from strongroom.model.names import printable
from strongroom.model.origin import FileClass, PointSeeds
from strongroom.model.seed import name_problem
from strongroom.model.tree import DIR, Node


class ScopeKind(StrEnum):
    FULL = "full"
    USER = "user"
    OS = "os"
    APP = "app"


@dataclass(frozen=True)
class ScopeSpec:
    """A scope as the command line names it (`full`, `user`, `os`, `app:NAME`)."""

    kind: ScopeKind = ScopeKind.FULL
    app: str = ""  # the seed name of `app:NAME`

    @classmethod
    def parse(cls, text: str) -> ScopeSpec:
        """UsageError unless `text` is one of the four forms."""
        if text.startswith("app:"):
            name = text[4:]
            problem = name_problem(name)
            if problem is not None:
                raise UsageError(f"--scope {text[:80]!r}: {problem}")
            return cls(ScopeKind.APP, name)
        if text in (ScopeKind.FULL, ScopeKind.USER, ScopeKind.OS):
            return cls(ScopeKind(text))
        raise UsageError(f"--scope {text[:80]!r} is not a scope (full, user, os or app:NAME)")

    @property
    def is_full(self) -> bool:
        return self.kind is ScopeKind.FULL

    def __str__(self) -> str:
        return f"app:{self.app}" if self.kind is ScopeKind.APP else self.kind.value


FULL = ScopeSpec()


def class_of(node: Node) -> FileClass:
    return FileClass.OWN if node.origin is None else node.origin.cls


@dataclass(frozen=True)
class Scope:
    """A scope bound to one point: which seed indexes it selects, and how many
    seeds the point has (an origin naming another index is damage)."""

    spec: ScopeSpec
    seeds: frozenset[int] = frozenset()  # os/app: the selected indexes into `used`
    used: int = 0  # len(PointSeeds.used)
    root: bytes = b""  # PointSeeds.root as a tree path ("/" -> b"")

    @property
    def is_full(self) -> bool:
        return self.spec.is_full

    def selects(self, node: Node) -> bool:
        """The entry itself is written (a directory: with its metadata, even empty)."""
        kind = self.spec.kind
        if kind is ScopeKind.FULL:
            return True
        origin = node.origin
        if origin is None:
            return kind is ScopeKind.USER
        if any(i >= self.used for i in origin.seeds):
            raise IntegrityError("a tree node names a seed the point does not build on")
        if kind is ScopeKind.USER:
            return origin.cls is not FileClass.IDENTICAL
        return origin.cls is not FileClass.MOVED and not self.seeds.isdisjoint(origin.seeds)

    def enters(self, path: bytes, node: Node) -> bool:
        """A walker must look inside the directory `node` at `path` (tree path).

        `full` and `user` enter every directory (a modified file may be anywhere).
        `os`/`app:` enter the directories of their seeds and those on the way to
        the seeded root: a seed that has a path has its parent directory, so no
        other directory can hold one of its entries."""
        if node.type != DIR:
            return False
        if self.spec.kind in (ScopeKind.FULL, ScopeKind.USER):
            return True
        if self.selects(node):
            return True
        return path == self.root or self.root.startswith(path + b"/")


def root_path(seeds: PointSeeds) -> bytes:
    """The seeds' root as a tree path ("/" -> b""); IntegrityError if it cannot be one."""
    try:
        return seeds.root.rstrip("/").encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise IntegrityError("the point's seed root is not a path") from None


def bind(spec: ScopeSpec, seeds: PointSeeds | None, point: str, *, strict: bool = True) -> Scope:
    """`spec` for a point with seed record `seeds` (`point` names it in messages).

    UsageError (with `strict`) for `app:NAME` naming a seed the point does not
    build on, or `os` when it builds on no OS seed, listing the seeds it does
    build on; `app:`/`os` on a point without a seed record. Without `strict`
    (diff: one of two points may lack the seed) such a scope selects nothing."""
    if seeds is None:
        if spec.kind in (ScopeKind.APP, ScopeKind.OS) and strict:
            raise UsageError(
                f"point {point} was not made against seeds: --scope {spec} selects nothing in it"
            )
        return Scope(spec)
    root = root_path(seeds)
    if spec.kind is ScopeKind.APP:
        wanted = frozenset(i for i, s in enumerate(seeds.used) if s.name == spec.app)
    elif spec.kind is ScopeKind.OS:
        wanted = frozenset(i for i, s in enumerate(seeds.used) if s.kind == "os")
    else:
        wanted = frozenset()
    if spec.kind in (ScopeKind.APP, ScopeKind.OS) and not wanted and strict:
        built_on = ", ".join(printable(f"{s.name} ({s.kind})") for s in seeds.used) or "none"
        what = f"seed {spec.app}" if spec.kind is ScopeKind.APP else "OS seed"
        raise UsageError(f"point {point} does not build on {what}; it builds on: {built_on}")
    return Scope(spec, wanted, len(seeds.used), root)
