"""strongroom restore: bring a point's files back."""

from __future__ import annotations

import click

from strongroom.cli.commands.agent import server_options, through_server
from strongroom.cli.commands.points import chosen_point, describe_point, point_filter_options
from strongroom.cli.context import App, pass_app
from strongroom.cli.output import Output, human_bytes, plural
from strongroom.cli.units import jobs_option
from strongroom.errors import ExitCode
from strongroom.model.names import printable
from strongroom.model.scope import ScopeSpec
from strongroom.services.media_restore import (
    MediaOptions,
    MediaRestored,
    restore_anywhere,
    restore_from_cartridges,
)
from strongroom.services.points import PointFilter
from strongroom.services.restore import (
    UNCHANGED,
    FileReport,
    FilesRestored,
    HowToRestore,
    ImageFilesRestored,
    ImageRestored,
    RestoreRequest,
    VmRestored,
    restore_point,
)
from strongroom.services.session import LockMode
from strongroom.services.timeline import parse_instant, point_at


@click.command()
@click.argument("point")
@click.option(
    "--target",
    "-t",
    required=True,
    help="Directory to restore files into; for an image point: a file, a block device "
    "or a writable NBD URI (or, with --include, a directory for files inside the image).",
)
@click.option(
    "--include", "-i", multiple=True, help="Restore only this path of the point (repeatable)."
)
@click.option(
    "--overwrite",
    type=click.Choice(["always", "if-changed", "if-newer", "never"]),
    default="always",
    show_default=True,
    help="Files already in TARGET: always (rewrite what differs, comparing contents: an "
    "equal file is left as it is), if-changed (skip a file of the same size and mtime), "
    "if-newer (only when the point's is newer), never (leave them).",
)
@click.option(
    "--delete",
    is_flag=True,
    help="Remove what TARGET holds that the point lacks (with --include: only below those "
    "paths); never outside TARGET, never through a symlink.",
)
@click.option(
    "--dry-run",
    "-n",
    is_flag=True,
    help="Say what restore would write and delete (with -v, each path); touch nothing.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["raw", "qcow2"]),
    default="raw",
    show_default=True,
    help="Image points: format of the restored image file.",
)
@click.option(
    "--partition", type=int, help="Image points with --include: partition number (default: auto)."
)
@click.option("--vm", metavar="NAME", help="POINT is a point of VM NAME ('latest': its newest).")
@click.option(
    "--disk",
    "disks",
    multiple=True,
    help="VM points: restore only this disk (repeatable); one disk may go to a file, a device "
    "or an NBD URI (back into the block layer).",
)
@click.option(
    "--scope",
    "scope_text",
    default="full",
    show_default=True,
    metavar="full|user|os|app:NAME",
    help="Points made against seeds: restore only this part (user: the machine's own "
    "files; app:NAME, os: those seeds' files as they are in the point; image points: "
    "user with --backing).",
)
@click.option(
    "--backing",
    metavar="GOLDEN",
    type=click.Path(dir_okay=False),
    help="Image points with --scope user: the seed's golden image; TARGET becomes a qcow2 "
    "overlay on it holding only the point's own blocks (--format qcow2).",
)
@click.option(
    "--verify-backing",
    is_flag=True,
    help="With --backing: check every block of GOLDEN against the seed (default: a sample).",
)
@click.option(
    "--lacks-file",
    metavar="FILE",
    help="--scope user: where to list the seed files the machine lacks "
    "(default: TARGET/.strongroom-lacks).",
)
@click.option(
    "--at",
    "at",
    metavar="TIME",
    help="POINT is a protected source's name: restore its latest point at or before TIME "
    "('2026-11-25 14:05' in local time, or with an offset).",
)
@click.option(
    "--from-media",
    "from_media",
    multiple=True,
    metavar="BARCODE",
    help="Read POINT from this cartridge, with no catalog and no repository (repeatable: "
    "every cartridge of a spanning copy, in order).",
)
@click.option("--library", metavar="NAME", help="With --from-media: the library holding it.")
@click.option(
    "--wait-for-media",
    is_flag=True,
    help="A point on offline cartridges: wait until they are put in the library.",
)
@click.option(
    "--keep-staging",
    is_flag=True,
    help="A point from media: keep the staging folder the cartridges were read into.",
)
@server_options
@jobs_option
@point_filter_options
@pass_app
def restore(
    app: App,
    point: str,
    target: str,
    include: tuple[str, ...],
    overwrite: str,
    delete: bool,
    dry_run: bool,
    fmt: str,
    partition: int | None,
    vm: str | None,
    disks: tuple[str, ...],
    scope_text: str,
    backing: str | None,
    verify_backing: bool,
    lacks_file: str | None,
    at: str | None,
    from_media: tuple[str, ...],
    library: str | None,
    wait_for_media: bool,
    keep_staging: bool,
    servers: tuple[str, ...],
    agent_config: str | None,
    jobs: int | None,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
) -> None:
    """Restore POINT (an id prefix or 'latest'; with --at, a protected source) into TARGET.

    A VM point restores every disk into the folder TARGET as DISK.raw (or .qcow2).
    -v lists each path restored, updated or deleted; -vv the unchanged ones too.
    """
    out = app.out
    how = HowToRestore(overwrite, delete, dry_run, _path_lines(out))
    if through_server(servers, agent_config):
        if hosts:
            raise click.UsageError(
                "through a server: no --host (an agent restores its own machine's points)"
            )
        if vm or disks or at or from_media or partition:
            raise click.UsageError(
                "through a server: no --vm, --disk, --at, --from-media or --partition"
            )
        scoped = PointFilter([], list(tags), list(paths))
        part = (ScopeSpec.parse(scope_text), lacks_file, backing, verify_backing)
        _restore_through_server(app, (servers, agent_config), point, target, fmt,
                                list(include), how, jobs, scoped, part)  # fmt: skip
        return
    request = RestoreRequest(point, target, list(include), fmt, partition, vm, list(disks))
    request.scope = ScopeSpec.parse(scope_text)
    request.lacks_file = lacks_file
    request.backing, request.verify_backing = backing, verify_backing
    request.jobs = jobs
    request.how = how
    instant = parse_instant(at) if at is not None else None
    if instant is not None and vm:
        raise click.UsageError("--at names a protected source: no --vm")
    media = MediaOptions(wait_for_media, keep_staging, library, say=out.notice)
    if library and not from_media:
        raise click.UsageError("--library goes with --from-media")
    restored: object
    if from_media:  # media alone: no catalog, no disk repository
        if instant is not None:
            raise click.UsageError("--at needs the repository: no --from-media")
        with out.progress("restore") as progress:
            restored = restore_from_cartridges(
                from_media, request, app.settings, app.password(), media, progress
            )
    else:
        with app.repository(LockMode.SHARED) as repo, out.progress("restore") as progress:
            if instant is not None:
                request.point = point_at(repo, point, instant).id
                restored = restore_point(repo, request, progress)
            else:
                if point == "latest" and not vm and (hosts or tags or paths):
                    request.point = chosen_point(app, repo, point, hosts, tags, paths).id
                restored = restore_anywhere(
                    repo, request, app.settings, app.password, media, progress
                )
    if isinstance(restored, MediaRestored):
        restored = restored.restored
    match restored:
        case FilesRestored():
            _files_restored(out, restored, target)
        case ImageRestored():
            _image_restored(out, restored, target)
        case ImageFilesRestored():
            _image_files_restored(out, restored, target)
        case VmRestored():
            _vm_restored(out, restored)


