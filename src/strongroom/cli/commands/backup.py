"""strongroom backup: protect directory trees."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from strongroom.cli import impact
from strongroom.cli.commands.agent import server_options, through_server
from strongroom.cli.context import App, pass_app
from strongroom.cli.files_from import files_from_options
from strongroom.cli.output import human_bytes, plural
from strongroom.cli.stdin_option import stdin_options
from strongroom.cli.units import jobs_option, parse_size
from strongroom.errors import ExitCode
from strongroom.model.names import printable
from strongroom.model.origin import PointSeeds
from strongroom.services.backup import (
    IMAGE_FORMATS,
    BackupRequest,
    BackupResult,
    backup_files,
    check_options,
    exclude_patterns,
    exclusion_markers,
    needs_default_repository,
)

if TYPE_CHECKING:
    from strongroom.cli.output import Output
    from strongroom.model.origin import PointSeeds
    from strongroom.services.image_backup import ImageBackupRequest, ImageBackupResult, ImageDryRun

# Image and VM backups import their services when asked for: a short file
# incremental should not pay for numpy, NBD, QMP and the image pipeline. The
# repository code (services.session) loads when a backup runs, not for --help.


@click.command()
@jobs_option
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--image",
    metavar="SOURCE",
    help="Back up a disk image at block level: a raw file, a block device, any image "
    "qemu reads, or an NBD URI (nbd://host:port/export, nbd+unix:///export?socket=PATH).",
)
@click.option(
    "--vm",
    "vms",
    metavar="NAME",
    multiple=True,
    help="Back up the cluster VM NAME (a [vm.NAME] table of the config file): every disk "
    "at one instant, under a cluster-wide lease. Repeatable; 'all': every configured VM.",
)
@click.option(
    "--changed-since",
    default="auto",
    show_default=True,
    metavar="TRACKER",
    help="With --image: how changed blocks are found: auto, none, compare, "
    "bitmap[:NAME] (QEMU dirty bitmap) or overlay (qcow2 overlay on the parent's image).",
)
@click.option(
    "--qmp",
    metavar="SOCKET",
    help="With --image NBD-URI: the block layer's QMP socket (unix path or tcp:HOST:PORT); "
    "the disk is frozen for the backup and dirty bitmaps rotate atomically.",
)
@click.option(
    "--node", metavar="NAME", help="With --qmp: the disk's block node (default: the export name)."
)
@click.option(
    "--scratch",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="With --qmp: directory for the temporary snapshot overlay (default: the temp dir).",
)
@click.option(
    "--format",
    "image_format",
    type=click.Choice(IMAGE_FORMATS),
    help="With --image FILE: the file's format (raw backs up its own bytes). Without it "
    "strongroom recognises raw, vhd, qcow2, vdi and vhdx itself; qemu never guesses.",
)
@click.option(
    "--allow-backing",
    is_flag=True,
    help="With --image FILE: also read the files the image names (qcow2 backing or data "
    "file, a VHD parent outside its folder, VMDK extents); they are listed in the output.",
)
@click.option(
    "--block-size",
    metavar="BYTES",
    type=int,
    help="With --image: block size of a first backup (power of two; default: the repository's).",
)
@click.option(
    "--seed",
    "seed_names",
    metavar="NAME",
    multiple=True,
    help="Build on seed NAME (repeatable); default: every seed that fits the source.",
)
@click.option("--no-seeds", is_flag=True, help="Match no seed: the point is all the machine's own.")
@click.option(
    "--trust-seed-metadata",
    is_flag=True,
    help="Take a file whose path, size, mode and mtime equal a seed's from the seed "
    "without reading it (fast; a change hidden behind a restored mtime is missed: "
    "see docs/seeds.md).",
)
@click.option(
    "--seed-root",
    metavar="DIR",
    help="The directory seed paths are relative to (default: / or the backed-up "
    "directory; see docs/seeds.md).",
)
@click.option("--exclude", "-e", multiple=True, help="Exclude a pattern (repeatable).")
@click.option(
    "--exclude-file",
    multiple=True,
    type=click.Path(exists=True),
    help="Read exclude patterns from a file.",
)
@click.option(
    "--exclude-caches",
    is_flag=True,
    help="Leave out the contents of folders holding a CACHEDIR.TAG (keep the tag).",
)
@click.option(
    "--exclude-if-present",
    multiple=True,
    metavar="NAME[:HEADER]",
    help="Leave out the contents of folders holding file NAME (starting with HEADER).",
)
@click.option(
    "--exclude-larger-than",
    callback=parse_size,
    metavar="SIZE",
    help="Leave out regular files larger than SIZE (512K, 2G).",
)
@click.option("--one-file-system", "-x", is_flag=True, help="Do not cross filesystem boundaries.")
@click.option("--tag", multiple=True, help="Tag the point (repeatable).")
@click.option("--host", default="", help="Host name to record (default: this host).")
@click.option(
    "--parent", default=None, help="Point to compare with (default: latest of same host and paths)."
)
@click.option("--force", is_flag=True, help="Read every file, ignoring the parent point.")
@click.option("--dry-run", "-n", is_flag=True, help="Do everything but write to the repository.")
@server_options
@pass_app
@impact.impact_options(impact.backup_kind)
@stdin_options
@files_from_options
def backup(
    app: App,
    jobs: int | None,
    paths: tuple[str, ...],
    exclude: tuple[str, ...],
    exclude_file: tuple[str, ...],
    exclude_caches: bool,
    exclude_if_present: tuple[str, ...],
    exclude_larger_than: int | None,
    one_file_system: bool,
    tag: tuple[str, ...],
    host: str,
    parent: str | None,
    force: bool,
    dry_run: bool,
    image: str | None,
    changed_since: str,
    qmp: str | None,
    node: str | None,
    scratch: str | None,
    block_size: int | None,
    vms: tuple[str, ...],
    image_format: str | None,
    allow_backing: bool,
    seed_names: tuple[str, ...],
    no_seeds: bool,
    trust_seed_metadata: bool,
    seed_root: str | None,
    servers: tuple[str, ...],
    agent_config: str | None,
) -> None:
    """Back up PATHS (or a disk image, with --image; a VM, with --vm) into a new recovery point.

    What is uploaded is indexed every 15 seconds (STRONGROOM_INDEX_FLUSH_SECONDS) and
    when the backup is interrupted (Ctrl-C, SIGTERM: exit 130), so the next run reuses
    it instead of reading and uploading it again."""
    out = app.out
    tracker = check_options(
        paths=bool(paths),
        image=bool(image),
        vms=bool(vms),
        # through a server --dry-run reads images (and VMs) too: checked below
        dry_run=dry_run and not through_server(servers, agent_config),
        changed_since=changed_since,
        force=force,
        image_format=image_format,
        allow_backing=allow_backing,
        seeds=bool(seed_names) or no_seeds,
        file_seed_options=trust_seed_metadata or seed_root is not None,
    )

    def files_request() -> BackupRequest:
        """The files backup asked for, locally or through a server (which refuses
        --host above and takes the machine's name as the host)."""
        return BackupRequest(
            paths=list(paths),
            jobs=jobs,
            excludes=exclude_patterns(app.settings, list(exclude), list(exclude_file)),
            one_file_system=one_file_system,
            tags=list(tag),
            host=host or socket.gethostname(),
            dry_run=dry_run,
            parent=parent,
            force_full=force,
            scan_totals=out.interactive,
            file_report=_file_lines(app) if out.verbose and not out.json else None,
            exclude_if_present=exclusion_markers(list(exclude_if_present), exclude_caches),
            exclude_larger_than=exclude_larger_than,
            seeds=list(seed_names),
            no_seeds=no_seeds,
            trust_seed_metadata=trust_seed_metadata,
            seed_root=seed_root,
        )

    if through_server(servers, agent_config):
        if host:
            raise click.UsageError(
                "through a server: no --host (the point's host is the enrolled machine)"
            )
        if vms and dry_run:
            from strongroom.cli.commands.vm import dry_run_vm_cmd

            dry_run_vm_cmd(app, list(vms), tracker, (servers, agent_config))
            return
        if vms:
            from strongroom.cli.commands.vm import backup_vm_cmd

            backup_vm_cmd(app, list(vms), tracker, list(tag), (servers, agent_config))
            return
        if image:
            from strongroom.services.image_backup import ImageBackupRequest

            req = ImageBackupRequest(source=image, changed_since=tracker, qmp=qmp, node=node,
                                     scratch=scratch, tags=list(tag), parent=parent,
                                     block_size=block_size, image_format=image_format,
                                     allow_backing=allow_backing, seeds=list(seed_names),
                                     no_seeds=no_seeds)  # fmt: skip
            if dry_run:
                dry_run_image_cmd(app, req, (servers, agent_config))
            else:
                backup_image_cmd(app, req, (servers, agent_config))
            return
        _backup_through_server(app, servers, agent_config, files_request())
        return
    if needs_default_repository(app.settings):
        out.notice(
            f"no repository configured: creating the default one at {app.settings.repository}"
        )
        from strongroom.cli.commands.init import create_repository

        key = create_repository(app)
        out.notice(
            f"Its key is stored in the repository ({key}), protected by your password.\n"
            "Keep the password safe: without it nobody can restore this data."
        )
    if vms:
        from strongroom.cli.commands.vm import backup_vm_cmd

        backup_vm_cmd(app, list(vms), tracker, list(tag))
        return
    if image:
        from strongroom.services.image_backup import ImageBackupRequest

        backup_image_cmd(
            app,
            ImageBackupRequest(
                source=image,
                changed_since=tracker,
                qmp=qmp,
                node=node,
                scratch=scratch,
                tags=list(tag),
                host=host or socket.gethostname(),
                parent=parent,
                block_size=block_size,
                image_format=image_format,
                allow_backing=allow_backing,
                seeds=list(seed_names),
                no_seeds=no_seeds,
                # files-jobs' `@jobs_option` (cli/units.py); None without it: the default
                jobs=click.get_current_context().params.get("jobs"),
            ),
        )
        return
    request = files_request()
    from strongroom.services.session import LockMode

    with app.repository(LockMode.SHARED) as repo, out.progress("backup") as progress:
        result = backup_files(repo, request, progress)
    _report(app, result, dry_run)


def _file_lines(app: App) -> Callable[[str, bytes, list[str]], None]:
    """`-v`: a line per new and modified file as the backup meets it (restic's
    `-v`); `-vv`: every file, with what changed (size, mtime, inode, ctime)."""
    out = app.out
    every = out.verbose > 1

    def report(status: str, path: bytes, reasons: list[str]) -> None:
        if status == "unchanged" and not every:
            return
        word = {"new": "new", "changed": "modified", "unchanged": "unchanged"}[status]
        why = f" ({', '.join(reasons)})" if every and reasons else ""
        out.info(f"{word:<9} {printable(path)}{why}")

    return report


def _backup_through_server(
    app: App, servers: tuple[str, ...], agent_config: str | None, request: BackupRequest
) -> None:
    from strongroom.services.agent_backup import backup_through_server, open_agent

    with open_agent(agent_config, list(servers)) as (config, store):
        with app.out.progress("backup") as progress:
            result = backup_through_server(store, config.machine, request, progress)
        traffic = store.traffic
        requests = store.client.requests
    app.out.notice(
        f"through the server: {traffic.asked} chunk ids asked, {traffic.missing} missing, "
        f"{traffic.bundles} bundles ({human_bytes(traffic.bytes_sent)}) sent"
    )
    _report(app, result, request.dry_run, {"traffic": {**asdict(traffic), "requests": requests}})


def _report(
    app: App, result: BackupResult, dry_run: bool, extra: dict[str, object] | None = None
) -> None:
    out = app.out
    s = result.summary
    for w in s.warnings:
        out.warn(w)
    point = result.point
    rate = s.total_bytes / result.seconds if result.seconds else 0
    seeds = result.seeds
    out.summary(
        {
            **s.as_dict(),
            "dry_run": dry_run,
            "point_id": point.id if point else None,
            "parent": result.parent,
            "seconds": round(result.seconds, 3),
            "seeds": seeds.to_doc() if seeds is not None else None,
            "seeds_skipped": result.seeds_skipped,
            **(extra or {}),
        },
        [
            f"Files: {s.files_new} new, {s.files_changed} changed, {s.files_unmodified} unmodified",
            f"Dirs:  {s.dirs}; other entries: {s.other_entries}",
            *seed_lines(seeds, s.files_from_seed),
            f"Added to the repository: {human_bytes(s.data_added)} "
            f"({human_bytes(s.data_added_stored)} stored)",
            f"processed {plural(s.total_files, 'file')}, {human_bytes(s.total_bytes)} in "
            f"{result.seconds:.2f}s ({human_bytes(rate)}/s)",
            f"point {point.short_id} saved" if point else "dry run: nothing was written",
        ],
    )
    if s.unreadable:
        out.notice(
            f"{plural(s.unreadable, 'file')} could not be read; the point does not contain them"
        )
        raise SystemExit(ExitCode.PARTIAL)


def seed_lines(seeds: PointSeeds | None, unread: int) -> list[str]:
    """The summary's lines about seeds: classes, lacking files, files taken unread."""
    if seeds is None:
        return []
    names = ", ".join(printable(u.name) for u in seeds.used)
    parts = []
    for word in ("identical", "modified", "moved", "own"):
        counts = seeds.classes.get(word, {})
        parts.append(f"{counts.get('files', 0)} {word} ({human_bytes(counts.get('bytes', 0))})")
    lines = [
        f"Seeds: {names} (root {printable(seeds.root)})",
        "Files: " + ", ".join(parts),
        f"Seed files the machine lacks: {seeds.lacks_count}",
    ]
    if unread:
        lines.append(f"Taken from seeds unread (--trust-seed-metadata): {plural(unread, 'file')}")
    return lines


def backup_image_cmd(
    app: App,
    request: ImageBackupRequest,
    server: tuple[tuple[str, ...], str | None] | None = None,
) -> None:
    """`backup --image`, into the repository or (`server`: the `--server`
    URLs and `--agent-config`) through the backup server as its agent."""
    from strongroom.services.image_backup import backup_image

    out = app.out
    request.limit_read = app.settings.limit_read  # --limit-read (cli/impact.py)
    if server is not None:
        from strongroom.services.agent_backup import open_agent
        from strongroom.services.agent_images import backup_image_through_server

        with (
            open_agent(server[1], list(server[0])) as (config, store),
            out.progress("backup") as progress,
        ):
            result = backup_image_through_server(store, config.machine, request, progress)
            traffic = store.traffic
        out.notice(
            f"through the server: {traffic.asked} chunk ids asked, {traffic.missing} missing, "
            f"{traffic.bundles} bundles ({human_bytes(traffic.bytes_sent)}) sent"
        )
    else:
        from strongroom.services.session import LockMode

        with app.repository(LockMode.SHARED) as repo, out.progress("backup") as progress:
            result = backup_image(repo, request, progress)
    s = result.summary
    _image_notes(out, result)
    rate = s.bytes_read / result.seconds if result.seconds else 0
    seeds = result.point.seeds
    out.summary(
        {
            **s.as_dict(),
            "point_id": result.point.id,
            "parent": result.parent,
            "seconds": round(result.seconds, 3),
            "seeds": seeds.to_doc() if seeds is not None else None,
        },
        [
            *_image_seed_lines(seeds),
            f"changed blocks found by: {s.tracker}",
            f"Disk: {human_bytes(s.size)} in {plural(s.blocks, 'block')} "
            f"of {human_bytes(s.block_size)}; "
            f"{s.holes} holes",
            f"Read {human_bytes(s.bytes_read)} ({plural(s.blocks_read, 'block')}); "
            f"changed {human_bytes(s.bytes_changed)} ({plural(s.blocks_changed, 'block')})",
            f"Added to the repository: {human_bytes(s.data_added)} "
            f"({human_bytes(s.data_added_stored)} stored)",
            f"done in {result.seconds:.2f}s ({human_bytes(rate)}/s read)",
            f"point {result.point.short_id} saved",
        ],
    )


def _image_notes(out: Output, found: ImageBackupResult | ImageDryRun) -> None:
    """An image backup's (or dry run's) warnings, notices and tracker note."""
    for w in found.summary.warnings:
        out.warn(w)
    for notice in found.notices:
        out.notice(notice)
    if found.summary.tracker_note:
        out.notice(found.summary.tracker_note)


def dry_run_image_cmd(
    app: App, request: ImageBackupRequest, server: tuple[tuple[str, ...], str | None]
) -> None:
    """`backup --image --dry-run` through the server: read and cut, the server
    asked which chunks it lacks, nothing sent, no point."""
    from strongroom.services.agent_backup import open_agent
    from strongroom.services.agent_dry_runs import dry_run_image_through_server

    out = app.out
    request.limit_read = app.settings.limit_read
    with (
        open_agent(server[1], list(server[0])) as (config, store),
        out.progress("backup") as progress,
    ):
        found = dry_run_image_through_server(store, config.machine, request, progress)
        traffic = store.traffic
    s = found.summary
    _image_notes(out, found)
    out.summary(
        {
            **s.as_dict(),
            "point_id": None,
            "parent": found.parent,
            "seconds": round(found.seconds, 3),
            "dry_run": True,
            "traffic": asdict(traffic),
        },
        [
            f"changed blocks found by: {s.tracker}",
            f"Disk: {human_bytes(s.size)} in {plural(s.blocks, 'block')} "
            f"of {human_bytes(s.block_size)}; {s.holes} holes",
            f"Read {human_bytes(s.bytes_read)} ({plural(s.blocks_read, 'block')}); "
            f"changed {human_bytes(s.bytes_changed)} ({plural(s.blocks_changed, 'block')})",
            f"Would add to the repository: {human_bytes(s.data_added)} "
            f"({plural(s.blocks_new, 'new block')}); the server was asked about "
            f"{traffic.asked} chunk ids, nothing sent",
            f"dry run in {found.seconds:.2f}s: no point saved",
        ],
    )


def _image_seed_lines(seeds: PointSeeds | None) -> list[str]:
    if seeds is None or not seeds.used:
        return []
    same, own = seeds.classes.get("identical", {}), seeds.classes.get("own", {})
    return [
        f"builds on seed {printable(seeds.used[0].name)}: {same.get('blocks', 0)} blocks "
        f"identical ({human_bytes(same.get('bytes', 0))}), {own.get('blocks', 0)} own "
        f"({human_bytes(own.get('bytes', 0))})"
    ]
