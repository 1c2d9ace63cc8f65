"""NBD wire format: constants, struct layouts and small pure codecs.

Shared by client and server so they cannot disagree. Everything is big-endian
("network byte order"). Decoders raise `ProtocolViolation` (a ValueError) on
malformed input; the client turns it into `NbdError`, the server into an
`NBD_REP_ERR_INVALID` reply or a dropped connection.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence

# --- magic numbers -------------------------------------------------------------------

NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT"
OLDSTYLE_MAGIC = 0x00420281861253
OPTION_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

# --- handshake flags (16 bits, server) and client flags (32 bits) ---------------------

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0
FLAG_C_NO_ZEROES = 1 << 1

# --- transmission flags (16 bits) ------------------------------------------------------

FLAG_HAS_FLAGS = 1 << 0
FLAG_READ_ONLY = 1 << 1
FLAG_SEND_FLUSH = 1 << 2
FLAG_SEND_FUA = 1 << 3
FLAG_ROTATIONAL = 1 << 4
FLAG_SEND_TRIM = 1 << 5
FLAG_SEND_WRITE_ZEROES = 1 << 6
FLAG_SEND_DF = 1 << 7
FLAG_CAN_MULTI_CONN = 1 << 8
FLAG_SEND_RESIZE = 1 << 9
FLAG_SEND_CACHE = 1 << 10
FLAG_SEND_FAST_ZERO = 1 << 11

# --- options -----------------------------------------------------------------------------

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
REP_ERR_UNSUP = REP_FLAG_ERROR | 1
REP_ERR_POLICY = REP_FLAG_ERROR | 2
REP_ERR_INVALID = REP_FLAG_ERROR | 3
REP_ERR_PLATFORM = REP_FLAG_ERROR | 4
REP_ERR_TLS_REQD = REP_FLAG_ERROR | 5
REP_ERR_UNKNOWN = REP_FLAG_ERROR | 6
REP_ERR_SHUTDOWN = REP_FLAG_ERROR | 7
REP_ERR_BLOCK_SIZE_REQD = REP_FLAG_ERROR | 8
REP_ERR_TOO_BIG = REP_FLAG_ERROR | 9

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# --- transmission: commands, command flags, reply chunks ------------------------------

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4

REPLY_FLAG_DONE = 1 << 0

REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR_BIT = 1 << 15
REPLY_TYPE_ERROR = REPLY_TYPE_ERROR_BIT | 1
REPLY_TYPE_ERROR_OFFSET = REPLY_TYPE_ERROR_BIT | 2

# The protocol's error values (a fixed subset of Linux errno numbers).
EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108

# --- metadata contexts -------------------------------------------------------------------

CONTEXT_BASE_ALLOCATION = "base:allocation"
STATE_HOLE = 1 << 0  # base:allocation
STATE_ZERO = 1 << 1  # base:allocation
STATE_DIRTY = 1 << 0  # qemu:dirty-bitmap:NAME

# --- sizes and limits ----------------------------------------------------------------------

DEFAULT_PORT = 10809
MAX_STRING = 4096  # export names, context names, error messages
MAX_BLOCK = 32 * 1024 * 1024  # the protocol's default maximum payload
ZERO_PAD = 124  # bytes of zeroes after NBD_OPT_EXPORT_NAME unless NO_ZEROES

# --- struct layouts --------------------------------------------------------------------------

GREETING = struct.Struct(">QQH")  # NBDMAGIC, IHAVEOPT, handshake flags
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
OPTION = struct.Struct(">QII")  # IHAVEOPT, option, length
OPTION_REPLY = struct.Struct(">QIII")  # magic, option, reply type, length
EXPORT_NAME_REPLY = struct.Struct(">QH")  # size, transmission flags
INFO_EXPORT_DATA = struct.Struct(">HQH")  # NBD_INFO_EXPORT, size, transmission flags
INFO_BLOCK_SIZE_DATA = struct.Struct(">HIII")  # NBD_INFO_BLOCK_SIZE, min, preferred, max
REQUEST = struct.Struct(">IHHQQI")  # magic, flags, type, handle, offset, length
SIMPLE_REPLY = struct.Struct(">IIQ")  # magic, error, handle
CHUNK = struct.Struct(">IHHQI")  # magic, flags, type, handle, payload length
CHUNK_OFFSET_DATA = struct.Struct(">IHHQIQ")  # chunk header + offset
CHUNK_OFFSET_HOLE = struct.Struct(">IHHQIQI")  # chunk header + offset + hole size
ERROR_HEAD = struct.Struct(">IH")  # error, message length
EXTENT = struct.Struct(">II")  # length, status flags


ByteData = bytes | bytearray | memoryview


class ProtocolViolation(ValueError):
    """A peer sent bytes the protocol forbids; the message says which rule broke."""


def error_name(code: int) -> str:
    """`EIO`-style name of a protocol error value, for one-line messages."""
    return errno.errorcode.get(code, f"error {code}")


_REPLY_NAMES = {
    REP_ACK: "NBD_REP_ACK",
    REP_SERVER: "NBD_REP_SERVER",
    REP_INFO: "NBD_REP_INFO",
    REP_META_CONTEXT: "NBD_REP_META_CONTEXT",
    REP_ERR_UNSUP: "NBD_REP_ERR_UNSUP",
    REP_ERR_POLICY: "NBD_REP_ERR_POLICY",
    REP_ERR_INVALID: "NBD_REP_ERR_INVALID",
    REP_ERR_PLATFORM: "NBD_REP_ERR_PLATFORM",
    REP_ERR_TLS_REQD: "NBD_REP_ERR_TLS_REQD",
    REP_ERR_UNKNOWN: "NBD_REP_ERR_UNKNOWN",
    REP_ERR_SHUTDOWN: "NBD_REP_ERR_SHUTDOWN",
    REP_ERR_BLOCK_SIZE_REQD: "NBD_REP_ERR_BLOCK_SIZE_REQD",
    REP_ERR_TOO_BIG: "NBD_REP_ERR_TOO_BIG",
}


def option_reply_name(reply_type: int) -> str:
    """`NBD_REP_ERR_UNKNOWN`-style name of an option reply type."""
    return _REPLY_NAMES.get(reply_type, f"reply type {reply_type:#x}")


# --- option payload codecs --------------------------------------------------------------


def encode_string(text: str) -> bytes:
    """UTF-8 of a protocol string; refuses what the spec forbids (NUL, > 4096 bytes)."""
    raw = text.encode("utf-8")
    if b"\0" in raw or len(raw) > MAX_STRING:
        raise ValueError(f"not a valid NBD string (NUL or longer than {MAX_STRING} bytes)")
    return raw


def clean_string(text: str) -> bytes:
    """`text` made a valid protocol string: NULs dropped, cut to 4096 bytes of whole
    characters. For human text (descriptions) that must never fail to encode."""
    raw = text.replace("\0", "").encode("utf-8", "replace")[:MAX_STRING]
    return raw.decode("utf-8", "ignore").encode("utf-8")


def decode_string(raw: ByteData) -> str:
    """Inverse of `encode_string`; raises ProtocolViolation on bad UTF-8, NUL or length."""
    if len(raw) > MAX_STRING:
        raise ProtocolViolation(f"string longer than {MAX_STRING} bytes")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("string is not UTF-8") from None
    if "\0" in text:
        raise ProtocolViolation("string contains NUL")
    return text


def encode_info_request(export: str, infos: Sequence[int]) -> bytes:
    """Payload of NBD_OPT_INFO / NBD_OPT_GO: export name and the NBD_INFO_* wanted."""
    name = encode_string(export)
    return b"".join(
        [U32.pack(len(name)), name, U16.pack(len(infos)), *(U16.pack(i) for i in infos)]
    )


def decode_info_request(data: ByteData) -> tuple[str, list[int]]:
    """Inverse of `encode_info_request`; every length must add up exactly."""
    if len(data) < 6:
        raise ProtocolViolation("info request shorter than 6 bytes")
    (name_len,) = U32.unpack_from(data, 0)
    if name_len > len(data) - 6:
        raise ProtocolViolation("info request name longer than its payload")
    name = decode_string(data[4 : 4 + name_len])
    (count,) = U16.unpack_from(data, 4 + name_len)
    if len(data) != 6 + name_len + 2 * count:
        raise ProtocolViolation("info request length does not match its info count")
    infos = [U16.unpack_from(data, 6 + name_len + 2 * i)[0] for i in range(count)]
    return name, infos


def encode_meta_context_request(export: str, queries: Sequence[str]) -> bytes:
    """Payload of NBD_OPT_SET_META_CONTEXT / NBD_OPT_LIST_META_CONTEXT."""
    name = encode_string(export)
    parts = [U32.pack(len(name)), name, U32.pack(len(queries))]
    for query in queries:
        raw = encode_string(query)
        parts += [U32.pack(len(raw)), raw]
    return b"".join(parts)


def decode_meta_context_request(data: ByteData) -> tuple[str, list[str]]:
    """Inverse of `encode_meta_context_request`; every length must add up exactly."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if n > len(data) - pos:
            raise ProtocolViolation("meta context request shorter than its lengths say")
        pos += n
        return bytes(data[pos - n : pos])

    (name_len,) = U32.unpack(take(4))
    export = decode_string(take(name_len))
    (count,) = U32.unpack(take(4))
    if count > (len(data) - pos) // 4:
        raise ProtocolViolation("meta context request has more queries than bytes")
    queries = []
    for _ in range(count):
        (query_len,) = U32.unpack(take(4))
        queries.append(decode_string(take(query_len)))
    if pos != len(data):
        raise ProtocolViolation("meta context request has trailing bytes")
    return export, queries


