"""The change journal of a directory tree: a persistent, sequence-numbered record
of changed paths (like NTFS's update sequence number journal).

The tracker (trackers/journal_tracker.py) appends; a protection cycle consumes:

1. `take_sequence()`: S, the sequence number every change made before the call
   is at or below (a barrier answered by the running tracker after it drained
   the kernel's queue; with no live tracker the journal is marked out of sync
   and that mark's number is S);
2. `changes_up_to(S)`: the relative paths recorded at or below S, or
   `OUT_OF_SYNC` when a change may be missing (queue overflow, tracker restart,
   watch limit, damaged journal): the cycle then runs the full comparison;
3. `commit(S)` once the point is durable: records at or below S are dropped
   (the file is rewritten atomically), records after S stay for the next cycle,
   and an out-of-sync mark at or below S is cleared.

Contract of the file (`journal.bin` in the journal folder; docs/format.md
"Change journal"): a header then append-only records, each framed by its
length and a CRC-32. A torn last record (a crash mid-append) is dropped; any
other damage (bad CRC, bad length, sequence not consecutive, hostile path)
ends the readable part and makes the journal out of sync, never an internal
error. Records are fsync'd before a barrier is answered, so a record at or
below a sequence a cycle read is never lost; rewrites go through a temporary
file, fsync and rename. Writers and committers serialise on `journal.lock`
(flock).
"""

from __future__ import annotations

import enum
import fcntl
import json
import os
import secrets
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from strongroom.atomic import atomic_write, sync_dir
from strongroom.errors import SourceError

MAGIC: Final = b"SRJOURN1"
_HEADER = struct.Struct(">8sQI")  # magic, base sequence, crc32(magic + base)
_FRAME = struct.Struct(">II")  # body length, crc32(body)
_BODY = struct.Struct(">QQB")  # sequence, time (ns since the epoch), kind
MAX_PATH = 65536  # bytes of one relative path; longer is damage
MAX_BODY = _BODY.size + MAX_PATH

JOURNAL = "journal.bin"
LOCK = "journal.lock"
FLAG = "out-of-sync"
MARKER = "running"
INFO = "tracker.json"
BARRIER = "barrier"
BARRIER_DONE = "barrier.done"


class Kind(enum.IntEnum):
    """What happened to a path (stored as one byte)."""

    CREATED = 1
    MODIFIED = 2
    DELETED = 3
    RENAMED_FROM = 4
    RENAMED_TO = 5
    ATTRIB = 6
    OUT_OF_SYNC = 7  # the path field holds the reason (UTF-8)


class _OutOfSync:
    """The answer of `changes_up_to` when the full comparison must run."""

    def __repr__(self) -> str:
        return "OUT_OF_SYNC"


OUT_OF_SYNC: Final = _OutOfSync()


@dataclass(frozen=True)
class Record:
    seq: int
    time_ns: int
    kind: Kind
    path: bytes  # relative to the tree, no leading '/', never '.' or '..' parts


@dataclass
class Parsed:
    """What a journal file holds: `base` (every sequence at or below it is
    committed), the good records, where they end, and why the rest is unreadable
    (`damage`, None when the file is whole; a torn tail is not damage)."""

    base: int
    records: list[Record]
    end: int  # offset just past the last good record
    damage: str | None = None

    @property
    def last(self) -> int:
        return self.records[-1].seq if self.records else self.base


def header(base: int) -> bytes:
    return _HEADER.pack(MAGIC, base, zlib.crc32(MAGIC + base.to_bytes(8, "big")))


def encode(record: Record) -> bytes:
    body = _BODY.pack(record.seq, record.time_ns, int(record.kind)) + record.path
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def path_ok(path: bytes) -> bool:
    """A relative path a record may hold: no NUL, no leading '/', no '.', '..' or
    empty parts, bounded length."""
    if not path or len(path) > MAX_PATH or b"\0" in path or path.startswith(b"/"):
        return False
    return all(part not in (b"", b".", b"..") for part in path.split(b"/"))


