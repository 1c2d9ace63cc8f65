"""An agent's use cases through its backup server: enrollment, backing up
files, listing and restoring its own points (docs/server.md, "Agents").

The file pipelines run unchanged over a `RemoteStore` (remote/store.py):
points made through the server are the same as local ones. The point's
host is the enrolled machine's name (the server forces it); the parent is
the machine's latest files point of the same paths, as a local backup
chooses. No repository password is needed or asked for.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from strongroom.errors import PointNotFound, RemoteError, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint, now
from strongroom.pipeline.backup import BackupOptions, FileBackup
from strongroom.remote.client import Client, split_servers
from strongroom.remote.config import AgentConfig, RepositoryInfo, default_config_path
from strongroom.remote.store import RemoteStore
from strongroom.remote.tree_cache import open_tree_cache
from strongroom.services.agent_seeds import select_through_server
from strongroom.services.backup import (
    BackupRequest,
    BackupResult,
    continues_journal,
    usable_paths,
)
from strongroom.services.recording import record_point
from strongroom.services.seed_select import check_choice
from strongroom.types import ProgressCallback, no_progress

if TYPE_CHECKING:  # the restore pipeline is imported by restores only (a backup's start)
    from strongroom.model.scope import ScopeSpec
    from strongroom.pipeline.restore import RestoreSummary
    from strongroom.services.points import PointFilter
    from strongroom.services.restore import HowToRestore, ScopedRestore

__all__ = [
    "AgentConfig",
    "RemoteStore",
    "agent_points",
    "backup_through_server",
    "default_config_path",
    "enroll",
    "find_own",
    "open_agent",
    "restore_through_server",
]


def enroll(servers: list[str], token: str, ca_cert: str | None, path: str) -> AgentConfig:
    """Consume the enrollment token at the first server that answers and
    write the machine's credentials to `path` (0600 in a 0700 folder)."""
    urls = split_servers(servers)
    client = Client(urls, ca_cert=ca_cert)
    try:
        doc = client.post_json("/api/v1/agent/enroll", {"token": token}, idempotent=False)
    finally:
        client.close()
    try:
        config = AgentConfig(
            servers=urls,
            machine=str(doc["machine"]),
            agent_id=str(doc["agent_id"]),
            secret=str(doc["secret"]),
            repository=RepositoryInfo.from_doc(doc["repository"]),
            ca_cert=os.path.abspath(ca_cert) if ca_cert else None,
        )
    except (KeyError, TypeError) as err:
        raise RemoteError(f"the server's enrollment answer is malformed: {err}") from None
    config.save(path)
    return config


@contextmanager
def open_agent(
    config_path: str | None, servers: list[str] | None = None, *, ca_cert: str | None = None
) -> Iterator[tuple[AgentConfig, RemoteStore]]:
    """The agent's config and a store over its server(s); `servers` (the
    command line's) replace the config's addresses. The store keeps trees in
    the agent's tree cache (remote/tree_cache.py) unless STRONGROOM_NO_CACHE."""
    config = AgentConfig.load(config_path or default_config_path())
    urls = split_servers(servers) if servers else config.servers
    client = Client(urls, config.bearer, ca_cert=ca_cert or config.ca_cert)
    store = RemoteStore(client, config.repository, tree_cache=open_tree_cache(config.repository.id))
    try:
        yield config, store
    finally:
        store.close()
        client.close()


def agent_points(store: RemoteStore) -> list[RecoveryPoint]:
    """The machine's own points, oldest first (malformed ones left out)."""
    found = []
    for doc in store.points():
        try:
            point = RecoveryPoint.from_doc(doc)
        except (ValueError, TypeError, KeyError):
            continue
        found.append(point)
    return found


def find_own(
    points: list[RecoveryPoint], ref: str, flt: PointFilter | None = None
) -> RecoveryPoint:
    """The point `ref` (an id prefix, or 'latest': the newest of those `flt`
    matches) among the machine's own: another machine's id matches none."""
    if ref == "latest":
        chosen = [p for p in points if flt is None or flt.matches(p)]
        if not chosen:
            raise PointNotFound(
                "no point of this machine matches" if points and flt is not None
                else "this machine has no recovery point yet"
            )  # fmt: skip
        return chosen[-1]
    matches = [p for p in points if p.id.startswith(ref)] if ref else []
    if len(matches) != 1:
        raise PointNotFound(
            f"{len(matches)} points of this machine match {ref[:64]!r}"
            + ("; give a longer id" if matches else "")
        )
    return matches[0]