def encode_server_reply(name: str, description: str) -> bytes:
    """Payload of NBD_REP_SERVER (a reply to NBD_OPT_LIST)."""
    raw = encode_string(name)
    return U32.pack(len(raw)) + raw + clean_string(description)


def decode_server_reply(data: ByteData) -> tuple[str, str]:
    """Inverse of `encode_server_reply`: (export name, description)."""
    if len(data) < 4:
        raise ProtocolViolation("NBD_REP_SERVER shorter than 4 bytes")
    (name_len,) = U32.unpack_from(data, 0)
    if name_len > len(data) - 4:
        raise ProtocolViolation("NBD_REP_SERVER name longer than its payload")
    return decode_string(data[4 : 4 + name_len]), decode_string(data[4 + name_len :])


def encode_option_reply(option: int, reply_type: int, data: bytes = b"") -> bytes:
    """A whole option reply of the handshake: header and `data`."""
    return OPTION_REPLY.pack(OPTION_REPLY_MAGIC, option, reply_type, len(data)) + data


def encode_simple_reply(handle: int, error: int = 0) -> bytes:
    """A simple reply's header (a read's data follows it)."""
    return SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, handle)


def encode_chunk_header(handle: int, kind: int, length: int, *, done: bool) -> bytes:
    """A structured reply chunk's header; `length` bytes of payload follow it."""
    flags = REPLY_FLAG_DONE if done else 0
    return CHUNK.pack(STRUCTURED_REPLY_MAGIC, flags, kind, handle, length)


