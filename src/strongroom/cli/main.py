"""The `strongroom` command: global options, the command registry, exit codes.

Exit codes (docs/cli.md): 0 ok, 1 failed, 2 usage, 3 some source files were
unreadable, 10 repository not found, 11 repository locked, 12 wrong password,
130 interrupted.
"""

from __future__ import annotations

import importlib
import resource
import signal
import sys

import click

from strongroom import __version__
from strongroom.cli.context import App
from strongroom.cli.output import Output
from strongroom.cli.units import parse_rate
from strongroom.errors import ExitCode, StrongroomError

# name -> "module:attribute", in the order `--help` lists them. Modules load only
# when their command runs: each pulls in its own services (numpy, the NBD and
# image code, ...), and a short incremental backup should not pay for them all.
COMMANDS: dict[str, str] = {
    "init": "init:init",
    "backup": "backup:backup",
    "snapshots": "points:snapshots",
    "ls": "browse:ls",
    "diff": "browse:diff",
    "find": "find:find",
    "mount": "mount:mount",
    "restore": "restore:restore",
    "serve": "serve:serve",
    "server": "server:server",
    "agent": "agent:agent",
    "export": "export:export",
    "vhd": "vhd:vhd",
    "protect": "protect:protect",
    "policy": "policy:policy",
    "status": "status:status",
    "vm": "vm:vm",
    "volume": "volume:volume",
    "dump": "browse:dump",
    "tag": "tag:tag",
    "forget": "maintenance:forget",
    "prune": "maintenance:prune",
    "check": "maintenance:check",
    "stats": "maintenance:stats",
    "unlock": "maintenance:unlock",
    "repair": "repair:repair",
    "key": "key:key",
    "seed": "seed:seed",
    "journal": "journal:journal",
    "library": "library:library",
    "media": "media:media",
    "pool": "pool:pool",
    "copy-to-media": "copy_to_media:copy_to_media",
    "copy": "copy:copy",
    "cache": "cache:cache",
    "version": "version:version",
    "completion": "completion:completion",
}
ALIASES = {"points": "snapshots", "cat": "dump"}


