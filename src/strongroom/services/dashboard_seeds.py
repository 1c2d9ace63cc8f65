"""What the dashboard's Seeds page shows: the repository's seeds (name,
kind, what they hold, version, size, when made) and the points that build
on each.

Contract: read-only and lock-free, as services/dashboard.py: the seeds are
listed from the repository on each call (seeds are few: one small object
each), the points come from the view's cached list, so "which points use
it" costs no reading of points. A damaged seed is left out (`check` and
`seed list` name it).
"""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.model.point import RecoveryPoint
from strongroom.model.seed import Seed
from strongroom.services.dashboard import RepositoryView
from strongroom.services.seeds import list_seeds, seed_users

MAX_USERS = 20  # points named per seed; the rest are counted


@dataclass(frozen=True)
class SeedRow:
    seed: Seed
    size: int  # bytes: a files seed's content, a block seed's disk
    users: list[RecoveryPoint]  # newest first, at most MAX_USERS
    more: int  # further points that use it


def seed_size(seed: Seed) -> int:
    for name in ("bytes", "size", "total_bytes"):
        value = seed.summary.get(name)
        if isinstance(value, int):
            return value
    return 0


def seed_rows(view: RepositoryView) -> list[SeedRow]:
    """Every readable seed by name, with the points that build on it."""
    points = view.points()
    rows = []
    for seed in list_seeds(view.repository()):
        users = sorted(seed_users(points, seed), key=lambda p: (p.time, p.id), reverse=True)
        rows.append(SeedRow(seed, seed_size(seed), users[:MAX_USERS], len(users[MAX_USERS:])))
    return rows


__all__ = ["MAX_USERS", "SeedRow", "seed_rows", "seed_size"]
