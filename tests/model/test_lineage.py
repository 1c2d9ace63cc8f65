"""Block lineage: one typed field, read back from older points' summaries."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from strongroom.model.kinds import PointKind
from strongroom.model.lineage import BlockLineage, read_lineage
from strongroom.model.point import RecoveryPoint
from strongroom.model.vm import VmDisk, VmManifest

FULL = BlockLineage(
    tracker="bitmap",
    bitmap="strongroom-abc.1",
    bitmap_prefix="strongroom-abc",
    image_format="qcow2",
    image_identity="/d/a.qcow2:65536:1",
    backing_chain=("/d/b.qcow2:1:2",),
    backing_files=("/d/b.qcow2",),
)
OLD_SUMMARY = {
    "tracker": "bitmap",
    "bitmap": "strongroom-abc.1",
    "bitmap_prefix": "strongroom-abc",
    "image_format": "qcow2",
    "image_identity": "/d/a.qcow2:65536:1",
    "backing_chain": ["/d/b.qcow2:1:2"],
    "backing_files": ["/d/b.qcow2"],
    "size": 65536,
}


def _point(**kw: object) -> RecoveryPoint:
    return RecoveryPoint(
        kind=PointKind.BLOCK,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        host="h",
        user="u",
        paths=["/d/a.qcow2"],
        tree="00" * 32,
        **kw,  # type: ignore[arg-type]
    )


def test_lineage_round_trips_through_the_point_json() -> None:
    doc = json.loads(json.dumps(_point(lineage=FULL).to_doc(), sort_keys=True))
    assert doc["lineage"]["bitmap_prefix"] == "strongroom-abc"
    assert RecoveryPoint.from_doc(doc).lineage == FULL


def test_a_point_without_lineage_keeps_format_1s_keys() -> None:
    doc = _point(summary={"size": 1}).to_doc()
    assert "lineage" not in doc
    assert set(doc) == {
        "version", "kind", "time", "host", "user", "paths", "tree", "parent", "tags",
        "consistency", "program", "summary",
    }  # fmt: skip
    assert json.dumps(doc["kind"]) == '"block"'


def test_an_older_point_is_read_from_its_summary() -> None:
    old = RecoveryPoint.from_doc(_point(summary=OLD_SUMMARY).to_doc())
    assert old.lineage is None
    assert old.block_lineage() == FULL
    assert old.block_lineage().parent_bitmap("strongroom-abc") == "strongroom-abc.1"
    assert old.block_lineage().parent_bitmap("strongroom-other") is None


def test_the_recorded_field_wins_over_the_summary() -> None:
    recorded = BlockLineage(tracker="compare")
    assert read_lineage(recorded, OLD_SUMMARY) is recorded


def test_summary_fields_of_the_wrong_type_count_as_absent() -> None:
    odd = {"bitmap": 5, "bitmap_prefix": ["x"], "backing_chain": "nope", "image_format": None}
    assert read_lineage(None, odd) == BlockLineage()


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"bitmap": 3},
        {"backing_chain": "a"},
        {"backing_files": [1]},
        {"image_identity": {"a": 1}},
    ],
)
def test_a_malformed_recorded_lineage_is_refused(bad: object) -> None:
    doc = _point().to_doc()
    doc["lineage"] = bad
    with pytest.raises(ValueError):
        RecoveryPoint.from_doc(doc)


def test_vm_disks_carry_their_lineage_and_older_manifests_still_read() -> None:
    lineage = BlockLineage("bitmap", "p.1", "p")
    manifest = VmManifest(
        "vm1",
        [
            VmDisk("a", 4096, 4096, "11" * 32, {"bitmap": "p.0", "bitmap_prefix": "p"}, lineage),
            VmDisk("b", 4096, 4096, "22" * 32, {"bitmap": "q.0", "bitmap_prefix": "q"}),
        ],
    )
    back = VmManifest.decode(manifest.encode())
    assert back.disks[0].block_lineage() == lineage
    assert back.disks[1].lineage is None
    assert back.disks[1].block_lineage().parent_bitmap("q") == "q.0"


def test_unknown_point_kinds_stay_strings() -> None:
    doc = _point().to_doc()
    doc["kind"] = "media"
    point = RecoveryPoint.from_doc(doc)
    assert point.kind == "media" and not isinstance(point.kind, PointKind)
    assert RecoveryPoint.from_doc(_point().to_doc()).kind is PointKind.BLOCK
