"""The points of the server's repository as plain JSON documents: what
`GET /api/v1/points` answers. Opens the repository for each call without a
lock (reading points never conflicts with a backup), so the server holds
nothing open between requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from strongroom.services.points import list_points
from strongroom.services.session import LockMode, open_repository


def point_lister(location: str, password: bytes) -> Callable[[], list[dict[str, Any]]]:
    """A function listing the points of the repository at `location`,
    oldest first, each `{"id": ..., **point.to_doc()}` (as `snapshots --json`)."""

    def points() -> list[dict[str, Any]]:
        with open_repository(location, password, lock=LockMode.NONE) as repo:
            return [{"id": p.id, **p.to_doc()} for p in list_points(repo, on_damaged=_skip)]

    return points


def _skip(_point: str, _err: Exception) -> None:
    """A damaged point is left out of the list (`check` names it)."""


def check_repository(location: str, password: bytes) -> None:
    """Open the repository at `location` and close it: a wrong password or
    location stops the server before it listens. Cheap: it reads the config
    and the key, not the points (on S3 thousands of GETs)."""
    with open_repository(location, password, lock=LockMode.NONE):
        pass
