"""strongroom repair index / packs / points: heal a repository after a loss."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import plural
from strongroom.errors import ExitCode, UsageError
from strongroom.model.names import printable
from strongroom.services import repair as service
from strongroom.services.session import LockMode


@click.group()
def repair() -> None:
    """Rebuild the index, salvage damaged packs, repair points (exclusive lock).

    After a loss: 'repair packs' if 'check --read-data' found damaged packs,
    'repair index' if packs are missing, then 'repair points'.
    """


def _reporter(app: App) -> service.Report:
    return lambda m: app.out.info(m) if app.out.verbose else None


@repair.command("index")
@click.option(
    "--read-all-packs", is_flag=True, help="Read every pack's header, not only unindexed ones."
)
@pass_app
def repair_index(app: App, read_all_packs: bool) -> None:
    """Rebuild the index from the packs that exist."""
    out = app.out
    with app.repository(LockMode.EXCLUSIVE) as repo:
        result = service.repair_index(repo, read_all_packs=read_all_packs, report=_reporter(app))
    if out.json:
        out.document(result.as_dict())
        return
    for pack, why in result.packs_damaged.items():
        out.warn(f"pack {pack[:16]}: header unreadable ({why}); 'strongroom repair packs'")
    if result.packs_missing:
        out.warn(
            f"packs named by the index but missing: {len(result.packs_missing)}; their entries "
            f"dropped: {result.entries_dropped}: run 'strongroom repair points'"
        )
    out.info(
        f"indexed {plural(result.packs_indexed, 'pack')} "
        f"({len(result.packs_added)} in no index before), "
        f"wrote {plural(result.index_files_written, 'index file')}, "
        f"removed {result.index_files_removed}"
    )


@repair.command("packs")
@click.argument("pack_ids", nargs=-1)
@pass_app
def repair_packs(app: App, pack_ids: tuple[str, ...]) -> None:
    """Salvage damaged packs (all packs are read unless ids are given).

    Chunks that still authenticate are copied into new packs; each damaged pack
    is moved to quarantine/ in the repository and left out of the index.
    """
    try:
        chosen = [bytes.fromhex(p) for p in pack_ids]
    except ValueError:
        raise UsageError("pack ids are 64 hex digits") from None
    if any(len(p) != 32 for p in chosen):
        raise UsageError("pack ids are 64 hex digits")
    out = app.out
    with app.repository(LockMode.EXCLUSIVE) as repo:
        result = service.repair_packs(repo, chosen or None, report=_reporter(app))
    if out.json:
        out.document(result.as_dict())
        return
    for pack, why in result.packs_damaged.items():
        out.warn(f"damaged: {why} (pack {pack})")
    for pack, why in result.packs_skipped.items():
        out.warn(f"not read: {why} (pack {pack}; left in place, remove it if it is foreign)")
    if result.chunks_lost:
        out.warn(f"{plural(len(result.chunks_lost), 'chunk')} lost: run 'strongroom repair points'")
        for cid in result.chunks_lost[:50]:
            out.notice(f"  lost chunk {cid}")
    out.info(
        f"read {plural(result.packs_read, 'pack')}: {len(result.packs_damaged)} damaged, "
        f"{plural(result.chunks_salvaged, 'chunk')} salvaged, {len(result.quarantined)} quarantined"
    )


@repair.command("points")
@click.argument("point_ids", nargs=-1)
@click.option("--forget", is_flag=True, help="Remove each original after writing its repair.")
@click.option("--dry-run", "-n", is_flag=True, help="Only show what is damaged.")
@pass_app
def repair_points(app: App, point_ids: tuple[str, ...], forget: bool, dry_run: bool) -> None:
    """Write repaired points without the files whose data is lost.

    Exit code 1 if a point could not be repaired (block and VM points are not).
    """
    out = app.out
    with app.repository(LockMode.EXCLUSIVE) as repo:
        results = service.repair_points(
            repo, point_ids, forget=forget, dry_run=dry_run, report=_reporter(app)
        )
    if out.json:
        out.document({"points": [r.as_dict() for r in results], "dry_run": dry_run})
    else:
        for r in results:
            out.notice(f"point {r.point[:8]}: {len(r.damaged)} damaged paths:")
            for path in r.damaged[:50]:
                out.notice(f"  {printable(path)}")
            if r.refused:
                out.warn(f"point {r.point[:8]} not repaired: {r.refused}")
            elif r.repaired:
                if r.forgotten:
                    out.info(f"point {r.point[:8]}: repaired as {r.repaired[:8]}, forgotten")
                else:
                    out.info(
                        f"point {r.point[:8]}: repaired as {r.repaired[:8]}; the original "
                        f"still names lost data ('strongroom forget {r.point[:8]}')"
                    )
        if not results:
            out.info("no point references lost data")
    if any(r.refused for r in results):
        raise SystemExit(ExitCode.FAILED)
