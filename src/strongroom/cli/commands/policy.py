"""strongroom policy: add, list, show and remove `[protect.NAME]` policies."""

from __future__ import annotations

import click

from strongroom.cli.context import App, pass_app
from strongroom.config import config_file_path
from strongroom.errors import UsageError
from strongroom.model.names import printable
from strongroom.services.policies import (
    Policy,
    PolicyRequest,
    add_policy,
    load_policies,
    remove_policy,
)


@click.group()
def policy() -> None:
    """Protection policies: the [protect.NAME] tables of the config file."""


@policy.command("add")
@click.argument("name")
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    help="A directory tree, a volume (device or image file), or vm:NAME[/DISK] (repeatable).",
)
@click.option("--to", "destination", help="A VHD chain folder or s3:... (default: the repository).")
@click.option("--cycle", help="Time between cycles, 1m to 24h (default 15m).")
@click.option("--keep-last", type=int, help="Keep the last N points (at most 448).")
@click.option("--keep-within", metavar="DURATION", help="Keep every point this recent (e.g. 7d).")
@click.option("--hourly", type=int, help="Keep one point for each of the last N hours.")
@click.option("--daily", type=int, help="Keep one point for each of the last N days.")
@click.option("--weekly", type=int, help="Keep one point for each of the last N weeks.")
@click.option(
    "--hook",
    "hooks",
    multiple=True,
    metavar="pre=CMD|post=CMD|postgresql=DSN|sqlite=PATH",
    help="An application hook (repeatable; a post= after a pre= completes its command hook).",
)
@click.option("--freeze-timeout", metavar="DURATION", help="Longest freeze (default 10s).")
@pass_app
def add(
    app: App,
    name: str,
    sources: tuple[str, ...],
    destination: str | None,
    cycle: str | None,
    keep_last: int | None,
    keep_within: str | None,
    hourly: int | None,
    daily: int | None,
    weekly: int | None,
    hooks: tuple[str, ...],
    freeze_timeout: str | None,
) -> None:
    """Add policy NAME to the config file (its comments and layout stay)."""
    request = PolicyRequest(
        name,
        list(sources),
        destination,
        cycle,
        freeze_timeout,
        keep_last,
        keep_within,
        hourly,
        daily,
        weekly,
        list(hooks),
    )
    added = add_policy(request)
    app.out.summary(
        added.as_dict(), [f"policy {name} added to {config_file_path()}", *_describe(added)]
    )


@policy.command("list")
@pass_app
def list_(app: App) -> None:
    """List the policies."""
    policies = load_policies(app.settings)
    if app.out.json:
        app.out.document([p.as_dict() for p in policies.values()])
        return
    if not policies:
        app.out.info("no protection policy is defined (add one with 'strongroom policy add')")
        return
    app.out.table(
        ["Policy", "Sources", "Destination", "Cycle", "Retention"],
        [
            (
                p.name,
                "\n".join(printable(f"{s.name} ({s.spec})") for s in p.sources),
                printable(p.destination or "repository"),
                p.as_table()["cycle"],
                _retention(p),
            )
            for p in policies.values()
        ],
    )


@policy.command("show")
@click.argument("name")
@pass_app
def show(app: App, name: str) -> None:
    """Show policy NAME, every value resolved."""
    found = load_policies(app.settings).get(name)
    if found is None:
        raise UsageError(f"no policy {printable(name)} in {config_file_path()}")
    if app.out.json:
        app.out.document(found.as_dict())
        return
    for line in [f"policy {name}", *_describe(found)]:
        click.echo(line)


@policy.command("remove")
@click.argument("name")
@pass_app
def remove(app: App, name: str) -> None:
    """Remove policy NAME from the config file (its points and state stay)."""
    remove_policy(name)
    app.out.summary({"removed": name}, [f"policy {name} removed from {config_file_path()}"])


def _retention(p: Policy) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.retention.as_table().items())


def _describe(p: Policy) -> list[str]:
    table = p.as_table()
    lines = [f"  source {printable(s.name)}: {s.kind} {printable(s.spec)}" for s in p.sources]
    lines.append(f"  destination: {printable(p.destination or 'repository')}")
    lines.append(f"  cycle: {table['cycle']}")
    lines.append(f"  freeze timeout: {p.freeze_timeout:g} s")
    for h in p.hooks:
        what = ", ".join(f"{k}={printable(str(v))}" for k, v in h.shown().items() if k != "type")
        lines.append(f"  hook {h.type}: {what} (timeout {h.timeout:g} s)")
    lines.append(f"  retention: {_retention(p)}")
    return lines
