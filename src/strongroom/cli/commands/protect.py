"""strongroom protect: the VHD backup mode (metadata disk + differencing VHDs)."""

from __future__ import annotations

import functools
import signal
import threading
from contextlib import ExitStack
from types import FrameType

import click

from strongroom.cli.commands.agent import server_options, through_server
from strongroom.cli.context import App, pass_app
from strongroom.cli.impact import impact_options, protect_kind
from strongroom.cli.output import human_bytes
from strongroom.cli.units import parse_duration, parse_size
from strongroom.errors import SourceError, UsageError
from strongroom.services.agent_backup import AgentConfig, default_config_path, open_agent
from strongroom.services.backup import IMAGE_FORMATS
from strongroom.services.protect import (
    CycleResult,
    Destination,
    RepositoryDestination,
    destination,
    protect_every,
    protect_once,
    protect_options,
)
from strongroom.services.protect_service import (
    AgentTarget,
    CycleOutcome,
    agent_block_target,
    repository_opener,
    run_service,
    select_policies,
)
from strongroom.services.session import LockMode


@click.command()
@click.argument("source", type=click.Path(exists=True), required=False)
@click.option(
    "--policy",
    "policy_names",
    metavar="NAME",
    multiple=True,
    help="Run the protection service for policy NAME ([protect.NAME]; repeatable) in the "
    "foreground until SIGTERM/SIGINT. Without SOURCE or --policy: every policy.",
)
@click.option("--all-policies", is_flag=True, help="Run the protection service for every policy.")
@click.option(
    "--mode",
    type=click.Choice(["vhd"]),
    default="vhd",
    show_default=True,
    help="Protection mode: vhd keeps a metadata VHD here and ships differencing VHDs.",
)
@click.option(
    "--to",
    "dest",
    metavar="DEST",
    help="Where the VHD chain goes: a folder, or s3:http(s)://HOST/BUCKET[/PREFIX].",
)
@click.option(
    "--to-repository",
    is_flag=True,
    help="Ship each cycle into the repository (--repo) as a block point instead.",
)
@click.option("--name", help="Name of this protected source (default: the folder's name).")
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False),
    help="State folder holding the metadata disk (default: DATA_HOME/strongroom/protect/NAME).",
)
@click.option(
    "--size",
    metavar="SIZE",
    callback=parse_size,
    help="Metadata disk size at the first cycle (default: 2x the data, >= 1G).",
)
@click.option(
    "--vhd-block-size",
    metavar="SIZE",
    callback=parse_size,
    default="2M",
    show_default=True,
    help="VHD block size of the shipped disks (a power of two; smaller blocks ship less padding).",
)
@click.option(
    "--every",
    metavar="DURATION",
    callback=parse_duration,
    help="Repeat: start a cycle every DURATION (e.g. 5m).",
)
@click.option(
    "--cycles",
    type=click.IntRange(min=1),
    help="With --every: stop after N cycles. With --policy: each source stops after N cycles.",
)
@click.option(
    "--verify", is_flag=True, help="Run e2fsck -fn on the metadata disk after each cycle."
)
@click.option(
    "--format",
    "image_format",
    type=click.Choice(IMAGE_FORMATS),
    help="For a disk image: its format (raw ships the file's own bytes). Without it "
    "strongroom recognises raw, vhd, qcow2, vdi and vhdx itself; qemu never guesses.",
)
@click.option(
    "--allow-backing",
    is_flag=True,
    help="For a disk image: also read the files it names (qcow2 backing or data file, "
    "a VHD parent outside its folder, VMDK extents).",
)
@server_options
@pass_app
@impact_options(protect_kind, reads=False)
def protect(
    app: App,
    source: str | None,
    policy_names: tuple[str, ...],
    all_policies: bool,
    mode: str,
    dest: str | None,
    to_repository: bool,
    name: str | None,
    state_dir: str | None,
    size: int | None,
    vhd_block_size: int,
    every: float | None,
    cycles: int | None,
    verify: bool,
    image_format: str | None,
    allow_backing: bool,
    servers: tuple[str, ...],
    agent_config: str | None,
) -> None:
    """Protect SOURCE (a directory, or a disk: device, raw file, any image) in
    VHD backup mode.

    For a directory, a local metadata VHD (an ext4 file system mirroring
    SOURCE) is kept in the state folder; each cycle applies the changed files
    to it and ships only the blocks that changed, as a differencing VHD whose
    parent is the previous cycle's disk. For a disk, the state folder keeps a
    hash per 64 KiB and each cycle ships the pieces whose hash changed. DEST
    then holds a VHD chain that any VHD reader opens.

    With --policy NAME (or --all-policies, or no SOURCE): the protection
    service. Every source of the policies is protected on the policy's cycle
    (a tree through its change journal, an attached volume through its dirty
    bitmap, a VM through its bitmaps), each cycle quiesced by the policy's
    hooks and a freeze; runs until SIGTERM/SIGINT (docs/protect.md, "The
    service").
    """
    remote = through_server(servers, agent_config)
    if source is None or policy_names or all_policies:
        if source is not None:
            raise UsageError("give SOURCE or --policy/--all-policies, not both")
        if all_policies and policy_names:
            raise UsageError("--all-policies runs every policy: leave out --policy")
        agent = None
        if remote:  # the service as the enrolled agent: docs/server.md, "Agents"
            AgentConfig.load(agent_config or default_config_path())  # not enrolled: fail now
            agent = AgentTarget(functools.partial(open_agent, agent_config, list(servers) or None))
        run_policies(app, list(policy_names), cycles, agent)
        return
    options = protect_options(
        source,
        to=dest,
        to_repository=to_repository,
        every=every,
        cycles=cycles,
        name=name,
        size=size,
        block_size=vhd_block_size,
        verify=verify,
        image_format=image_format,
        allow_backing=allow_backing,
    )
    out = app.out
    # Through a server (as its agent) --to-repository means the server's
    # repository: each cycle opens the agent's store (no password here). A
    # --to chain is this machine's to write, server or not.
    through_agent = remote and to_repository
    if through_agent:
        AgentConfig.load(agent_config or default_config_path())  # not enrolled: fail now
    with ExitStack() as stack:
        shipping: Destination | None = None
        if not through_agent:
            repo = stack.enter_context(app.repository(LockMode.SHARED)) if to_repository else None
            shipping = stack.enter_context(destination(dest, repo, app.settings.limit_upload))

        def one() -> CycleResult:
            with ExitStack() as cycle, out.progress("protect") as progress:
                target = shipping
                if target is None:  # the server's repository, through the agent's store
                    config, store = cycle.enter_context(
                        open_agent(agent_config, list(servers) or None)
                    )
                    target = RepositoryDestination(
                        agent_block_target(store, config),
                        description=f"server {store.client.servers[0]}",
                    )
                return protect_once(source, target, options, state_dir, progress)

        def report(result: CycleResult) -> None:
            for warning in result.warnings:
                out.warn(warning)
            if result.recovered:
                out.notice(result.recovered)
            out.summary({"name": options.name, **result.as_dict()}, [_describe(result)])

        if every is None:
            report(one())
        else:
            protect_every(every, one, report, threading.Event(), cycles)