class LazyGroup(click.Group):
    """The command registry: resolves aliases and imports a command on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """An unknown command is a usage error that names the closest ones."""
        name = args[0] if args else ""
        if (
            args
            and not ctx.resilient_parsing
            and not name.startswith("-")
            and self.get_command(ctx, name) is None
        ):
            import difflib

            known = [*COMMANDS, *ALIASES]
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            raise click.UsageError(f"no such command {name!r}{hint}", ctx)
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = ALIASES.get(cmd_name, cmd_name)
        if name not in COMMANDS:
            return None
        if name not in self.commands:
            module, _, attr = COMMANDS[name].partition(":")
            command = getattr(importlib.import_module(f"strongroom.cli.commands.{module}"), attr)
            _add_common_options(command)
            self.add_command(command, name)
        return self.commands[name]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="strongroom")
@click.option(
    "--repo", "-r", envvar="STRONGROOM_REPO", help="Repository location (default: your data dir)."
)
@click.option("--password-file", "-p", type=click.Path(), help="Read the password from this file.")
@click.option(
    "--password-command",
    metavar="CMD",
    help="Run CMD (no shell; split like a shell would) and use the first line it prints "
    "as the password [env STRONGROOM_PASSWORD_COMMAND].",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Read every object from the repository's storage, not from the local cache "
    "of a remote repository [env STRONGROOM_NO_CACHE=1].",
)
@click.option(
    "--limit-upload",
    metavar="RATE",
    callback=parse_rate,
    help="At most RATE bytes per second written to the repository's storage, by any "
    "command (50M = 50 MiB/s; config limit_upload, env STRONGROOM_LIMIT_UPLOAD).",
)
@click.option(
    "--limit-download",
    metavar="RATE",
    callback=parse_rate,
    help="At most RATE bytes per second read from the repository's storage (restore, "
    "check --read-data, copy, ...; reads the local cache answers are free; config "
    "limit_download, env STRONGROOM_LIMIT_DOWNLOAD).",
)
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@click.option("--quiet", "-q", is_flag=True, help="Only errors and warnings.")
@click.option("--verbose", "-v", count=True, help="Say more (repeatable).")
@click.pass_context
def cli(
    ctx: click.Context,
    repo: str | None,
    password_file: str | None,
    password_command: str | None,
    no_cache: bool,
    limit_upload: int | None,
    limit_download: int | None,
    json_mode: bool,
    quiet: bool,
    verbose: int,
) -> None:
    """strongroom: deduplicated, encrypted backups of files and disk images."""
    import logging  # here, not at the top: `--version` and `--help` never need it

    from strongroom.config import load_settings

    settings = load_settings()
    if no_cache:
        import os

        os.environ["STRONGROOM_NO_CACHE"] = "1"  # read where the caches are opened
    if repo:
        settings.repo = repo
    settings.override("limit_upload", limit_upload, "--limit-upload")
    settings.override("limit_download", limit_download, "--limit-download")
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # An agent's HTTP client logs a line per request at INFO: chatter, not news
    # (`-v` means strongroom's own lines, as a local command prints them).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ctx.obj = App(
        settings=settings,
        out=Output(json_mode, quiet, verbose),
        password_file=password_file,
        password_command=password_command,
    )


def _apply_output_option(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """--json, --quiet and --verbose given after the subcommand update the output."""
    app = ctx.find_object(App)
    if app is None or not value:
        return
    if param.name == "verbose":
        import logging

        app.out.verbose += int(value)  # type: ignore[call-overload]
        logging.getLogger().setLevel(logging.DEBUG if app.out.verbose > 1 else logging.INFO)
    else:
        setattr(app.out, str(param.name), True)


_OUTPUT_OPTIONS = (
    (["--json", "json"], {"is_flag": True, "help": "Machine-readable output."}),
    (["--quiet", "-q", "quiet"], {"is_flag": True, "help": "Only errors and warnings."}),
    (["--verbose", "-v", "verbose"], {"count": True, "help": "Say more (repeatable)."}),
)


def _add_common_options(command: click.Command) -> None:
    """Accept --json/--quiet/--verbose after the subcommand too, as restic does."""
    for decls, attrs in _OUTPUT_OPTIONS:
        command.params.append(
            click.Option(decls, expose_value=False, callback=_apply_output_option, **attrs)  # type: ignore[arg-type]
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_common_options(sub)


def _limit_malloc_arenas() -> None:
    """glibc gives each thread its own malloc arena and keeps freed memory there;
    with chunk-sized buffers passing between threads that costs ~20 MiB of RSS
    for nothing. Two arenas measured smaller and no slower (docs/performance.md)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_arena_max = -8
        libc.mallopt(m_arena_max, 2)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def _raise_limits() -> None:
    """Deep trees keep one descriptor per level open, and recursion follows depth."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))


def _interrupt_on_sigterm() -> None:
    """`kill` and `systemctl stop` end a job like Ctrl-C: cleanup runs (child
    processes, temporary block-layer objects, locks), and the exit code is 130."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _usage_message(err: click.UsageError) -> str:
    """click's usage error as one line in strongroom's error format, with where
    to look: `no such option '--exlude' (did you mean '--exclude'?); see
    'strongroom backup --help'`."""
    message = " ".join(err.format_message().split())
    message = message.replace(". (Did you mean", " (did you mean").rstrip(".")
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    where = err.ctx.command_path if err.ctx is not None else "strongroom"
    return f"{message}; see '{where} --help'"


def main(argv: list[str] | None = None) -> int:
    _limit_malloc_arenas()
    _raise_limits()
    _interrupt_on_sigterm()
    try:
        cli.main(args=argv, prog_name="strongroom", standalone_mode=False)
    except StrongroomError as err:
        Output().error(str(err))
        return err.exit_code
    except click.exceptions.Abort:
        Output().error("interrupted")
        return ExitCode.INTERRUPTED
    except KeyboardInterrupt:
        Output().error("interrupted")
        return ExitCode.INTERRUPTED
    except click.UsageError as err:
        Output().error(_usage_message(err))
        return ExitCode.USAGE
    except click.ClickException as err:
        Output().error(err.format_message())
        return ExitCode.USAGE
    except BrokenPipeError:
        return ExitCode.OK
    except OSError as err:
        Output().error(f"{err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}")
        return ExitCode.FAILED
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else ExitCode.FAILED
    except Exception as err:  # a bug: one line, and the traceback with -v
        if "-v" in (argv or sys.argv) or "--verbose" in (argv or sys.argv):
            raise
        Output().error(f"internal error: {type(err).__name__}: {err} (run with -v for details)")
        return ExitCode.FAILED
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
