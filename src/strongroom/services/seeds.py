"""Seeds in a repository: list, find, record, show, remove (docs/seeds.md).

Adding a seed's content is `services.seed_add`; backing up against seeds is
the file and image backups' business; this module owns the seed objects and
the rules around them: a name is unique, a seed in use is removed only when
forced, and whoever prunes or checks sees seeds as roots beside the points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from strongroom.errors import (
    IntegrityError,
    ObjectNotFound,
    UnsupportedVersion,
    UsageError,
)
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.model.seed import Seed, check_name
from strongroom.repository.damage import DamageLog
from strongroom.repository.format import seed_name as repo_seed_name
from strongroom.repository.repo import Repository, is_object_hex
from strongroom.repository.store import ChunkReader
from strongroom.services.points import list_points
from strongroom.services.walk import referenced_by_points


class SeedRepository(ChunkReader, Protocol):
    """What reading seeds needs: a local `Repository`, or an agent's view of its
    backup server's seeds (services/agent_seeds.py `ServerSeeds`)."""

    damage: DamageLog  # damaged seeds met, reported once

    def chunk_id(self, data: bytes | bytearray | memoryview, /) -> bytes: ...

    def list_seed_ids(self) -> list[str]: ...

    def load_seed(self, seed_hex: str) -> dict[str, Any]: ...


class SeedNotFound(UsageError):
    """No seed of that name (a usage error: exit 2, like an unknown point filter)."""


class SeedExists(UsageError):
    pass


def load_seed(repo: SeedRepository, seed_hex: str) -> Seed:
    """One seed by full id; IntegrityError (naming it) if damaged or malformed."""
    doc = repo.load_seed(seed_hex)
    try:
        seed = Seed.from_doc(doc)
    except UnsupportedVersion as err:
        raise IntegrityError(f"seed {seed_hex[:16]}: {err}") from None
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as err:
        raise IntegrityError(f"seed {seed_hex[:16]} is malformed: {err!r}") from None
    return seed


def list_seeds(repo: SeedRepository, *, strict: bool = False) -> list[Seed]:
    """Every readable seed, by name. A damaged seed object is reported once to
    `repo.damage` and skipped; with `strict` (prune) it raises instead: a seed
    that cannot be read may hold any chunk."""
    seeds = []
    for seed_hex in repo.list_seed_ids():
        try:
            seeds.append(load_seed(repo, seed_hex))
        except ObjectNotFound:
            continue  # removed meanwhile
        except IntegrityError as err:
            if strict:
                raise IntegrityError(
                    f"{err}: cannot tell what this seed holds, so nothing can be pruned; "
                    f"'strongroom seed remove {seed_hex[:16]} --force' drops it"
                ) from None
            repo.damage.report(repo_seed_name(seed_hex), str(err))
    return sorted(seeds, key=lambda s: (s.name, s.time, s.id))


def find_seed(repo: SeedRepository, ref: str) -> Seed:
    """The seed named `ref` (or whose id starts with `ref`, 8+ hex digits)."""
    return pick_seed(list_seeds(repo), ref)


def pick_seed(seeds: list[Seed], ref: str) -> Seed:
    """`find_seed` among `seeds` (a repository's, or those a backup server lists)."""
    for seed in seeds:
        if seed.name == ref:
            return seed
    if len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref):
        matches = [s for s in seeds if s.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
    known = ", ".join(printable(s.name) for s in seeds) or "none yet: see 'strongroom seed add'"
    raise SeedNotFound(f"no seed named {printable(ref)} (seeds: {known})")


def find_seeds(repo: SeedRepository, refs: list[str]) -> list[Seed]:
    """Each named seed once, in the order given."""
    return pick_seeds(list_seeds(repo), refs) if refs else []


def pick_seeds(seeds: list[Seed], refs: list[str]) -> list[Seed]:
    """`find_seeds` among `seeds`."""
    found: dict[str, Seed] = {}
    for ref in refs:
        seed = pick_seed(seeds, ref)
        found.setdefault(seed.id, seed)
    return list(found.values())


def check_new_name(repo: Repository, name: str) -> None:
    """Refuse an invalid name, or one a seed already has (before any work)."""
    check_name(name)
    if any(s.name == name for s in list_seeds(repo)):
        raise SeedExists(
            f"a seed named {name} exists already; choose another name, or "
            f"'strongroom seed remove {name}' first"
        )


def record_seed(repo: Repository, seed: Seed) -> Seed:
    """Store `seed` (its content is flushed already) and return it with its id.
    The name is checked again just before: another `seed add` may have taken it
    meanwhile; then nothing is recorded (the stored chunks are pruned later).
    Two adds of one name hold shared locks and may both pass that check, so the
    name is checked once more after saving: an add that finds another seed of
    its name withdraws its own (at worst both withdraw; never two survive)."""
    check_new_name(repo, seed.name)
    seed_id = repo.save_seed(seed.to_doc())
    if any(s.name == seed.name and s.id != seed_id for s in list_seeds(repo)):
        repo.delete_seed(seed_id)
        raise SeedExists(
            f"a seed named {seed.name} was added by another 'seed add' meanwhile; nothing recorded"
        )
    seed.id = seed_id
    return seed


def seed_users(points: list[RecoveryPoint], seed: Seed) -> list[RecoveryPoint]:
    """The points that build on `seed` (file and image points alike record the
    seeds they build on in `seeds`)."""
    return [
        point
        for point in points
        if point.seeds is not None and any(u.id == seed.id for u in point.seeds.used)
    ]


def seed_roots(repo: Repository, *, strict: bool = False) -> list[RecoveryPoint]:
    """Every seed as a stand-in point, for prune and check to walk with the points."""
    return [seed.as_point() for seed in list_seeds(repo, strict=strict)]


@dataclass
class SeedDetails:
    seed: Seed
    users: list[RecoveryPoint]
    chunks: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            **seed_dict(self.seed),
            "chunks": self.chunks,
            "points": [p.id for p in self.users],
        }