def _restore_through_server(
    app: App,
    server: tuple[tuple[str, ...], str | None],
    ref: str,
    target: str,
    fmt: str,
    includes: list[str],
    how: HowToRestore,
    jobs: int | None,
    scoped: PointFilter,
    part: tuple[ScopeSpec, str | None, str | None, bool],
) -> None:
    """`restore --server`: one of the machine's own points (`latest` among
    those `scoped` matches, said as locally; `part`: --scope, --lacks-file,
    --backing and --verify-backing), printed as a local restore."""
    from strongroom.services.agent_backup import agent_points, find_own, open_agent
    from strongroom.services.agent_images import restore_own_point

    out = app.out
    with (
        open_agent(server[1], list(server[0])) as (_config, store),
        out.progress("restore") as progress,
    ):
        if ref == "latest" and (scoped.tags or scoped.paths):
            own = find_own(agent_points(store), ref, scoped)
            out.notice(f"using {describe_point(own)}")
            ref = own.id
        done = restore_own_point(store, ref, target, fmt, progress, includes=includes,
                                 how=how, jobs=jobs, scope=part[0], lacks_file=part[1],
                                 backing=(part[2], part[3]))  # fmt: skip
    if isinstance(done, VmRestored):
        _vm_restored(out, done)
    elif isinstance(done, ImageRestored):
        _image_restored(out, done, target)
    else:
        _files_restored(out, done, target)


