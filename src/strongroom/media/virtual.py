"""The virtual library: a changer in a folder, the embedded default.

`data_home()/strongroom/libraries/NAME/` holds:

- `state.json`: the layout (storage slots, import/export slots, drives), what
  is in every element (a cartridge id, and for a drive the slot it came
  from), every cartridge's barcode and capacity, the cartridges taken out of
  the library (the shelf), and a count of robot moves. Replaced atomically
  (atomic.py) under an exclusive lock on `lock`, so two processes moving
  cartridges never lose a move.
- `cartridges/ID.tape`: one file per cartridge in the library, with tape
  semantics (virtual_drive.py). The id is random: a barcode is a label,
  which may be absent or swapped, not an identity.
- `outside/ID.tape`: cartridges exported from the library, kept so that
  importing the same barcode brings back the same cartridge, data and all
  (known media removed and returned).

Numbering follows mtx: storage slots 1..S, then import/export slots S+1..S+K,
drives from 0. Moves are refused with mtx's own reasons (a full destination,
an empty source), and a refused move changes nothing.

`import_cartridges` is the operator putting cartridges in the import/export
slots (new blank ones, or ones from the shelf); moving them into storage
slots is then a `transfer`, as with a real robot. `export_cartridges` moves
each to a free import/export slot (a robot move) and takes it out.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strongroom.atomic import atomic_write
from strongroom.config import data_home
from strongroom.errors import ChangerError, DriveError, MediaNotFound, NoMedium
from strongroom.media.changer import MAX_BARCODE, ChangerStatus, Element, ElementKind
from strongroom.media.drive import DEFAULT_RECORD_SIZE, Drive
from strongroom.media.virtual_drive import MAX_RECORD, VirtualDrive, create_cartridge

STATE_FORMAT = 1
MAX_ELEMENTS = 10_000
MAX_STATE = 64 << 20
DEFAULT_CAPACITY = 16 << 30
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_BARCODE = re.compile(rf"[!-9;-~]{{1,{MAX_BARCODE}}}")  # printable, no space, no ':'
_ID = re.compile(r"[0-9a-f]{32}")


def libraries_home() -> Path:
    return data_home() / "strongroom" / "libraries"


def check_barcode(barcode: str) -> str:
    if not _BARCODE.fullmatch(barcode):
        raise ChangerError(
            f"barcode {barcode[:40]!r}: 1-{MAX_BARCODE} printable characters, no spaces or ':'"
        )
    return barcode


@dataclass(frozen=True)
class Layout:
    slots: int  # storage slots
    drives: int
    import_export: int
    capacity: int = DEFAULT_CAPACITY
    record_size: int = DEFAULT_RECORD_SIZE


class VirtualLibrary:
    """The virtual library called `name`, in `root` (default: under data_home())."""

    def __init__(self, name: str, root: str | os.PathLike[str] | None = None) -> None:
        if not _NAME.fullmatch(name):
            raise ChangerError(f"library name {name[:70]!r}: letters, digits, '.', '_', '-'")
        self.name = name
        self.root = Path(root) if root is not None else libraries_home() / name
        if not (self.root / "state.json").is_file():
            raise MediaNotFound(f"no virtual library {name} (at {self.root})")

    # -- creation -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        layout: Layout,
        *,
        root: str | os.PathLike[str] | None = None,
        cartridges: Sequence[str | None] = (),
    ) -> VirtualLibrary:
        """A new library; `cartridges` (barcodes, None for an unlabelled one)
        are blank cartridges put in storage slots 1, 2, ... ."""
        if not _NAME.fullmatch(name):
            raise ChangerError(f"library name {name[:70]!r}: letters, digits, '.', '_', '-'")
        _check_layout(layout)
        if len(cartridges) > layout.slots:
            raise ChangerError(f"{len(cartridges)} cartridges do not fit in {layout.slots} slots")
        folder = Path(root) if root is not None else libraries_home() / name
        if (folder / "state.json").exists():
            raise ChangerError(f"library {name} already exists (at {folder})")
        for sub in ("cartridges", "outside"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "name": name,
            "capacity": layout.capacity,
            "record_size": layout.record_size,
            "storage_slots": layout.slots,
            "import_export": layout.import_export,
            "drives": [None] * layout.drives,
            "slots": [None] * (layout.slots + layout.import_export),
            "cartridges": {},
            "outside": {},
            "moves": 0,
        }
        seen: set[str] = set()
        for number, barcode in enumerate(cartridges, 1):
            if barcode is not None:
                if check_barcode(barcode) in seen:
                    raise ChangerError(f"barcode {barcode} given twice")
                seen.add(barcode)
            state["slots"][number - 1] = _new_cartridge(folder, state, barcode)
        _write_state(folder, state)
        return cls(name, folder)

    # -- Changer --------------------------------------------------------------

    def status(self) -> ChangerStatus:
        with self._locked(write=False) as state:
            return _status(state)

    def scan(self) -> None:
        """Nothing to rescan: the state file is the barcode reader."""

    def load(self, slot: int, drive: int) -> None:
        with self._locked() as state:
            _slot_number(state, slot)
            _drive_number(state, drive)
            cartridge = state["slots"][slot - 1]
            if cartridge is None:
                raise ChangerError(f"Storage Element {slot} is Empty")
            loaded = state["drives"][drive]
            if loaded is not None:
                raise ChangerError(f"Drive {drive} Full (Storage Element {loaded['from']} loaded)")
            state["drives"][drive] = {"id": cartridge, "from": slot}
            state["slots"][slot - 1] = None
            state["moves"] += 1

    def unload(self, drive: int, slot: int | None = None) -> None:
        with self._locked() as state:
            _drive_number(state, drive)
            loaded = state["drives"][drive]
            if loaded is None:
                raise ChangerError(f"Data Transfer Element {drive} is Empty")
            if slot is None:
                slot = loaded["from"]
                if slot is None:
                    raise ChangerError(f"No Source for tape in drive {drive}!")
            _slot_number(state, slot)
            if state["slots"][slot - 1] is not None:
                raise ChangerError(f"Storage Element {slot} is Already Full")
            state["slots"][slot - 1] = loaded["id"]
            state["drives"][drive] = None
            state["moves"] += 1

    def transfer(self, source: int, destination: int) -> None:
        with self._locked() as state:
            _slot_number(state, source)
            _slot_number(state, destination)
            if state["slots"][source - 1] is None:
                raise ChangerError(f"Source Element Address {source} is Empty")
            if state["slots"][destination - 1] is not None:
                raise ChangerError(f"Destination Element Address {destination} is Already Full")
            state["slots"][destination - 1] = state["slots"][source - 1]
            state["slots"][source - 1] = None
            state["moves"] += 1

    def drive(self, address: int) -> Drive:
        with self._locked(write=False) as state:
            _drive_number(state, address)
            loaded = state["drives"][address]
            if loaded is None:
                raise NoMedium(f"{self.name}: drive {address} is empty")
            cid = loaded["id"]
            path = self.root / "cartridges" / f"{cid}.tape"
            if not os.path.lexists(path):  # an export killed before its state was written
                _move_file(self.root, cid, "outside", "cartridges")
            if path.is_symlink():
                raise DriveError(f"{path} is a symbolic link, not one of the library's cartridges")
            return VirtualDrive(
                path,
                capacity=state["cartridges"][cid]["capacity"],
                record_size=state["record_size"],
            )

    # -- the operator at the import/export slots ------------------------------

    def import_cartridges(self, barcodes: Sequence[str], unlabelled: int = 0) -> list[int]:
        """Put cartridges in free import/export slots: the one from the shelf
        with that barcode if there is one, else a new blank cartridge
        (`unlabelled` more without a barcode). All or nothing; the slots used."""
        for barcode in barcodes:
            check_barcode(barcode)
        if len(set(barcodes)) != len(barcodes):
            raise ChangerError("a barcode is given twice")
        with self._locked() as state:
            free = _free(state, ElementKind.IMPORT_EXPORT)
            wanted = len(barcodes) + unlabelled
            if wanted > len(free):
                raise ChangerError(f"{wanted} cartridges and {len(free)} free import/export slots")
            present = {c["barcode"] for c in state["cartridges"].values()}
            for barcode in barcodes:
                if barcode in present:
                    raise ChangerError(f"a cartridge labelled {barcode} is already in the library")
            shelf: dict[str | None, str] = {
                info["barcode"]: cid for cid, info in state["outside"].items()
            }
            used = []
            labels: list[str | None] = [*barcodes, *[None] * unlabelled]
            for label, slot in zip(labels, free, strict=False):
                if label is not None and label in shelf:
                    cid = shelf[label]
                    _move_file(self.root, cid, "outside", "cartridges")
                    state["cartridges"][cid] = state["outside"].pop(cid)
                else:
                    cid = _new_cartridge(self.root, state, label)
                state["slots"][slot - 1] = cid
                used.append(slot)
            return used

    def export_cartridges(self, barcodes: Sequence[str]) -> None:
        """Move each cartridge to a free import/export slot and take it out of
        the library onto the shelf. All or nothing: a cartridge in a drive, an
        unknown barcode or too few free import/export slots refuse them all."""
        with self._locked() as state:
            where = _where(state)
            free = _free(state, ElementKind.IMPORT_EXPORT)
            moves = []
            for barcode in barcodes:
                found = where.get(barcode)
                if found is None:
                    raise MediaNotFound(f"no cartridge labelled {barcode} in library {self.name}")
                kind, address = found
                if kind is ElementKind.DRIVE:
                    raise ChangerError(f"{barcode} is in drive {address}: unload it first")
                if kind is ElementKind.IMPORT_EXPORT:
                    moves.append((address, address))
                elif not free:
                    raise ChangerError("not enough free import/export slots")
                else:
                    moves.append((address, free.pop(0)))
            for source, mailslot in moves:
                cid = state["slots"][source - 1]
                if source != mailslot:
                    state["moves"] += 1  # the robot's move to the mail slot
                state["slots"][source - 1] = None
                _move_file(self.root, cid, "cartridges", "outside")
                state["outside"][cid] = state["cartridges"].pop(cid)

    @property
    def moves(self) -> int:
        """Robot moves since the library was made (tests assert a status moved nothing)."""
        with self._locked(write=False) as state:
            return int(state["moves"])

    # -- state ------------------------------------------------------------------

    @contextmanager
    def _locked(self, write: bool = True) -> Iterator[dict[str, Any]]:
        """The state under the library's lock; written back (atomically) only
        when the block ends without an error, so a refused move changes nothing."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            state = _read_state(self.root)
            yield state
            if write:
                _write_state(self.root, state)
        finally:
            os.close(fd)


