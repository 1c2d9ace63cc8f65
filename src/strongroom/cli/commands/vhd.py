"""strongroom vhd info/check: describe and verify a VHD file and its parent chain."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.services.vhd_tools import VhdError, VhdFileInfo, check_vhd, vhd_info


@click.group()
def vhd() -> None:
    """Inspect and verify VHD files (fixed, dynamic, differencing). No repository needed."""


def _rows(files: list[VhdFileInfo]) -> list[tuple[str, ...]]:
    return [
        (
            f.path,
            f.type,
            human_bytes(f.virtual_size),
            human_bytes(f.block_size) if f.block_size else "",
            f.uuid,
            human_bytes(f.allocated),
            f.parent_uuid or "",
            f.parent_path or ("(not found)" if f.parent_uuid else ""),
        )
        for f in files
    ]


_HEADERS = ["File", "Type", "Size", "Block", "UUID", "Allocated", "Parent UUID", "Parent"]


@vhd.command("info")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--allow-backing",
    is_flag=True,
    help="Follow a parent that lies outside FILE's folder (its locators are names a "
    "guest may have written).",
)
@pass_app
def vhd_info_command(app: App, file: str, allow_backing: bool) -> None:
    """Describe FILE and each parent of its chain: type, virtual size, block
    size, unique id, parent id and path, allocated bytes."""
    info = vhd_info(file, allow_backing)
    if app.out.json:
        app.out.document(info.as_dict())
    else:
        app.out.table(_HEADERS, _rows(info.files))
    if info.problem:
        app.out.warn(f"broken chain: {info.problem}")


@vhd.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--allow-backing",
    is_flag=True,
    help="Follow a parent that lies outside FILE's folder (its locators are names a "
    "guest may have written).",
)
@pass_app
def vhd_check_command(app: App, file: str, allow_backing: bool) -> None:
    """Validate FILE and its whole chain and read every allocated block once.

    Exits 0 when sound, 1 with a one-line error otherwise."""
    try:
        result = check_vhd(file, allow_backing=allow_backing)
    except VhdError as err:
        if app.out.json:
            app.out.document({"ok": False, "error": str(err)})
        raise
    if app.out.json:
        app.out.document(result.as_dict())
        return
    app.out.table(_HEADERS, _rows(result.files))
    app.out.info(
        f"{file}: sound ({len(result.files)} file(s), {human_bytes(result.virtual_size)} disk,"
        f" {human_bytes(result.bytes_read)} read)"
    )
