"""Protection policies: the `[protect.NAME]` tables of the config file, checked.

A policy names what to protect (`sources`), where the points go
(`destination`), how often (`cycle`), how the applications are quiesced
(`hooks`, `freeze_timeout`) and how many points stay (`retention`). This
module turns one table into a `Policy` or raises ConfigError with ONE line
naming the table and the key (`config file F, [protect.db]: cycle ...`).

The tables are checked when a command uses policies (`policy`, `status`,
`protect --policy`), not by every command that reads the config file: a
policy names paths of this machine, and a restore elsewhere with the same
file must not fail because `/srv/db` is absent there.

Sources and their names: a source is a directory tree or a volume (a block
device or disk image file; absolute paths), or `vm:NAME` / `vm:NAME/DISK`
for a VM of a `[vm.NAME]` table. Each source has a name, unique among all
policies: the policy's name when it has one source, else `POLICY.LABEL`
(LABEL: the path's last component, or the VM's name); a table form
`{path = "...", name = "..."}` names it explicitly. Points of a source are
found by that name (protect/source_points.py).
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from strongroom.errors import ConfigError

MIN_CYCLE = 60.0
TEST_MIN_CYCLE_ENV = "STRONGROOM_TEST_MIN_CYCLE"  # tests only: see min_cycle()
MAX_CYCLE = 86400.0
DEFAULT_CYCLE = 900.0
DEFAULT_FREEZE_TIMEOUT = 10.0
MAX_FREEZE_TIMEOUT = 600.0
DEFAULT_HOOK_TIMEOUT = 60.0
MAX_POINTS = 448  # points one source may hold (keep_last's bound, and retention's cap)
MAX_THINNING = MAX_POINTS  # hourly/daily/weekly: one point per bucket, at most the cap

_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,63}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

POLICY_KEYS = frozenset({"sources", "destination", "cycle", "hooks", "freeze_timeout", "retention"})
RETENTION_KEYS = ("keep_last", "keep_within", "hourly", "daily", "weekly")
_HOOK_KEYS = {
    "command": ({"pre", "post", "timeout"}, set[str]()),
    "postgresql": ({"dsn", "timeout"}, {"dsn"}),
    "sqlite": ({"path", "timeout"}, {"path"}),
}


class SourceKind(StrEnum):
    TREE = "tree"  # a directory tree (change journal)
    VOLUME = "volume"  # a block device or a disk image file (write filter / dirty bitmap)
    VM = "vm"  # a VM of a [vm.NAME] table (its disks, or one of them)


class HookType(StrEnum):
    COMMAND = "command"
    POSTGRESQL = "postgresql"
    SQLITE = "sqlite"


@dataclass(frozen=True)
class PolicySource:
    name: str  # unique among all policies; the points' `protect.name`
    kind: SourceKind
    path: str  # the tree or volume path; for a VM: the VM's name
    disk: str | None = None  # VM sources: only this disk (None: every disk)

    @property
    def spec(self) -> str:
        """As written in `sources`."""
        if self.kind == SourceKind.VM:
            return f"vm:{self.path}" + (f"/{self.disk}" if self.disk else "")
        return self.path


@dataclass(frozen=True)
class Hook:
    """An application hook, validated only: protect's hook engine runs it."""

    type: HookType
    pre: str | None = None  # command hooks: run before the freeze (a shell line)
    post: str | None = None  # command hooks: run after the thaw
    dsn: str | None = None  # postgresql: the connection string
    path: str | None = None  # sqlite: the database file
    timeout: float = DEFAULT_HOOK_TIMEOUT

    def as_table(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": str(self.type)}
        for key in ("pre", "post", "dsn", "path"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        if self.timeout != DEFAULT_HOOK_TIMEOUT:
            doc["timeout"] = format_duration(self.timeout)
        return doc

    def shown(self) -> dict[str, Any]:
        """`as_table` for printing: a DSN's password replaced by `***`."""
        doc = self.as_table()
        if "dsn" in doc:
            doc["dsn"] = redact_dsn(doc["dsn"])
        return doc


_DSN_PASSWORD = re.compile(r"""(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)""", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(://[^:/@?#\s]*:)[^@/?#\s]*@")


def redact_dsn(dsn: str) -> str:
    """A libpq connection string (key=value or URI) without its password."""
    return _URI_PASSWORD.sub(r"\1***@", _DSN_PASSWORD.sub(r"\1***", dsn))


@dataclass(frozen=True)
class Retention:
    """Which points of a source stay (services/retention.py applies it).

    `keep_within` is measured back from the source's newest point (as
    restic's --keep-within), so a source that stopped cycling keeps its
    history. No rule at all means `keep_last = MAX_POINTS`."""

    keep_last: int = 0
    keep_within: float = 0.0  # seconds
    hourly: int = 0
    daily: int = 0
    weekly: int = 0

    def empty(self) -> bool:
        return not (self.keep_last or self.keep_within or self.hourly or self.daily or self.weekly)

    def as_table(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for key in RETENTION_KEYS:
            value = getattr(self, key)
            if value:
                doc[key] = format_duration(value) if key == "keep_within" else value
        return doc


DEFAULT_RETENTION = Retention(keep_last=MAX_POINTS)


@dataclass(frozen=True)
class Policy:
    name: str
    sources: list[PolicySource]
    destination: str | None = None  # None: the repository; else a VHD chain folder or s3:...
    cycle: float = DEFAULT_CYCLE
    hooks: list[Hook] = field(default_factory=list)
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT
    retention: Retention = DEFAULT_RETENTION

    def as_table(self) -> dict[str, Any]:
        """The `[protect.NAME]` table that reads back as this policy."""
        doc: dict[str, Any] = {"sources": [_source_entry(s, self) for s in self.sources]}
        if self.destination is not None:
            doc["destination"] = self.destination
        doc["cycle"] = format_duration(self.cycle)
        if self.hooks:
            doc["hooks"] = [h.as_table() for h in self.hooks]
        if self.freeze_timeout != DEFAULT_FREEZE_TIMEOUT:
            doc["freeze_timeout"] = format_duration(self.freeze_timeout)
        if self.retention != DEFAULT_RETENTION:
            doc["retention"] = self.retention.as_table()
        return doc

    def as_dict(self) -> dict[str, Any]:
        """For --json: every value resolved (seconds, source kinds and names)."""
        return {
            "name": self.name,
            "sources": [
                {"name": s.name, "kind": str(s.kind), "source": s.spec} for s in self.sources
            ],
            "destination": self.destination or "repository",
            "cycle_seconds": self.cycle,
            "hooks": [h.shown() | {"timeout_seconds": h.timeout} for h in self.hooks],
            "freeze_timeout_seconds": self.freeze_timeout,
            "retention": {
                "keep_last": self.retention.keep_last,
                "keep_within_seconds": self.retention.keep_within,
                "hourly": self.retention.hourly,
                "daily": self.retention.daily,
                "weekly": self.retention.weekly,
            },
        }


def _source_entry(source: PolicySource, policy: Policy) -> str | dict[str, str]:
    derived = _derived_name(policy.name, source, len(policy.sources))
    return source.spec if source.name == derived else {"path": source.spec, "name": source.name}


def parse_duration(value: object, at: str, key: str) -> float:
    """Seconds from a number or a string such as 90s, 15m, 1h, 7d, 2w."""
    if isinstance(value, bool):
        raise ConfigError(f"{at}: {key} must be a duration such as 90s, 15m, 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _SECONDS[match.group(2).lower()]
    else:
        raise ConfigError(f"{at}: {key} must be a duration such as 90s, 15m, 1h")
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{at}: {key} must be a duration such as 90s, 15m, 1h")
    return seconds


def min_cycle() -> float:
    """The shortest cycle a policy may ask: 60 s. For tests only, the
    environment variable STRONGROOM_TEST_MIN_CYCLE (seconds, at least 1)
    lowers it, so that a test's service runs cycles of a few seconds."""
    value = os.environ.get(TEST_MIN_CYCLE_ENV)
    if not value:
        return MIN_CYCLE
    try:
        return min(MIN_CYCLE, max(1.0, float(value)))
    except ValueError:
        return MIN_CYCLE


def format_duration(seconds: float) -> str:
    """The shortest exact form: 900 -> 15m, 90 -> 90s, 604800 -> 1w."""
    for suffix, unit in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= unit and seconds % unit == 0:
            return f"{int(seconds // unit)}{suffix}"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds}s"


def check_policy_name(name: str, at: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"{at}: a policy name is 1-64 of lowercase letters, digits, '_', '.', '-' "
            "(not starting with '.' or '-')"
        )
    return name


def parse_policy(
    name: str,
    table: object,
    where: str,
    vms: Mapping[str, Collection[str]],
    *,
    check_paths: bool = True,
) -> Policy:
    """One `[protect.NAME]` table. `vms` maps each `[vm.NAME]` to its disks;
    `check_paths` also requires tree and volume sources to exist now."""
    at = f"config file {where}, [protect.{name}]"
    check_policy_name(name, at)
    if not isinstance(table, dict):
        raise ConfigError(f"{at}: not a table")
    unknown = set(table) - POLICY_KEYS
    if unknown:
        raise ConfigError(f"{at}: unknown setting(s) {', '.join(sorted(unknown))}")
    entries = table.get("sources")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{at}: sources must be a non-empty list (trees, volumes, vm:NAME)")
    sources = [_source(e, name, len(entries), at, vms, check_paths) for e in entries]
    seen: dict[str, str] = {}
    for s in sources:
        if seen.setdefault(s.name, s.spec) != s.spec:
            raise ConfigError(
                f"{at}: sources {seen[s.name]} and {s.spec} both get the name {s.name}: "
                'name one of them ({path = "...", name = "..."})'
            )
        if s.spec in {o.spec for o in sources if o is not s}:
            raise ConfigError(f"{at}: source {s.spec} is listed twice")
    destination = table.get("destination")
    if destination is not None:
        destination = _destination(destination, at, sources)
    assert destination is None or isinstance(destination, str)
    cycle = parse_duration(table.get("cycle", DEFAULT_CYCLE), at, "cycle")
    if not min_cycle() <= cycle <= MAX_CYCLE:
        raise ConfigError(f"{at}: cycle must be from 1 minute to 24 hours (got {cycle:g} s)")
    freeze = parse_duration(
        table.get("freeze_timeout", DEFAULT_FREEZE_TIMEOUT), at, "freeze_timeout"
    )
    if not 0.1 <= freeze <= MAX_FREEZE_TIMEOUT:
        raise ConfigError(f"{at}: freeze_timeout must be from 0.1 s to 10 minutes")
    hooks_doc = table.get("hooks", [])
    if not isinstance(hooks_doc, list):
        raise ConfigError(f"{at}: hooks must be a list of tables ({{type = ...}})")
    hooks = [_hook(h, f"{at} hooks[{i}]") for i, h in enumerate(hooks_doc)]
    retention = _retention(table.get("retention"), at)
    if destination is not None and "retention" in table:
        raise ConfigError(
            f"{at}: retention applies to repository points; a VHD chain keeps every cycle"
        )
    return Policy(name, sources, destination, cycle, hooks, freeze, retention)


def parse_policies(
    tables: Mapping[str, object],
    where: str,
    vms: Mapping[str, Collection[str]],
    *,
    check_paths: bool = True,
) -> dict[str, Policy]:
    """Every policy; a source name used by two policies is refused (their
    points would form one timeline)."""
    policies = {
        n: parse_policy(n, t, where, vms, check_paths=check_paths) for n, t in tables.items()
    }
    owner: dict[str, str] = {}
    for policy in policies.values():
        for s in policy.sources:
            other = owner.setdefault(s.name, policy.name)
            if other != policy.name:
                raise ConfigError(
                    f"config file {where}, [protect.{policy.name}]: source name {s.name} "
                    f"is also a source of [protect.{other}]"
                )
    return policies


def _derived_name(policy: str, source: PolicySource, count: int) -> str:
    if count == 1:
        return policy
    base = source.path if source.kind == SourceKind.VM else os.path.basename(source.path)
    if source.disk:
        base = f"{base}-{source.disk}"
    label = re.sub(r"[^a-z0-9_.-]+", "-", base.lower()).strip("-.") or "root"
    return f"{policy}.{label}"


def _source(
    entry: object,
    policy: str,
    count: int,
    at: str,
    vms: Mapping[str, Collection[str]],
    check_paths: bool,
) -> PolicySource:
    explicit: str | None = None
    if isinstance(entry, dict):
        unknown = set(entry) - {"path", "name"}
        if unknown or not isinstance(entry.get("path"), str):
            raise ConfigError(f'{at}: a source table is {{path = "...", name = "..."}}')
        if "name" in entry:
            if not isinstance(entry["name"], str):
                raise ConfigError(f"{at}: a source's name must be a string")
            explicit = check_policy_name(entry["name"], f"{at} source {entry['path']}")
        entry = entry["path"]
    if not isinstance(entry, str) or not entry or "\0" in entry:
        raise ConfigError(f"{at}: sources are paths or vm:NAME strings")
    if entry.startswith("vm:"):
        vm, _, disk = entry[3:].partition("/")
        if vm not in vms:
            raise ConfigError(f"{at}: source {entry}: no [vm.{vm}] table defines that VM")
        if disk and disk not in vms[vm]:
            raise ConfigError(f"{at}: source {entry}: [vm.{vm}] has no disk {disk}")
        source = PolicySource("", SourceKind.VM, vm, disk or None)
    else:
        path = os.path.expanduser(entry)
        if not os.path.isabs(path):
            raise ConfigError(f"{at}: source {entry} must be an absolute path")
        path = os.path.normpath(path)
        kind = SourceKind.TREE
        if check_paths:
            try:
                mode = os.stat(path).st_mode
            except OSError as err:
                raise ConfigError(f"{at}: source {entry}: {err.strerror}") from None
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
                raise ConfigError(f"{at}: source {entry} is not a directory, file or device")
            kind = SourceKind.TREE if stat.S_ISDIR(mode) else SourceKind.VOLUME
        elif not os.path.isdir(path) and os.path.exists(path):
            kind = SourceKind.VOLUME
        source = PolicySource("", kind, path)
    name = explicit or _derived_name(policy, source, count)
    return PolicySource(name, source.kind, source.path, source.disk)


def _destination(value: object, at: str, sources: list[PolicySource]) -> str | None:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(f"{at}: destination must be a folder or s3:... location")
    if value == "repository":
        return None
    if not value.startswith("s3:") and not os.path.isabs(os.path.expanduser(value)):
        raise ConfigError(f"{at}: destination must be an absolute folder path or s3:... location")
    if any(s.kind == SourceKind.VM for s in sources):
        raise ConfigError(f"{at}: destination: VM sources go to the repository (leave it out)")
    # A tree's kind is known only when it exists (check_paths off: a missing path).
    tree = next((s for s in sources if s.kind == SourceKind.TREE and os.path.isdir(s.path)), None)
    if tree is not None:
        raise ConfigError(
            f"{at}: destination: a VHD chain takes volumes; the tree {tree.path} goes to "
            "the repository (leave it out) or to 'strongroom protect TREE --to DEST --every'"
        )
    return os.path.expanduser(value) if not value.startswith("s3:") else value


def _hook(doc: object, at: str) -> Hook:
    if not isinstance(doc, dict) or doc.get("type") not in _HOOK_KEYS:
        raise ConfigError(f"{at}: a hook is a table with type = command, postgresql or sqlite")
    kind = HookType(doc["type"])
    allowed, required = _HOOK_KEYS[kind]
    unknown = set(doc) - allowed - {"type"}
    if unknown:
        raise ConfigError(
            f"{at}: unknown setting(s) {', '.join(sorted(unknown))} for a {kind} hook"
        )
    for key in required:
        if key not in doc:
            raise ConfigError(f"{at}: a {kind} hook needs {key}")
    values: dict[str, str | None] = {}
    for key in ("pre", "post", "dsn", "path"):
        value = doc.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{at}: {key} must be a non-empty string")
        values[key] = value
    if kind == HookType.COMMAND and not (values["pre"] or values["post"]):
        raise ConfigError(f"{at}: a command hook needs pre, post or both")
    if kind == HookType.SQLITE:
        db = values["path"] = os.path.expanduser(str(values["path"]))
        if not os.path.isabs(db):
            raise ConfigError(f"{at}: path must be the database file's absolute path")
    timeout = parse_duration(doc.get("timeout", DEFAULT_HOOK_TIMEOUT), at, "timeout")
    if not 0.1 <= timeout <= 3600:
        raise ConfigError(f"{at}: timeout must be from 0.1 s to 1 hour")
    return Hook(kind, values["pre"], values["post"], values["dsn"], values["path"], timeout)


def _retention(doc: object, at: str) -> Retention:
    if doc is None:
        return DEFAULT_RETENTION
    at = f"{at} retention"
    if not isinstance(doc, dict):
        raise ConfigError(f"{at}: must be a table ({', '.join(RETENTION_KEYS)})")
    unknown = set(doc) - set(RETENTION_KEYS)
    if unknown:
        raise ConfigError(f"{at}: unknown setting(s) {', '.join(sorted(unknown))}")
    counts: dict[str, int] = {}
    for key, most in (("keep_last", MAX_POINTS), ("hourly", MAX_THINNING)):
        counts[key] = _count(doc.get(key, 0), at, key, most)
    for key in ("daily", "weekly"):
        counts[key] = _count(doc.get(key, 0), at, key, MAX_THINNING)
    within = parse_duration(doc.get("keep_within", 0), at, "keep_within")
    if within > 100 * 366 * 86400:
        raise ConfigError(f"{at}: keep_within must be at most 100 years")
    retention = Retention(keep_within=within, **counts)
    if retention.empty():
        raise ConfigError(f"{at}: keeps nothing: set keep_last, keep_within or a thinning count")
    return retention


def _count(value: object, at: str, key: str, most: int) -> int:
    if type(value) is not int or not 0 <= value <= most:
        raise ConfigError(f"{at}: {key} must be a whole number from 0 to {most}")
    return value
