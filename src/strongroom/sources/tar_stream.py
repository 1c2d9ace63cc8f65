"""Tar archives read as a stream: one checked member at a time, never a whole file.

A seed's tar archive (an `mmdebstrap` or `docker export` output, a `.deb`'s
data archive) is hostile until checked. This module turns it into `Member`s
whose path is relative, normalised and safe to place in a file tree, whose
metadata is within the ranges a tree node holds, and whose content is read
sequentially by the caller before it asks for the next member.

What is refused, with one line naming the archive and the member:
- a name with a `..` component, a NUL, or an empty component once a leading
  `/` or `./` is stripped; names and link targets longer than `MAX_PATH`;
  a component longer than `MAX_COMPONENT`; nesting deeper than `MAX_DEPTH`;
  more than `MAX_MEMBERS` members; extended headers (PAX, GNU long names)
  larger than `MAX_EXTENDED` or chained more than `MAX_CHAIN` deep; more
  than `MAX_GLOBAL_RECORDS` records in global PAX headers;
- damage: a compressed stream that is corrupt or ends early, a tar that ends
  without its end-of-archive block (a truncation at a member boundary looks
  like a short archive otherwise), a malformed header anywhere.

Symlink targets are data: stored as given, never followed or normalised.

Compression is recognised by magic bytes (gzip, xz, bzip2, zstd; none): the
standard library's readers report a stream that ends early, and zstd is fed
to a `zstandard` decompression object in small pieces, which both bounds the
memory one piece can expand to and tells a complete frame from a truncated
one (its stream reader reports neither).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Self, cast

from strongroom.errors import SourceError
from strongroom.model.names import printable
from strongroom.model.tree import BLOCKDEV, CHARDEV, DIR, FIFO, FILE, SYMLINK
from strongroom.sources.zstd_stream import ZstdError, ZstdReader

# Members of one archive: each becomes a node held in memory until the trees
# are stored (a full desktop OS has well under a million files).
MAX_MEMBERS = 2_000_000
MAX_PATH = 4096
MAX_COMPONENT = 255
MAX_DEPTH = 256
MAX_EXTENDED = 1 << 20  # one PAX header or GNU long name, bytes
# Extension headers of one old-GNU sparse file (21 regions each): 86,000
# regions, far more than any real sparse file carries.
MAX_SPARSE_BLOCKS = 4096
MAX_CHAIN = 8  # extended headers before one member
# Records of global PAX headers (`g`): tarfile keeps them for the rest of the
# archive and copies them into every later member, so their number bounds the
# memory and time a hostile archive costs; real archives hold a few (`git
# archive`: one).
MAX_GLOBAL_RECORDS = 1024
MAX_XATTRS = 1024
MAX_XATTR_VALUE = 64 * 1024  # Linux's limit for one attribute
MAX_TRAILER = 16 << 20  # bytes read after the end-of-archive block to check compression
_U32 = 2**32 - 1
_NS = 1_000_000_000
_I64 = 2**63 - 1

# What a damaged archive raises from the standard library and zstandard.
DAMAGE: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    EOFError,
    OSError,  # gzip.BadGzipFile and a failing read of the source alike
    zlib.error,
    lzma.LZMAError,
    ZstdError,
    ValueError,
    OverflowError,
    UnicodeError,
)

_GZIP, _XZ, _BZIP2, _ZSTD = b"\x1f\x8b", b"\xfd7zXZ\x00", b"BZh", b"\x28\xb5\x2f\xfd"
_TYPES = {
    tarfile.REGTYPE: FILE,
    tarfile.AREGTYPE: FILE,
    tarfile.CONTTYPE: FILE,
    tarfile.GNUTYPE_SPARSE: FILE,
    tarfile.DIRTYPE: DIR,
    tarfile.SYMTYPE: SYMLINK,
    tarfile.CHRTYPE: CHARDEV,
    tarfile.BLKTYPE: BLOCKDEV,
    tarfile.FIFOTYPE: FIFO,
}
_EXTENDED = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
_XATTR = "SCHILY.xattr."
# tarfile's header errors (present at run time, absent from the type stubs).
_EOFHeaderError: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_EmptyHeaderError: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]
_SubsequentHeaderError: type[Exception] = tarfile.SubsequentHeaderError  # type: ignore[attr-defined]


@dataclass
class Member:
    """One archive member, checked. `data` (regular files only) must be read
    before the next member is asked for; its reads raise SourceError on damage."""

    path: bytes  # relative, normalised: components joined by "/"
    type: str  # a model.tree node type
    mode: int
    uid: int
    gid: int
    user: str
    group: str
    mtime_ns: int
    atime_ns: int = 0
    ctime_ns: int = 0
    size: int = 0
    rdev: int = 0
    link_target: bytes = b""  # symlinks: as stored
    hardlink: bytes | None = None  # hard links: the normalised path of the target
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    data: MemberData | None = None


def normalise(name: bytes, label: str) -> bytes:
    """`name` relative and checked (b"" for the archive's root itself)."""
    while name.startswith((b"/", b"./")):
        name = name[1:] if name.startswith(b"/") else name[2:]
    name = name.rstrip(b"/")
    if name == b".":
        return b""
    problem = _path_problem(name)
    if problem is not None:
        raise SourceError(f"{label}: member {printable(name[:200])!r} {problem}; refused")
    return name


def _path_problem(path: bytes) -> str | None:
    if b"\0" in path:
        return "holds a NUL"
    if len(path) > MAX_PATH:
        return f"is longer than {MAX_PATH} bytes"
    parts = path.split(b"/") if path else []
    if len(parts) > MAX_DEPTH:
        return f"is nested deeper than {MAX_DEPTH} levels"
    for part in parts:
        if part == b"..":
            return "has a '..' component"
        if not part or part == b".":
            return "has an empty or '.' component"
        if len(part) > MAX_COMPONENT:
            return f"has a component longer than {MAX_COMPONENT} bytes"
    return None


# --- decompression -------------------------------------------------------------


def decompressed(raw: IO[bytes]) -> IO[bytes]:
    """`raw`'s bytes, decompressed if they start with a known magic."""
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(Any, raw))
    head = buffered.peek(6)[:6]
    if head.startswith(_GZIP):
        return cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
    if head.startswith(_XZ):
        return cast(IO[bytes], lzma.LZMAFile(buffered))
    if head.startswith(_BZIP2):
        return cast(IO[bytes], bz2.BZ2File(buffered))
    if head.startswith(_ZSTD):
        return io.BufferedReader(ZstdReader(buffered), 1 << 17)
    return buffered


