"""The client's side of the NBD handshake (fixed newstyle, with fallbacks).

Order: NBD_OPT_STRUCTURED_REPLY (block status and sparse reads need it), then
NBD_OPT_SET_META_CONTEXT for the wanted contexts, then NBD_OPT_GO asking for
NBD_INFO_BLOCK_SIZE. A server that does not know NBD_OPT_GO gets
NBD_OPT_EXPORT_NAME; a plain newstyle server gets only that; an oldstyle
server is accepted for the default export. Everything the server sends is
checked; a violation raises `ProtocolViolation`, a socket failure `WireError`,
and a refusal (unknown export, policy) `HandshakeRefused`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from strongroom.nbd import protocol as p
from strongroom.nbd.wire import WireError, recv_bytes, send

_log = logging.getLogger(__name__)

MAX_OPTION_REPLY = 1 << 20  # no legitimate option reply comes near this
DEFAULT_MIN_BLOCK = 1
DEFAULT_PREFERRED_BLOCK = 4096


class HandshakeRefused(Exception):
    """The server answered an option with an error reply, or dropped NBD_OPT_EXPORT_NAME."""


@dataclass
class Negotiated:
    """What the handshake settled: the export's size and flags, and the options."""

    size: int = 0
    flags: int = 0
    structured: bool = False
    contexts: dict[str, int] = field(default_factory=dict)
    min_block: int = DEFAULT_MIN_BLOCK
    preferred_block: int = DEFAULT_PREFERRED_BLOCK
    max_block: int = p.MAX_BLOCK
    description: str = ""


def negotiate(
    sock: socket.socket, export: str, meta_contexts: Sequence[str], *, structured: bool = True
) -> Negotiated:
    """Run the handshake on a fresh connection and return what was agreed (with
    `structured` False, only simple replies: for testing servers' fallbacks)."""
    name = p.encode_string(export)
    magic, second = p.U64.unpack(recv_bytes(sock, 8)) + p.U64.unpack(recv_bytes(sock, 8))
    if magic != p.NBDMAGIC:
        raise p.ProtocolViolation(f"not an NBD server (greeting {magic:#x})")
    if second == p.OLDSTYLE_MAGIC:
        return _oldstyle(sock, export)
    if second != p.IHAVEOPT:
        raise p.ProtocolViolation(f"unknown handshake magic {second:#x}")
    (hflags,) = p.U16.unpack(recv_bytes(sock, 2))
    fixed = bool(hflags & p.FLAG_FIXED_NEWSTYLE)
    no_zeroes = bool(hflags & p.FLAG_NO_ZEROES)
    cflags = (p.FLAG_C_FIXED_NEWSTYLE if fixed else 0) | (p.FLAG_C_NO_ZEROES if no_zeroes else 0)
    send(sock, [p.U32.pack(cflags)])
    result = Negotiated()
    if not fixed:
        return _export_name(sock, name, no_zeroes, result)
    result.structured = structured and _structured_reply(sock)
    if result.structured and meta_contexts:
        result.contexts = _set_meta_context(sock, export, meta_contexts)
    if _go(sock, export, result):
        return result
    return _export_name(sock, name, no_zeroes, result)


def _oldstyle(sock: socket.socket, export: str) -> Negotiated:
    if export:
        raise HandshakeRefused("an oldstyle server has no named exports")
    raw = recv_bytes(sock, 8 + 4 + p.ZERO_PAD)
    (size,) = p.U64.unpack_from(raw, 0)
    (flags,) = p.U32.unpack_from(raw, 8)
    return Negotiated(size=size, flags=flags & 0xFFFF)


def _send_option(sock: socket.socket, option: int, data: bytes = b"") -> None:
    send(sock, [p.OPTION.pack(p.IHAVEOPT, option, len(data)) + data])


def _read_option_reply(sock: socket.socket, option: int) -> tuple[int, bytearray]:
    magic, echoed, reply_type, length = p.OPTION_REPLY.unpack(recv_bytes(sock, 20))
    if magic != p.OPTION_REPLY_MAGIC:
        raise p.ProtocolViolation(f"bad option reply magic {magic:#x}")
    if echoed != option:
        raise p.ProtocolViolation(f"reply to option {echoed} while {option} was asked")
    if length > MAX_OPTION_REPLY:
        raise p.ProtocolViolation(f"option reply of {length} bytes")
    return reply_type, recv_bytes(sock, length)


def _refusal(reply_type: int, data: p.ByteData, what: str) -> HandshakeRefused:
    message = bytes(data).decode("utf-8", "replace").strip()
    detail = f": {message}" if message else ""
    return HandshakeRefused(f"{what} refused ({p.option_reply_name(reply_type)}{detail})")