def _path_lines(out: Output) -> FileReport | None:
    """`-v`: a line per path restored, updated or deleted, as restore meets it
    (restic 0.17's words); `-vv`: the unchanged ones too."""
    if not out.verbose or out.json:
        return None
    every = out.verbose > 1

    def report(status: str, path: bytes) -> None:
        if status != UNCHANGED or every:
            out.info(f"{status:<9} {printable(path)}")

    return report


def _files_restored(out: Output, r: FilesRestored, target: str) -> None:
    summary, scoped = r.summary, r.scoped
    if scoped.notice:
        out.notice(scoped.notice)
    for w in summary.warnings:
        out.warn(w)
    doc: dict[str, object] = {"point_id": r.point.id, **summary.as_dict()}
    scope = "" if summary.scope == "full" else f" (scope {summary.scope})"
    verb = "would restore" if summary.dry_run else "restored"
    lines = [
        f"{verb} {describe_point(r.point)}{scope} to {target}: {plural(summary.files, 'file')}, "
        f"{summary.dirs} dirs, {summary.other_entries} other entries, "
        f"{human_bytes(summary.bytes_written)}"
    ]
    if summary.updated or summary.unchanged or summary.deleted:
        lines.append(
            f"of those {summary.updated} updated, {summary.unchanged} unchanged; "
            f"{summary.deleted} deleted"
            + (" (dry run: nothing written)" if summary.dry_run else "")
        )
    elif summary.dry_run:
        lines.append("dry run: nothing written")
    if r.point.seeds is not None or summary.scope != "full":
        lines.append(
            "by class: " + ", ".join(f"{summary.classes.get(w, 0)} {w}" for w in _CLASS_WORDS)
        )
    if scoped.lacks is not None:
        # Exactly: names that are not UTF-8 carry their bytes as \udcNN (surrogateescape).
        doc["lacks"] = [p.decode("utf-8", "surrogateescape") for p in scoped.lacks]
        doc["lacks_count"] = len(scoped.lacks)
        doc["lacks_file"] = scoped.lacks_file
        lines.append(
            f"{len(scoped.lacks)} seed files the machine lacks, listed in "
            f"{printable(scoped.lacks_file or '')}"
        )
    out.summary(doc, lines)
    if summary.damaged:
        out.error(
            f"{plural(len(summary.damaged), 'file')} could not be fully restored (damaged data):"
        )
        for path in summary.damaged:
            out.notice(f"  {path}")
        raise SystemExit(ExitCode.FAILED)
    if summary.warnings:
        raise SystemExit(ExitCode.PARTIAL)


_CLASS_WORDS = ("own", "modified", "moved", "identical")


def _image_restored(out: Output, r: ImageRestored, target: str) -> None:
    summary = r.summary
    overlay = f" as a qcow2 overlay on {r.backing}" if r.backing else ""
    out.summary(
        {"point_id": r.point.id, **summary.as_dict(), "backing": r.backing},
        [
            f"restored image point {r.point.short_id} to {target}{overlay}: "
            f"{human_bytes(summary.size)} disk, {human_bytes(summary.bytes_written)} written, "
            f"{summary.holes} hole blocks"
        ],
    )
    if summary.damaged:
        out.error(
            f"{plural(len(summary.damaged), 'block')} could not be restored "
            "(damaged data, left zero):"
        )
        for what in summary.damaged:
            out.notice(f"  {what}")
        raise SystemExit(ExitCode.FAILED)


def _image_files_restored(out: Output, r: ImageFilesRestored, target: str) -> None:
    out.summary(
        {
            "point_id": r.point.id,
            "filesystem": r.filesystem,
            "paths": r.paths,
            "bytes_written": r.bytes_written,
        },
        [
            f"restored {len(r.paths)} paths from the {r.filesystem} file system of image point "
            f"{r.point.short_id} to {target}: {human_bytes(r.bytes_written)}"
        ],
    )


def _vm_restored(out: Output, r: VmRestored) -> None:
    out.summary(
        {
            "point_id": r.point.id,
            "disks": [{"disk": d, "target": w, **s.as_dict()} for d, w, s in r.disks],
        },
        [
            f"disk {disk}: restored to {where} ({human_bytes(summary.bytes_written)})"
            for disk, where, summary in r.disks
        ],
    )
    damaged = sum(len(s.damaged) for _, _, s in r.disks)
    if damaged:
        out.error(
            f"{plural(damaged, 'block')} could not be restored (damaged data); they read as zeros"
        )
        raise SystemExit(ExitCode.FAILED)
