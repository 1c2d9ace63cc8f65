"""The retention of an agent's protected sources, kept by the server
(docs/design.md §9i, "Protection through the server").

An agent never deletes, so `strongroom protect --server` does not apply
retention after its points: at start it registers each tree source's
retention here, and the server keeps it as a schedule of kind `forget`
(a server job, run under the maintenance lock: services/server_jobs.py)
restricted to the agent's machine (`hosts=[machine]`), the source's path
and the `protect` tag, grouped by host and paths.

Contract (everything is checked; UsageError with one line that never echoes
a value):
- the source name is a policy source name (1-128 of a-z, 0-9, `_.:-`), the
  path absolute (a tree's) or `volume:` and an absolute path (a volume's, as
  its points name it), at most 4096 bytes, without NUL, or `vm:NAME` (a VM's,
  NAME under the machine name rules);
- a VM's points are its cluster's (host = the cluster's name: docs/server.md,
  "VMs through the server"), so a VM source's schedule thins `hosts =
  [cluster]`, is named after the cluster (`cluster:NAME`) and the source, and
  is shared by the cluster's nodes: each node that protects the VM registers
  the same schedule (the last registration's rules win). A machine in no
  cluster cannot register one;
- keep rules only, each bounded as a policy's are (at most `MAX_POINTS`
  points per rule, keep_within at most 100 years), and at least one of them
  (never "keep nothing");
- `every` (the policy's cycle) is clamped to 60 s..1 day: how often the
  server thins;
- the schedule's name derives from the machine and the source, so a second
  registration updates it (an upsert; its next run is kept); a schedule of
  that name that is not this machine's forget is never overwritten;
- at most `MAX_PER_MACHINE` sources per machine.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from strongroom.catalog import Catalog, Schedule
from strongroom.errors import UsageError
from strongroom.protect.policy import MAX_POINTS
from strongroom.protect.source_points import PROTECT_TAG
from strongroom.services.agents import check_machine_name
from strongroom.services.scheduler import first_run
from strongroom.services.server_jobs import check_spec

MAX_PER_MACHINE = 64
MAX_WITHIN = 100 * 366 * 86400
MAX_PATH = 4096
VOLUME = "volume:"  # a protected volume's points name `volume:IMAGE` (services/volume_cycle.py)
VM = "vm:"  # a VM's points name `vm:NAME` (services/vms.py)
MIN_EVERY, MAX_EVERY = 60, 86400
KEEP_FIELDS = ("keep_last", "hourly", "daily", "weekly")
_SOURCE = re.compile(r"[a-z0-9_][a-z0-9_.:-]{0,127}")
_FIELDS = frozenset({"source", "path", "every", "keep_within", *KEEP_FIELDS})


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def schedule_prefix(machine: str) -> str:
    return f"protect-{_digest(machine, 12)}-"


def schedule_name(machine: str, source: str) -> str:
    """The forget schedule of one source of one machine (valid schedule name)."""
    return schedule_prefix(machine) + _digest(source, 16)


def _whole(doc: Mapping[str, Any], name: str, top: int) -> int:
    value = doc.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise UsageError(f"retention: {name} must be a whole number from 0 to {top}")
    return value


def forget_spec(owner: str, doc: Mapping[str, Any]) -> tuple[str, dict[str, Any], int]:
    """(source, the checked forget spec, every) from an agent's registration;
    `owner`: the host of the points it thins (the machine, or a VM source's
    cluster)."""
    unknown = set(doc) - _FIELDS
    if unknown:
        raise UsageError(f"retention: unknown field(s) {', '.join(sorted(unknown))[:200]}")
    source, path = doc.get("source"), doc.get("path")
    if not isinstance(source, str) or not _SOURCE.fullmatch(source):
        raise UsageError("retention: source is 1-128 of a-z, 0-9, '_', '.', ':', '-'")
    if isinstance(path, str) and path.startswith(VM):
        try:
            check_machine_name(path[len(VM) :])
        except UsageError:
            raise UsageError("retention: a VM's path is vm:NAME (a machine-like name)") from None
    elif (
        not isinstance(path, str)
        or not path.removeprefix(VOLUME).startswith("/")
        or "\0" in path
        or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH
    ):
        raise UsageError(
            f"retention: path must be absolute (or volume:PATH or vm:NAME), at most {MAX_PATH} "
            "bytes, no NUL"
        )
    keep = {name: _whole(doc, name, MAX_POINTS) for name in KEEP_FIELDS}
    within = _whole(doc, "keep_within", MAX_WITHIN)
    if not any(keep.values()) and not within:
        raise UsageError("retention: give at least one keep rule (never keep nothing)")
    every = min(max(_whole(doc, "every", MAX_EVERY * 366), MIN_EVERY), MAX_EVERY)
    spec = check_spec(
        "forget",
        {
            "keep_last": keep["keep_last"],
            "keep_hourly": keep["hourly"],
            "keep_daily": keep["daily"],
            "keep_weekly": keep["weekly"],
            "keep_within": within,
            "hosts": [owner],
            "paths": [path],
            "tags": [PROTECT_TAG],
            "group_by": "host,paths",
        },
    )
    return source, spec, every


def register_retention(
    catalog: Catalog,
    machine: str,
    doc: Mapping[str, Any],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Schedule:
    """Upsert the forget schedule of `machine`'s source `doc["source"]` (a VM
    source's: its cluster's, see the module's contract)."""
    owner, key = machine, machine
    if str(doc.get("path", "")).startswith(VM):
        found_machine = catalog.find_machine(machine)
        cluster = found_machine.cluster if found_machine is not None else None
        if not cluster:
            raise UsageError("retention: a VM source needs the machine in a VM cluster")
        owner, key = cluster, f"cluster:{cluster}"
    source, spec, every = forget_spec(owner, doc)
    name = schedule_name(key, source)
    with catalog.transaction():
        found = catalog.find_schedule(name)
        if found is None:
            prefix = schedule_prefix(key)
            mine = [s for s in catalog.list_schedules() if s.name.startswith(prefix)]
            if len(mine) >= MAX_PER_MACHINE:
                raise UsageError(f"retention: at most {MAX_PER_MACHINE} sources per machine")
            return catalog.add_schedule(
                Schedule(
                    name=name,
                    kind="forget",
                    next_due=first_run(every, None, clock()),
                    spec=spec,
                    every_seconds=every,
                )
            )
        if (
            found.kind != "forget"
            or found.machine is not None
            or found.spec.get("hosts") != [owner]
        ):
            raise UsageError("retention: that schedule name is taken by another schedule")
        return catalog.update_schedule(
            replace(found, spec=spec, every_seconds=every, calendar=None, enabled=True)
        )


__all__ = ["forget_spec", "register_retention", "schedule_name"]
