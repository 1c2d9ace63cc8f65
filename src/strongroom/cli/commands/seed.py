"""strongroom seed add / list / show / remove / suggest: golden images."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes, plural
from strongroom.model.names import printable
from strongroom.model.seed import SeedKind
from strongroom.services import seeds as service
from strongroom.services.seed_add import SeedRequest, add_seed
from strongroom.services.seed_suggest import DEFAULT_SAMPLE, suggest
from strongroom.services.session import LockMode


@click.group()
def seed() -> None:
    """Golden images: OS and application content that backups build on.

    A seed is chunked into the repository ahead of time; a backup then stores
    only what differs from the seeds and records which files came from which
    seed, so that 'restore --scope user|os|app:NAME' can bring back one part.
    """


@seed.command("add")
@click.argument("name")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--kind",
    type=click.Choice([k.value for k in SeedKind]),
    default=SeedKind.OS.value,
    show_default=True,
    help="An operating system or an application.",
)
@click.option("--version", "version", default="", help="A version label, e.g. 12.8.")
@click.option("--description", default="", help="A line describing the seed.")
@click.option(
    "--format",
    "image_format",
    help="Disk image sources: the image format (as 'backup --image --format').",
)
@click.option(
    "--allow-backing", is_flag=True, help="Disk image sources: follow the image's backing file."
)
@pass_app
def seed_add(
    app: App,
    name: str,
    sources: tuple[str, ...],
    kind: str,
    version: str,
    description: str,
    image_format: str | None,
    allow_backing: bool,
) -> None:
    """Add seed NAME from SOURCES.

    A source is a directory tree, a tar archive (plain, gzip, xz, bzip2 or
    zstd: an mmdebstrap or 'docker export' output is one), one or more Debian
    packages (.deb: the files they install), or a disk image (anything
    'backup --image' reads).
    """
    out = app.out
    request = SeedRequest(
        name=name,
        sources=list(sources),
        kind=SeedKind(kind),
        version=version,
        description=description,
        image_format=image_format,
        allow_backing=allow_backing,
    )
    with app.repository(LockMode.SHARED) as repo, out.progress("seed add") as progress:
        added = add_seed(repo, request, progress, warn=out.warn)
    if out.json:
        out.document(service.seed_dict(added))
        return
    summary = added.summary
    size = summary.get("bytes", summary.get("size", 0))
    out.info(
        f"seed {printable(added.name)} ({added.kind}) added as {added.short_id}: "
        f"{summary.get('files', summary.get('blocks', 0))} "
        f"{'files' if 'files' in summary else 'blocks'}, {human_bytes(size)}, "
        f"{human_bytes(summary.get('data_added', 0))} new to the repository"
    )


@seed.command("list")
@pass_app
def seed_list(app: App) -> None:
    """List the repository's seeds."""
    out = app.out
    with app.repository(LockMode.NONE) as repo:
        seeds = service.list_seeds(repo)
    if out.json:
        out.document([service.seed_dict(s) for s in seeds])
        return
    rows = [
        (
            s.short_id,
            printable(s.name),
            str(s.kind),
            printable(s.version),
            str(s.content),
            human_bytes(s.summary.get("bytes", s.summary.get("size", 0))),
            s.time.strftime("%Y-%m-%d %H:%M:%S"),
            printable(s.description),
        )
        for s in seeds
    ]
    out.table(["id", "name", "kind", "version", "content", "size", "added", "description"], rows)
    out.notice(f"{len(seeds)} seed{'' if len(seeds) == 1 else 's'}")


