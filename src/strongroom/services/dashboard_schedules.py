"""What the dashboard's Schedules page shows and what its form means: the
catalog's schedules with their next run, and an administrator's form read
into the arguments of `Operations.add_schedule` (the same checks as `POST
/api/v1/schedules`: this module only translates, it never loosens).

The form names a kind of work (`WHATS`), the fields of that kind, and when:
an interval (`every_count` of `every_unit`: minutes, hours or days; at
least 1 minute, as the scheduler's own bound says) or a calendar time
(`day`: `daily` or mon..sun, `time`: HH:MM, UTC). Lists are typed one a
line (paths, excludes) or separated by commas (tags, hosts); empty lines
and blanks around items are dropped, everything else is passed on for the
spec checks (services/agent_jobs.py, services/server_jobs.py) to judge.
Every refusal is one UsageError line that never echoes a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from strongroom.catalog import Schedule
from strongroom.errors import UsageError

# what the form schedules: (value, label, the job kind, run by a machine's agent)
WHATS = (
    ("files", "Files backup", "backup", True),
    ("image", "Disk image backup", "backup", True),
    ("vm", "VM backup", "backup", True),
    ("forget", "Forget by policy", "forget", False),
    ("prune", "Prune", "prune", False),
    ("copy", "Copy the newest points to media", "copy-to-media", False),
)
UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
DAYS = ("daily", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
KEEPS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
GROUPS = ("host,paths", "host", "paths", "tags", "host,tags", "host,paths,tags", "")
IMAGE_TRACKERS = ("auto", "compare", "none", "bitmap", "overlay")
VM_TRACKERS = ("auto", "compare", "none")
MAX_LINES = 1000  # items of one list field, before the spec's own (smaller) bounds
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_COUNT = re.compile(r"[0-9]{1,9}")

Fields = Mapping[str, list[str]]


@dataclass(frozen=True)
class NewSchedule:
    """A form read: the arguments of `Operations.add_schedule`."""

    name: str
    kind: str
    spec: dict[str, Any]
    machine: str | None
    every: int | None = None
    calendar: str | None = None


@dataclass(frozen=True)
class ScheduleRow:
    schedule: Schedule
    what: str = field(default="")

    @property
    def when(self) -> str:
        return when_text(self.schedule)


def _one(form: Fields, name: str) -> str:
    values = form.get(name)
    return values[0].strip() if values else ""


def _name(form: Fields, name: str, what: str) -> str:
    """A name field, refused when longer than any name (never cut to
    another's: a schedule, machine or VM of the first 64 characters)."""
    text = _one(form, name)
    if len(text) > 64:
        raise UsageError(f"{what} is at most 64 characters")
    return text


def _lines(form: Fields, name: str) -> list[str]:
    items = [s.strip() for s in _one(form, name).splitlines()]
    return [s for s in items if s][:MAX_LINES]


def _commas(form: Fields, name: str) -> list[str]:
    items = [s.strip() for s in _one(form, name).split(",")]
    return [s for s in items if s][:MAX_LINES]


def _checked(form: Fields, name: str) -> bool:
    return _one(form, name) in ("on", "true", "1")


def _count(form: Fields, name: str, what: str) -> int:
    text = _one(form, name) or "0"
    if not _COUNT.fullmatch(text):
        raise UsageError(f"{what} is a whole number")
    return int(text)


def read_when(form: Fields) -> tuple[int | None, str | None]:
    """(every seconds, None) or (None, calendar) of the form's `when`."""
    if _one(form, "when") == "calendar":
        day, time = _one(form, "day") or "daily", _one(form, "time")
        if day not in DAYS:
            raise UsageError("the day is 'daily' or one of mon..sun")
        if not _TIME.fullmatch(time):
            raise UsageError("the time is HH:MM (UTC)")
        return None, f"daily {time}" if day == "daily" else f"weekly {day} {time}"
    unit = UNITS.get(_one(form, "every_unit") or "hours")
    if unit is None:
        raise UsageError("the interval is in minutes, hours or days")
    count = _count(form, "every_count", "the interval")
    if count < 1:
        raise UsageError("the interval is at least 1")
    return count * unit, None


def read_schedule(form: Fields) -> NewSchedule:
    """The schedule an administrator's form asks for (UsageError: one line)."""
    what = _one(form, "what")
    found = next((w for w in WHATS if w[0] == what), None)
    if found is None:
        raise UsageError("choose what to schedule")
    _, _, kind, on_agent = found
    machine = _name(form, "machine", "a machine name") if on_agent else None
    if on_agent and not machine:
        raise UsageError("choose the machine whose agent runs it")
    every, calendar = read_when(form)
    spec = _SPECS[what](form)
    return NewSchedule(_name(form, "name", "a schedule name"), kind, spec, machine, every, calendar)


def _files_spec(form: Fields) -> dict[str, Any]:
    return {
        "paths": _lines(form, "paths"),
        "excludes": _lines(form, "excludes"),
        "tags": _commas(form, "tags"),
        "one_file_system": _checked(form, "one_file_system"),
    }


def _image_spec(form: Fields) -> dict[str, Any]:
    tracker = _one(form, "changed_since") or "auto"
    if tracker not in IMAGE_TRACKERS:
        raise UsageError(f"changed since is one of {', '.join(IMAGE_TRACKERS)}")
    bitmap = _one(form, "bitmap")
    if bitmap and tracker != "bitmap":
        raise UsageError("a bitmap name is given with 'changed since: bitmap' only")
    spec: dict[str, Any] = {
        "kind": "image",
        "source": _one(form, "source"),
        "changed_since": f"bitmap:{bitmap}" if bitmap else tracker,
        "tags": _commas(form, "tags"),
    }
    for name in ("qmp", "node", "scratch"):  # empty: not given
        if _one(form, name):
            spec[name] = _one(form, name)
    if _checked(form, "allow_backing"):
        spec["allow_backing"] = True
    return spec


def _vm_spec(form: Fields) -> dict[str, Any]:
    tracker = _one(form, "changed_since") or "auto"
    if tracker not in VM_TRACKERS:
        raise UsageError(f"changed since is one of {', '.join(VM_TRACKERS)}")
    return {"kind": "vm", "vm": _name(form, "vm", "a VM name"), "changed_since": tracker,
            "tags": _commas(form, "tags")}  # fmt: skip


def _forget_spec(form: Fields) -> dict[str, Any]:
    spec: dict[str, Any] = {k: _count(form, k, k.replace("_", " ")) for k in KEEPS}
    group = _one(form, "group_by")
    if group not in GROUPS:
        raise UsageError("group by is one of the listed groups")
    spec |= {
        "hosts": _commas(form, "hosts"),
        "paths": _lines(form, "paths"),
        "tags": _commas(form, "tags"),
        "group_by": group,
        "prune": _checked(form, "prune"),
    }
    return spec


def _copy_spec(form: Fields) -> dict[str, Any]:
    """The newest point of each source (narrowed by hosts, paths) to a pool."""
    return {"pool": _one(form, "pool"), "latest": True, "hosts": _commas(form, "hosts"),
            "paths": _lines(form, "paths")}  # fmt: skip


def _prune_spec(form: Fields) -> dict[str, Any]:
    percent = _count(form, "max_unused", "the unused share")
    if percent > 100:
        raise UsageError("the unused share is 0 to 100 percent")
    return {"max_unused": percent / 100}


_SPECS = {"files": _files_spec, "image": _image_spec, "vm": _vm_spec, "forget": _forget_spec,
          "prune": _prune_spec, "copy": _copy_spec}  # fmt: skip


def when_text(schedule: Schedule) -> str:
    """`every 2 h`, `every 90 min`, `daily 02:30 UTC`."""
    every = schedule.every_seconds
    if every is None:
        return f"{schedule.calendar} UTC"
    for unit, seconds in (("d", 86400), ("h", 3600), ("min", 60)):
        if every % seconds == 0:
            return f"every {every // seconds} {unit}"
    return f"every {every} s"


def what_text(schedule: Schedule) -> str:
    """One line of what a schedule runs (its spec's main fields)."""
    spec = schedule.spec
    if schedule.kind == "backup":
        kind = spec.get("kind", "files")
        if kind == "image":
            return f"image backup of {spec.get('source', '')} ({spec.get('changed_since')})"
        if kind == "vm":
            return f"VM backup of {spec.get('vm', '')} ({spec.get('changed_since')})"
        return "files backup of " + ", ".join(str(p) for p in spec.get("paths", [])[:8])
    if schedule.kind == "forget":
        keep = ", ".join(f"{k.removeprefix('keep_')} {spec[k]}" for k in KEEPS if spec.get(k))
        return (f"forget keeping {keep}" if keep else "forget") + (
            " then prune" if spec.get("prune") else "")  # fmt: skip
    if schedule.kind == "copy-to-media":
        return f"copy the newest points to pool {spec.get('pool', '')}"
    if schedule.kind == "prune":
        return f"prune (at most {round(float(spec.get('max_unused', 0)) * 100)} % unused)"
    return schedule.kind


def schedule_rows(schedules: list[Schedule]) -> list[ScheduleRow]:
    """By next run, the paused ones last."""
    ordered = sorted(schedules, key=lambda s: (not s.enabled, s.next_due, s.name))
    return [ScheduleRow(s, what_text(s)) for s in ordered]


__all__ = ["DAYS", "GROUPS", "IMAGE_TRACKERS", "KEEPS", "UNITS", "VM_TRACKERS", "WHATS",
           "NewSchedule", "ScheduleRow", "read_schedule", "read_when", "schedule_rows",
           "what_text", "when_text"]  # fmt: skip
