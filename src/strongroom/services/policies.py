"""Protection policies: reading them from the settings, and editing the config file.

`load_policies` checks every `[protect.NAME]` table (protect/policy.py) and
returns them in file order. `add_policy` and `remove_policy` edit the config
file with tomlkit, which keeps the user's comments, order and layout; the
file is replaced atomically (strongroom/atomic.py), and a new policy is
checked, together with the existing ones, before anything is written: a
refused `policy add` leaves the file as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import tomlkit
from tomlkit.exceptions import TOMLKitError

from strongroom.atomic import atomic_write
from strongroom.config import Settings, config_file_path, load_settings
from strongroom.errors import ConfigError, UsageError
from strongroom.protect.policy import (
    DEFAULT_RETENTION,
    Hook,
    HookType,
    Policy,
    check_policy_name,
    parse_policies,
    parse_policy,
)
from strongroom.protect.policy import Retention as Retention  # for the CLI

__all__ = [
    "Hook",
    "HookType",
    "Policy",
    "PolicyRequest",
    "Retention",
    "add_policy",
    "load_policies",
    "remove_policy",
]


def _vm_disks(settings: Settings) -> dict[str, list[str]]:
    return {name: spec.disks for name, spec in settings.vms.items()}


def load_policies(settings: Settings, *, check_paths: bool = False) -> dict[str, Policy]:
    """Every policy of the config file, checked (ConfigError: one line naming
    the table and key). `check_paths` also requires tree and volume sources
    to exist now (the service and `policy add` ask it; `status` does not)."""
    where = settings.config_file or str(config_file_path())
    return parse_policies(settings.protect, where, _vm_disks(settings), check_paths=check_paths)


@dataclass
class PolicyRequest:
    """`policy add`'s options, as the user gave them (durations as text)."""

    name: str
    sources: list[str]
    destination: str | None = None
    cycle: str | None = None
    freeze_timeout: str | None = None
    keep_last: int | None = None
    keep_within: str | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    hooks: list[str] = field(default_factory=list)  # pre=CMD, post=CMD, postgresql=DSN, sqlite=PATH

    def table(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"sources": list(self.sources)}
        if self.destination is not None:
            doc["destination"] = self.destination
        if self.cycle is not None:
            doc["cycle"] = self.cycle
        hooks = hook_tables(self.hooks)
        if hooks:
            doc["hooks"] = hooks
        if self.freeze_timeout is not None:
            doc["freeze_timeout"] = self.freeze_timeout
        retention = {
            k: v
            for k, v in (
                ("keep_last", self.keep_last),
                ("keep_within", self.keep_within),
                ("hourly", self.hourly),
                ("daily", self.daily),
                ("weekly", self.weekly),
            )
            if v is not None
        }
        if retention:
            doc["retention"] = retention
        return doc


def hook_tables(specs: list[str]) -> list[dict[str, str]]:
    """`--hook` values as hook tables: `pre=CMD` starts a command hook, a
    following `post=CMD` completes it (a lone `post=` makes one of its own);
    `postgresql=DSN` and `sqlite=PATH` are the built-in hooks."""
    tables: list[dict[str, str]] = []
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not value:
            raise UsageError(
                f"--hook {spec!r}: use pre=CMD, post=CMD, postgresql=DSN or sqlite=PATH"
            )
        if key == "pre":
            tables.append({"type": "command", "pre": value})
        elif key == "post":
            last = tables[-1] if tables else None
            if last is not None and last["type"] == "command" and "post" not in last:
                last["post"] = value
            else:
                tables.append({"type": "command", "post": value})
        elif key == "postgresql":
            tables.append({"type": "postgresql", "dsn": value})
        elif key == "sqlite":
            tables.append({"type": "sqlite", "path": value})
        else:
            raise UsageError(
                f"--hook {spec!r}: use pre=CMD, post=CMD, postgresql=DSN or sqlite=PATH"
            )
    return tables


def _read_document(path: Path) -> tomlkit.TOMLDocument:
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        return tomlkit.parse(text)
    except (OSError, TOMLKitError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path}: {err}") from None


def _write_document(path: Path, doc: tomlkit.TOMLDocument) -> None:
    # Through a symlink: replace the file it names, never the link itself.
    path = Path(os.path.realpath(path))
    data = tomlkit.dumps(doc).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600

    def write(f: BinaryIO) -> None:
        f.write(data)
        os.fchmod(f.fileno(), mode)

    atomic_write(path, write)


def add_policy(request: PolicyRequest, path: Path | None = None) -> Policy:
    """Add `[protect.NAME]` to the config file; the policy, checked with its
    sources present now, is returned. Refused if NAME exists."""
    path = path or config_file_path()
    settings = load_settings(path=path)  # the file as it is, checked as every command does
    where = str(path)
    check_policy_name(request.name, f"config file {where}, [protect.{request.name}]")
    if request.name in settings.protect:
        raise UsageError(
            f"policy {request.name} exists in {where}: 'strongroom policy remove' it first"
        )
    table = request.table()
    policy = parse_policy(request.name, table, where, _vm_disks(settings), check_paths=True)
    parse_policies(
        {**settings.protect, request.name: policy.as_table()},
        where,
        _vm_disks(settings),
        check_paths=False,
    )
    doc = _read_document(path)
    section = doc.get("protect")
    if section is None:
        section = tomlkit.table(is_super_table=True)
        doc["protect"] = section
    stored = tomlkit.table()
    for key, value in policy.as_table().items():
        if key == "retention" and policy.retention == DEFAULT_RETENTION:
            continue
        stored[key] = value
    section[request.name] = stored
    _write_document(path, doc)
    return policy


def remove_policy(name: str, path: Path | None = None) -> None:
    """Remove `[protect.NAME]` from the config file (nothing else changes;
    the source's points and state folders stay)."""
    path = path or config_file_path()
    doc = _read_document(path)
    section = doc.get("protect")
    if not isinstance(section, dict) or name not in section:
        raise UsageError(f"no policy {name} in {path}")
    del section[name]
    if not section:
        del doc["protect"]
    _write_document(path, doc)