def parse(data: bytes) -> Parsed:
    """Parse a journal file's bytes (hostile input: bounded, never raises)."""
    if len(data) < _HEADER.size:
        return Parsed(0, [], 0, "journal header missing or torn")
    magic, base, crc = _HEADER.unpack_from(data, 0)
    if magic != MAGIC or crc != zlib.crc32(data[:16]):
        return Parsed(0, [], 0, "journal header damaged")
    records: list[Record] = []
    pos = _HEADER.size
    expect = base + 1
    while pos < len(data):
        if len(data) - pos < _FRAME.size:
            break  # torn tail
        length, crc = _FRAME.unpack_from(data, pos)
        start = pos + _FRAME.size
        if length < _BODY.size or length > MAX_BODY:
            return Parsed(base, records, pos, f"record {expect}: bad length {length}")
        if start + length > len(data):
            break  # torn tail
        body = data[start : start + length]
        if zlib.crc32(body) != crc:
            if start + length == len(data):
                break  # the last record, torn by a crash mid-write
            return Parsed(base, records, pos, f"record {expect}: checksum mismatch")
        seq, time_ns, kind = _BODY.unpack_from(body, 0)
        path = body[_BODY.size :]
        if seq != expect:
            return Parsed(base, records, pos, f"record {expect}: sequence {seq} out of order")
        try:
            kind_ = Kind(kind)
        except ValueError:
            return Parsed(base, records, pos, f"record {seq}: unknown kind {kind}")
        if kind_ != Kind.OUT_OF_SYNC and not path_ok(path):
            return Parsed(base, records, pos, f"record {seq}: invalid path")
        records.append(Record(seq, time_ns, kind_, path))
        pos = start + length
        expect += 1
    return Parsed(base, records, pos)