def backup_through_server(
    store: RemoteStore,
    machine: str,
    req: BackupRequest,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> BackupResult:
    """Back up `req.paths` as a files point of `machine` through the server.

    From a change journal (`req.changed_paths`, the protection service's tree
    cycles): only those paths are read, on the parent `req.parent` (one of the
    machine's own points), and only when that parent is the point the
    journal continues (`req.journal_base`); otherwise every file is compared,
    as a local backup does. The journal itself stays on the agent. Against
    the repository's seeds as a local backup (`req.seeds`, --no-seeds, the
    automatic choice; services/agent_seeds.py): the point records the seeds
    used and each entry's provenance, and the server checks the seeds at the
    commit. With
    `req.dry_run` nothing is sent and no point made: the files are read and
    cut, and the server is asked which of their chunks it lacks, so "added" is
    what a real run would upload."""
    paths, path_warnings, missing = usable_paths(req.paths)
    check_choice(req.seed_choice())
    if req.changed_paths is not None and len(paths) != 1:
        raise UsageError("changed paths from a change journal go with exactly one tree")
    parent: RecoveryPoint | None = None
    if req.force_full:
        parent = None
    elif req.parent:
        parent = find_own(agent_points(store), req.parent)
        if parent.kind != PointKind.FILES:
            raise UsageError(f"point {parent.short_id} is a {parent.kind} point, not a files point")
    else:
        same = [
            p
            for p in agent_points(store)
            if p.kind == PointKind.FILES and sorted(p.paths) == paths and p.host == machine
        ]
        parent = same[-1] if same else None
    changed = req.changed_paths
    warnings = path_warnings
    if changed is not None and not continues_journal(parent, req.journal_base):
        warnings.append(
            "the parent point is not the one the change journal continues: "
            "full comparison instead of the journal's changes"
        )
        changed = None
    req.changed_paths = changed
    selection = select_through_server(store, req.seed_choice(), paths)
    warnings += selection.warnings
    options = BackupOptions(
        paths=paths,
        excludes=req.excludes,
        one_file_system=req.one_file_system,
        scan_totals=req.scan_totals,
        file_report=req.file_report,
        exclude_if_present=req.exclude_if_present,
        exclude_larger_than=req.exclude_larger_than,
        changed_paths=None if changed is None else {os.fsencode(p) for p in changed},
        read_from=req.read_from,
        omit={os.fsencode(os.path.abspath(p)) for p in req.omit},
        copies={} if changed is None else req.copies,
        copy_folder=req.copy_folder,
        jobs=req.jobs,
        dry_run=req.dry_run,
    )
    started = now()
    pipeline = FileBackup(
        store,
        options,
        parent_tree=bytes.fromhex(parent.tree) if parent else None,
        progress=progress,
        cancel=cancel,
        matcher=selection.matcher,
    )
    summary = pipeline.run()
    summary.warnings[:0] = warnings
    summary.unreadable += missing
    if req.dry_run:  # what the server lacks of what was read: asked, nothing sent
        candidates = pipeline.dry_new
        lacking = store.lacking(list(candidates))
        summary.chunks_new = len(lacking)
        summary.data_added = sum(candidates[c] for c in lacking)
        summary.data_added_stored = 0
        seconds = (now() - started).total_seconds()
        return BackupResult(
            None, summary, parent.id if parent else None, seconds,
            pipeline.seed_record, selection.skipped,
        )  # fmt: skip
    seconds = (now() - started).total_seconds()
    journal = {} if req.journal_sequence is None else {"journal_sequence": req.journal_sequence}
    point = record_point(
        store,
        kind=PointKind.FILES,
        time=req.point_time or started,
        host=machine,
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
        seeds=pipeline.seed_record,
    )
    return BackupResult(
        point, summary, point.parent, seconds, pipeline.seed_record, selection.skipped
    )


def restore_through_server(
    store: RemoteStore,
    ref: str,
    target: str,
    progress: ProgressCallback = no_progress,
    includes: list[str] | None = None,
    cancel: threading.Event | None = None,
    *,
    how: HowToRestore | None = None,
    jobs: int | None = None,
    scope: ScopeSpec | None = None,
    lacks_file: str | None = None,
    scoped: ScopedRestore | None = None,
) -> tuple[RecoveryPoint, RestoreSummary]:
    """Restore one of the machine's files points (all of it, or the paths
    `includes` of it) into `target`, as a local restore does (`how`:
    --overwrite, --delete, --dry-run and who hears of each path; `jobs`: its
    workers, None: the default; `scope`, `lacks_file`: the part of a point
    made against seeds, and where `--scope user` lists the seed files the
    machine lacks; `scoped` receives what the caller reports of it)."""
    from strongroom.model.scope import FULL
    from strongroom.services.restore import restore_files

    point = find_own(agent_points(store), ref)
    if point.kind != PointKind.FILES:
        raise UsageError(f"point {point.short_id} is a {point.kind} point, not a files point")
    whole = how is None or (how.overwrite == "always" and not how.dry_run)
    if whole and not includes and (scope is None or scope.is_full):
        store.plan_walk(bytes.fromhex(point.tree))  # every chunk is read: plan them all
    summary = restore_files(store, point, target, includes, progress, cancel,
                            scope or FULL, lacks_file, scoped, jobs=jobs, how=how)  # fmt: skip
    return point, summary
