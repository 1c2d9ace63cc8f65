"""The backup use case: choose a parent, run the pipeline, record the point.

Also the rules every front end applies before a backup starts: which options
go together (`check_options`), the exclude patterns of files
(`exclude_patterns`), and creating the default repository on first use
(`needs_default_repository`).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from strongroom.errors import SourceError, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.origin import PointSeeds
from strongroom.model.point import RecoveryPoint, now
from strongroom.sources.image_refs import FORMATS
from strongroom.types import ProgressCallback, no_progress

if TYPE_CHECKING:
    # The pipeline, the repository and the seeds load when a backup runs (in the
    # functions below), not when a front end only checks options or shows --help.
    from strongroom.config import Settings
    from strongroom.pipeline.backup import BackupSummary
    from strongroom.repository.repo import Repository
    from strongroom.services.seed_select import SeedChoice
    from strongroom.sources.reflink import CopiedFile

IMAGE_FORMATS: tuple[str, ...] = FORMATS  # what `--format` of an image file may name
VM_TRACKERS = ("auto", "compare", "none")  # a VM's disks: no bitmap/overlay choice


def check_options(
    *,
    paths: bool,
    image: bool,
    vms: bool,
    dry_run: bool = False,
    changed_since: str = "auto",
    force: bool = False,
    image_format: str | None = None,
    allow_backing: bool = False,
    seeds: bool = False,
    file_seed_options: bool = False,
) -> str:
    """Refuse a combination of options that means nothing (exactly one of files,
    an image or VMs; --dry-run only for files; --format/--allow-backing only for
    an image; a VM's tracker is auto, compare or none; --no-seeds,
    --trust-seed-metadata and --seed-root (`file_seed_options`) only for files,
    --seed not for VMs). Returns the change tracker to use: "none" when `force`."""
    if sum((paths, image, vms)) != 1:
        raise UsageError(
            "give PATHS to back up files, --image SOURCE for a disk image or --vm NAME for a VM"
        )
    if (image_format or allow_backing) and not image:
        raise UsageError("--format and --allow-backing go with --image FILE")
    if file_seed_options and not paths:
        raise UsageError("--trust-seed-metadata and --seed-root go with PATHS")
    if seeds and vms:
        raise UsageError("--seed goes with PATHS or --image, not with --vm")
    if vms:
        if dry_run:
            raise UsageError("--dry-run is not available with --vm")
        if changed_since not in VM_TRACKERS:
            raise UsageError("with --vm, --changed-since is auto, compare or none")
    if image and dry_run:
        raise UsageError("--dry-run is not available with --image")
    return "none" if force else changed_since


def needs_default_repository(settings: Settings) -> bool:
    """No repository was configured and the default one does not exist yet:
    a backup creates it (a first `strongroom backup DIR` just works)."""
    from strongroom.services.session import repository_exists

    return settings.uses_default_repository and not repository_exists(settings.repository)


def exclude_patterns(settings: Settings, patterns: list[str], files: list[str]) -> list[str]:
    """The configured patterns, then `patterns`, then those of the exclude files
    (given, then configured), read before the repository is opened."""
    from strongroom.sources.exclude import Excluder

    found = list(settings.exclude) + patterns
    for path in files + ([settings.exclude_file] if settings.exclude_file else []):
        found += Excluder.read_file(path)
    return found


@dataclass
class BackupRequest:
    paths: list[str]
    excludes: list[str] = field(default_factory=list)
    one_file_system: bool = False
    tags: list[str] = field(default_factory=list)
    host: str = ""
    dry_run: bool = False
    parent: str | None = None  # point id, or None to pick the latest matching one
    force_full: bool = False  # ignore any parent: read everything
    scan_totals: bool = False
    # --exclude-if-present NAME[:HEADER] / --exclude-caches, --exclude-larger-than
    exclude_if_present: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    exclude_larger_than: int | None = None
    # Told of each regular file: (new|changed|unchanged, path, reasons) (`backup -v`).
    file_report: Callable[[str, bytes, list[str]], None] | None = None
    seeds: list[str] = field(default_factory=list)  # --seed: pinned seed names
    no_seeds: bool = False
    trust_seed_metadata: bool = False
    seed_root: str | None = None
    # From the change journal (trackers/journal.py): the paths, relative to the
    # one tree in `paths`, changed since the parent point; None walks everything.
    changed_paths: set[str] | None = None
    journal_sequence: int | None = None  # recorded in the point's summary
    journal_base: int | None = None  # the journal's committed sequence: the parent must hold it
    # Continuous protection (services/protect_service.py): the point's
    # consistency, its time (the quiesced instant) and extra summary fields
    # (`protect`: protect/source_points.py).
    consistency: str = "crash-consistent"
    point_time: datetime | None = None
    summary_extra: dict[str, Any] = field(default_factory=dict)
    # A snapshot of the one tree in `paths` to read it from (recorded under the
    # tree's path; sources/btrfs.py), and recorded paths to leave out of the point.
    read_from: str | None = None
    omit: list[str] = field(default_factory=list)
    # Reflink copies of the journal's changed files (sources/reflink.py), by
    # absolute recorded path; used only with `changed_paths` (a full comparison
    # reads live).
    copies: dict[bytes, CopiedFile] = field(default_factory=dict)
    copy_folder: str | None = None
    # Worker processes for reading and sealing (pipeline/workers.py); None: the
    # default (strongroom/cpu.py `default_jobs`), 1: all in this process.
    jobs: int | None = None

    def seed_choice(self) -> SeedChoice:
        from strongroom.services.seed_select import SeedChoice

        return SeedChoice(self.seeds, self.no_seeds, self.trust_seed_metadata, self.seed_root)


@dataclass
class BackupResult:
    point: RecoveryPoint | None
    summary: BackupSummary
    parent: str | None
    seconds: float
    seeds: PointSeeds | None = None  # what the point builds on (None: no seed applied)
    seeds_skipped: list[str] = field(default_factory=list)  # seeds that did not fit


def _choose_parent(
    repo: Repository, req: BackupRequest, paths: list[str], warnings: list[str]
) -> RecoveryPoint | None:
    from strongroom.services.points import PointFilter, find_point, list_points

    if req.force_full:
        return None
    if req.parent:
        parent = find_point(repo, req.parent)
        if parent.kind != PointKind.FILES:
            raise UsageError(f"point {parent.short_id} is a {parent.kind} point, not a files point")
        return parent
    candidates = list_points(
        repo,
        PointFilter(hosts=[req.host], paths=paths),
        on_damaged=lambda pid, err: warnings.append(f"skipping damaged point {pid[:8]}: {err}"),
    )
    candidates = [p for p in candidates if p.kind == PointKind.FILES]
    return candidates[-1] if candidates else None


def continues_journal(parent: RecoveryPoint | None, base: int | None) -> bool:
    """Whether a journal's changes after `base` are exactly what `parent` misses
    (`base` None: the caller vouches for its parent, as a test or a tool may)."""
    if parent is None:
        return False
    return base is None or parent.summary.get("journal_sequence") == base


def exclusion_markers(names: list[str], caches: bool) -> list[tuple[bytes, bytes | None]]:
    """`--exclude-if-present NAME[:HEADER]` (repeatable) and `--exclude-caches`
    (CACHEDIR.TAG with its signature, bford.info/cachedir) as (name, header)."""
    from strongroom.pipeline.backup import CACHEDIR_TAG

    markers: list[tuple[bytes, bytes | None]] = []
    for spec in names:
        name, sep, header = spec.partition(":")
        if not name or "/" in name or name in (".", ".."):
            raise UsageError(f"--exclude-if-present {spec!r}: give a file name, NAME[:HEADER]")
        markers.append((os.fsencode(name), os.fsencode(header) if sep else None))
    if caches:
        markers.append(CACHEDIR_TAG)
    return markers


def usable_paths(given: list[str]) -> tuple[list[str], list[str], int]:
    """The paths to back up (absolute, sorted, each once), the warnings about the
    others, and how many were missing. As restic: a missing or unreadable path
    among several is reported and the rest is backed up (the backup then ends
    with exit code 3); a path that is a symbolic link to a folder, given here, is
    followed, and the warnings say so. No usable path at all is an error."""
    paths: set[str] = set()
    warnings: list[str] = []
    missing = 0
    for raw in given:
        path = os.path.abspath(raw)
        if not os.path.lexists(path):
            warnings.append(f"{path}: no such file or directory (not backed up)")
            missing += 1
            continue
        if os.path.islink(path) and os.path.isdir(path):
            target = os.path.realpath(path)
            warnings.append(
                f"{path} is a symbolic link to the folder {target}: backing up {target}"
            )
            path = target
        paths.add(path)
    if not paths:
        raise SourceError(warnings[0].removesuffix(" (not backed up)") if warnings else "no paths")
    return sorted(paths), warnings, missing


def backup_files(
    repo: Repository,
    req: BackupRequest,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> BackupResult:
    from strongroom.pipeline.backup import BackupOptions, FileBackup
    from strongroom.services.recording import record_point
    from strongroom.services.seed_select import check_choice, select_seeds

    req.host = req.host or socket.gethostname()
    paths, path_warnings, missing = usable_paths(req.paths)
    check_choice(req.seed_choice())
    if req.changed_paths is not None and len(paths) != 1:
        raise UsageError("changed paths from a change journal go with exactly one tree")
    parent_warnings: list[str] = []
    parent = _choose_parent(repo, req, paths, parent_warnings)
    if req.changed_paths is not None and not continues_journal(parent, req.journal_base):
        # The changes are relative to the point that committed the journal's
        # base; any other parent (forgotten, damaged, a manual backup since)
        # would silently lose what changed in between: compare everything.
        parent_warnings.append(
            "the parent point is not the one the change journal continues: "
            "full comparison instead of the journal's changes"
        )
        req.changed_paths = None
    selection = select_seeds(repo, req.seed_choice(), paths)
    parent_warnings += selection.warnings
    skip = [repo.backend.location] if os.path.isdir(repo.backend.location) else []
    options = BackupOptions(
        paths=paths,
        excludes=req.excludes,
        one_file_system=req.one_file_system,
        dry_run=req.dry_run,
        skip_dirs=skip,
        scan_totals=req.scan_totals,
        file_report=req.file_report,
        exclude_if_present=req.exclude_if_present,
        exclude_larger_than=req.exclude_larger_than,
        changed_paths=None
        if req.changed_paths is None
        else {os.fsencode(p) for p in req.changed_paths},
        read_from=req.read_from,
        omit={os.fsencode(os.path.abspath(p)) for p in req.omit},
        copies={} if req.changed_paths is None else req.copies,
        copy_folder=req.copy_folder,
        jobs=req.jobs,
    )
    started = now()
    pipeline = FileBackup(
        repo,
        options,
        parent_tree=bytes.fromhex(parent.tree) if parent else None,
        progress=progress,
        cancel=cancel,
        matcher=selection.matcher,
    )
    summary = pipeline.run()
    summary.warnings[:0] = path_warnings + parent_warnings
    summary.unreadable += missing
    seconds = (now() - started).total_seconds()
    record = pipeline.seed_record
    journal = {} if req.journal_sequence is None else {"journal_sequence": req.journal_sequence}
    if req.dry_run:
        return BackupResult(
            None, summary, parent.id if parent else None, seconds, record, selection.skipped
        )
    point = record_point(
        repo,
        kind=PointKind.FILES,
        time=req.point_time or started,
        host=req.host,
        paths=paths,
        tree=summary.tree_id,
        parent=parent,
        tags=req.tags,
        summary={
            **summary.as_dict(),
            "seconds": round(seconds, 3),
            **journal,
            **req.summary_extra,
        },
        consistency=req.consistency,
        seeds=record,
    )
    return BackupResult(point, summary, point.parent, seconds, record, selection.skipped)
