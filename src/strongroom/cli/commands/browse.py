"""strongroom ls / diff / dump (alias cat): look inside points."""

from __future__ import annotations

import stat as statmod
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import click

from strongroom.cli.commands.agent import server_options, through_server
from strongroom.cli.commands.points import chosen_point, describe_point, point_filter_options
from strongroom.cli.context import App, pass_app
from strongroom.errors import UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.origin import FileClass, PointSeeds
from strongroom.model.scope import ScopeKind, ScopeSpec, class_of
from strongroom.model.tree import Node
from strongroom.services.browse import (
    ImageListing,
    diff_scoped,
    diff_trees,
    dump_point,
    list_point,
    scope_for,
)
from strongroom.services.points import PointFilter
from strongroom.services.session import LockMode

if TYPE_CHECKING:
    from strongroom.model.point import RecoveryPoint
    from strongroom.services.agent_backup import RemoteStore
    from strongroom.services.session import Repository

_TYPE_CHAR = {"f": "-", "d": "d", "l": "l", "p": "p", "c": "c", "b": "b", "s": "s"}


def _node_doc(path: bytes, node: Node, seeds: PointSeeds | None) -> dict[str, object]:
    """JSON escapes every character itself; bytes that are not UTF-8 become `\\xNN`.
    A seeded point's entries carry their class, the seeds that have their path
    and, for a moved file, its path in the seed."""
    doc: dict[str, object] = {
        "path": _decoded(path),
        "type": node.type,
        "mode": oct(node.mode),
        "uid": node.uid,
        "gid": node.gid,
        "size": node.size,
        "mtime": datetime.fromtimestamp(node.mtime_ns / 1e9).astimezone().isoformat(),
        "link_target": _decoded(node.link_target) or None,
    }
    if seeds is not None:
        doc["class"] = class_of(node).word
        origin = node.origin
        doc["seeds"] = [] if origin is None else [s.name for s in seeds.origin_seeds(origin)]
        if origin is not None and origin.cls is FileClass.MOVED:
            doc["seed_path"] = _decoded(origin.seed_path)
    return doc


_SCOPE_OPTION = click.option(
    "--scope",
    "scope_text",
    default="full",
    show_default=True,
    metavar="full|user|os|app:NAME",
    help="Points made against seeds: only what 'restore --scope' writes.",
)


