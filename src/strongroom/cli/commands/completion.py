"""strongroom completion: the shell's completion script for strongroom."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash: strongroom completion bash > /etc/bash_completion.d/strongroom
          (or: source <(strongroom completion bash) in ~/.bashrc)
    zsh:  strongroom completion zsh > "${fpath[1]}/_strongroom"
    fish: strongroom completion fish > ~/.config/fish/completions/strongroom.fish

    Commands, options and choices complete from the installed program itself
    (the script calls strongroom with _STRONGROOM_COMPLETE set), so they never
    go stale after an upgrade."""
    from click.shell_completion import get_completion_class

    root = ctx.find_root().command
    cls = get_completion_class(shell)
    assert cls is not None  # every SHELLS entry is one of click's
    click.echo(cls(root, {}, "strongroom", "_STRONGROOM_COMPLETE").source(), nl=False)