def _check_layout(layout: Layout) -> None:
    if not 1 <= layout.slots <= MAX_ELEMENTS:
        raise ChangerError(f"--slots must be 1-{MAX_ELEMENTS}")
    if not 1 <= layout.drives <= 256:
        raise ChangerError("--drives must be 1-256")
    if not 0 <= layout.import_export <= 1024:
        raise ChangerError("--import-export must be 0-1024")
    if not 4096 <= layout.record_size <= MAX_RECORD:
        raise ChangerError(f"the record size must be 4 KiB to {MAX_RECORD >> 20} MiB")
    if layout.capacity < 8 * layout.record_size:
        raise ChangerError("the capacity must hold at least 8 records")


def _move_file(root: Path, cid: str, source: str, target: str) -> None:
    """Move a cartridge's file between cartridges/ and outside/ (an import or
    an export). The move comes before state.json is rewritten, so a process
    killed between the two leaves the file where the state does not say: a
    file already at `target` is that, and is left there (the state, still
    the old one, is what the next move rewrites)."""
    src = root / source / f"{cid}.tape"
    dst = root / target / f"{cid}.tape"
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        if not os.path.lexists(dst):
            raise NoMedium(
                f"cartridge file {cid}.tape is missing from {root / source} (and {target}/)"
            ) from None
    except OSError as err:
        raise ChangerError(f"cannot move {src} to {target}/: {err.strerror}") from None


