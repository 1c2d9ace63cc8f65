"""The restore use case: a point's files back onto disk."""

from __future__ import annotations

import threading

from strongroom.model.point import RecoveryPoint
from strongroom.pipeline.restore import FileRestore, RestoreSummary
from strongroom.repository.repo import Repository
from strongroom.types import ProgressCallback, no_progress


def restore_files(
    repo: Repository,
    point: RecoveryPoint,
    target: str,
    includes: list[str] | None = None,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> RestoreSummary:
    job = FileRestore(
        repo,
        bytes.fromhex(point.tree),
        target,
        includes=includes,
        progress=progress,
        cancel=cancel,
    )
    return job.run()
