"""strongroom export: a block image point (or a source's whole chain) as VHD files."""

from __future__ import annotations

import click

from strongroom.cli.commands.agent import server_options, through_server
from strongroom.cli.commands.points import chosen_point, point_filter_options
from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes, plural
from strongroom.errors import UsageError
from strongroom.model.kinds import PointKind
from strongroom.services.export import (
    ExportSummary,
    VhdType,
    chain_points,
    check_format,
    export_chain,
    export_vhd,
    export_vhd_from_seed,
    export_vhd_incremental,
    export_vm_vhds,
)
from strongroom.services.points import find_point
from strongroom.services.seeds import find_seed
from strongroom.services.session import LockMode


@click.command()
@click.argument("what", metavar="POINT|SOURCE")
@click.argument("dest", metavar="OUT.vhd|DIR", type=click.Path())
@click.option(
    "--format",
    "fmt",
    default="vhd",
    show_default=True,
    help="Output format (only vhd exists for now).",
)
@click.option(
    "--type",
    "vhd_type",
    type=click.Choice(["dynamic", "fixed"]),
    default="dynamic",
    show_default=True,
    help="VHD type of a whole-disk export.",
)
@click.option(
    "--incremental-from",
    "base",
    metavar="BASE_POINT",
    help="Write a differencing VHD holding only the blocks changed since BASE_POINT, or, "
    "with seed:NAME, only the blocks that differ from seed NAME's golden image.",
)
@click.option(
    "--parent",
    type=click.Path(dir_okay=False),
    help="With --incremental-from: the VHD export of BASE_POINT (or, for seed:NAME, a VHD "
    "of the golden image), the new file's parent.",
)
@click.option(
    "--verify-parent",
    is_flag=True,
    help="With --incremental-from seed:NAME: check every block of the parent against the "
    "seed (default: a sample).",
)
@click.option(
    "--chain",
    is_flag=True,
    help="Export every block point of SOURCE (a backed-up image path) into DIR as a "
    "chain: one dynamic VHD, then one differencing VHD per later point.",
)
@point_filter_options
@server_options
@pass_app
def export(
    app: App,
    what: str,
    dest: str,
    fmt: str,
    vhd_type: str,
    base: str | None,
    parent: str | None,
    chain: bool,
    verify_parent: bool,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    servers: tuple[str, ...],
    agent_config: str | None,
) -> None:
    """Export image POINT (an id prefix or 'latest') as a VHD file OUT.vhd.

    With --chain: export all block points of SOURCE, oldest first, as a VHD
    chain in DIR (NNN-<point>.vhd); a child finds its parent in its own folder.
    """
    check_format(fmt)
    if chain and vhd_type != "dynamic":
        raise UsageError("a chain starts with a dynamic VHD: drop --type")
    if chain and (base or parent):
        raise UsageError("--chain exports the whole chain: drop --incremental-from/--parent")
    if (base is None) != (parent is None):
        raise UsageError("--incremental-from BASE_POINT and --parent BASE.vhd go together")
    if base is not None and vhd_type != "dynamic":
        raise UsageError("an incremental export is a differencing VHD: drop --type")
    out = app.out
    if through_server(servers, agent_config):
        if chain or base or verify_parent or hosts or tags or paths:
            raise UsageError(
                "through a server: one whole image or VM point of this machine; no --chain, "
                "incremental or --host/--tag/--path"
            )
        from strongroom.services.agent_backup import open_agent
        from strongroom.services.agent_images import export_image_through_server

        kind: VhdType = "fixed" if vhd_type == "fixed" else "dynamic"
        with (
            open_agent(agent_config, list(servers)) as (_config, store),
            out.progress("export") as progress,
        ):
            found, made = export_image_through_server(store, what, dest, kind, progress)
        vm = found.kind == PointKind.VM
        out.summary(_doc(made, dest, vm=vm), (_describe(s) for s in made))
        return
    with app.repository(LockMode.SHARED) as repo:
        if chain:
            points = chain_points(repo, what)
            with out.progress("export") as progress:
                summaries = export_chain(repo, points, dest, progress=progress)
        else:
            p = chosen_point(app, repo, what, hosts, tags, paths)
            if p.kind == PointKind.VM:  # every disk as DEST/DISK.vhd
                if base is not None:
                    raise UsageError("a VM point exports whole disks: drop --incremental-from")
                kind_vm: VhdType = "fixed" if vhd_type == "fixed" else "dynamic"
                with out.progress("export") as progress:
                    made = export_vm_vhds(repo, p, dest, kind=kind_vm, progress=progress)
                out.summary(_doc(made, dest, vm=True), (_describe(s) for s in made))
                return
            with out.progress("export") as progress:
                if base is not None and parent is not None and base.startswith("seed:"):
                    summary = export_vhd_from_seed(
                        repo,
                        p,
                        find_seed(repo, base.removeprefix("seed:")),
                        parent,
                        dest,
                        verify_full=verify_parent,
                        progress=progress,
                    )
                elif base is not None and parent is not None:
                    b = find_point(repo, base)
                    summary = export_vhd_incremental(repo, p, b, parent, dest, progress=progress)
                else:
                    summary = export_vhd(
                        repo,
                        p,
                        dest,
                        kind="fixed" if vhd_type == "fixed" else "dynamic",
                        progress=progress,
                    )
            summaries = [summary]
    out.summary(_doc(summaries, dest, vm=chain), (_describe(s) for s in summaries))


def _doc(summaries: list[ExportSummary], dest: str, *, vm: bool) -> dict[str, object]:
    """The `--json` document: one file's fields, or a folder and its files
    (a chain, a VM point's disks)."""
    if vm:
        return {"format": "vhd", "directory": dest, "files": [s.as_dict() for s in summaries]}
    return {"format": "vhd", **summaries[0].as_dict()}


def _describe(s: ExportSummary) -> str:
    text = (
        f"exported point {s.point_id[:8]} to {s.path}: {s.kind} VHD of {human_bytes(s.size)},"
        f" {plural(s.blocks_written, 'block')}, file {human_bytes(s.file_size)}"
    )
    if s.parent:
        text += f", parent {s.parent}"
    if s.base_seed:
        text += f" (seed {s.base_seed})"
    return text
