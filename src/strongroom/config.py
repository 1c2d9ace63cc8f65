"""Settings: a TOML file < environment variables < command-line options.

File: `$STRONGROOM_CONFIG`, else `$XDG_CONFIG_HOME/strongroom/config.toml`
(`~/.config/strongroom/config.toml`). Keys: `repo`, `password_file`,
`compression`, `exclude` (list), `exclude_file`. Environment:
`STRONGROOM_REPO`, `STRONGROOM_PASSWORD`, `STRONGROOM_PASSWORD_FILE`,
`STRONGROOM_COMPRESSION`. The password itself is never read from the file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from strongroom.errors import ConfigError


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def default_repository() -> str:
    """Where the embedded default repository lives when none is configured."""
    return str(data_home() / "strongroom" / "repository")


@dataclass
class Settings:
    repo: str | None = None
    password_file: str | None = None
    compression: int | None = None
    exclude: list[str] = field(default_factory=list)
    exclude_file: str | None = None
    source: dict[str, str] = field(default_factory=dict)  # setting -> where it came from

    @property
    def repository(self) -> str:
        return self.repo or default_repository()

    @property
    def uses_default_repository(self) -> bool:
        return self.repo is None


def config_file_path() -> Path:
    explicit = os.environ.get("STRONGROOM_CONFIG")
    return Path(explicit) if explicit else config_home() / "strongroom" / "config.toml"


def load_settings(env: dict[str, str] | None = None, path: Path | None = None) -> Settings:
    """File, then environment; the CLI applies its options on top."""
    env = dict(os.environ) if env is None else env
    settings = Settings()
    path = path or config_file_path()
    if path.exists():
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"config file {path}: {err}") from None
        _apply_file(settings, doc, str(path))
    if env.get("STRONGROOM_REPO"):
        settings.repo = env["STRONGROOM_REPO"]
        settings.source["repo"] = "STRONGROOM_REPO"
    if env.get("STRONGROOM_PASSWORD_FILE"):
        settings.password_file = env["STRONGROOM_PASSWORD_FILE"]
        settings.source["password_file"] = "STRONGROOM_PASSWORD_FILE"
    if env.get("STRONGROOM_COMPRESSION"):
        settings.compression = _level(env["STRONGROOM_COMPRESSION"], "STRONGROOM_COMPRESSION")
    return settings


def _apply_file(settings: Settings, doc: dict[str, object], where: str) -> None:
    if "password" in doc:
        raise ConfigError(f"config file {where}: put the password in a password_file, not here")
    known = {"repo", "password_file", "compression", "exclude", "exclude_file"}
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"config file {where}: unknown setting(s) {', '.join(sorted(unknown))}")
    if isinstance(doc.get("repo"), str):
        settings.repo = os.path.expanduser(str(doc["repo"]))
        settings.source["repo"] = where
    if isinstance(doc.get("password_file"), str):
        settings.password_file = os.path.expanduser(str(doc["password_file"]))
    if "compression" in doc:
        settings.compression = _level(str(doc["compression"]), where)
    excludes = doc.get("exclude")
    if isinstance(excludes, list):
        settings.exclude = [str(x) for x in excludes]
    if isinstance(doc.get("exclude_file"), str):
        settings.exclude_file = os.path.expanduser(str(doc["exclude_file"]))


def _level(text: str, where: str) -> int:
    try:
        level = int(text)
    except ValueError:
        raise ConfigError(f"{where}: compression must be a number 0-19 (0 = off)") from None
    if not 0 <= level <= 19:
        raise ConfigError(f"{where}: compression must be 0-19")
    return level
