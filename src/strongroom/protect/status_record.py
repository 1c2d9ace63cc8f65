"""The status record of a protected source: `status.json` in its state folder.

The cycle code writes it (after every cycle, failed or not; the tracker when
it loses or regains sync); `strongroom status` reads it. Replaced whole and
atomically (strongroom/atomic.py), so a reader sees the old or the new record,
never half. Version 1, every field (docs/protect.md, "The status record"):

    {"version": 1,
     "source": "db",                        # the protected source's name
     "updated": "2026-11-25T14:05:00+00:00",
     "tracker": {"in_sync": true, "reason": ""},   # why not, when false
     "cycles": [                             # the last cycles, oldest first (<= 32)
        {"started": ISO, "finished": ISO, "ok": true,
         "point": "ab12..." | null,          # the point it made (null: nothing / failed)
         "bytes_shipped": 123, "bytes_changed": 456,
         "consistency": "application-consistent" | "crash-consistent" | "",
         "reason": "", "error": ""}],
     "last_error": {"time": ISO, "message": "one line"} | null}

Hostile until checked: the file is bounded (1 MiB), every field's type and
range is checked, and a bad record raises StatusRecordError with one line.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from strongroom.atomic import atomic_write
from strongroom.errors import StrongroomError

STATUS_FILE = "status.json"
STATUS_VERSION = 1
MAX_CYCLES = 32
_MAX_BYTES = 1 << 20
_MAX_TEXT = 1000
_MAX_COUNT = (1 << 63) - 1


class StatusRecordError(StrongroomError):
    """A status record is unreadable or malformed."""


@dataclass
class CycleStatus:
    started: datetime
    finished: datetime
    ok: bool = True
    point: str | None = None  # the point id it made
    bytes_shipped: int = 0
    bytes_changed: int = 0
    consistency: str = ""  # the point's consistency field ("" without a point)
    reason: str = ""  # why only crash-consistent
    error: str = ""  # a failed cycle's one-line error

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["started"], doc["finished"] = self.started.isoformat(), self.finished.isoformat()
        return doc


@dataclass
class StatusRecord:
    source: str
    updated: datetime
    in_sync: bool = True
    sync_reason: str = ""  # why the tracker is out of sync
    cycles: list[CycleStatus] = field(default_factory=list)  # oldest first
    last_error: tuple[datetime, str] | None = None

    @property
    def last_cycle(self) -> CycleStatus | None:
        return self.cycles[-1] if self.cycles else None

    def to_doc(self) -> dict[str, Any]:
        return {
            "version": STATUS_VERSION,
            "source": self.source,
            "updated": self.updated.isoformat(),
            "tracker": {"in_sync": self.in_sync, "reason": self.sync_reason},
            "cycles": [c.to_doc() for c in self.cycles[-MAX_CYCLES:]],
            "last_error": None
            if self.last_error is None
            else {"time": self.last_error[0].isoformat(), "message": self.last_error[1]},
        }


def status_path(state_folder: str) -> str:
    return os.path.join(state_folder, STATUS_FILE)


def write_status(state_folder: str, record: StatusRecord) -> None:
    """Replace the record atomically and durably (the folder must exist)."""
    data = json.dumps(record.to_doc(), indent=1).encode()
    atomic_write(status_path(state_folder), lambda f: f.write(data))


def read_status(state_folder: str) -> StatusRecord | None:
    """The record, or None if the folder has none yet; StatusRecordError if bad."""
    path = status_path(state_folder)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StatusRecordError(f"status record {path}: {err.strerror}") from None
    if len(data) > _MAX_BYTES:
        raise StatusRecordError(f"status record {path}: larger than 1 MiB")
    try:
        return _record(json.loads(data))
    except (ValueError, TypeError, KeyError, RecursionError) as err:
        raise StatusRecordError(f"status record {path} is malformed: {err}") from None


def record_cycle(
    state_folder: str,
    source: str,
    cycle: CycleStatus,
    *,
    in_sync: bool = True,
    sync_reason: str = "",
) -> StatusRecord:
    """Append one cycle (keeping the last MAX_CYCLES) and the tracker's state;
    a failed cycle also becomes `last_error`. A malformed old record is
    replaced (it is a report, not a state the cycle depends on)."""
    try:
        record = read_status(state_folder) or StatusRecord(source, cycle.finished)
    except StatusRecordError:
        record = StatusRecord(source, cycle.finished)
    record.updated = cycle.finished
    record.cycles = [*record.cycles, cycle][-MAX_CYCLES:]
    record.in_sync, record.sync_reason = in_sync, sync_reason
    if not cycle.ok:
        record.last_error = (cycle.finished, cycle.error or "the cycle failed")
    write_status(state_folder, record)
    return record


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise ValueError(f"{what} is not a string of at most {_MAX_TEXT} characters")
    return value


def _count(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_COUNT:
        raise ValueError(f"{what} is not a count")
    return value


def _time(value: Any, what: str) -> datetime:
    when = datetime.fromisoformat(_text(value, what))
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what} has no UTC offset")
    return when


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} is not true or false")
    return value


def _record(doc: Any) -> StatusRecord:
    if not isinstance(doc, dict):
        raise TypeError("not an object")
    if doc.get("version") != STATUS_VERSION:
        raise ValueError(f"version {str(doc.get('version'))[:20]!r} is not {STATUS_VERSION}")
    tracker = doc["tracker"]
    if not isinstance(tracker, dict):
        raise TypeError("tracker is not an object")
    cycles = doc["cycles"]
    if not isinstance(cycles, list) or len(cycles) > MAX_CYCLES:
        raise ValueError(f"cycles is not a list of at most {MAX_CYCLES}")
    error = doc.get("last_error")
    if error is not None and not isinstance(error, dict):
        raise TypeError("last_error is not an object")
    return StatusRecord(
        source=_text(doc["source"], "source"),
        updated=_time(doc["updated"], "updated"),
        in_sync=_bool(tracker["in_sync"], "tracker.in_sync"),
        sync_reason=_text(tracker.get("reason", ""), "tracker.reason"),
        cycles=[_cycle(c, i) for i, c in enumerate(cycles)],
        last_error=None
        if error is None
        else (_time(error["time"], "last_error.time"), _text(error["message"], "last_error")),
    )


def _cycle(doc: Any, i: int) -> CycleStatus:
    at = f"cycles[{i}]"
    if not isinstance(doc, dict):
        raise TypeError(f"{at} is not an object")
    point = doc.get("point")
    if point is not None and not (
        isinstance(point, str) and len(point) == 64 and all(c in "0123456789abcdef" for c in point)
    ):
        raise ValueError(f"{at}.point is not a point id")
    return CycleStatus(
        started=_time(doc["started"], f"{at}.started"),
        finished=_time(doc["finished"], f"{at}.finished"),
        ok=_bool(doc.get("ok", True), f"{at}.ok"),
        point=point,
        bytes_shipped=_count(doc.get("bytes_shipped", 0), f"{at}.bytes_shipped"),
        bytes_changed=_count(doc.get("bytes_changed", 0), f"{at}.bytes_changed"),
        consistency=_text(doc.get("consistency", ""), f"{at}.consistency"),
        reason=_text(doc.get("reason", ""), f"{at}.reason"),
        error=_text(doc.get("error", ""), f"{at}.error"),
    )
