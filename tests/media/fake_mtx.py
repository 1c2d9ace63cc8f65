#!/usr/bin/env python3
"""A stand-in for the `mtx` program: a changer's state in a JSON file (the
`-f` device path), mtx 1.3's exact `status` text, progress lines and error
messages, and its exit status (1 on a refused move).

State: {"drives": [null | {"tag": str|null, "from": int|null}],
        "slots": [null | {"tag": str|null}], "import_export": K,
        "moves": 0, "inventories": 0}; the last K slots are import/export.
A cartridge may carry "file" (its cartridge file) and the state
"drive_files" (one path per drive): loading then points that drive's path
at the cartridge's file (a symlink, as a disk changer does) and unloading
removes the link, so the drives can be read end to end.
`moves` counts every cartridge moved, so tests can assert that a status or
an inventory moved nothing. Standard library only: it runs as a program.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

TAG_FIELD = 32  # the SCSI volume tag field, space-padded as mtx prints it


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "-f":
        print("Usage: mtx [-f <loader-dev>] command ...", file=sys.stderr)
        return 1
    path, command, args = argv[1], argv[2], argv[3:]
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except OSError as err:
        print(f"cannot open SCSI device '{path}' - {err.strerror}", file=sys.stderr)
        return 1
    if command == "eepos":
        command, args = args[1], args[2:]
    try:
        if command == "status":
            sys.stdout.write(status(path, state))
            return 0
        if command == "inventory":
            state["inventories"] = state.get("inventories", 0) + 1
        elif command == "load":
            load(state, int(args[0]), int(args[1]) if len(args) > 1 else 0)
        elif command == "unload":
            unload(state, int(args[0]) if args else None, int(args[1]) if len(args) > 1 else 0)
        elif command == "transfer":
            transfer(state, int(args[0]), int(args[1]))
        else:
            print(f"unrecognized command '{command}'", file=sys.stderr)
            return 1
    except Refused as err:
        print(str(err), file=sys.stderr)
        return 1
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.replace(tmp, path)
    return 0


class Refused(Exception):
    pass


def status(device: str, state: dict[str, Any]) -> str:
    drives, slots, ie = state["drives"], state["slots"], state["import_export"]
    header = f"{len(drives)} Drives, {len(slots)} Slots ( {ie} Import/Export )"
    out = [f"  Storage Changer {device}:{header}\n"]
    for n, d in enumerate(drives):
        line = f"Data Transfer Element {n}:"
        if d is None:
            line += "Empty"
        elif d.get("from") is None:
            line += "Full (Unknown Storage Element Loaded)"
        else:
            line += f"Full (Storage Element {d['from']} Loaded)"
        if d is not None and d.get("tag") is not None:
            line += f":VolumeTag = {d['tag'].ljust(TAG_FIELD)}"
        if d is not None and d.get("alt") is not None:
            line += f":AlternateVolumeTag = {d['alt'].ljust(TAG_FIELD)}"
        out.append(line + "\n")
    for n, s in enumerate(slots, 1):
        kind = " IMPORT/EXPORT" if n > len(slots) - ie else ""
        line = f"      Storage Element {n}{kind}:{'Full ' if s is not None else 'Empty'}"
        if s is not None and s.get("tag") is not None:
            line += f":VolumeTag={s['tag'].ljust(TAG_FIELD)}"
        if s is not None and s.get("alt") is not None:
            line += f":AlternateVolumeTag={s['alt'].ljust(TAG_FIELD)}"
        out.append(line + "\n")
    return "".join(out)


def _slot(state: dict[str, Any], slot: int) -> None:
    if not 1 <= slot <= len(state["slots"]):
        raise Refused(f"Invalid storage element {slot}")


def _drive(state: dict[str, Any], drive: int) -> None:
    if not 0 <= drive < len(state["drives"]):
        raise Refused(f"Invalid Data Transfer Element {drive}")


def load(state: dict[str, Any], slot: int, drive: int) -> None:
    _slot(state, slot)
    _drive(state, drive)
    cartridge = state["slots"][slot - 1]
    if cartridge is None:
        raise Refused(f"Storage Element {slot} is Empty")
    loaded = state["drives"][drive]
    if loaded is not None:
        raise Refused(f"Drive {drive} Full (Storage Element {loaded.get('from')} loaded)")
    print(f"Loading media from Storage Element {slot} into drive {drive}...", end="")
    state["drives"][drive] = {**cartridge, "from": slot}
    state["slots"][slot - 1] = None
    _link(state, drive, cartridge.get("file"))
    state["moves"] += 1
    print("done")


def unload(state: dict[str, Any], slot: int | None, drive: int) -> None:
    _drive(state, drive)
    loaded = state["drives"][drive]
    if loaded is None:
        raise Refused(f"Data Transfer Element {drive} is Empty")
    if slot is None:
        slot = loaded.get("from")
        if slot is None:
            raise Refused(f"No Source for tape in drive {drive}!")
    _slot(state, slot)
    if state["slots"][slot - 1] is not None:
        raise Refused(f"Storage Element {slot} is Already Full")
    print(f"Unloading drive {drive} into Storage Element {slot}...", end="")
    state["slots"][slot - 1] = {k: v for k, v in loaded.items() if k != "from"}
    state["drives"][drive] = None
    _link(state, drive, None)
    state["moves"] += 1
    print("done")


def _link(state: dict[str, Any], drive: int, target: str | None) -> None:
    paths = state.get("drive_files") or []
    if drive >= len(paths):
        return
    if os.path.lexists(paths[drive]):
        os.unlink(paths[drive])
    if target is not None:
        os.symlink(target, paths[drive])


def transfer(state: dict[str, Any], source: int, destination: int) -> None:
    _slot(state, source)
    _slot(state, destination)
    if state["slots"][source - 1] is None:
        raise Refused(f"Source Element Address {source} is Empty")
    if state["slots"][destination - 1] is not None:
        raise Refused(f"Destination Element Address {destination} is Already Full")
    state["slots"][destination - 1] = state["slots"][source - 1]
    state["slots"][source - 1] = None
    state["moves"] += 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
