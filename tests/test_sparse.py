"""sparse.data_runs: what of a chunk is written into a fresh file (the rest stays holes)."""

from __future__ import annotations

import os

from strongroom.sparse import HOLE_PIECE, data_runs


def _rebuild(data: bytes) -> bytes:
    out = bytearray(len(data))
    for start, end in data_runs(data):
        out[start:end] = data[start:end]
    return bytes(out)


def test_runs_cover_every_nonzero_byte_and_skip_aligned_zero_pieces() -> None:
    random = os.urandom(3 * HOLE_PIECE + 11)
    cases = [
        b"",
        bytes(5 * HOLE_PIECE),
        random,
        bytes(2 * HOLE_PIECE + 100) + b"abc",
        b"x" * 5000 + bytes(3 * HOLE_PIECE) + b"y",
        random[:100] + bytes(HOLE_PIECE - 1) + random[:100],  # no whole zero piece
    ]
    for data in cases:
        runs = list(data_runs(data))
        assert _rebuild(data) == data
        assert runs == sorted(runs) and all(a < b for a, b in runs)
        written = sum(b - a for a, b in runs)
        pieces = [data[p : p + HOLE_PIECE] for p in range(0, len(data), HOLE_PIECE)]
        zero = sum(len(p) for p in pieces if not p.strip(b"\0"))
        assert written == len(data) - zero


def test_data_without_a_zero_piece_is_one_run() -> None:
    data = os.urandom(1 << 20)
    assert list(data_runs(data)) == [(0, len(data))]
