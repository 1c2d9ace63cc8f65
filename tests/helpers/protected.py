"""Synthetic points of protected sources, stored as the cycle stores them
(the `protect` tag, `summary.protect.name`), at chosen instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from strongroom.model.point import RecoveryPoint
from strongroom.protect.source_points import PROTECT_TAG, protect_summary
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository

EMPTY_TREE = b"\x82\xa1v\x01\xa5nodes\x90"
START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday (ISO week 45)


def synthetic_point(
    source: str, when: datetime, *, consistency: str = "crash-consistent", reason: str = ""
) -> RecoveryPoint:
    return RecoveryPoint(
        kind="files",
        time=when,
        host="host",
        user="user",
        paths=[f"/srv/{source}"],
        tree="ab" * 32,
        tags=[PROTECT_TAG],
        consistency=consistency,
        summary={"protect": protect_summary(source, reason)},
        id=f"{source}-{when.isoformat()}",
    )


def store_points(
    repo: Repository, source: str, times: list[datetime], **fields: str
) -> list[RecoveryPoint]:
    """Commit one point of `source` per instant; returns them with their ids."""
    root = repo.put_chunk(BlobType.TREE, EMPTY_TREE)
    repo.flush()
    stored = []
    for when in times:
        point = synthetic_point(source, when, **fields)
        point.tree = root.hex()
        point.id = repo.save_point({k: v for k, v in point.to_doc().items()})
        stored.append(point)
    return stored


def every(step: timedelta, count: int, start: datetime = START) -> list[datetime]:
    return [start + i * step for i in range(count)]
