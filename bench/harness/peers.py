"""The peer backup tools (restic, borg) and strongroom driven the same way, for the file
benchmarks (``files.py``, ``protect.py``).

Each tool runs with its default settings (restic: repository v2, zstd "auto"; borg:
``repokey`` encryption, lz4; strongroom: its defaults), as a user would run them, with its
repository, cache and config folders under one scratch folder per tool (``Space``). A peer that
is not installed is installed with ``apt-get`` when the benchmark runs as root, and otherwise
(or if that fails) skipped with a line in the report saying so: a missing peer is never a crash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.spawn import log, version
from harness.strongroom import PASSWORD, installed, strongroom_cmd

SUBJECT = "strongroom"
APT_PACKAGES = {"restic": "restic", "borg": "borgbackup"}


@dataclass
class Space:
    """Per-tool scratch folders; ``data`` is the backed-up path, the same for all tools (restic
    and borg record absolute paths and use them to find the parent snapshot)."""

    root: Path
    data: Path
    logs: Path

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def restore_target(self) -> Path:
        return self.root / "restore"


class Tool:
    """How to drive one backup tool. Subclasses fill in the commands."""

    name = ""
    ok_codes: frozenset[int] = frozenset({0})

    def command(self) -> list[str] | None:
        """The command prefix, or None if the tool is not installed."""
        exe = shutil.which(self.name)
        return [exe] if exe else None

    def version_args(self) -> list[str]:
        return ["--version"]

    def env(self, space: Space) -> dict[str, str]:
        return {}

    def init(self, space: Space) -> list[str]:
        raise NotImplementedError

    def backup(self, space: Space, label: str) -> list[str]:
        raise NotImplementedError

    def restore(self, space: Space, label: str) -> tuple[list[str], Path]:
        """(command, working directory) restoring snapshot ``label`` (the latest)."""
        raise NotImplementedError

    def cmd(self) -> list[str]:
        prefix = self.command()
        if prefix is None:
            raise RuntimeError(f"{self.name} is not installed")
        return prefix

    def version(self) -> str:
        prefix = self.command()
        return version([*prefix, *self.version_args()]) if prefix else "not installed"


class Restic(Tool):
    name = "restic"

    def version_args(self) -> list[str]:
        return ["version"]

    def env(self, space: Space) -> dict[str, str]:
        return {"RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(space.cache)}

    def init(self, space: Space) -> list[str]:
        return [*self.cmd(), "-r", str(space.repo), "init"]

    def backup(self, space: Space, label: str) -> list[str]:
        return [*self.cmd(), "-r", str(space.repo), "backup", str(space.data)]

    def restore(self, space: Space, label: str) -> tuple[list[str], Path]:
        target = str(space.restore_target)
        cmd = [*self.cmd(), "-r", str(space.repo), "restore", "latest", "--target", target]
        return cmd, space.root


class Borg(Tool):
    name = "borg"
    ok_codes = frozenset({0, 1})  # 1 = warnings (e.g. a file changed while read)

    def env(self, space: Space) -> dict[str, str]:
        return {
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_BASE_DIR": str(space.cache),
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        }

    def init(self, space: Space) -> list[str]:
        return [*self.cmd(), "init", "-e", "repokey", str(space.repo)]

    def backup(self, space: Space, label: str) -> list[str]:
        return [*self.cmd(), "create", f"{space.repo}::{label}", str(space.data)]

    def restore(self, space: Space, label: str) -> tuple[list[str], Path]:
        return [*self.cmd(), "extract", f"{space.repo}::{label}"], space.restore_target


class Strongroom(Tool):
    name = SUBJECT

    def command(self) -> list[str] | None:
        return strongroom_cmd() if installed() else None

    def env(self, space: Space) -> dict[str, str]:
        return {"STRONGROOM_REPO": str(space.repo), "STRONGROOM_PASSWORD": PASSWORD}

    def init(self, space: Space) -> list[str]:
        return [*self.cmd(), "init"]

    def backup(self, space: Space, label: str) -> list[str]:
        return [*self.cmd(), "backup", str(space.data)]

    def restore(self, space: Space, label: str) -> tuple[list[str], Path]:
        cmd = [*self.cmd(), "restore", "latest", "--target", str(space.restore_target)]
        return cmd, space.root


TOOLS: dict[str, type[Tool]] = {"strongroom": Strongroom, "restic": Restic, "borg": Borg}


def tool_env(tool: Tool, space: Space) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(space.cache / "xdg-cache")
    env["XDG_CONFIG_HOME"] = str(space.cache / "xdg-config")
    env.update(tool.env(space))
    return env


def _apt_install(packages: list[str]) -> None:
    """Best effort: ``apt-get install`` (after an update if the first try fails), as root."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    log(f"installing {' '.join(packages)} with apt-get ...")
    cmd = ["apt-get", "install", "-y", *packages]
    if (
        subprocess.run(cmd, check=False).returncode != 0
        and subprocess.run(["apt-get", "update"], check=False).returncode == 0
    ):
        subprocess.run(cmd, check=False)


def available(tools: Sequence[Tool], install: bool = True) -> tuple[list[Tool], list[str]]:
    """(the tools that can run, one "skipped" line per peer that cannot). strongroom itself
    missing is fatal; a missing peer is installed (``install``, as root) or skipped."""
    if install:
        missing = [t.name for t in tools if t.command() is None]
        packages = [APT_PACKAGES[n] for n in missing if n in APT_PACKAGES]
        if packages:
            _apt_install(packages)
    for t in tools:
        if t.name == SUBJECT and t.command() is None:
            raise SystemExit("not installed: strongroom (pip install -e . in the repository)")
    found = [t for t in tools if t.command() is not None]
    skipped = [
        f"{t.name}: not installed (apt-get install {APT_PACKAGES.get(t.name, t.name)}), "
        "not measured"
        for t in tools
        if t not in found
    ]
    for line in skipped:
        log(f"skipped: {line}")
    return found, skipped