def _structured_reply(sock: socket.socket) -> bool:
    _send_option(sock, p.OPT_STRUCTURED_REPLY)
    reply_type, data = _read_option_reply(sock, p.OPT_STRUCTURED_REPLY)
    if reply_type == p.REP_ACK:
        if data:
            raise p.ProtocolViolation("NBD_REP_ACK with a payload")
        return True
    if reply_type & p.REP_FLAG_ERROR:
        _log.debug("server declined structured replies: %s", p.option_reply_name(reply_type))
        return False
    raise p.ProtocolViolation(f"unexpected reply {reply_type:#x} to NBD_OPT_STRUCTURED_REPLY")


def _set_meta_context(sock: socket.socket, export: str, queries: Sequence[str]) -> dict[str, int]:
    _send_option(sock, p.OPT_SET_META_CONTEXT, p.encode_meta_context_request(export, queries))
    contexts: dict[str, int] = {}
    while True:
        reply_type, data = _read_option_reply(sock, p.OPT_SET_META_CONTEXT)
        if reply_type == p.REP_META_CONTEXT:
            if len(data) < 5:
                raise p.ProtocolViolation("NBD_REP_META_CONTEXT shorter than 5 bytes")
            (context_id,) = p.U32.unpack_from(data, 0)
            contexts[p.decode_string(data[4:])] = context_id
        elif reply_type == p.REP_ACK:
            if len(set(contexts.values())) != len(contexts):
                raise p.ProtocolViolation("two metadata contexts share an id")
            return contexts
        elif reply_type & p.REP_FLAG_ERROR:
            _log.debug("server declined meta contexts: %s", p.option_reply_name(reply_type))
            return {}
        else:
            raise p.ProtocolViolation(f"unexpected reply {reply_type:#x} to SET_META_CONTEXT")


def _go(sock: socket.socket, export: str, result: Negotiated) -> bool:
    """NBD_OPT_GO; False if the server does not know it (then use NBD_OPT_EXPORT_NAME)."""
    infos = [p.INFO_BLOCK_SIZE, p.INFO_DESCRIPTION]
    _send_option(sock, p.OPT_GO, p.encode_info_request(export, infos))
    have_export = False
    while True:
        reply_type, data = _read_option_reply(sock, p.OPT_GO)
        if reply_type == p.REP_INFO:
            have_export |= _apply_info(data, result)
        elif reply_type == p.REP_ACK:
            if not have_export:
                raise p.ProtocolViolation("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT")
            return True
        elif reply_type == p.REP_ERR_UNSUP:
            return False
        elif reply_type & p.REP_FLAG_ERROR:
            raise _refusal(reply_type, data, f"export {export!r}")
        else:
            raise p.ProtocolViolation(f"unexpected reply {reply_type:#x} to NBD_OPT_GO")


def _apply_info(data: p.ByteData, result: Negotiated) -> bool:
    """Record one NBD_REP_INFO; True if it was NBD_INFO_EXPORT."""
    if len(data) < 2:
        raise p.ProtocolViolation("NBD_REP_INFO shorter than 2 bytes")
    (info,) = p.U16.unpack_from(data, 0)
    if info == p.INFO_EXPORT:
        if len(data) != p.INFO_EXPORT_DATA.size:
            raise p.ProtocolViolation("NBD_INFO_EXPORT has a bad length")
        _, result.size, result.flags = p.INFO_EXPORT_DATA.unpack(data)
        return True
    if info == p.INFO_BLOCK_SIZE:
        if len(data) != p.INFO_BLOCK_SIZE_DATA.size:
            raise p.ProtocolViolation("NBD_INFO_BLOCK_SIZE has a bad length")
        _, minimum, preferred, maximum = p.INFO_BLOCK_SIZE_DATA.unpack(data)
        # The spec wants powers of two and a maximum that is a multiple of the minimum
        # (or 0xffffffff); only what the client's arithmetic relies on is enforced.
        if not 1 <= minimum <= 65536 or maximum < minimum or preferred < 1:
            raise p.ProtocolViolation(f"bad block sizes {minimum}/{preferred}/{maximum}")
        result.min_block, result.preferred_block, result.max_block = minimum, preferred, maximum
    elif info == p.INFO_DESCRIPTION:
        result.description = bytes(data[2:]).decode("utf-8", "replace")
    return False  # unknown infos are ignored, as the spec asks


def _export_name(
    sock: socket.socket, name: bytes, no_zeroes: bool, result: Negotiated
) -> Negotiated:
    _send_option(sock, p.OPT_EXPORT_NAME, name)
    try:
        raw = recv_bytes(sock, p.EXPORT_NAME_REPLY.size + (0 if no_zeroes else p.ZERO_PAD))
    except WireError as err:  # the only way a server can refuse NBD_OPT_EXPORT_NAME
        export = name.decode()
        raise HandshakeRefused(f"export {export!r} refused (connection closed)") from err
    result.size, result.flags = p.EXPORT_NAME_REPLY.unpack_from(raw, 0)
    return result
