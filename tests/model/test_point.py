"""Point documents come from storage: `from_doc` refuses what would break sorting,
grouping or printing later (naive or far-off times, non-integer versions, a
parent that is not an id), and drops summary fields of the wrong type."""

from __future__ import annotations

from typing import Any

import pytest

from strongroom.errors import IntegrityError
from strongroom.model.point import RecoveryPoint, now
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services.points import list_points


def doc(**fields: Any) -> dict[str, Any]:
    base = RecoveryPoint("files", now(), "h", "u", ["/x"], "ab" * 32).to_doc()
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time", "2020-05-05T05:05:05"),  # no UTC offset: cannot be sorted with the others
        ("time", "9999-12-31T23:59:59-14:00"),  # beyond what astimezone() can reach
        ("time", "0001-01-01T00:00:00+14:00"),
        ("time", 12345),
        ("version", float("inf")),
        ("version", "1"),
        ("parent", {"a": 1}),
        ("summary", [1, 2]),
    ],
)
def test_malformed_point_fields_are_refused(field: str, value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        RecoveryPoint.from_doc(doc(**{field: value}))


def test_summary_fields_of_the_wrong_type_are_dropped() -> None:
    summary = {"total_bytes": "abc", "size": 2**80, "disks": 3, "protect": [], "tracker": {},
               "bytes_read": 7, "note": {"free": "form"}}  # fmt: skip
    point = RecoveryPoint.from_doc(doc(summary=summary))
    assert point.summary == {"bytes_read": 7, "note": {"free": "form"}}


def test_hostile_points_are_reported_and_the_rest_listed(memory_repo: Repository) -> None:
    root = memory_repo.put_chunk(BlobType.TREE, b"\x82\xa1v\x01\xa5nodes\x90")
    memory_repo.flush()
    good = memory_repo.save_point(doc(tree=root.hex()))
    for fields in ({"time": "2020-05-05T05:05:05"}, {"version": float("inf")},
                   {"time": "9999-12-31T23:59:59-14:00"}):  # fmt: skip
        memory_repo.save_point(doc(tree=root.hex(), **fields))
    damaged: list[str] = []
    points = list_points(memory_repo, on_damaged=lambda pid, err: damaged.append(pid))
    assert [p.id for p in points] == [good]
    assert len(damaged) == 3
    with pytest.raises(IntegrityError, match="forget"):
        list_points(memory_repo, strict=True)


def test_a_map_too_large_for_memory_is_an_integrity_error() -> None:
    from strongroom.model.blockmap import BlockMap

    with pytest.raises(IntegrityError, match="GiB of memory"):
        BlockMap.empty(2**56, 4096)  # 2^44 ids: 512 TiB


def test_a_point_holding_nan_or_infinity_is_damaged(memory_repo: Repository) -> None:
    """`snapshots --json` printed them as the invalid JSON tokens NaN/Infinity."""
    pid = memory_repo.save_point(doc(summary={"seconds": float("inf"), "x": float("nan")}))
    with pytest.raises(IntegrityError, match="not a JSON document"):
        memory_repo.load_point(pid)