def seed_dict(seed: Seed) -> dict[str, object]:
    """A seed as `seed list --json` and `seed show --json` print it."""
    return {
        "id": seed.id,
        "name": seed.name,
        "kind": str(seed.kind),
        "content": str(seed.content),
        "version": seed.version,
        "description": seed.description,
        "source": seed.source,
        "time": seed.time.isoformat(),
        "summary": seed.summary,
        "packages": seed.packages,
    }


def show_seed(repo: Repository, ref: str) -> SeedDetails:
    seed = find_seed(repo, ref)
    used, errors = referenced_by_points(repo, [seed.as_point()])
    if errors:
        raise IntegrityError(f"seed {seed.name}: {errors[0]}")
    return SeedDetails(seed, seed_users(list_points(repo), seed), chunks=len(used))


@dataclass
class SeedRemoval:
    seed: Seed | None  # None: a damaged seed, removed by id without being read
    removed_id: str
    users: list[RecoveryPoint] = field(default_factory=list)
    freed_chunks: int = 0  # chunks only this seed references: prune removes them
    freed_bytes: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "removed": self.removed_id,
            "seed": seed_dict(self.seed) if self.seed is not None else None,
            "points_using": [p.id for p in self.users],
            "freed_chunks": self.freed_chunks,
            "freed_bytes": self.freed_bytes,
        }

    def cost(self) -> str:
        """What removing the seed costs, in one line (refusal and --force alike)."""
        if not self.users:
            return "no point builds on it"
        ids = ", ".join(p.short_id for p in self.users[:5])
        more = f" and {len(self.users) - 5} more" if len(self.users) > 5 else ""
        return (
            f"{len(self.users)} points build on it ({ids}{more}); they stay restorable "
            "in full and by --scope (each keeps its own chunk lists and records which "
            "files came from the seed), but later backups no longer deduplicate against it"
        )


def remove_seed(repo: Repository, ref: str, *, force: bool = False) -> SeedRemoval:
    """Remove a seed object; its chunks go at the next prune unless points use them.

    Refused while a point builds on it, unless `force` (the caller prints `cost`).
    `ref` may also be the id of a damaged seed (8+ hex digits), removed unread."""
    try:
        seed = find_seed(repo, ref)
    except SeedNotFound:
        damaged = [i for i in repo.list_seed_ids() if len(ref) >= 8 and i.startswith(ref)]
        if len(damaged) != 1 or not is_object_hex(damaged[0]) or not force:
            raise
        repo.delete_seed(damaged[0])
        return SeedRemoval(None, damaged[0])
    points = list_points(repo)
    removal = SeedRemoval(seed, seed.id, seed_users(points, seed))
    if removal.users and not force:
        raise UsageError(
            f"seed {seed.name} is in use: {removal.cost()}; "
            f"'strongroom seed remove {seed.name} --force' removes it anyway"
        )
    others = [s.as_point() for s in list_seeds(repo) if s.id != seed.id]
    mine, errors = referenced_by_points(repo, [seed.as_point()])
    kept, other_errors = referenced_by_points(repo, points + others)
    if not errors and not other_errors:
        only_mine = mine - kept
        removal.freed_chunks = len(only_mine)
        index = repo.index
        for chunk in only_mine:
            location = index.lookup(chunk)
            if location is not None:
                removal.freed_bytes += location.length
    repo.delete_seed(seed.id)
    return removal