def _decoded(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


class PointsReader:
    """Where `ls`, `dump`, `diff` and `find` read points: the repository, or
    (`--server`/`--agent-config`) the backup server as the enrolled agent,
    which reads only its own machine's points (`find_own`: another machine's
    id matches none) and keeps their trees in its tree cache."""

    def __init__(self, app: App, repo: Repository | None, agent: RemoteStore | None) -> None:
        self.app = app
        self.repo = repo
        self.agent = agent
        self._own: list[RecoveryPoint] | None = None
        store = repo if repo is not None else agent
        assert store is not None
        self.store: Repository | RemoteStore = store

    def own(self, flt: PointFilter) -> list[RecoveryPoint]:
        """The agent's own points (listed once); --host is refused: they are one machine's."""
        from strongroom.services.agent_backup import agent_points

        assert self.agent is not None
        if flt.hosts:
            raise click.UsageError(
                "through a server: no --host (an agent reads its own machine's points)"
            )
        if self._own is None:
            self._own = agent_points(self.agent)
        return self._own

    def point(self, ref: str, flt: PointFilter) -> RecoveryPoint:
        """`ref` (an id prefix, or `latest` among `flt`'s points), said when `latest`."""
        if self.repo is not None:
            hosts, tags, paths = tuple(flt.hosts), tuple(flt.tags), tuple(flt.paths)
            return chosen_point(self.app, self.repo, ref, hosts, tags, paths)
        from strongroom.services.agent_backup import find_own

        found = find_own(self.own(flt), ref, flt)
        if ref == "latest":
            self.app.out.notice(f"using {describe_point(found)}")
        return found

    def own_points(self, refs: list[str], flt: PointFilter) -> list[RecoveryPoint]:
        """The agent's points `find` searches: those `refs` name (as `find_point`:
        `latest` among `flt`'s), or every one `flt` matches."""
        from strongroom.services.agent_backup import find_own

        own = self.own(flt)
        if refs:
            return [find_own(own, ref, flt) for ref in refs]
        return [p for p in own if flt.matches(p)]


@contextmanager
def open_points(
    app: App, servers: tuple[str, ...], agent_config: str | None
) -> Iterator[PointsReader]:
    """The repository (no lock: reading only), or the server as the agent."""
    if through_server(servers, agent_config):
        from strongroom.services.agent_backup import open_agent

        with open_agent(agent_config, list(servers)) as (_config, store):
            yield PointsReader(app, None, store)
    else:
        with app.repository(LockMode.NONE) as repo:
            yield PointsReader(app, repo, None)


@click.command()
@click.argument("point")
@click.argument("path", default="/")
@click.option("--long", "-l", "long_", is_flag=True, help="Show modes, sizes and times.")
@click.option("--recursive/--no-recursive", default=True, help="List subdirectories too.")
@click.option(
    "--partition", type=int, help="Image points: partition number (default: the first readable)."
)
@_SCOPE_OPTION
@point_filter_options
@server_options
@pass_app
def ls(
    app: App,
    point: str,
    path: str,
    long_: bool,
    recursive: bool,
    partition: int | None,
    scope_text: str,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    servers: tuple[str, ...],
    agent_config: str | None,
) -> None:
    """List the entries of a point (under PATH); for an image point, its files inside."""
    spec = ScopeSpec.parse(scope_text)
    with open_points(app, servers, agent_config) as reader:
        p = reader.point(point, PointFilter(list(hosts), list(tags), list(paths)))
        bound = scope_for(p, spec, "ls")
        if bound.notice:
            app.out.notice(bound.notice)
        with list_point(reader.store, p, path, recursive, partition, bound) as listing:
            if isinstance(listing, ImageListing):
                _ls_image(app, listing, long_)
                return
            for entry_path, node in listing:
                if app.out.json:
                    app.out.emit(_node_doc(entry_path, node, p.seeds))
                elif long_:
                    mode = _TYPE_CHAR.get(node.type, "?") + statmod.filemode(node.mode)[1:]
                    when = datetime.fromtimestamp(node.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
                    owner = printable(f"{node.user or node.uid}/{node.group or node.gid}")
                    link = f" -> {printable(node.link_target)}" if node.link_target else ""
                    cls = f"{_class_column(node, p.seeds):<9} " if p.seeds is not None else ""
                    app.out.info(
                        f"{mode} {owner:>15} {node.size:>12} {when} {cls}"
                        f"{printable(entry_path)}{link}"
                    )
                else:
                    app.out.info(printable(entry_path))


def _class_column(node: Node, seeds: PointSeeds) -> str:
    """`ls -l` of a seeded point: the entry's class (checked against the point's seeds)."""
    if node.origin is not None:
        seeds.origin_seeds(node.origin)  # IntegrityError for a seed the point lacks
    return class_of(node).word


@click.command()
@click.argument("point_a")
@click.argument("point_b")
@_SCOPE_OPTION
@click.option(
    "--metadata",
    is_flag=True,
    help="Also list folders whose only change is their own modification time.",
)
@point_filter_options
@server_options
@pass_app
def diff(
    app: App,
    point_a: str,
    point_b: str,
    scope_text: str,
    metadata: bool,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    servers: tuple[str, ...],
    agent_config: str | None,
) -> None:
    """Show what changed between two points (+ added, - removed, M modified, U metadata, T type)."""
    counts = {"+": 0, "-": 0, "M": 0, "U": 0, "T": 0}
    spec = ScopeSpec.parse(scope_text)
    flt = PointFilter(list(hosts), list(tags), list(paths))
    with open_points(app, servers, agent_config) as reader:
        repo = reader.store
        a, b = reader.point(point_a, flt), reader.point(point_b, flt)
        sa = scope_for(a, spec, "diff", strict=False)
        sb = scope_for(b, spec, "diff", strict=False)
        if {a.kind, b.kind} != {PointKind.FILES}:
            raise UsageError("diff compares file points; for image points see 'snapshots'")
        if spec.kind in (ScopeKind.APP, ScopeKind.OS) and not (sa.scope.seeds or sb.scope.seeds):
            scope_for(b, spec, "diff")  # neither builds on it: b's one-line refusal
        for notice in dict.fromkeys(n for n in (sa.notice, sb.notice) if n):
            app.out.notice(notice)
        if spec.is_full:
            changes = diff_trees(
                repo, bytes.fromhex(a.tree), bytes.fromhex(b.tree), folder_times=metadata
            )
        else:
            changes = diff_scoped(repo, a, sa.scope, b, sb.scope, folder_times=metadata)
        for change in changes:
            counts[change.kind] += 1
            if app.out.json:
                app.out.emit(
                    {
                        "message_type": "change",
                        "modifier": change.kind,
                        "path": _decoded(change.path),
                    }
                )
            else:
                app.out.info(f"{change.kind}    {printable(change.path)}")
    if app.out.json:
        app.out.emit(
            {
                "message_type": "statistics",
                "added": counts["+"],
                "removed": counts["-"],
                "modified": counts["M"],
                "metadata": counts["U"],
                "type_changed": counts["T"],
            }
        )
    else:
        app.out.info(
            f"\n{counts['+']} added, {counts['-']} removed, {counts['M']} modified, "
            f"{counts['U']} metadata changed, {counts['T']} type changed"
        )


@click.command()
@click.argument("point")
@click.argument("path")
@click.option(
    "--partition", type=int, help="Image points: partition number (default: the first readable)."
)
@_SCOPE_OPTION
@point_filter_options
@server_options
@pass_app
def dump(
    app: App,
    point: str,
    path: str,
    partition: int | None,
    scope_text: str,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    servers: tuple[str, ...],
    agent_config: str | None,
) -> None:
    """Write one file of a point (or of the file system inside an image point) to stdout."""
    spec = ScopeSpec.parse(scope_text)
    with open_points(app, servers, agent_config) as reader:
        p = reader.point(point, PointFilter(list(hosts), list(tags), list(paths)))
        dump_point(reader.store, p, path, sys.stdout.buffer, partition, scope_for(p, spec, "dump"))
        sys.stdout.buffer.flush()


def _ls_image(app: App, listing: ImageListing, long_: bool) -> None:
    for e in listing.entries:
        if app.out.json:
            app.out.emit(
                {
                    "path": e.path,
                    "type": e.type,
                    "mode": oct(e.mode),
                    "uid": e.uid,
                    "gid": e.gid,
                    "size": e.size,
                    "mtime": datetime.fromtimestamp(e.mtime).astimezone().isoformat(),
                    "link_target": e.target or None,
                    "filesystem": listing.filesystem,
                }
            )
        elif long_:
            kind = {"file": "-", "dir": "d", "symlink": "l"}.get(e.type, "?")
            mode = kind + statmod.filemode(e.mode)[1:]
            when = datetime.fromtimestamp(e.mtime).strftime("%Y-%m-%d %H:%M:%S")
            link = f" -> {printable(e.target)}" if e.target else ""
            app.out.info(
                f"{mode} {e.uid:>7}/{e.gid:<7} {e.size:>12} {when} {printable(e.path)}{link}"
            )
        else:
            app.out.info(printable(e.path))
