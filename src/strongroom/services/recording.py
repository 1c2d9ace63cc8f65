"""Recording a recovery point: the one place a point document is assembled.

Every backup (files, image, VM, continuous protection) ends the same way:
its data, index and manifest are stored, then the point names them, who made
it and where. The point is written last (docs/design.md, write order), by
`Repository.save_point`, which returns its id.
"""

from __future__ import annotations

import getpass
from datetime import datetime
from typing import Any

from strongroom import __version__
from strongroom.model.kinds import PointKind
from strongroom.model.lineage import BlockLineage
from strongroom.model.origin import PointSeeds
from strongroom.model.point import RecoveryPoint
from strongroom.repository.store import ChunkStore


def record_point(
    repo: ChunkStore,
    *,
    kind: PointKind,
    time: datetime,
    host: str,
    paths: list[str],
    tree: str,
    parent: RecoveryPoint | None,
    tags: list[str] | None = None,
    summary: dict[str, Any],
    consistency: str = "crash-consistent",
    lineage: BlockLineage | None = None,
    seeds: PointSeeds | None = None,
) -> RecoveryPoint:
    """Store the point (user and program filled in, tags sorted and unique)
    and return it with its id set."""
    point = RecoveryPoint(
        kind=kind,
        time=time,
        host=host,
        user=getpass.getuser(),
        paths=paths,
        tree=tree,
        parent=parent.id if parent is not None else None,
        tags=sorted(set(tags or [])),
        consistency=consistency,
        program=f"strongroom {__version__}",
        summary=summary,
        lineage=lineage,
        seeds=seeds,
    )
    point.id = repo.save_point(point.to_doc())
    return point
