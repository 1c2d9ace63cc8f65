"""The record of one attached protected volume: what `detach`, `status` and the cycle find.

One small JSON file per volume under `DATA/strongroom/volumes/<id>.json`
(`id`: a digest of the image's real path), replaced atomically
(`atomic.atomic_write`) after every step of `attach`, so a crash half way
leaves a record of exactly the pieces that exist (daemon, loop device, mount)
and `detach` can undo them.

The file is local state, but it names devices to detach and processes to stop:
it is checked on read like anything else (`from_doc`): a loop device must be
`/dev/loopN`, a pid a positive integer, paths absolute without NUL, the run
folder one strongroom makes (`strongroom-vol-` in its name), and a record that
fails a check is refused with one line naming the file, never acted on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from strongroom.atomic import atomic_write
from strongroom.config import data_home
from strongroom.errors import SourceError, UsageError

VERSION = 1
FORMATS = ("qcow2", "raw")
FILE_SYSTEMS = ("ext4", "ext3", "ext2", "xfs", "btrfs")
NODE = "vol"  # the image's node on the daemon (the bitmaps live there)
RUN_PREFIX = "strongroom-vol-"
_LOOP = re.compile(r"^/dev/loop[0-9]{1,6}$")
_ID = re.compile(r"^[0-9a-f]{16}$")
_MAX_RECORD = 64 * 1024
_MAX_TEXT = 4096


def volume_id(image: str) -> str:
    """The volume's name in the state folder: a digest of the image's real path."""
    return hashlib.blake2s(os.path.realpath(image).encode(), digest_size=8).hexdigest()


def volumes_dir() -> Path:
    return data_home() / "strongroom" / "volumes"


@dataclass
class VolumeState:
    """One attached volume. Empty strings / 0 mean "that piece does not exist"."""

    image: str
    format: str
    mount: str
    fs: str = "ext4"
    run_dir: str = ""  # sockets, the export file, the daemon's pid file and log
    pid: int = 0  # qemu-storage-daemon
    loop: str = ""  # /dev/loopN on the export file
    mounted: bool = False  # the file system was mounted by attach
    attached: str = ""  # ISO time
    in_sync: bool = True  # False: the next cycle compares every block
    sync_note: str = ""  # why it is out of sync
    last_point: str = ""
    last_error: str = ""
    held_ms: float = 0.0  # writers held by the last cycle (freeze to thaw)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, bounded by the record size

    @property
    def id(self) -> str:
        return volume_id(self.image)

    @property
    def qmp(self) -> str:
        return os.path.join(self.run_dir, "qmp.sock")

    @property
    def nbd(self) -> str:
        return os.path.join(self.run_dir, "nbd.sock")

    @property
    def nbd_uri(self) -> str:
        return f"nbd+unix:///?socket={self.nbd}"

    @property
    def export(self) -> str:
        """The FUSE export: a regular file that is the volume's virtual disk."""
        return os.path.join(self.run_dir, "export.img")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.run_dir, "daemon.pid")

    @property
    def log_file(self) -> str:
        return os.path.join(self.run_dir, "daemon.log")

    @property
    def scratch(self) -> str:
        """Where the fleecing overlays go: beside the record, never on the volume."""
        return str(volumes_dir() / "scratch")

    def to_doc(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_doc(cls, doc: Any, where: str) -> VolumeState:
        """Decode and check a record; SourceError naming `where` if anything is off."""

        def bad(why: str) -> SourceError:
            return SourceError(f"volume record {where}: {why}")

        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise bad("not a version 1 volume record")
        texts: tuple[str, ...] = ("image", "format", "mount", "fs", "run_dir", "loop")
        texts += ("attached", "sync_note", "last_point", "last_error")
        for key in texts:
            value = doc.get(key, "")
            if type(value) is not str or len(value) > _MAX_TEXT or "\0" in value:
                raise bad(f"{key} is not a short string")
        for key in ("image", "mount"):  # mount: "" while `create` makes the file system
            if (doc[key] or key == "image") and (
                not os.path.isabs(doc[key]) or ".." in doc[key].split("/")
            ):
                raise bad(f"{key} is not an absolute path")
        if doc["format"] not in FORMATS:
            raise bad(f"format {doc['format'][:20]!r} is not one of {', '.join(FORMATS)}")
        if doc.get("fs", "ext4") not in FILE_SYSTEMS:
            raise bad("unknown file system")
        run_dir = doc.get("run_dir", "")
        if run_dir and (
            not os.path.isabs(run_dir)
            or ".." in run_dir.split("/")
            or not os.path.basename(run_dir).startswith(RUN_PREFIX)
        ):
            raise bad("the run folder is not one strongroom makes")
        loop = doc.get("loop", "")
        if loop and not _LOOP.match(loop):
            raise bad("the loop device is not /dev/loopN")
        pid = doc.get("pid", 0)
        if type(pid) is not int or not 0 <= pid < 1 << 22:
            raise bad("pid is not a process id")
        for key in ("mounted", "in_sync"):
            if type(doc.get(key, True)) is not bool:
                raise bad(f"{key} is not true or false")
        held = doc.get("held_ms", 0.0)
        if type(held) not in (int, float):
            raise bad("held_ms is not a number")
        extra = doc.get("extra", {})
        if not isinstance(extra, dict):
            raise bad("extra is not a map")
        return cls(
            image=doc["image"],
            format=doc["format"],
            mount=doc["mount"],
            fs=doc.get("fs", "ext4"),
            run_dir=run_dir,
            pid=pid,
            loop=loop,
            mounted=doc.get("mounted", False),
            attached=doc.get("attached", ""),
            in_sync=doc.get("in_sync", True),
            sync_note=doc.get("sync_note", ""),
            last_point=doc.get("last_point", ""),
            last_error=doc.get("last_error", ""),
            held_ms=float(held),
            extra=extra,
        )


def record_path(image: str) -> Path:
    return volumes_dir() / f"{volume_id(image)}.json"


def save_state(state: VolumeState) -> None:
    """Replace the volume's record atomically and durably."""
    path = record_path(state.image)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = json.dumps(state.to_doc(), indent=1, sort_keys=True).encode()
    if len(data) > _MAX_RECORD:
        raise SourceError(f"volume record {path}: larger than {_MAX_RECORD} bytes")
    atomic_write(path, lambda f: f.write(data))


def _read(path: Path) -> VolumeState:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_RECORD + 1)
    except OSError as err:
        raise SourceError(f"volume record {path}: {err.strerror}") from None
    if len(data) > _MAX_RECORD:
        raise SourceError(f"volume record {path}: larger than {_MAX_RECORD} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise SourceError(f"volume record {path}: not JSON") from None
    state = VolumeState.from_doc(doc, str(path))
    if path.stem != state.id:
        raise SourceError(f"volume record {path}: names another image ({state.image})")
    return state


def load_state(image: str) -> VolumeState | None:
    """The record of `image`, None if it has none."""
    path = record_path(image)
    if not path.exists():
        return None
    return _read(path)


def iter_states() -> Iterator[VolumeState | SourceError]:
    """Every record (a damaged one as the error that describes it), by id."""
    folder = volumes_dir()
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        if not _ID.match(path.stem):
            continue
        try:
            yield _read(path)
        except SourceError as err:
            yield err


def remove_state(state: VolumeState) -> None:
    try:
        os.unlink(record_path(state.image))
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def volume_lock(image: str, wait: float = 120.0) -> Iterator[None]:
    """One command at a time on a volume (attach, detach, a cycle): the others
    wait up to `wait` seconds, then fail with "busy". The lock is an flock on
    a file beside the record, so a killed holder releases it."""
    path = volumes_dir() / f"{volume_id(image)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise UsageError(
                        f"volume {image} is busy (another attach, detach or cycle)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
