"""Protected volumes: create, attach, detach, status.

`attach IMAGE --mount DIR` puts the image behind QEMU's block layer and mounts
its file system: a qemu-storage-daemon serves the image through a FUSE export
(a regular file in a private run folder), a loop device sits on that file, and
the file system is mounted from the loop device. Every write then passes
through the block layer, where the volume's cycles keep a persistent dirty
bitmap (services/volume_cycle.py): the filter driver's record of changed
blocks, with no kernel module.

Each step is recorded (sources/volume_state.py) before the next one starts, so
whatever exists can be found again: `detach` undoes the pieces in reverse
(unmount, loop device, daemon with QMP `quit`, which closes the image
cleanly), tolerates pieces that are already gone (a daemon that died, a loop
device someone detached) and says what it found. A busy file system is never
unmounted lazily: detach stops there, and changes nothing.

`create` makes the image (qemu-img) and the file system on it: it serves the
image the same way for a moment, runs mkfs on the loop device and stops. An
attach therefore never formats anything: an image without a file system fails
to mount, and nothing is written to it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom.errors import SourceError, StrongroomError, UsageError
from strongroom.sources.images import OpenRules, probe_image
from strongroom.sources.qemu_img import QEMU_IMG, need_tool
from strongroom.sources.qmp import QmpClient
from strongroom.sources.volume import (
    attach_loop,
    daemon_alive,
    detach_loop,
    fuse_mounted,
    loop_backing,
    make_fs,
    mount_fs,
    mount_of,
    run,
    start_daemon,
    stop_daemon,
    unmount,
)
from strongroom.sources.volume_state import (
    FILE_SYSTEMS,
    FORMATS,
    NODE,
    RUN_PREFIX,
    VolumeState,
    iter_states,
    load_state,
    remove_state,
    save_state,
    volume_id,
    volume_lock,
)

MIN_SIZE = 16 << 20  # room for a file system's own structures
MAX_SIZE = 64 << 40


@dataclass
class DetachResult:
    state: VolumeState
    done: list[str] = field(default_factory=list)  # what detach undid
    found: list[str] = field(default_factory=list)  # pieces that were already gone


def _check_choice(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise UsageError(f"{what} {value!r}: use {', '.join(allowed)}")


def create_volume(image: str, size: int, fmt: str = "qcow2", fs: str = "ext4") -> VolumeState:
    """Make a new image of `size` bytes and a file system on it (nothing attached after)."""
    _check_choice(fmt, FORMATS, "--format")
    _check_choice(fs, FILE_SYSTEMS, "--fs")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UsageError(f"--size {size}: a volume has {MIN_SIZE >> 20} MiB to 64 TiB")
    if os.path.lexists(image):
        raise UsageError(f"{image} exists: create makes a new image (attach an existing one)")
    folder = os.path.dirname(os.path.abspath(image))
    if not os.path.isdir(folder):
        raise UsageError(f"{folder}: no such folder")
    run(
        [need_tool(QEMU_IMG), "create", "-q", "-f", fmt, image, str(size)],
        f"{image}: cannot create the image",
    )
    real = os.path.realpath(image)
    state = VolumeState(image=real, format=fmt, mount="", fs=fs)
    try:
        with volume_lock(real):
            _serve(state)
            try:
                make_fs(state.loop, fs)
            finally:
                _undo(state, DetachResult(state))
    except BaseException:
        os.unlink(real)  # ours, half made
        raise
    return state


def attach_volume(image: str, mount: str, fs: str = "ext4", fmt: str | None = None) -> VolumeState:
    """Serve `image` through the daemon and mount its file system on `mount`.
    On failure every piece made is undone, and the error says which step failed."""
    _check_choice(fs, FILE_SYSTEMS, "--fs")
    if not os.path.isfile(image):
        raise UsageError(f"{image}: no such image file")
    if not os.path.isdir(mount):
        raise UsageError(f"--mount {mount}: no such folder")
    real, where = os.path.realpath(image), os.path.realpath(mount)
    if mount_of(where) is not None:
        raise UsageError(f"--mount {mount}: something is already mounted there")
    if fmt is None:
        fmt = probe_image(real, rules=OpenRules()).format
    _check_choice(fmt, FORMATS, "the image's format")
    with volume_lock(real):
        old = load_state(real)
        if old is not None:
            raise UsageError(
                f"{image} is already attached (at {old.mount or 'no mount'}): "
                f"'strongroom volume detach {image}' first"
            )
        state = VolumeState(
            image=real,
            format=fmt,
            mount=where,
            fs=fs,
            attached=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            _serve(state)
            mount_fs(state.loop, where, fs)
            state.mounted = True
            save_state(state)
        except BaseException:
            _undo(state, DetachResult(state))
            raise
    return state


def _serve(state: VolumeState) -> None:
    """Daemon, then loop device; the record is saved after each."""
    state.run_dir = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{volume_id(state.image)[:8]}-")
    save_state(state)
    state.pid = start_daemon(state)
    save_state(state)
    state.loop = attach_loop(state.export)
    save_state(state)


def find_volume(target: str) -> VolumeState:
    """The attached volume named by its image or its mount folder."""
    if os.path.isfile(target):
        state = load_state(target)
        if state is not None:
            return state
    where = os.path.realpath(target)
    for found in iter_states():
        if isinstance(found, VolumeState) and (found.mount == where or found.image == where):
            return found
    raise UsageError(f"{target}: no attached volume has this image or mount folder")


def detach_volume(target: str) -> DetachResult:
    """Unmount, detach the loop device, stop the daemon, forget the record.

    A busy file system stops everything (UsageError; nothing else is undone).
    Pieces already gone are reported in `found`."""
    state = find_volume(target)
    with volume_lock(state.image):
        state = load_state(state.image) or state
        result = DetachResult(state)
        _undo(state, result)
    return result


def _undo(state: VolumeState, result: DetachResult) -> None:
    done, found = result.done, result.found
    if state.mounted and state.mount:
        mounted = mount_of(state.mount)
        if mounted is None:
            found.append(f"{state.mount} was not mounted")
        elif mounted[1] != state.loop:
            found.append(f"{state.mount} holds another file system ({mounted[1]}): left alone")
        else:
            try:
                unmount(state.mount)
            except SourceError as err:
                raise UsageError(f"{err} (stop the programs using it, then detach again)") from None
            done.append(f"unmounted {state.mount}")
        state.mounted = False
        save_state(state)
    if state.loop:
        backing = loop_backing(state.loop)
        if backing is None:
            found.append(f"loop device {state.loop} was gone")
        elif backing != state.export:
            found.append(f"loop device {state.loop} now serves {backing}: left alone")
        else:
            detach_loop(state.loop)
            done.append(f"detached {state.loop}")
        state.loop = ""
        save_state(state)
    if state.pid:
        if daemon_alive(state):
            how = stop_daemon(state)
            done.append(f"stopped the daemon (pid {state.pid}, {how})")
        else:
            found.append(
                f"the daemon (pid {state.pid}) was not running: the image was not closed"
                " cleanly, so its dirty bitmaps are inconsistent and the next cycle"
                " compares every block"
            )
        state.pid = 0
        save_state(state)
    if state.run_dir:
        if fuse_mounted(state.export):
            unmount(state.export, lazy=True)  # the dead daemon's export: nobody can use it
            done.append("removed the dead daemon's FUSE export")
        if os.path.basename(state.run_dir).startswith(RUN_PREFIX):
            shutil.rmtree(state.run_dir, ignore_errors=True)
    remove_state(state)


# --- status ----------------------------------------------------------------------


def volume_status(state: VolumeState) -> dict[str, Any]:
    """What `volume status` shows: the pieces, the tracker, the last cycle."""
    alive = daemon_alive(state)
    loop_ok = bool(state.loop) and loop_backing(state.loop) == state.export
    mounted = mount_of(state.mount) if state.mount else None
    problems = []
    if not alive:
        problems.append(f"the daemon (pid {state.pid}) is not running: detach, then attach again")
    if not loop_ok:
        problems.append(f"the loop device {state.loop or '(none)'} is gone")
    if state.mounted and (mounted is None or mounted[1] != state.loop):
        problems.append(f"{state.mount} is no longer mounted from the volume")
    bitmaps: list[dict[str, Any]] | None = None
    if alive:
        try:
            bitmaps = node_bitmaps(state)
        except StrongroomError as err:
            problems.append(f"bitmaps unknown: {err}")
    return {
        "image": state.image,
        "format": state.format,
        "mount": state.mount,
        "fs": state.fs,
        "attached": state.attached,
        "daemon": {"pid": state.pid, "running": alive},
        "loop": {"device": state.loop, "present": loop_ok},
        "mounted": mounted is not None and mounted[1] == state.loop,
        "bitmaps": bitmaps,
        "in_sync": state.in_sync and alive,
        "sync_note": state.sync_note or ("" if alive else "the daemon is not running"),
        "last_point": state.last_point,
        "last_error": state.last_error,
        "held_ms": state.held_ms,
        "problems": problems,
    }


def node_bitmaps(state: VolumeState, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The dirty bitmaps on the volume's node (name, dirty bytes, recording...)."""
    with QmpClient(state.qmp, timeout=timeout) as qmp:
        nodes = qmp.execute("query-named-block-nodes", {"flat": True}) or []
    for node in nodes:
        if node.get("node-name") == NODE:
            return [
                {
                    "name": str(b.get("name", "")),
                    "dirty_bytes": int(b.get("count", 0)),
                    "granularity": int(b.get("granularity", 0)),
                    "recording": bool(b.get("recording", True)),
                    "persistent": bool(b.get("persistent", False)),
                    "inconsistent": bool(b.get("inconsistent", False)),
                }
                for b in node.get("dirty-bitmaps", []) or []
                if b.get("name")
            ]
    raise SourceError(f"{state.image}: the daemon serves no node {NODE!r}")


def all_volumes() -> tuple[list[VolumeState], list[str]]:
    """Every attached volume, and one line per record that could not be read."""
    states: list[VolumeState] = []
    errors: list[str] = []
    for found in iter_states():
        if isinstance(found, VolumeState):
            states.append(found)
        else:
            errors.append(str(found))
    return states, errors
