"""`strongroom copy` through a backup server, as the enrolled agent
(docs/server.md, "Copying points"; the local copy's rules: services/copy.py).

`copy_to_server`: points of a local (or S3) repository the machine kept
before it was enrolled become the machine's points on the server. The
server stores them as any agent's point: the host is the machine's name
(the server refuses another), it only adds (append-only holds: nothing on
the server is rewritten), and it stores the fields its point codec knows,
so the copy marks (`original`, `copied_from`) go in the summary. Chunks are
re-cut with the server repository's keys and go through the backup's
upload path (`RemoteStore`: asked for, only the missing ones sent).

Which source points: those whose host is the machine's name; `--host NAME`
(one) instead takes the points of NAME as the machine's (its earlier
hostname, when the enrolled name differs). A point of any other host is
refused, named (exit code 3): it is another machine's history, which this
machine must not file as its own by accident. VM points are refused too (through a
server they belong to the machine's cluster, which the agent does not
choose), as are seed-based and protection points, as locally.

`copy_from_server`: the machine's own points (those the server lets it
list) into a local repository, e.g. an off-site disk; the copies are
ordinary local copies (top-level marks), recognised by a rerun.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from strongroom.errors import UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.services.agent_backup import agent_points, find_own
from strongroom.services.copy import (
    CopiedPoint,
    CopySummary,
    Listed,
    Marks,
    copy_listed,
    listed_in,
    refusal,
    select_points,
)
from strongroom.services.points import PointFilter, list_points
from strongroom.types import ProgressCallback, no_progress

if TYPE_CHECKING:
    from collections.abc import Callable

    from strongroom.remote.store import RemoteStore
    from strongroom.repository.repo import Repository


def _server_side(store: RemoteStore) -> Listed:
    """The machine's points on the server (the only ones it may list)."""
    docs = {str(d.get("id")): d for d in store.points()}
    points = agent_points(store)
    known = {p.id: p for p in points}
    return Listed(points, {p.id: docs[p.id] for p in points if p.id in docs}, known.get)


def source_host(machine: str, hosts: list[str]) -> str:
    """The source host whose points become the machine's: the machine's name,
    or the one `--host` names; UsageError for more than one."""
    if len(hosts) > 1:
        raise UsageError("through a server: at most one --host (the machine's name in the source)")
    return hosts[0] if hosts else machine


def copy_to_server(
    src: Repository,
    store: RemoteStore,
    machine: str,
    refs: list[str],
    flt: PointFilter,
    *,
    dry_run: bool = False,
    progress: ProgressCallback = no_progress,
    on_point: Callable[[CopiedPoint], None] = lambda _: None,
) -> CopySummary:
    """Copy points of `src` into the server as `machine`'s (see the module)."""
    host = source_host(machine, flt.hosts)
    # Without --host every matching point is looked at and another host's is
    # refused by name: a machine whose enrolled name is not its old hostname
    # hears which name to give, rather than "copied 0 points".
    chosen = PointFilter([host] if flt.hosts else [], flt.tags, flt.paths)
    wanted = listed_in(src, select_points(src, refs, chosen))

    def refuse(point: RecoveryPoint, doc: dict[str, Any]) -> str | None:
        if point.host != host:
            return (
                f"of host {printable(point.host)}, not this machine "
                f"(--host {printable(point.host)} files that host's points as this machine's)"
            )
        if point.kind == PointKind.VM:
            return "a VM point (through a server VM points belong to the machine's cluster)"
        return refusal(point, doc)

    return copy_listed(
        src, wanted, store, _server_side(store), Marks(host=machine, in_summary=True), refuse,
        dry_run=dry_run, progress=progress, on_point=on_point,
    )  # fmt: skip


def copy_from_server(
    store: RemoteStore,
    dst: Repository,
    refs: list[str],
    flt: PointFilter,
    *,
    dry_run: bool = False,
    progress: ProgressCallback = no_progress,
    on_point: Callable[[CopiedPoint], None] = lambda _: None,
) -> CopySummary:
    """Copy the machine's own points from the server into `dst`."""
    side = _server_side(store)
    if refs:
        chosen = {p.id: p for p in (find_own(side.points, r, flt) for r in refs)}
        points = sorted(chosen.values(), key=lambda p: (p.time, p.id))
    else:
        points = [p for p in side.points if flt.matches(p)]
    wanted = Listed(points, side.docs, side.load)
    present = listed_in(dst, list_points(dst))
    return copy_listed(
        store, wanted, dst, present, Marks(), refusal,
        dry_run=dry_run, progress=progress, on_point=on_point,
    )  # fmt: skip
