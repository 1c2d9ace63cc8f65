"""The reply encoders of nbd/protocol.py, byte for byte against the NBD spec's layouts."""

from __future__ import annotations

import struct

from strongroom.nbd import protocol as p


def test_simple_reply() -> None:
    assert p.encode_simple_reply(7) == bytes.fromhex("67446698 00000000 0000000000000007")
    assert p.encode_simple_reply(7, p.EIO)[4:8] == struct.pack(">I", 5)


def test_chunk_headers() -> None:
    head = p.encode_chunk_header(9, p.REPLY_TYPE_BLOCK_STATUS, 12, done=True)
    assert head == struct.pack(">IHHQI", 0x668E33EF, 1, 5, 9, 12)
    assert p.encode_chunk_header(9, p.REPLY_TYPE_NONE, 0, done=False)[4:6] == b"\0\0"


def test_offset_chunks() -> None:
    hole = p.encode_hole_chunk(3, 4096, 512, done=False)
    assert hole == struct.pack(">IHHQIQI", 0x668E33EF, 0, 2, 3, 12, 4096, 512)
    data = p.encode_data_chunk_header(3, 4096, 512, done=True)
    assert data == struct.pack(">IHHQIQ", 0x668E33EF, 1, 1, 3, 520, 4096)


def test_error_chunk_is_a_done_chunk() -> None:
    chunk = p.encode_error_chunk(5, p.EIO, "bad")
    assert chunk[:20] == struct.pack(">IHHQI", 0x668E33EF, 1, 0x8001, 5, 9)
    assert p.decode_error_payload(p.REPLY_TYPE_ERROR, chunk[20:]) == (p.EIO, "bad", None)


def test_option_reply() -> None:
    reply = p.encode_option_reply(p.OPT_GO, p.REP_ACK)
    assert reply == struct.pack(">QIII", 0x3E889045565A9, p.OPT_GO, 1, 0)
