"""--limit-read's source wrapper: the same blocks, at most at the rate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.bandwidth import TokenBucket
from strongroom.sources.block import RawSource
from strongroom.sources.throttle import read_limited
from tests.test_bandwidth import MIB, FakeClock


def test_reads_are_the_same_bytes_at_the_rate(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    data = os.urandom(4 * MIB)
    image.write_bytes(data)
    clock = FakeClock()
    inner = RawSource(str(image))
    assert read_limited(inner, None) is inner
    source = read_limited(inner, TokenBucket(8 * MIB, clock=clock, sleep=clock.sleep))
    try:
        assert (source.size, source.description) == (inner.size, inner.description)
        assert list(source.allocation()) == list(inner.allocation())
        got = b"".join(bytes(d) for _, d in source.read_blocks([(i * MIB, MIB) for i in range(4)]))
        assert got == data and source.bytes_read == 4 * MIB
        assert clock.now - 1000.0 == pytest.approx(0.5)
    finally:
        source.close()