def _new_cartridge(folder: Path, state: dict[str, Any], barcode: str | None) -> str:
    cid = secrets.token_hex(16)
    create_cartridge(folder / "cartridges" / f"{cid}.tape")
    state["cartridges"][cid] = {"barcode": barcode, "capacity": state["capacity"]}
    return cid


def _status(state: dict[str, Any]) -> ChangerStatus:
    barcodes = {cid: info["barcode"] for cid, info in state["cartridges"].items()}
    storage = state["storage_slots"]
    drives = tuple(
        Element(ElementKind.DRIVE, n, False)
        if d is None
        else Element(ElementKind.DRIVE, n, True, barcodes[d["id"]], loaded_from=d["from"])
        for n, d in enumerate(state["drives"])
    )
    slots = tuple(
        Element(
            ElementKind.SLOT if n <= storage else ElementKind.IMPORT_EXPORT,
            n,
            cid is not None,
            None if cid is None else barcodes[cid],
        )
        for n, cid in enumerate(state["slots"], 1)
    )
    return ChangerStatus(drives=drives, slots=slots)


def _where(state: dict[str, Any]) -> dict[str, tuple[ElementKind, int]]:
    found: dict[str, tuple[ElementKind, int]] = {}
    for element in _status(state).elements():
        if element.full and element.barcode is not None:
            found[element.barcode] = (element.kind, element.address)
    return found


