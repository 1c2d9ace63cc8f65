"""The restore use case: a point's files back onto disk."""

from __future__ import annotations

import threading

from strongroom.model.point import RecoveryPoint
from strongroom.pipeline.restore import FileRestore, RestoreSummary
from strongroom.repository.repo import Repository
from strongroom.services.walk import find_node
from strongroom.types import ProgressCallback, no_progress


def restore_files(
    repo: Repository,
    point: RecoveryPoint,
    target: str,
    includes: list[str] | None = None,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> RestoreSummary:
    for include in includes or []:
        find_node(repo, bytes.fromhex(point.tree), include)  # PathNotFound before any write
    job = FileRestore(
        repo,
        bytes.fromhex(point.tree),
        target,
        includes=includes,
        progress=progress,
        cancel=cancel,
    )
    return job.run()
