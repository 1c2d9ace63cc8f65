"""Settings: a TOML file < environment variables < command-line options.

File: `$STRONGROOM_CONFIG`, else `$XDG_CONFIG_HOME/strongroom/config.toml`
(`~/.config/strongroom/config.toml`). Keys: `repo`, `password_file` or
`password_command`,
`compression`, `exclude` (list), `exclude_file`, the cluster's VMs as
`[vm.NAME]` tables (see `VmSpec`), and protection policies as
`[protect.NAME]` tables (kept here as read; protect/policy.py checks them
when a command uses policies), media libraries as `[library.NAME]` tables
(see `LibrarySpec`; a virtual library needs none), and `catalog` (the media
catalog's database: a SQLite path or a `postgresql://` URL; catalog/engine.py
reads it), and `[notify]` (who hears of new media: see `NotifySpec`).
Environment: `STRONGROOM_REPO`, `STRONGROOM_PASSWORD`, `STRONGROOM_PASSWORD_FILE`,
`STRONGROOM_PASSWORD_COMMAND`, `STRONGROOM_COMPRESSION`, `STRONGROOM_CATALOG`.
The password itself is never read from the file.

How a backup stays out of the way: `priority` (idle, low, normal:
strongroom/priority.py), `limit_read`, `limit_upload` and `limit_download`
(bytes per second as a size: `50M`; strongroom/bandwidth.py), in the file or
as `STRONGROOM_PRIORITY`, `STRONGROOM_LIMIT_READ`, `STRONGROOM_LIMIT_UPLOAD`,
`STRONGROOM_LIMIT_DOWNLOAD`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from strongroom.bandwidth import rate_bytes
from strongroom.errors import ConfigError
from strongroom.priority import Priority, parse_priority


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def default_repository() -> str:
    """Where the embedded default repository lives when none is configured."""
    return str(data_home() / "strongroom" / "repository")


@dataclass
class VmSpec:
    """A VM of the cluster: its disks and the endpoints of its block layer.

    The block layer (QEMU or qemu-storage-daemon) serves QMP at `qmp`
    (`unix:PATH`, a path, or `tcp:HOST:PORT`) and NBD at `nbd` (a URI whose
    export part is ignored: frozen views are exported on that server). `disks`
    are block node names. `scratch` is a folder where the snapshot overlays
    go, as both this host and the block layer see it (on shared storage when
    they are different hosts). Consistency: `guest_agent` (the guest agent's
    socket, for guest-fsfreeze-freeze/thaw) or `freeze_command` and
    `thaw_command` (run by a shell), bounded by `freeze_timeout` seconds.
    """

    name: str
    qmp: str
    nbd: str
    disks: list[str]
    scratch: str | None = None
    guest_agent: str | None = None
    freeze_command: str | None = None
    thaw_command: str | None = None
    freeze_timeout: float = 10.0
    lease_ttl: float = 60.0


LIBRARY_KINDS = ("mtx", "script", "virtual")


@dataclass
class LibrarySpec:
    """A media library of the config (`[library.NAME]`).

    `kind`: mtx (a SCSI changer through the `mtx` program at `mtx`), script (a
    Bareos/Bacula changer script `script`) or virtual (the folder library;
    `path` overrides where it lives). `device`: the changer's control device
    (/dev/sg*, or the script's CTRL-DEVICE). `drives`: the drives' devices by
    drive number (/dev/nst*). `cleaning_prefix`: barcodes of cleaning
    cartridges. `timeout`: seconds for any one changer command.
    """

    name: str
    kind: str
    device: str | None = None
    drives: list[str] = field(default_factory=list)
    script: str | None = None
    mtx: str = "mtx"
    path: str | None = None
    cleaning_prefix: str = "CLN"
    timeout: float = 600.0


@dataclass
class NotifySpec:
    """Where an inventory reports new media (`[notify]`; services/notify.py).

    `command`: run (no shell; split like a shell would) with the details in
    STRONGROOM_NOTIFY_* variables. `webhook`: an http(s) URL that receives a
    JSON POST. `email_to`: addresses mailed through the SMTP server at
    `smtp_host`:`smtp_port` from `email_from` (plain SMTP, e.g. the local
    MTA). `timeout`: seconds for each notifier."""

    command: str | None = None
    webhook: str | None = None
    email_to: list[str] = field(default_factory=list)
    email_from: str = "strongroom@localhost"
    smtp_host: str = "localhost"
    smtp_port: int = 25
    timeout: float = 10.0


@dataclass
class Settings:
    repo: str | None = None
    password_file: str | None = None
    password_command: str | None = None  # prints the password (pass, gpg, a vault CLI)
    compression: int | None = None  # zstd level for new repositories (None: the default)
    compression_mode: str = "auto"  # new repositories' writers: "auto" or "always"
    exclude: list[str] = field(default_factory=list)
    exclude_file: str | None = None
    vms: dict[str, VmSpec] = field(default_factory=dict)
    # [protect.NAME] tables as read (protect/policy.py validates them on use)
    protect: dict[str, dict[str, object]] = field(default_factory=dict)
    libraries: dict[str, LibrarySpec] = field(default_factory=dict)
    catalog: str | None = None  # None: SQLite in the data folder
    notify: NotifySpec = field(default_factory=NotifySpec)
    priority: Priority | None = None  # None: the job kind's default (services/impact.py)
    limit_read: int | None = None  # bytes/s read from sources; None: no limit
    limit_upload: int | None = None  # bytes/s written to storage; None: no limit
    limit_download: int | None = None  # bytes/s read from storage; None: no limit
    config_file: str | None = None  # the file read, if any
    source: dict[str, str] = field(default_factory=dict)  # setting -> where it came from

    def override(self, key: str, value: object | None, option: str) -> None:
        """A command-line `option`'s value for setting `key` (the last word of
        the precedence); None: the option was not given, nothing changes."""
        if value is not None:
            setattr(self, key, value)
            self.source[key] = option

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
        settings.config_file = str(path)
    if env.get("STRONGROOM_REPO"):
        settings.repo = env["STRONGROOM_REPO"]
        settings.source["repo"] = "STRONGROOM_REPO"
    # A password file or command from the environment replaces the file's
    # choice of either; the environment naming both is refused when used.
    if env.get("STRONGROOM_PASSWORD_FILE") or env.get("STRONGROOM_PASSWORD_COMMAND"):
        settings.password_file = settings.password_command = None
    if env.get("STRONGROOM_PASSWORD_FILE"):
        settings.password_file = env["STRONGROOM_PASSWORD_FILE"]
        settings.source["password_file"] = "STRONGROOM_PASSWORD_FILE"
    if env.get("STRONGROOM_PASSWORD_COMMAND"):
        settings.password_command = env["STRONGROOM_PASSWORD_COMMAND"]
        settings.source["password_command"] = "STRONGROOM_PASSWORD_COMMAND"
    if env.get("STRONGROOM_COMPRESSION"):
        settings.compression_mode, settings.compression = _compression(
            env["STRONGROOM_COMPRESSION"], "STRONGROOM_COMPRESSION"
        )
    if env.get("STRONGROOM_CATALOG"):
        settings.catalog = env["STRONGROOM_CATALOG"]
        settings.source["catalog"] = "STRONGROOM_CATALOG"
    for key in _IMPACT_KEYS:
        name = f"STRONGROOM_{key.upper()}"
        if env.get(name):
            _apply_impact(settings, key, env[name], name)
    return settings


_IMPACT_KEYS = ("priority", "limit_read", "limit_upload", "limit_download")


def _apply_impact(settings: Settings, key: str, value: object, where: str) -> None:
    """`priority` or one of the limits from a file or the environment."""
    try:
        if key == "priority":
            settings.priority = parse_priority(str(value))
        else:
            setattr(settings, key, rate_bytes(str(value)))
    except ValueError as err:
        raise ConfigError(f"{where}: {key}: {err}") from None
    settings.source[key] = where


def _apply_file(settings: Settings, doc: dict[str, object], where: str) -> None:
    if "password" in doc:
        raise ConfigError(f"config file {where}: put the password in a password_file, not here")
    known = {
        "repo",
        "password_file",
        "password_command",
        "compression",
        "exclude",
        "exclude_file",
        "vm",
        "protect",
        "library",
        "catalog",
        "notify",
        *_IMPACT_KEYS,
    }
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"config file {where}: unknown setting(s) {', '.join(sorted(unknown))}")
    if isinstance(doc.get("repo"), str):
        settings.repo = os.path.expanduser(str(doc["repo"]))
        settings.source["repo"] = where
    if "catalog" in doc:
        if not isinstance(doc["catalog"], str) or not doc["catalog"]:
            raise ConfigError(f"config file {where}: catalog must be a path or a postgresql:// URL")
        settings.catalog = doc["catalog"]
        settings.source["catalog"] = where
    if isinstance(doc.get("password_file"), str):
        settings.password_file = os.path.expanduser(str(doc["password_file"]))
        settings.source["password_file"] = where
    if "password_command" in doc:
        if not isinstance(doc["password_command"], str) or not doc["password_command"].strip():
            raise ConfigError(f"config file {where}: password_command must be a command line")
        if settings.password_file:
            raise ConfigError(
                f"config file {where}: password_file and password_command exclude each other"
            )
        settings.password_command = doc["password_command"]
        settings.source["password_command"] = where
    if "compression" in doc:
        settings.compression_mode, settings.compression = _compression(
            str(doc["compression"]), where
        )
    excludes = doc.get("exclude")
    if isinstance(excludes, list):
        settings.exclude = [str(x) for x in excludes]
    if isinstance(doc.get("exclude_file"), str):
        settings.exclude_file = os.path.expanduser(str(doc["exclude_file"]))
    vms = doc.get("vm", {})
    if not isinstance(vms, dict):
        raise ConfigError(f"config file {where}: vm must be a table of [vm.NAME] tables")
    for name, table in vms.items():
        settings.vms[name] = _vm(name, table, where)
    policies = doc.get("protect", {})
    if not isinstance(policies, dict) or not all(isinstance(t, dict) for t in policies.values()):
        raise ConfigError(f"config file {where}: protect must be a table of [protect.NAME] tables")
    settings.protect = {str(n): dict(t) for n, t in policies.items()}
    libraries = doc.get("library", {})
    if not isinstance(libraries, dict):
        raise ConfigError(f"config file {where}: library must be a table of [library.NAME] tables")
    for name, table in libraries.items():
        settings.libraries[name] = _library(name, table, where)
    if "notify" in doc:
        settings.notify = _notify(doc["notify"], where)
    for key in _IMPACT_KEYS:
        if key in doc:
            _apply_impact(settings, key, doc[key], f"config file {where}")
    seen: dict[tuple[str, str], str] = {}
    for spec in settings.vms.values():
        for disk in spec.disks:
            other = seen.setdefault((spec.qmp, disk), spec.name)
            if other != spec.name:
                raise ConfigError(
                    f"config file {where}: disk {disk} of {spec.qmp} is in [vm.{other}] "
                    f"and [vm.{spec.name}]: two VMs would rotate each other's dirty bitmaps"
                )


_VM_KEYS = {
    "qmp",
    "nbd",
    "disks",
    "scratch",
    "guest_agent",
    "freeze_command",
    "thaw_command",
    "freeze_timeout",
    "lease_ttl",
}


def _vm(name: str, table: object, where: str) -> VmSpec:
    at = f"config file {where}, [vm.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{at}: not a table")
    unknown = set(table) - _VM_KEYS
    if unknown:
        raise ConfigError(f"{at}: unknown setting(s) {', '.join(sorted(unknown))}")
    for key in ("qmp", "nbd"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise ConfigError(f"{at}: {key} (the block layer's endpoint) is required")
    disks = table.get("disks")
    if not isinstance(disks, list) or not disks or not all(isinstance(d, str) for d in disks):
        raise ConfigError(f"{at}: disks must be a non-empty list of block node names")
    if len(set(disks)) != len(disks):
        raise ConfigError(f"{at}: a disk is listed twice")
    optional: dict[str, str | None] = {}
    for key in ("scratch", "guest_agent", "freeze_command", "thaw_command"):
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{at}: {key} must be a string")
        optional[key] = os.path.expanduser(value) if isinstance(value, str) else None
    if optional["guest_agent"] and optional["freeze_command"]:
        raise ConfigError(f"{at}: use guest_agent or freeze_command, not both")
    if bool(optional["freeze_command"]) != bool(optional["thaw_command"]):
        raise ConfigError(
            f"{at}: freeze_command and thaw_command go together (a frozen guest must be thawed)"
        )
    if optional["scratch"] and not os.path.isabs(optional["scratch"]):
        raise ConfigError(f"{at}: scratch must be an absolute path (the block layer opens it too)")
    numbers: dict[str, float] = {}
    for key, default, least in (("freeze_timeout", 10.0, 0.1), ("lease_ttl", 60.0, 2.0)):
        value = table.get(key, default)
        if not isinstance(value, int | float) or value < least:
            raise ConfigError(f"{at}: {key} must be at least {least:g} seconds")
        numbers[key] = float(value)
    return VmSpec(
        name=name,
        qmp=str(table["qmp"]),
        nbd=str(table["nbd"]),
        disks=[str(d) for d in disks],
        scratch=optional["scratch"],
        guest_agent=optional["guest_agent"],
        freeze_command=optional["freeze_command"],
        thaw_command=optional["thaw_command"],
        freeze_timeout=numbers["freeze_timeout"],
        lease_ttl=numbers["lease_ttl"],
    )


_LIBRARY_KEYS = {"kind", "device", "drives", "script", "mtx", "path", "cleaning_prefix", "timeout"}


def _library(name: str, table: object, where: str) -> LibrarySpec:
    at = f"config file {where}, [library.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{at}: not a table")
    unknown = set(table) - _LIBRARY_KEYS
    if unknown:
        raise ConfigError(f"{at}: unknown setting(s) {', '.join(sorted(unknown))}")
    kind = table.get("kind", "virtual")
    if kind not in LIBRARY_KINDS:
        raise ConfigError(f"{at}: kind must be one of {', '.join(LIBRARY_KINDS)}")
    text: dict[str, str | None] = {}
    for key in ("device", "script", "mtx", "path", "cleaning_prefix"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{at}: {key} must be a non-empty string")
        text[key] = value
    drives = table.get("drives", [])
    if not isinstance(drives, list) or not all(isinstance(d, str) and d for d in drives):
        raise ConfigError(f"{at}: drives must be a list of device paths, by drive number")
    if kind in ("mtx", "script") and not text["device"]:
        raise ConfigError(f"{at}: device (the changer's control device) is required")
    if kind == "script" and not text["script"]:
        raise ConfigError(f"{at}: script (the changer script to run) is required")
    timeout = table.get("timeout", 600.0)
    if not isinstance(timeout, int | float) or not 1 <= timeout <= 86400:
        raise ConfigError(f"{at}: timeout must be 1-86400 seconds")
    expand = os.path.expanduser
    return LibrarySpec(
        name=name,
        kind=str(kind),
        device=text["device"],
        drives=[str(d) for d in drives],
        script=expand(text["script"]) if text["script"] else None,
        mtx=text["mtx"] or "mtx",
        path=expand(text["path"]) if text["path"] else None,
        cleaning_prefix=text["cleaning_prefix"] or "CLN",
        timeout=float(timeout),
    )


_NOTIFY_KEYS = {"command", "webhook", "email_to", "email_from", "smtp_host", "smtp_port", "timeout"}


def _notify(table: object, where: str) -> NotifySpec:
    at = f"config file {where}, [notify]"
    if not isinstance(table, dict):
        raise ConfigError(f"{at}: not a table")
    unknown = set(table) - _NOTIFY_KEYS
    if unknown:
        raise ConfigError(f"{at}: unknown setting(s) {', '.join(sorted(unknown))}")
    spec = NotifySpec()
    for key in ("command", "webhook", "email_from", "smtp_host"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{at}: {key} must be a non-empty string")
        if value is not None:
            setattr(spec, key, value)
    if spec.webhook is not None and not spec.webhook.startswith(("http://", "https://")):
        raise ConfigError(f"{at}: webhook must be an http:// or https:// URL")
    to = table.get("email_to", [])
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not all(isinstance(a, str) and "@" in a for a in to):
        raise ConfigError(f"{at}: email_to must be an address or a list of addresses")
    spec.email_to = list(to)
    port = table.get("smtp_port", 25)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{at}: smtp_port must be 1-65535")
    spec.smtp_port = port
    timeout = table.get("timeout", 10.0)
    if not isinstance(timeout, int | float) or not 0.1 <= timeout <= 3600:
        raise ConfigError(f"{at}: timeout must be 0.1-3600 seconds")
    spec.timeout = float(timeout)
    return spec


def _compression(text: str, where: str) -> tuple[str, int | None]:
    """(mode, level) of a compression setting: `auto` (adaptive at the default
    level), `auto,N` (adaptive at level N), `N` (always compress at level N;
    0 = off). repository/compress.py describes the modes."""
    mode, _, level_text = text.strip().lower().rpartition(",")
    if text.strip().lower() == "auto":
        return "auto", None
    if mode not in ("", "auto"):
        raise ConfigError(f"{where}: compression must be auto, auto,N or a level N 0-19")
    try:
        level = int(level_text)
    except ValueError:
        raise ConfigError(f"{where}: compression must be auto, auto,N or a level N 0-19") from None
    if not 0 <= level <= 19:
        raise ConfigError(f"{where}: compression level must be 0-19")
    return (mode or "always"), level


# Names a child process (qemu-img, qemu-nbd, e2fsprogs, a user's freeze/thaw
# hook) never inherits: strongroom's own settings (the repository password,
# its file or command, key material, the repository location), cloud
# credentials, and anything whose name says it is a secret.
_CHILD_DROP_PREFIXES = ("STRONGROOM_", "AWS_", "AZURE_", "GOOGLE_", "GCS_", "B2_", "RCLONE_")
_CHILD_DROP_WORDS = (
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "CREDENTIAL",
    "API_KEY",
    "PRIVATE_KEY",
)


def is_secret_name(name: str) -> bool:
    """True for an environment variable a child process must not see."""
    upper = name.upper()
    return upper.startswith(_CHILD_DROP_PREFIXES) or any(w in upper for w in _CHILD_DROP_WORDS)


def child_environment(
    extra: dict[str, str] | None = None, *, user_credentials: bool = False
) -> dict[str, str]:
    """The environment for every process strongroom starts: this process's,
    less every secret (`is_secret_name`), plus `extra`.

    PATH, HOME, LANG, TMPDIR and the like stay, so tools and hooks run as
    they would from the user's shell; what a hook needs beyond that it reads
    from its own files. Every `subprocess` call in src/ passes `env=` this
    (tests/cli/test_child_environment.py checks it).

    `user_credentials`: for the user's own password command only (`pass`,
    `gpg`, `vault kv get`), which needs the user's agents and tokens: only
    strongroom's own variables are dropped."""
    if user_credentials:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STRONGROOM_")}
    else:
        env = {k: v for k, v in os.environ.items() if not is_secret_name(k)}
    env.update(extra or {})
    return env
