"""strongroom agent: this machine as an agent of a backup server
(docs/server.md, "Agents"), its job loop `agent run`; and the
`--server`/`--agent-config` options that send `backup`, `snapshots` and
`restore` through it."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import asdict
from typing import TypeVar

import click

from strongroom.cli.context import App, pass_app
from strongroom.errors import ExitCode

F = TypeVar("F", bound=Callable[..., object])


def server_options(f: F) -> F:
    """`--server URL` (repeatable, or a comma list: failover in that order) and
    `--agent-config PATH`: either makes the command go through the server."""
    f = click.option(
        "--agent-config",
        metavar="PATH",
        help="Go through the backup server with this agent config "
        "(default: $XDG_CONFIG_HOME/strongroom/agent.json).",
    )(f)
    f = click.option(
        "--server",
        "servers",
        multiple=True,
        metavar="URL",
        help="Go through this backup server, as the enrolled agent (repeatable or a "
        "comma list: the next one is tried when one does not answer).",
    )(f)
    return f


def through_server(servers: tuple[str, ...], agent_config: str | None) -> bool:
    return bool(servers) or agent_config is not None


@click.group()
def agent() -> None:
    """This machine as an agent of a backup server."""


@agent.command("enroll")
@click.option("--server", "servers", multiple=True, required=True, metavar="URL",
              help="The server's address (repeatable or a comma list).")  # fmt: skip
@click.option("--token", required=True, help="The one-time enrollment token.")
@click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False),
              help="PEM certificate(s) to verify the server's TLS certificate with.")  # fmt: skip
@click.option("--config", "config_path", metavar="PATH",
              help="Where to write the agent config (default: "
              "$XDG_CONFIG_HOME/strongroom/agent.json).")  # fmt: skip
@pass_app
def enroll_cmd(
    app: App,
    servers: tuple[str, ...],
    token: str,
    ca_cert: str | None,
    config_path: str | None,
) -> None:
    """Enroll this machine with a one-time token from the server's administrator."""
    from strongroom.services.agent_backup import default_config_path, enroll

    path = config_path or default_config_path()
    config = enroll(list(servers), token, ca_cert, path)
    app.out.summary(
        {"machine": config.machine, "config": path, "servers": config.servers},
        [f"enrolled as machine {config.machine}; credentials in {path}"],
    )


@agent.command("run")
@click.option("--once", is_flag=True, help="Run the jobs due now, then exit (cron, tests).")
@click.option("--server", "servers", multiple=True, metavar="URL",
              help="The server's address instead of the config's (repeatable).")  # fmt: skip
@click.option("--config", "config_path", metavar="PATH",
              help="The agent config (default: $XDG_CONFIG_HOME/strongroom/agent.json).",
              )  # fmt: skip
@pass_app
def run_cmd(app: App, once: bool, servers: tuple[str, ...], config_path: str | None) -> None:
    """Run the jobs the server gives this machine (backups, restores), until stopped.

    SIGTERM or Ctrl-C stops the loop; a job in flight is finished as failed
    ("agent stopped"). With --once the exit code is 1 when a job failed.
    """
    from strongroom.services.agent_backup import default_config_path
    from strongroom.services.agent_runner import open_runner

    runner = open_runner(config_path or default_config_path(), list(servers) or None)
    runner.say = app.out.notice
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def stop(_signum: int, _frame: object) -> None:
        runner.stop.set()

    for sig in previous:
        signal.signal(sig, stop)
    try:
        if once:
            results = runner.run_once()
        else:
            app.out.notice(f"agent of machine {runner.config.machine}: waiting for jobs")
            runner.run_forever()
            results = []
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        runner.client.close()
    if once:
        app.out.summary(
            {"jobs": [asdict(r) for r in results]},
            [f"{len(results)} job(s) run"],
        )
        if any(not r.ok for r in results):
            raise SystemExit(ExitCode.FAILED)
