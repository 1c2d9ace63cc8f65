"""Debian packages (.deb) read without installing them: the files they install.

A .deb is an `ar` archive (ar(5); deb(5)) of three members in this order:
`debian-binary` ("2.0"), `control.tar[.gz|.xz|.zst]` (the `control` file
names the package) and `data.tar[.gz|.xz|.zst|.bz2]` (the files, as a tar
archive rooted at `/`). Members whose names start with `_` may come between
them and are skipped, as dpkg does.

The container is parsed here rather than by a library because it is tiny and
hostile: only the plain member names a .deb uses are accepted (GNU's
`name/` form too; GNU long-name tables and BSD `#1/` names are refused), sizes
are decimal and must lie within the file, the number of members and the
sizes of `debian-binary` and the `control` file are bounded. Member contents
are read through a bounded window of the file (`_Slice`), so a size that
claims more than the member holds cannot read the next member's bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

from strongroom.errors import SourceError
from strongroom.model.names import printable
from strongroom.model.tree import FILE
from strongroom.sources.tar_stream import Member, read_tar

AR_MAGIC = b"!<arch>\n"
_HEADER = 60
MAX_AR_MEMBERS = 64
MAX_BINARY = 64  # debian-binary
MAX_CONTROL = 1 << 20  # the control file
MAX_CONTROL_ARCHIVE = 64 << 20  # control.tar.* (real ones are a few KiB)
_NAME = re.compile(rb"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,15}")
_CONTROL_TARS = ("control.tar", "control.tar.gz", "control.tar.xz", "control.tar.zst")
_DATA_TARS = ("data.tar", "data.tar.gz", "data.tar.xz", "data.tar.zst", "data.tar.bz2")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{0,199}")
_VERSION = re.compile(r"[A-Za-z0-9.+~:-]{1,200}")
_ARCH = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


@dataclass(frozen=True)
class ArMember:
    name: str
    offset: int  # of its content in the file
    size: int


@dataclass(frozen=True)
class DebPackage:
    """A checked package: what its control file says and where its data lies."""

    path: str
    name: str
    version: str
    architecture: str
    data: ArMember

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "architecture": self.architecture}


def ar_members(f: IO[bytes], label: str) -> list[ArMember]:
    """The members of the ar archive `f` (seekable), checked against its size."""
    f.seek(0)
    if f.read(len(AR_MAGIC)) != AR_MAGIC:
        raise SourceError(f"{label}: not a Debian package (no ar archive magic)")
    end = _size(f)
    members: list[ArMember] = []
    pos = len(AR_MAGIC)
    while pos < end:
        if len(members) >= MAX_AR_MEMBERS:
            raise SourceError(f"{label}: more than {MAX_AR_MEMBERS} ar members; refused")
        f.seek(pos)
        header = f.read(_HEADER)
        if len(header) == 1 and header == b"\n" and pos + 1 == end:
            break  # a stray padding byte at the end
        if len(header) < _HEADER:
            raise SourceError(f"{label}: truncated: an ar member header ends early")
        if header[58:60] != b"`\n":
            raise SourceError(f"{label}: damaged: ar member header at byte {pos} is malformed")
        raw_name = header[0:16].rstrip(b" ")
        if raw_name.endswith(b"/") and raw_name != b"/":
            raw_name = raw_name[:-1]  # GNU ar's "name/"
        if not _NAME.fullmatch(raw_name):
            raise SourceError(
                f"{label}: ar member name {printable(raw_name)!r} is not one a .deb uses; refused"
            )
        size_field = header[48:58].rstrip(b" ")
        if not size_field.isdigit():
            raise SourceError(f"{label}: damaged: ar member {raw_name.decode()} has a bad size")
        size = int(size_field)
        start = pos + _HEADER
        if start + size > end:
            raise SourceError(
                f"{label}: truncated: ar member {raw_name.decode()} claims {size} bytes, "
                f"the file holds {max(0, end - start)}"
            )
        members.append(ArMember(raw_name.decode(), start, size))
        pos = start + size + (size & 1)
    return members


def _size(f: IO[bytes]) -> int:
    here = f.tell()
    size = f.seek(0, io.SEEK_END)
    f.seek(here)
    return size


class _Slice(io.RawIOBase):
    """Bytes [offset, offset + size) of a seekable file, read sequentially."""

    def __init__(self, f: IO[bytes], member: ArMember) -> None:
        self._f = f
        self._pos = member.offset
        self._left = member.size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._left)
        if want <= 0:
            return 0
        self._f.seek(self._pos)
        data = self._f.read(want)
        if not data:
            raise EOFError("the package file ends early")
        n = len(data)
        buffer[:n] = data
        self._pos += n
        self._left -= n
        return n


def _stream(f: IO[bytes], member: ArMember) -> IO[bytes]:
    return cast(IO[bytes], io.BufferedReader(_Slice(f, member), 1 << 16))


def read_deb(f: IO[bytes], label: str, warn: Callable[[str], None]) -> DebPackage:
    """Check the package `f` (its container, format version and control file)
    and return what it is; SourceError (one line) if it is not a sound .deb."""
    members = [m for m in ar_members(f, label) if not m.name.startswith("_")]
    names = [m.name for m in members]
    if not members or names[0] != "debian-binary":
        raise SourceError(f"{label}: damaged: the package does not start with debian-binary")
    binary = members[0]
    if binary.size > MAX_BINARY:
        raise SourceError(f"{label}: damaged: debian-binary is {binary.size} bytes")
    version = _read_all(f, binary).split(b"\n")[0]
    if version != b"2.0":
        raise SourceError(
            f"{label}: package format {printable(version)!r} is not 2.0; not supported"
        )
    if len(members) < 2 or names[1] not in _CONTROL_TARS:
        raise SourceError(f"{label}: damaged: no control archive after debian-binary")
    if len(members) < 3 or names[2] not in _DATA_TARS:
        raise SourceError(f"{label}: damaged: no data archive (data.tar.*) after the control one")
    if members[1].size > MAX_CONTROL_ARCHIVE:
        raise SourceError(f"{label}: {names[1]} is {members[1].size} bytes; refused")
    fields = _control_fields(f, members[1], f"{label} ({names[1]})", warn)
    return DebPackage(
        path=label,
        name=_field(fields, "Package", _PACKAGE, label),
        version=_field(fields, "Version", _VERSION, label),
        architecture=_field(fields, "Architecture", _ARCH, label),
        data=members[2],
    )


def data_members(
    f: IO[bytes], package: DebPackage, warn: Callable[[str], None]
) -> Iterator[Member]:
    """The checked members of the package's data archive, streamed."""
    label = f"{package.path} ({package.data.name})"
    return read_tar(_stream(f, package.data), label, warn)