class Journal:
    """The journal folder of one tree (`STATE/journal`): the file, its lock, the
    out-of-sync flag, the tracker's marker and the barrier files."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / JOURNAL
        self._known: tuple[int, int] | None = None  # (inode, size) after our last write
        self._last = 0

    # --- shared --------------------------------------------------------------

    def create(self) -> None:
        """Make the folder and an empty journal (idempotent)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.locked():
            if not self.path.exists():
                _write(self.path, header(0))

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read(self) -> Parsed:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Parsed(0, [], 0, "journal missing")
        except OSError as err:
            raise SourceError(f"{self.path}: cannot read the journal: {err.strerror}") from None
        return parse(data)

    def flag(self) -> tuple[int, str] | None:
        """The out-of-sync flag: (sequence of its mark, reason), or None."""
        try:
            doc = json.loads((self.folder / FLAG).read_text())
            return int(doc["seq"]), str(doc["reason"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return (0, "out-of-sync flag unreadable")

    # --- writer (the tracker; the consumer too when no tracker answers) -------

    def append(self, changes: Iterable[tuple[Kind, bytes]]) -> int:
        """Append records for `changes` (fsync'd before returning); returns the
        last sequence. A change of kind OUT_OF_SYNC also sets the flag file."""
        with self.locked():
            return self._append_locked(list(changes))

    def mark_out_of_sync(self, reason: str) -> int:
        return self.append([(Kind.OUT_OF_SYNC, reason.encode())])

    def _append_locked(self, changes: list[tuple[Kind, bytes]]) -> int:
        self._settle_locked()
        if not changes:
            return self._last
        now = time.time_ns()
        out = bytearray()
        oos: tuple[int, str] | None = None
        seq = self._last
        for kind, path in changes:
            seq += 1
            out += encode(Record(seq, now, kind, path))
            if kind == Kind.OUT_OF_SYNC:
                oos = (seq, path.decode(errors="replace"))
        if oos is not None:
            self._set_flag(*oos)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, bytes(out))
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._known = (st.st_ino, st.st_size)
        self._last = seq
        return seq

    def _settle_locked(self) -> None:
        """Make the file end with a whole record and learn its last sequence:
        re-read only when someone else changed it since our last write (a commit
        rotated it, or this is our first write). A torn tail is cut off; a
        damaged file is started afresh with an out-of-sync mark."""
        try:
            st = os.stat(self.path)
            if self._known == (st.st_ino, st.st_size):
                return
        except FileNotFoundError:
            pass
        parsed = self.read()
        if parsed.damage is not None:
            self._restart_locked(max(parsed.last, self._last), parsed.damage)
            return
        if parsed.end != os.stat(self.path).st_size:
            os.truncate(self.path, parsed.end)
        st = os.stat(self.path)
        self._known = (st.st_ino, st.st_size)
        self._last = parsed.last

    def _restart_locked(self, base: int, reason: str) -> None:
        """A fresh journal after `base` whose first record marks it out of sync."""
        mark = Record(base + 1, time.time_ns(), Kind.OUT_OF_SYNC, reason.encode())
        self._set_flag(mark.seq, reason)
        _write(self.path, header(base) + encode(mark))
        st = os.stat(self.path)
        self._known = (st.st_ino, st.st_size)
        self._last = mark.seq

    def _set_flag(self, seq: int, reason: str) -> None:
        current = self.flag()
        if current is not None and current[0] <= seq and current[0] != 0:
            return  # an older mark is still pending: it covers this one too
        _write(self.folder / FLAG, _flag_doc(seq, reason))

    # --- consumer --------------------------------------------------------------

    def take_sequence(self, timeout: float = 10.0) -> int:
        """S for this cycle: every change made before this call is recorded at or
        below S. Asks the running tracker (it drains the kernel queue, fsyncs, and
        answers); without an answer in `timeout` seconds the journal is marked out
        of sync ("tracker not running") and that mark is S."""
        token = secrets.token_hex(8)
        done = self.folder / BARRIER_DONE
        _write(self.folder / BARRIER, token.encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = _read_answer(done)
            if answer is not None and answer[0] == token:
                return answer[1]
            time.sleep(0.01)
        (self.folder / BARRIER).unlink(missing_ok=True)
        return self.mark_out_of_sync("tracker not running: no answer to a cycle's barrier")

    def changes_up_to(self, seq: int) -> set[str] | _OutOfSync:
        """The relative paths changed at or below `seq` since the last commit (both
        names of a rename), or OUT_OF_SYNC when one may be missing."""
        flag = self.flag()
        if flag is not None and flag[0] <= seq:
            return OUT_OF_SYNC
        parsed = self.read()
        if parsed.last < seq:
            return OUT_OF_SYNC  # records the cycle was promised are gone (damage)
        paths: set[str] = set()
        for record in parsed.records:
            if record.seq > seq:
                break
            if record.kind == Kind.OUT_OF_SYNC:
                return OUT_OF_SYNC
            paths.add(os.fsdecode(record.path))
        return paths

    def commit(self, seq: int) -> None:
        """The point taken up to `seq` is durable: drop the records at or below it
        (atomic rewrite; the records after it are kept byte for byte) and clear an
        out-of-sync mark at or below it."""
        with self.locked():
            parsed = self.read()
            keep = [r for r in parsed.records if r.seq > seq]
            base = max(seq, parsed.base)
            if keep:
                base = keep[0].seq - 1
            body = b"".join(encode(r) for r in keep)
            if parsed.damage is not None and parsed.last >= seq:
                # Records after the damage are lost; they may be after `seq`.
                last = keep[-1].seq if keep else base
                reason = f"journal damaged: {parsed.damage}"
                mark = Record(last + 1, time.time_ns(), Kind.OUT_OF_SYNC, reason.encode())
                body += encode(mark)
                _write(self.folder / FLAG, _flag_doc(mark.seq, reason))
            _write(self.path, header(base) + body)
            flag = self.flag()
            if flag is not None and flag[0] <= seq:
                (self.folder / FLAG).unlink(missing_ok=True)
                sync_dir(self.folder)
                pending = [r for r in keep if r.kind == Kind.OUT_OF_SYNC]
                if pending:  # a later mark the cleared flag was covering
                    self._set_flag(pending[0].seq, pending[0].path.decode(errors="replace"))
            self._known = None

    def status(self) -> dict[str, object]:
        """For `strongroom journal status` and `status`: in sync or not, pending
        records, the tracker's backend and whether it is running."""
        parsed = self.read()
        flag = self.flag()
        info: dict[str, object] = {}
        try:
            info = json.loads((self.folder / INFO).read_text())
        except (OSError, ValueError):
            pass
        return {
            "in_sync": flag is None and parsed.damage is None,
            "reason": flag[1] if flag else parsed.damage,
            "committed": parsed.base,
            "last": parsed.last,
            "pending": len(parsed.records),
            "backend": info.get("backend"),
            **{k: v for k, v in info.items() if k == "fanotify_unavailable"},
            "tracker_running": (self.folder / MARKER).exists(),
        }


def _write(path: str | os.PathLike[str], data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _flag_doc(seq: int, reason: str) -> bytes:
    return json.dumps({"seq": seq, "reason": reason}).encode()


def _read_answer(path: Path) -> tuple[str, int] | None:
    try:
        token, _, seq = path.read_text().partition(" ")
        return token, int(seq)
    except (OSError, ValueError):
        return None
