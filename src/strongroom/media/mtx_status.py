"""`mtx status` as mtx 1.3 prints it, parsed into a ChangerStatus.

The byte format is mtx.c's `Status()` printf strings:

    "  Storage Changer %s:%d Drives, %d Slots ( %d Import/Export )\\n"
    "Data Transfer Element %d:" then "Full (Storage Element %d Loaded)" |
        "Full (Unknown Storage Element Loaded)" | "Empty",
        then [":VolumeTag = %s"] [":AlternateVolumeTag = %s"]      (spaces around '=')
    "      Storage Element %d%s:%s" (%s: "" | " IMPORT/EXPORT"; "Full " | "Empty"),
        then [":VolumeTag=%s"] [":AlternateVolumeTag=%s"]          (no spaces)

Volume tags are the raw 32-byte SCSI field, padded with spaces: the padding is
removed, an empty tag is None. The header's "Slots" count includes the
import/export elements, and the element lines must agree with the header.

The text comes from a device and a program we do not control: it is bounded
(line count, line length, numbers) and any line that is not one of the three
shapes is a ChangerError naming the line, never a crash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from strongroom.errors import ChangerError
from strongroom.media.changer import MAX_BARCODE, ChangerStatus, Element, ElementKind

MAX_LINES = 20_000  # the largest libraries have a few thousand elements
MAX_LINE = 512
MAX_ADDRESS = 65_535  # SCSI element addresses are 16 bits

_HEADER = re.compile(
    r"\s*Storage Changer (?P<device>.{1,256}):(?P<drives>\d{1,6}) Drives, "
    r"(?P<slots>\d{1,6}) Slots \( (?P<ie>\d{1,6}) Import/Export \)\s*",
    re.ASCII,  # \d and \s: mtx prints ASCII ("٣" is no element number)
)
_DRIVE = re.compile(
    r"Data Transfer Element (?P<address>\d{1,6}):"
    r"(?P<state>Empty|Full \(Storage Element (?P<origin>\d{1,6}) Loaded\)"
    r"|Full \(Unknown Storage Element Loaded\))"
    r"(?::VolumeTag = (?P<tag>[^:]*))?"
    r"(?::AlternateVolumeTag = (?P<alt>[^:]*))?",
    re.ASCII,
)
_SLOT = re.compile(
    r"\s*Storage Element (?P<address>\d{1,6})(?P<ie> IMPORT/EXPORT)?:(?P<state>Full |Empty)"
    r"(?::VolumeTag=(?P<tag>[^:]*))?"
    r"(?::AlternateVolumeTag=(?P<alt>[^:]*))?",
    re.ASCII,
)


@dataclass(frozen=True)
class MtxHeader:
    device: str
    drives: int
    slots: int  # storage and import/export together, as mtx counts them
    import_export: int


def parse_status(text: str) -> tuple[MtxHeader, ChangerStatus]:
    """The header and every element of an `mtx status` output (ChangerError
    naming the first line that is not mtx's, or a count that disagrees)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) > MAX_LINES:
        raise ChangerError(f"mtx status: more than {MAX_LINES} lines")
    header: MtxHeader | None = None
    drives: dict[int, Element] = {}
    slots: dict[int, Element] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r")
        if len(line) > MAX_LINE:
            raise ChangerError(f"mtx status line {number}: longer than {MAX_LINE} characters")
        if not line.strip():
            continue
        if header is None:
            header = _header(line, number)
            continue
        if match := _DRIVE.fullmatch(line):
            element = _drive(match, number)
            target = drives
        elif match := _SLOT.fullmatch(line):
            element = _slot(match, number)
            target = slots
        else:
            raise ChangerError(f"mtx status line {number} is not mtx's: {_show(line)}")
        if element.address in target:
            raise ChangerError(f"mtx status line {number}: element {element.address} twice")
        target[element.address] = element
    if header is None:
        raise ChangerError("mtx status: no 'Storage Changer' header (not mtx's output?)")
    _check_counts(header, drives, slots)
    status = ChangerStatus(
        drives=tuple(drives[a] for a in sorted(drives)),
        slots=tuple(slots[a] for a in sorted(slots)),
    )
    return header, status


def _header(line: str, number: int) -> MtxHeader:
    match = _HEADER.fullmatch(line)
    if not match:
        raise ChangerError(f"mtx status line {number} is not the changer header: {_show(line)}")
    header = MtxHeader(
        device=match["device"],
        drives=_number(match["drives"], number),
        slots=_number(match["slots"], number),
        import_export=_number(match["ie"], number),
    )
    if header.import_export > header.slots:
        raise ChangerError(f"mtx status line {number}: more import/export elements than slots")
    return header


def _drive(match: re.Match[str], number: int) -> Element:
    state = match["state"]
    full = state != "Empty"
    origin = _number(match["origin"], number) if match["origin"] else None
    return Element(
        kind=ElementKind.DRIVE,
        address=_number(match["address"], number),
        full=full,
        barcode=_tag(match["tag"], number),
        alternate_barcode=_tag(match["alt"], number),
        loaded_from=origin,
    )


def _slot(match: re.Match[str], number: int) -> Element:
    address = _number(match["address"], number)
    if address < 1:
        raise ChangerError(f"mtx status line {number}: storage element 0 (slots count from 1)")
    return Element(
        kind=ElementKind.IMPORT_EXPORT if match["ie"] else ElementKind.SLOT,
        address=address,
        full=match["state"] == "Full ",
        barcode=_tag(match["tag"], number),
        alternate_barcode=_tag(match["alt"], number),
    )


def _check_counts(header: MtxHeader, drives: dict[int, Element], slots: dict[int, Element]) -> None:
    if len(drives) != header.drives:
        raise ChangerError(
            f"mtx status: the header says {header.drives} drives, {len(drives)} are listed"
        )
    if len(slots) != header.slots:
        raise ChangerError(
            f"mtx status: the header says {header.slots} slots, {len(slots)} are listed"
        )
    ie = sum(1 for e in slots.values() if e.kind is ElementKind.IMPORT_EXPORT)
    if ie != header.import_export:
        raise ChangerError(
            f"mtx status: the header says {header.import_export} import/export slots, "
            f"{ie} are listed"
        )


def _number(text: str, number: int) -> int:
    value = int(text)
    if value > MAX_ADDRESS:
        raise ChangerError(f"mtx status line {number}: element number {value} is out of range")
    return value


def _tag(raw: str | None, number: int) -> str | None:
    """A volume tag without its SCSI space padding; None when absent or blank."""
    if raw is None:
        return None
    tag = raw.strip(" ")
    if not tag:
        return None
    if len(tag) > MAX_BARCODE or not tag.isprintable() or not tag.isascii():
        raise ChangerError(f"mtx status line {number}: volume tag {tag[:40]!r} is not a barcode")
    return tag


def _show(line: str) -> str:
    return repr(line[:80] + ("..." if len(line) > 80 else ""))
