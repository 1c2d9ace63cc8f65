"""strongroom status: per protected source, its last point, lag and health."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime

import click

from strongroom.cli.commands.agent import server_options, through_server
from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.errors import StrongroomError
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.services.agent_backup import agent_points, open_agent
from strongroom.services.session import LockMode, Repository
from strongroom.services.status import SourceStatus, needs_repository, protection_status


@click.command()
@server_options
@pass_app
def status(app: App, servers: tuple[str, ...], agent_config: str | None) -> None:
    """Show each protected source's last point, lag, tracker and last error
    (with --server: from this machine's own points on the backup server)."""
    out = app.out
    with ExitStack() as stack:
        repo: Repository | None = None
        problem = ""
        points: list[RecoveryPoint] | None = None
        if through_server(servers, agent_config):
            try:
                _config, store = stack.enter_context(
                    open_agent(agent_config, list(servers) or None)
                )
                points = agent_points(store)
            except StrongroomError as err:
                problem = str(err)
        elif needs_repository(app.settings):
            try:
                repo = stack.enter_context(app.repository(LockMode.NONE))
            except StrongroomError as err:
                problem = str(err)
        report = protection_status(
            app.settings,
            repo,
            datetime.now(UTC).astimezone(),
            repo_problem=problem,
            points=points,
        )
    if out.json:
        out.document(report.as_dict())
        return
    if not report.policies:
        out.info("no protection policy is defined (add one with 'strongroom policy add')")
        return
    for s in report.sources:
        for line in _lines(s):
            click.echo(line)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _lines(s: SourceStatus) -> list[str]:
    head = f"{printable(s.source)} (policy {printable(s.policy)}, {s.kind}"
    lines = [f"{head}, every {_ago(s.cycle)} to {printable(s.destination)})"]
    if s.last_point is None:
        lines.append("  last point: none yet")
    else:
        p = s.last_point
        why = f" ({printable(p.reason)})" if p.reason else ""
        ident = p.id[:8] if p.id else "cycle"
        when = p.time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"  last point: {ident} at {when}, {p.consistency}{why}")
    late = " LATE" if s.late else ""
    lines.append(
        f"  lag: {_ago(s.lag)}{late}; worst gap over the last day: {_ago(s.worst_gap)}"
        f" (cycle {_ago(s.cycle)})"
    )
    if s.bytes_shipped:
        lines.append(
            "  shipped by the last cycles: " + ", ".join(map(human_bytes, s.bytes_shipped))
        )
    if s.in_sync is None:
        lines.append("  tracker: no status record yet")
    else:
        why = f" ({printable(s.sync_reason)})" if s.sync_reason else ""
        lines.append(f"  tracker: {'in sync' if s.in_sync else 'OUT OF SYNC'}{why}")
    if s.last_error is not None:
        when = s.last_error[0].astimezone().strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"  last error: {when}: {printable(s.last_error[1])}")
    lines.extend(f"  problem: {printable(problem)}" for problem in s.problems)
    return lines
