"""Review of the overlay parent the intake accepts (services/agent_intake.py
`_block_parent`): a block point of another source is a parent only when the
new point's lineage names that point's image as the one right below it;
empty identities, a files or VM point, and a hostile stored lineage are
refused, never raised."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from strongroom.model.lineage import BlockLineage
from strongroom.model.point import RecoveryPoint
from strongroom.services.agent_intake import _block_parent

BASE = "/srv/base.qcow2:1048576:1700000000"


def _point(path: str, lineage: BlockLineage | None, kind: str = "block") -> RecoveryPoint:
    return RecoveryPoint(kind, datetime(2026, 12, 8, tzinfo=UTC), "web1", "root", [path],
                         "ab" * 32, lineage=lineage)  # fmt: skip


def _doc(point: RecoveryPoint) -> dict[str, Any]:
    return point.to_doc()


def test_the_base_image_point_is_the_first_overlay_points_parent() -> None:
    base = _point("/srv/base.qcow2", BlockLineage(tracker="full", image_identity=BASE))
    overlay = _point("/srv/top.qcow2", BlockLineage(tracker="overlay", backing_chain=(BASE,)))
    assert _block_parent(overlay, _doc(base))
    same_source = _point("/srv/top.qcow2", None)
    assert _block_parent(overlay, _doc(same_source))  # a later point of the overlay


def test_other_images_empty_identities_and_other_kinds_are_refused() -> None:
    other = _point("/srv/other.qcow2", BlockLineage(image_identity="/srv/other:1:1"))
    overlay = _point("/srv/top.qcow2", BlockLineage(backing_chain=(BASE,)))
    assert not _block_parent(overlay, _doc(other))
    # the base is further down the chain, not right below: not this overlay's parent
    deeper = _point("/srv/top.qcow2", BlockLineage(backing_chain=("/srv/mid:1:1", BASE)))
    base = _point("/srv/base.qcow2", BlockLineage(image_identity=BASE))
    assert not _block_parent(deeper, _doc(base))
    # no chain, no identity: the empty string never matches the empty string
    bare = _point("/srv/top.qcow2", BlockLineage())
    anon = _point("/srv/base.qcow2", BlockLineage())
    assert not _block_parent(bare, _doc(anon))
    files = _doc(_point("/srv/base.qcow2", None, kind="files"))
    files["summary"] = {"image_identity": BASE}
    assert not _block_parent(overlay, files)
    vm = _doc(_point("vm:db", None, kind="vm"))
    vm["summary"] = {"image_identity": BASE}
    assert not _block_parent(overlay, vm)


def test_a_hostile_stored_parent_is_refused_not_raised() -> None:
    overlay = _point("/srv/top.qcow2", BlockLineage(backing_chain=(BASE,)))
    good = _doc(_point("/srv/base.qcow2", BlockLineage(image_identity=BASE)))
    for broken in (
        {**good, "lineage": "not a map"},
        {**good, "lineage": {"image_identity": 5}},
        {**good, "time": "yesterday"},
        {**good, "paths": None},
        {k: v for k, v in good.items() if k != "tree"},
        {**good, "summary": [], "lineage": None},
    ):
        assert _block_parent(overlay, broken) in (True, False)
    # an older point keeps its identity in the summary: accepted from there too
    older = {**good, "summary": {"image_identity": BASE}}
    del older["lineage"]
    assert _block_parent(overlay, older)