def encode_hole_chunk(handle: int, offset: int, length: int, *, done: bool) -> bytes:
    """A whole NBD_REPLY_TYPE_OFFSET_HOLE chunk."""
    flags = REPLY_FLAG_DONE if done else 0
    return CHUNK_OFFSET_HOLE.pack(
        STRUCTURED_REPLY_MAGIC, flags, REPLY_TYPE_OFFSET_HOLE, handle, 12, offset, length
    )


def encode_data_chunk_header(handle: int, offset: int, length: int, *, done: bool) -> bytes:
    """An NBD_REPLY_TYPE_OFFSET_DATA chunk's header; `length` bytes of data follow it."""
    flags = REPLY_FLAG_DONE if done else 0
    return CHUNK_OFFSET_DATA.pack(
        STRUCTURED_REPLY_MAGIC, flags, REPLY_TYPE_OFFSET_DATA, handle, length + 8, offset
    )


def encode_error_chunk(handle: int, code: int, message: str, *, offset: int | None = None) -> bytes:
    """A whole NBD_REPLY_TYPE_ERROR(_OFFSET) chunk with the DONE flag set."""
    text = message.encode("utf-8", "replace")[:MAX_STRING]
    if offset is None:
        kind, tail = REPLY_TYPE_ERROR, b""
    else:
        kind, tail = REPLY_TYPE_ERROR_OFFSET, U64.pack(offset)
    payload = ERROR_HEAD.pack(code, len(text)) + text + tail
    return encode_chunk_header(handle, kind, len(payload), done=True) + payload


def decode_error_payload(kind: int, payload: ByteData) -> tuple[int, str, int | None]:
    """(error, message, offset or None) of an error chunk's payload.

    Unknown error types (bit 15 set) are decoded like NBD_REPLY_TYPE_ERROR:
    the spec says their first fields are shared.
    """
    if len(payload) < ERROR_HEAD.size:
        raise ProtocolViolation("error chunk shorter than 6 bytes")
    code, msg_len = ERROR_HEAD.unpack_from(payload, 0)
    end = ERROR_HEAD.size + msg_len
    if end > len(payload):
        raise ProtocolViolation("error chunk message longer than its payload")
    message = bytes(payload[ERROR_HEAD.size : end]).decode("utf-8", "replace")
    offset = None
    if kind == REPLY_TYPE_ERROR_OFFSET:
        if len(payload) != end + 8:
            raise ProtocolViolation("NBD_REPLY_TYPE_ERROR_OFFSET has a bad length")
        (offset,) = U64.unpack_from(payload, end)
    elif kind == REPLY_TYPE_ERROR and len(payload) != end:
        raise ProtocolViolation("NBD_REPLY_TYPE_ERROR has trailing bytes")
    if code == 0:
        raise ProtocolViolation("error chunk with error value 0")
    return code, message, offset


def encode_extents(context_id: int, extents: Sequence[tuple[int, int]]) -> bytes:
    """Payload of NBD_REPLY_TYPE_BLOCK_STATUS: context id, then (length, flags) pairs."""
    return U32.pack(context_id) + b"".join(EXTENT.pack(n, f) for n, f in extents)


def decode_extents(payload: ByteData) -> tuple[int, list[tuple[int, int]]]:
    """Inverse of `encode_extents`; refuses empty lists and zero-length extents."""
    if len(payload) < 12 or (len(payload) - 4) % 8:
        raise ProtocolViolation("block status chunk length is not 4 + 8*n (n >= 1)")
    (context_id,) = U32.unpack_from(payload, 0)
    pairs = [(n, f) for n, f in EXTENT.iter_unpack(memoryview(payload)[4:])]
    if any(n == 0 for n, _ in pairs):
        raise ProtocolViolation("block status extent of length 0")
    return context_id, pairs