class MemberData(io.RawIOBase):
    """A member's content, read once in order: damage met while reading it is a
    SourceError."""

    def __init__(self, inner: IO[bytes], describe: Callable[[BaseException], str]) -> None:
        self._inner = inner
        self._describe = describe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return cast(int, self._inner.readinto(buffer))  # type: ignore[attr-defined]
        except DAMAGE as err:
            raise SourceError(self._describe(err)) from None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except DAMAGE as err:
            raise SourceError(self._describe(err)) from None


# --- tar -----------------------------------------------------------------------


@dataclass
class _State:
    """How the tar reader's last header read ended, and the extended-header chain."""

    ending: str = "no header"
    chain: int = 0


_nti: Callable[[bytes], int] = tarfile.nti  # type: ignore[attr-defined]


def _info_class(state: _State) -> type[tarfile.TarInfo]:
    """A TarInfo that notes why iteration ended (tarfile ends quietly on a
    truncated or garbled header past the first) and bounds extended headers
    before tarfile reads them whole into memory."""

    class Info(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
            if state.chain >= MAX_CHAIN:
                raise _SubsequentHeaderError(
                    f"more than {MAX_CHAIN} extended headers before one member"
                )
            if len(tarfile_.pax_headers) > MAX_GLOBAL_RECORDS:
                raise _SubsequentHeaderError(
                    f"more than {MAX_GLOBAL_RECORDS} global extended header records"
                )
            state.chain += 1
            try:
                fileobj = cast(Any, tarfile_.fileobj)
                buf = fileobj.read(tarfile.BLOCKSIZE)
                obj = cls.frombuf(buf, tarfile_.encoding, tarfile_.errors)
                obj.offset = fileobj.tell() - tarfile.BLOCKSIZE
                if obj.type in _EXTENDED and not 0 <= obj.size <= MAX_EXTENDED:
                    raise _SubsequentHeaderError(
                        f"an extended header of {obj.size} bytes (at most {MAX_EXTENDED})"
                    )
                # The standard fromtarfile's last step (tarfile's own, private).
                return cast(Self, obj._proc_member(tarfile_))  # type: ignore[attr-defined]
            except _EOFHeaderError:
                state.ending = "end"
                raise
            except _EmptyHeaderError:
                state.ending = "the archive ends without its end-of-archive block (truncated)"
                raise
            except tarfile.HeaderError as err:
                state.ending = f"damaged header ({err})"
                raise
            finally:
                state.chain -= 1

        def _proc_sparse(self, tarfile_: tarfile.TarFile) -> Self:
            """tarfile's own, with the count of extension blocks bounded: an
            old GNU sparse header may chain them without end, and tarfile keeps
            every region of them in memory."""
            structs, isextended, origsize = self._sparse_structs  # type: ignore[attr-defined]
            del self._sparse_structs  # type: ignore[attr-defined]
            fileobj = cast(Any, tarfile_.fileobj)
            blocks = 0
            while isextended:
                blocks += 1
                if blocks > MAX_SPARSE_BLOCKS:
                    raise _SubsequentHeaderError(
                        f"a sparse file with more than {MAX_SPARSE_BLOCKS} extension headers"
                    )
                buf = fileobj.read(tarfile.BLOCKSIZE)
                if len(buf) != tarfile.BLOCKSIZE:
                    raise _SubsequentHeaderError("a sparse file's extension header is cut short")
                for pos in range(0, 21 * 24, 24):
                    try:
                        offset = _nti(buf[pos : pos + 12])
                        numbytes = _nti(buf[pos + 12 : pos + 24])
                    except ValueError:
                        break
                    if offset and numbytes:
                        structs.append((offset, numbytes))
                isextended = bool(buf[504])
            self.sparse = structs
            self.offset_data = fileobj.tell()
            tarfile_.offset = self.offset_data + self._block(self.size)  # type: ignore[attr-defined]
            self.size = origsize
            return self

    return Info


def read_tar(raw: IO[bytes], label: str, warn: Callable[[str], None]) -> Iterator[Member]:
    """The members of the tar archive in `raw` (compressed or not), checked.

    Raises SourceError (one line naming `label`) for damage and refused names,
    also from reads of a member's `data`."""

    def damaged(err: BaseException) -> str:
        if isinstance(err, SourceError):
            return str(err)
        text = str(err) or type(err).__name__
        return f"{label}: the archive is damaged or truncated: {text.splitlines()[0][:200]}"

    state = _State()
    count = 0
    try:
        stream = decompressed(raw)
        tar = tarfile.open(  # noqa: SIM115 - a stream read to its end here
            fileobj=stream,
            mode="r|",
            tarinfo=_info_class(state),
            encoding="utf-8",
            errors="surrogateescape",
        )
        while True:
            info = tar.next()
            tar.members = []  # type: ignore[attr-defined]  # tarfile keeps all it read
            if info is None:
                break
            count += 1
            if count > MAX_MEMBERS:
                raise SourceError(f"{label}: more than {MAX_MEMBERS} members; refused")
            member = _member(info, label, warn)
            if member is None:
                continue
            if member.type == FILE and member.hardlink is None:
                inner = tar.extractfile(info)
                assert inner is not None  # a regular member always has content
                member.data = MemberData(inner, damaged)
            yield member
        if state.ending != "end":
            raise SourceError(
                f"{label}: {state.ending}" if count else damaged(EOFError(state.ending))
            )
        _drain(stream)
    except SourceError:
        raise
    except DAMAGE as err:
        raise SourceError(damaged(err)) from None


def _drain(stream: IO[bytes]) -> None:
    """Read what follows the end-of-archive block (record padding), so that a
    compressed stream's own end and checksum are checked too; a long tail of
    other data is left unread, as tar leaves it."""
    left = MAX_TRAILER
    while left > 0:
        piece = stream.read(min(left, 1 << 16))
        if not piece:
            return
        left -= len(piece)


def _text(value: str) -> str:
    """A header string as valid UTF-8 text (names of users and groups)."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:256]


def _raw(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _time_ns(info: tarfile.TarInfo, key: str, fallback: float | None) -> int:
    """A PAX time exactly (tarfile makes it a float), else the header's seconds."""
    text = info.pax_headers.get(key)
    ns: int | None = None
    if text is not None:
        sign = -1 if text.startswith("-") else 1
        whole, _, frac = text.lstrip("-").partition(".")
        if whole.isdigit() and (not frac or frac.isdigit()) and len(whole) < 19:
            ns = sign * (int(whole) * _NS + int((frac + "000000000")[:9]))
    if ns is None:
        ns = int(fallback) * _NS if fallback is not None else 0
    if not -_I64 <= ns <= _I64:
        raise ValueError(f"time {text or fallback} is out of range")
    return ns


def _member(info: tarfile.TarInfo, label: str, warn: Callable[[str], None]) -> Member | None:
    path = normalise(_raw(info.name), label)
    shown = printable(path[:200])
    kind = _TYPES.get(info.type)
    if info.type == tarfile.LNKTYPE:
        kind = FILE  # completed from the target by the caller
    if kind is None:
        warn(f"{label}: {shown}: unsupported member type {info.type!r}, skipped")
        return None
    if not path:
        if kind == DIR:
            return None  # the archive's root directory itself ("./")
        raise SourceError(f"{label}: a member that is not a directory has an empty name; refused")
    if not (0 <= info.uid <= _U32 and 0 <= info.gid <= _U32 and 0 <= info.size <= _I64):
        raise SourceError(f"{label}: member {shown}: owner or size out of range; refused")
    member = Member(
        path=path,
        type=kind,
        mode=info.mode & 0o7777,
        uid=info.uid,
        gid=info.gid,
        user=_text(info.uname),
        group=_text(info.gname),
        mtime_ns=_time_ns(info, "mtime", info.mtime),
        atime_ns=_time_ns(info, "atime", None),
        ctime_ns=_time_ns(info, "ctime", None),
        size=info.size if kind == FILE else 0,
    )
    link = _raw(info.linkname)
    if info.type == tarfile.LNKTYPE:
        member.hardlink = normalise(link, label)
        member.size = 0
        if not member.hardlink:
            raise SourceError(f"{label}: member {shown} is a hard link to the root; refused")
    elif kind == SYMLINK:
        if not link or b"\0" in link or len(link) > MAX_PATH:
            raise SourceError(f"{label}: symlink {shown} has an empty or invalid target; refused")
        member.link_target = link
    elif kind in (CHARDEV, BLOCKDEV):
        if not (0 <= info.devmajor <= 0xFFFFFFF and 0 <= info.devminor <= 0xFFFFFFFF):
            raise SourceError(f"{label}: device {shown} has an invalid number; refused")
        member.rdev = os.makedev(info.devmajor, info.devminor)
    member.xattrs = _xattrs(info, label, shown)
    return member


def _xattrs(info: tarfile.TarInfo, label: str, shown: str) -> dict[bytes, bytes]:
    """Extended attributes from PAX `SCHILY.xattr.NAME` records (as GNU tar and
    bsdtar write them), bytes exactly."""
    found: dict[bytes, bytes] = {}
    for key, value in info.pax_headers.items():
        if not key.startswith(_XATTR):
            continue
        name, data = _raw(key[len(_XATTR) :]), _raw(value)
        if not name or b"\0" in name or len(name) > MAX_COMPONENT:
            raise SourceError(f"{label}: member {shown} has an invalid xattr name; refused")
        if len(data) > MAX_XATTR_VALUE or len(found) >= MAX_XATTRS:
            raise SourceError(f"{label}: member {shown} has too many or too large xattrs; refused")
        found[name] = data
    return found


@contextlib.contextmanager
def opened(path: str) -> Iterator[IO[bytes]]:
    """A source file opened for reading, its OSError as one SourceError line."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as err:
        raise SourceError(f"{path}: {err.strerror}") from None
    with f:
        yield f
