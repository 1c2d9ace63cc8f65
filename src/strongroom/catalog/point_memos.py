"""The catalog's part for the server's memory of point documents (revision
0007). Mixed into `Catalog`: same transactions, same contract.

Why: a server over object storage would otherwise read every point object
(one GET each) after each start before its first page, about 100 s at 10,000
points on a gateway. A point's id is the hash of its sealed object, so its
document never changes under that id: a row here is never stale, and the
server's processes (one catalog, several servers) share what any of them
read. Only documents the server read and authenticated from the repository
are written here; the catalog is the server's own, trusted store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from strongroom.catalog.schema import point_memos

_IN_BATCH = 500  # ids per `IN (...)`: well under every engine's parameter limit


class PointMemosMixin:
    """Remembered point documents of `Catalog`, per repository id."""

    if TYPE_CHECKING:  # provided by Catalog; declared here for the type checker only

        def transaction(self) -> AbstractContextManager[sa.Connection]: ...

    def recall_points(self, repository: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The remembered documents of those of `ids` the catalog has."""
        wanted = list(ids)
        found: dict[str, dict[str, Any]] = {}
        with self.transaction() as c:
            for at in range(0, len(wanted), _IN_BATCH):
                rows = c.execute(
                    sa.select(point_memos.c.point_id, point_memos.c.doc).where(
                        point_memos.c.repository == repository,
                        point_memos.c.point_id.in_(wanted[at : at + _IN_BATCH]),
                    )
                )
                for point_id, text in rows:
                    doc = json.loads(text)
                    if isinstance(doc, dict):
                        found[point_id] = doc
        return found

    def remember_points(self, repository: str, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Keep `docs` (point id -> document); ids already kept are left as
        they are (the same id is the same document), so racing servers agree."""
        if not docs:
            return
        with self.transaction() as c:
            have: set[str] = set()
            ids = list(docs)
            for at in range(0, len(ids), _IN_BATCH):
                have.update(
                    c.execute(
                        sa.select(point_memos.c.point_id).where(
                            point_memos.c.repository == repository,
                            point_memos.c.point_id.in_(ids[at : at + _IN_BATCH]),
                        )
                    ).scalars()
                )
            rows = [
                {"repository": repository, "point_id": pid, "doc": json.dumps(dict(doc))}
                for pid, doc in docs.items()
                if pid not in have
            ]
            if rows:
                c.execute(point_memos.insert(), rows)

    def forget_point_memos(self, repository: str, ids: Iterable[str]) -> None:
        """Drop the rows of points that left the repository (forgotten)."""
        gone = list(ids)
        with self.transaction() as c:
            for at in range(0, len(gone), _IN_BATCH):
                c.execute(
                    point_memos.delete().where(
                        point_memos.c.repository == repository,
                        point_memos.c.point_id.in_(gone[at : at + _IN_BATCH]),
                    )
                )
