"""Point kinds: a kind this version does not know is never walked as a file
tree (docs/format.md: a reader must not treat it as one), and record_point
writes the one document every backup writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from strongroom.model.kinds import PointKind
from strongroom.model.lineage import BlockLineage
from strongroom.model.point import RecoveryPoint
from strongroom.repository.repo import Repository
from strongroom.services.points import list_points, load_point
from strongroom.services.recording import record_point
from strongroom.services.walk import referenced_by_points

ROOT = "ab" * 32


def test_record_point_fills_in_who_and_what(memory_repo: Repository) -> None:
    point = record_point(
        memory_repo,
        kind=PointKind.BLOCK,
        time=datetime(2026, 1, 2, tzinfo=UTC),
        host="h1",
        paths=["/disk.img"],
        tree=ROOT,
        parent=None,
        tags=["b", "a", "b"],
        summary={"size": 4096},
        lineage=BlockLineage(tracker="full", image_format="raw"),
    )
    stored = load_point(memory_repo, point.id)
    assert stored.kind is PointKind.BLOCK
    assert stored.tags == ["a", "b"] and stored.parent is None
    assert stored.program.startswith("strongroom ") and stored.user
    assert stored.lineage == BlockLineage(tracker="full", image_format="raw")
    doc = memory_repo.load_point(point.id)
    assert json.dumps(doc["kind"]) == '"block"'


def test_a_point_of_an_unknown_kind_is_listed_but_never_walked_as_a_tree(
    memory_repo: Repository,
) -> None:
    doc = RecoveryPoint(
        kind=PointKind.FILES,
        time=datetime(2026, 1, 2, tzinfo=UTC),
        host="h",
        user="u",
        paths=["/x"],
        tree=ROOT,
    ).to_doc()
    doc["kind"] = "media-catalog"  # a later version's kind
    memory_repo.save_point(doc)
    (point,) = list_points(memory_repo)
    assert point.kind == "media-catalog"
    used, errors = referenced_by_points(memory_repo, [point])
    assert used == set()
    assert errors == [f"point {point.short_id} is of unknown kind 'media-catalog'"]