def _read_all(f: IO[bytes], member: ArMember) -> bytes:
    f.seek(member.offset)
    data = f.read(member.size)
    if len(data) != member.size:
        raise SourceError(f"{member.name}: the package file ends early")
    return data


def _control_fields(
    f: IO[bytes], member: ArMember, label: str, warn: Callable[[str], None]
) -> dict[str, str]:
    """The first paragraph of the control archive's `control` file."""
    text: bytes | None = None
    for entry in read_tar(_stream(f, member), label, warn):
        if entry.path != b"control" or entry.type != FILE or entry.hardlink is not None:
            continue
        if entry.size > MAX_CONTROL:
            raise SourceError(f"{label}: the control file is {entry.size} bytes; refused")
        assert entry.data is not None
        text = entry.data.read()
    if text is None:
        raise SourceError(f"{label}: damaged: no control file")
    fields: dict[str, str] = {}
    key = ""
    for line in text.decode("utf-8", "replace").split("\n"):
        if not line.strip():
            if fields:
                break  # the first paragraph only
            continue
        if line[0] in " \t":
            if key:
                fields[key] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise SourceError(f"{label}: damaged control file: {printable(line[:80])!r}")
        key = key.strip()
        fields[key] = value.strip()
    return fields


def _field(fields: dict[str, str], key: str, shape: re.Pattern[str], label: str) -> str:
    value = fields.get(key, "")
    if not shape.fullmatch(value):
        shown = printable(value[:80]) if value else "missing"
        raise SourceError(f"{label}: the control file's {key} field is {shown!r}; refused")
    return value