def _free(state: dict[str, Any], kind: ElementKind) -> list[int]:
    return _status(state).free_slots(kind)


def _slot_number(state: dict[str, Any], slot: int) -> None:
    if not 1 <= slot <= len(state["slots"]):
        raise ChangerError(f"no slot {slot} (the library has slots 1-{len(state['slots'])})")


def _drive_number(state: dict[str, Any], drive: int) -> None:
    if not 0 <= drive < len(state["drives"]):
        raise ChangerError(
            f"no drive {drive} (the library has drives 0-{len(state['drives']) - 1})"
        )


def _read_state(folder: Path) -> dict[str, Any]:
    path = folder / "state.json"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STATE + 1)
    except FileNotFoundError:
        raise MediaNotFound(f"no virtual library at {folder}") from None
    if len(raw) > MAX_STATE:
        raise ChangerError(f"{path}: larger than {MAX_STATE >> 20} MiB")
    try:
        state = json.loads(raw)
        _check_state(state)
    except (ValueError, TypeError, KeyError) as err:
        raise ChangerError(f"{path} is damaged: {err}") from None
    return state  # type: ignore[no-any-return]


def _check_state(state: Any) -> None:
    """Every reference in the state file resolves: a hand-edited or damaged
    file is refused as a whole instead of failing in the middle of a move."""
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError("unknown state format")
    cartridges, outside = state["cartridges"], state["outside"]
    if not isinstance(cartridges, dict) or not isinstance(outside, dict):
        raise ValueError("cartridges must be tables")
    for cid, info in [*cartridges.items(), *outside.items()]:
        barcode = info["barcode"]
        if not _ID.fullmatch(cid) or not (barcode is None or _BARCODE.fullmatch(barcode)):
            raise ValueError(f"bad cartridge {cid[:40]!r}")
        if not isinstance(info["capacity"], int) or info["capacity"] <= 0:
            raise ValueError(f"bad capacity for {cid}")
    for key, least in (("capacity", 8), ("record_size", 512)):
        if type(state[key]) is not int or not least <= state[key] <= 1 << 62:
            raise ValueError(f"bad {key}")
    if not 512 <= state["record_size"] <= MAX_RECORD:
        raise ValueError("bad record_size")
    slots, drives = state["slots"], state["drives"]
    if not isinstance(slots, list) or not isinstance(drives, list) or len(slots) > MAX_ELEMENTS:
        raise ValueError("bad element lists")
    if not 0 <= state["storage_slots"] <= len(slots) or not isinstance(state["moves"], int):
        raise ValueError("bad layout")
    placed = [c for c in slots if c is not None]
    for d in drives:
        if d is not None:
            placed.append(d["id"])
            origin = d["from"]
            if origin is not None and not (isinstance(origin, int) and 1 <= origin <= len(slots)):
                raise ValueError(f"bad origin slot {origin!r}")
    if sorted(placed) != sorted(cartridges):
        raise ValueError("the elements and the cartridges disagree")


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    blob = json.dumps(state, indent=1, sort_keys=True).encode()
    atomic_write(folder / "state.json", lambda f: f.write(blob))