def run_policies(
    app: App, names: list[str], cycles: int | None, agent: AgentTarget | None = None
) -> None:
    """The protection service in the foreground: a line per cycle (a JSON
    document per cycle with --json), until SIGTERM/SIGINT."""
    out = app.out
    policies = select_policies(app.settings, names)
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    if agent is not None:  # through the server: no repository, no password
        open_repo = repository_opener(app.settings.repository, b"")
    elif any(p.destination is None for p in policies):
        open_repo = repository_opener(app.settings.repository, app.password())
    else:  # VHD chains only: no repository, no password
        open_repo = repository_opener(app.settings.repository, b"")
    printing = threading.Lock()

    def report(o: CycleOutcome) -> None:
        with printing:
            if out.json:
                out.emit(o.as_dict())
            elif o.error:
                out.warn(f"{o.source}: cycle failed: {o.error}")
            else:
                out.info(_describe_cycle(o))

    sources = ", ".join(s.name for p in policies for s in p.sources)
    out.notice(f"protecting {sources} (policies {', '.join(p.name for p in policies)})")
    runners = run_service(
        app.settings, policies, open_repo, stop, report, max_cycles=cycles, agent=agent
    )
    failed = [r for r in runners if r.outcomes and r.outcomes[-1].error and not stop.is_set()]
    if failed and cycles is not None:
        raise SourceError(
            f"{failed[0].source.name}: the last cycle failed: {failed[0].outcomes[-1].error}"
        )


def _describe_cycle(o: CycleOutcome) -> str:
    point = o.point.short_id if o.point else (o.shipped_to or "-")
    how = "full comparison" if o.full else "changes only"
    why = f" ({o.reason})" if o.reason else ""
    seconds = (o.finished - o.started).total_seconds()
    return (
        f"{o.source}: point {point}, {o.consistency}{why}; {how}; "
        f"shipped {human_bytes(o.bytes_shipped)} in {seconds:.1f} s"
    )


def _describe(r: CycleResult) -> str:
    if r.cycle is None:
        return f"no changes since the last cycle ({r.seconds:.1f} s)"
    changed = ", ".join(f"{n} {what}" for what, n in r.changes.items() if n) or "metadata only"
    shipped = f"{human_bytes(r.vhd_bytes)} {r.kind} VHD" if r.vhd_bytes else "a block point"
    return (
        f"cycle {r.cycle}: {changed}; {human_bytes(r.bytes_changed)} of the disk changed; "
        f"shipped {shipped} to {r.location} in {r.seconds:.1f} s"
    )