@seed.command("show")
@click.argument("name")
@pass_app
def seed_show(app: App, name: str) -> None:
    """Show a seed: what it holds and which points build on it."""
    out = app.out
    with app.repository(LockMode.NONE) as repo:
        details = service.show_seed(repo, name)
    if out.json:
        out.document(details.as_dict())
        return
    s = details.seed
    rows: list[tuple[str, str]] = [
        ("name", printable(s.name)),
        ("id", s.id),
        ("kind", str(s.kind)),
        ("version", printable(s.version)),
        ("description", printable(s.description)),
        ("source", printable(s.source)),
        ("added", s.time.isoformat()),
        ("content", str(s.content)),
    ]
    for key, value in s.summary.items():
        shown = (
            human_bytes(value)
            if key in ("bytes", "size", "data_added", "data_added_stored")
            else str(value)
        )
        rows.append((key.replace("_", " "), shown))
    rows.append(("chunks", str(details.chunks)))
    if s.packages:
        names = ", ".join(printable(p.get("name", "?")) for p in s.packages[:20])
        more = f" and {len(s.packages) - 20} more" if len(s.packages) > 20 else ""
        rows.append(("packages", f"{len(s.packages)}: {names}{more}"))
    users = ", ".join(p.short_id for p in details.users) or "none"
    rows.append(("points using it", users))
    out.table(["", ""], rows)


@seed.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove it even though points build on it.")
@pass_app
def seed_remove(app: App, name: str, force: bool) -> None:
    """Remove a seed (refused while points build on it, unless --force).

    Its data is freed by the next 'strongroom prune', except what points use.
    """
    out = app.out
    with app.repository(LockMode.SHARED) as repo:
        removal = service.remove_seed(repo, name, force=force)
    if out.json:
        out.document(removal.as_dict())
        return
    if removal.seed is None:
        out.info(f"removed damaged seed {removal.removed_id[:16]}")
        return
    if removal.users:
        out.warn(f"seed {printable(removal.seed.name)} was in use: {removal.cost()}")
    out.info(
        f"removed seed {printable(removal.seed.name)}; the next prune frees "
        f"{plural(removal.freed_chunks, 'chunk')} ({human_bytes(removal.freed_bytes)}) only it held"
    )


@seed.command("suggest")
@click.argument("path", type=click.Path())
@click.option(
    "--sample",
    type=int,
    default=DEFAULT_SAMPLE,
    show_default=True,
    help="Files per seed whose content is read and compared with the seed's.",
)
@pass_app
def seed_suggest(app: App, path: str, sample: int) -> None:
    """Say how much of PATH (a directory, or an image) each seed covers.

    Files count as covered when a seed has the same path, size and mtime;
    a sample of them is read to confirm the content. Also guesses the root
    ('backup --seed-root') under which the seed's paths match best.
    """
    out = app.out
    with app.repository(LockMode.NONE) as repo:
        found = suggest(repo, path, sample)
    if out.json:
        out.document(found.as_dict())
        return
    if found.note:
        out.info(found.note)
        return
    if found.image is not None:
        image_rows = [
            (printable(c.seed), c.kind, f"{c.percent:.1f}%", str(c.sampled)) for c in found.image
        ]
        out.table(["seed", "kind", "of sampled blocks", "data blocks sampled"], image_rows)
        if found.image and found.image[0].percent:
            top = found.image[0]
            out.info(f"best: {printable(top.seed)} holds {top.percent:.1f}% of the sample")
        else:
            out.info("no image seed holds any of it")
        return
    out.info(f"{printable(found.path)}: {plural(found.files, 'file')}, {human_bytes(found.bytes)}")
    rows = [
        (
            printable(c.seed),
            c.kind,
            human_bytes(c.bytes),
            f"{c.percent:.1f}%",
            str(c.files),
            f"{c.confirmed}/{c.sampled}",
            printable(c.root),
        )
        for c in found.seeds
    ]
    out.table(["seed", "kind", "covered", "of path", "files", "content confirmed", "root"], rows)
    if found.seeds and found.seeds[0].bytes:
        best = found.seeds[0]
        out.info(
            f"best: {printable(best.seed)} covers {best.percent:.1f}% with root "
            f"{printable(best.root)}"
        )
    else:
        out.info("no seed covers any of it")
