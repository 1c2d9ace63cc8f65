"""strongroom forget / prune / check / stats / unlock."""

from __future__ import annotations

import click

from strongroom.cli.commands.points import chosen_point, point_filter_options
from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes, plural
from strongroom.cli.units import jobs_option
from strongroom.errors import ExitCode, UsageError
from strongroom.model.names import printable
from strongroom.services import maintenance
from strongroom.services.forget import (
    KeepPolicy,
    Span,
    apply_policy,
    forget_by_id,
    forget_points,
    group_points,
)
from strongroom.services.points import PointFilter, list_points
from strongroom.services.session import LockMode


def _span(ctx: click.Context, param: click.Parameter, value: str | None) -> Span | None:
    try:
        return None if value is None else Span.parse(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@click.command()
@click.argument("point_ids", nargs=-1)
@click.option("--keep-last", type=int, default=0, help="Keep the last N points.")
@click.option("--keep-hourly", type=int, default=0, help="Keep the last point of each of N hours.")
@click.option("--keep-daily", type=int, default=0, help="... of each of N days.")
@click.option("--keep-weekly", type=int, default=0, help="... of each of N weeks.")
@click.option("--keep-monthly", type=int, default=0, help="... of each of N months.")
@click.option("--keep-yearly", type=int, default=0, help="... of each of N years.")
@click.option("--keep-tag", multiple=True, help="Keep points with this tag.")
@click.option(
    "--keep-within",
    metavar="DURATION",
    callback=_span,
    help="Keep every point within DURATION of the group's newest "
    "(y, m = months, d, h: 7d, 36h, 1y6m).",
)
@click.option(
    "--keep-within-hourly",
    metavar="DURATION",
    callback=_span,
    help="Keep the last point of each hour within DURATION of the newest.",
)
@click.option("--keep-within-daily", metavar="DURATION", callback=_span, help="... of each day.")
@click.option("--keep-within-weekly", metavar="DURATION", callback=_span, help="... of each week.")
@click.option(
    "--keep-within-monthly", metavar="DURATION", callback=_span, help="... of each month."
)
@click.option("--keep-within-yearly", metavar="DURATION", callback=_span, help="... of each year.")
@click.option(
    "--group-by", default="host,paths", show_default=True, help="Apply the policy per group."
)
@point_filter_options
@click.option("--dry-run", "-n", is_flag=True, help="Only show what would be forgotten.")
@click.option("--prune", "then_prune", is_flag=True, help="Run prune afterwards.")
@pass_app
def forget(
    app: App,
    point_ids: tuple[str, ...],
    keep_last: int,
    keep_hourly: int,
    keep_daily: int,
    keep_weekly: int,
    keep_monthly: int,
    keep_yearly: int,
    keep_tag: tuple[str, ...],
    keep_within: Span | None,
    keep_within_hourly: Span | None,
    keep_within_daily: Span | None,
    keep_within_weekly: Span | None,
    keep_within_monthly: Span | None,
    keep_within_yearly: Span | None,
    group_by: str,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    dry_run: bool,
    then_prune: bool,
) -> None:
    """Forget points by id, or all that a keep-policy does not keep."""
    buckets = {
        "hourly": keep_within_hourly,
        "daily": keep_within_daily,
        "weekly": keep_within_weekly,
        "monthly": keep_within_monthly,
        "yearly": keep_within_yearly,
    }
    policy = KeepPolicy(
        keep_last,
        keep_hourly,
        keep_daily,
        keep_weekly,
        keep_monthly,
        keep_yearly,
        list(keep_tag),
        within_span=keep_within,
        within_buckets={rule: span for rule, span in buckets.items() if span is not None},
    )
    if policy.empty() and not point_ids:
        raise UsageError(
            "give point ids or at least one --keep-* option (refusing to forget everything)"
        )
    if point_ids and not policy.empty():
        raise UsageError("give point ids or --keep-* options, not both")
    out = app.out
    result: list[dict[str, object]] = []
    with app.repository(LockMode.EXCLUSIVE if then_prune else LockMode.SHARED) as repo:
        if point_ids:
            verb = "would forget" if dry_run else "forgot"
            doomed = forget_by_id(
                repo, list(point_ids), dry_run, lambda pid: out.info(f"{verb} point {pid[:8]}")
            )
            result.append({"removed": doomed})
        else:
            points = list_points(repo, PointFilter(list(hosts), list(tags), list(paths)))
            for group, members in group_points(points, group_by).items():
                decisions = apply_policy(members, policy)
                removed = forget_points(repo, decisions, dry_run)
                result.append(
                    {
                        "group": group,
                        "keep": [
                            {"id": d.point.id, "reasons": d.reasons} for d in decisions if d.keep
                        ],
                        "remove": removed,
                    }
                )
                if not out.json:
                    out.info(
                        f"{group or 'all points'}: keep {len(decisions) - len(removed)}, "
                        f"forget {len(removed)}"
                    )
                    for d in decisions:
                        mark = "keep  " if d.keep else "forget"
                        line = f"  {mark} {d.point.short_id} {d.point.time:%Y-%m-%d %H:%M:%S}"
                        out.info(f"{line} {', '.join(d.reasons)}" if d.reasons else line)
        plan_doc = None
        if then_prune and not dry_run:
            plan = maintenance.prune(repo, report=lambda m: out.info(m) if out.verbose else None)
            plan_doc = plan.as_dict()
            out.info(
                f"prune: removed {plural(len(plan.delete), 'pack')}, repacked {len(plan.repack)}, "
                f"freed about {human_bytes(plan.unused_bytes)}"
            )
    if out.json:
        out.document({"groups": result, "dry_run": dry_run, "prune": plan_doc})


@click.command()
@click.option(
    "--max-unused",
    default="0%",
    show_default=True,
    help="Leave packs alone whose unused share is at most this (e.g. 5%).",
)
@click.option("--dry-run", "-n", is_flag=True, help="Only show what would be done.")
@pass_app
def prune(app: App, max_unused: str, dry_run: bool) -> None:
    """Remove data that no point references (takes an exclusive lock)."""
    try:
        fraction = float(max_unused.rstrip("%")) / 100
    except ValueError:
        raise UsageError("--max-unused takes a percentage such as 5%") from None
    if not 0 <= fraction <= 1:
        raise UsageError("--max-unused must be between 0% and 100%")
    out = app.out
    with app.repository(LockMode.EXCLUSIVE) as repo:
        plan = maintenance.prune(
            repo,
            max_unused=fraction,
            dry_run=dry_run,
            report=lambda m: out.info(m) if out.verbose else None,
        )
    doc = plan.as_dict()
    if out.json:
        out.document({**doc, "dry_run": dry_run})
        return
    verb = "would" if dry_run else "did"
    out.info(
        f"{verb}: delete {plural(len(plan.delete), 'pack')}, repack {doc['packs_repack']} "
        f"({human_bytes(plan.repack_bytes)} still used), "
        f"remove {doc['packs_orphaned']} orphaned packs; "
        f"unused data: {human_bytes(plan.unused_bytes)}, kept: {human_bytes(plan.used_bytes)}"
    )


@click.command()
@click.option("--read-data", is_flag=True, help="Read and authenticate every chunk.")
@click.option(
    "--read-data-subset", default=None, help="Read a subset: n/m or a percentage like 10%."
)
@jobs_option
@pass_app
def check(app: App, read_data: bool, read_data_subset: str | None, jobs: int | None) -> None:
    """Verify the repository's structure (and data with --read-data)."""
    out = app.out
    maintenance.check_subset(read_data_subset)
    # Damaged objects are errors of the check: it reports them itself, not as warnings.
    with (
        app.repository(LockMode.SHARED, show_damage=False) as repo,
        out.progress("check") as progress,
    ):
        result = maintenance.check(
            repo, read_data=read_data, subset=read_data_subset, progress=progress, jobs=jobs
        )
    report = result.report
    if out.json:
        out.document(result.as_dict())
    else:
        for w in report.warnings:
            out.warn(w)
        for e in report.errors:
            out.error(e)
        for point_id, paths in result.damaged_files.items():
            out.notice(f"point {point_id[:8]}: {plural(len(paths), 'damaged file')}:")
            for path in paths[:50]:
                out.notice(f"  {printable(path)}")
        if report.packs_read:
            out.info(
                f"read {plural(report.packs_read, 'pack')}, {plural(report.chunks_read, 'chunk')}"
            )
        out.info(
            "no errors were found" if report.ok else f"{plural(len(report.errors), 'error')} found"
        )
    if not report.ok:
        raise SystemExit(ExitCode.FAILED)


@click.command()
@click.argument("point", required=False)
@point_filter_options
@pass_app
def stats(
    app: App,
    point: str | None,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
) -> None:
    """Show repository sizes, deduplication and compression; with POINT, that
    point's sizes (for a point made against seeds: files and bytes per class,
    bytes per seed, own bytes, lacking seed files, bytes new to the repository)."""
    if point is not None:
        point_stats(app, point, hosts, tags, paths)
        return
    if hosts or tags or paths:
        raise click.UsageError("--host, --tag and --path choose which POINT 'latest' is: give one")
    with app.repository(LockMode.NONE) as repo:
        doc = maintenance.stats(repo)
    if app.out.json:
        app.out.document(doc)
        return
    rows = []
    for key, value in doc.items():
        shown = human_bytes(value) if key.endswith("_bytes") and isinstance(value, int) else value
        rows.append((key.replace("_", " "), shown))
    app.out.table(["", ""], rows)


def point_stats(
    app: App, ref: str, hosts: tuple[str, ...], tags: tuple[str, ...], paths: tuple[str, ...]
) -> None:
    out = app.out
    with app.repository(LockMode.NONE) as repo:
        doc = maintenance.point_stats(repo, chosen_point(app, repo, ref, hosts, tags, paths))
    if out.json:
        out.document(doc)
        return
    rows: list[tuple[str, object]] = [
        ("point", doc["point"]),
        ("kind", doc["kind"]),
        ("time", doc["time"]),
        ("paths", ", ".join(printable(str(p)) for p in doc["paths"])),  # type: ignore[attr-defined]
    ]
    for key in ("files", "total_bytes", "size", "new_bytes", "new_stored_bytes"):
        value = doc.get(key)
        if isinstance(value, int):
            shown = human_bytes(value) if key.endswith(("bytes", "size")) else str(value)
            rows.append((key.replace("_", " "), shown))
    seeds = doc["seeds"]
    if isinstance(seeds, dict):
        names = ", ".join(printable(u["name"]) for u in seeds["used"])
        rows.append(("seeds", f"{names} (root {printable(seeds['root'])})"))
        for word, counts in seeds["classes"].items():
            parts = [
                human_bytes(counts[k]) if k == "bytes" else f"{counts[k]} {k}"
                for k in ("files", "bytes", "other")
                if isinstance(counts.get(k), int)
            ]
            rows.append((str(word), ", ".join(parts)))
        for name, count in seeds["seed_bytes"].items():
            rows.append((f"from seed {printable(name)}", human_bytes(count)))
        rows.append(("own bytes", human_bytes(seeds["own_bytes"])))
        rows.append(("lacking seed files", str(seeds["lacks_count"])))
    out.table(["", ""], rows)


@click.command()
@click.option(
    "--remove-all",
    is_flag=True,
    help="Also remove locks of processes that may still run (see docs/cli.md first).",
)
@pass_app
def unlock(app: App, remove_all: bool) -> None:
    """Remove stale locks (left by processes that are gone).

    A live lock is kept: wait for its holder. With --remove-all it is removed
    too; its holder then notices before it writes or deletes anything (a backup
    re-checks what it relies on before committing; prune and repair stop).
    """
    out = app.out
    with app.repository(LockMode.NONE) as repo:
        result = maintenance.unlock(repo, remove_all=remove_all)
    if out.json:
        out.document(result.as_dict())
        return
    for r in result.removed:
        if r.name in result.live:
            out.warn(f"removed the lock of a process that may still run: {r.describe()}")
        else:
            out.info(f"removed {r.describe()}")
    for k in result.kept_live:
        out.info(f"kept live {k.describe()} (wait for it to finish)")
    out.info(f"{len(result.removed)} locks removed")
