"""Hostile tar input that costs memory without growing the archive much:
global PAX headers (`g`), whose records tarfile keeps for the whole archive
and copies into every later member."""

from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc

import pytest

from strongroom.errors import SourceError
from strongroom.sources.tar_stream import MAX_GLOBAL_RECORDS, read_tar


def _record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    for digits in range(1, 8):
        if len(str(len(body) + digits)) == digits:
            return str(len(body) + digits).encode() + body
    raise AssertionError


def _global_header(records: bytes) -> bytes:
    info = tarfile.TarInfo("pax_global_header")
    info.type = tarfile.XGLTYPE
    info.size = len(records)
    return info.tobuf(tarfile.USTAR_FORMAT) + records + b"\0" * (-len(records) % 512)


def _archive(headers: int, keys: int) -> bytes:
    out = bytearray()
    for g in range(headers):
        out += _global_header(b"".join(_record(f"k{g}.{i}", "v") for i in range(keys)))
        member = tarfile.TarInfo(f"f{g}")
        out += member.tobuf(tarfile.USTAR_FORMAT)
    return bytes(out + b"\0" * 1024)


def test_global_pax_records_are_bounded() -> None:
    # 6 MiB of records (60 KiB gzipped) would cost ~70 MiB of dictionaries,
    # growing with the archive, and be copied into every member.
    blob = gzip.compress(_archive(8, 60_000))
    tracemalloc.start()
    try:
        with pytest.raises(SourceError, match="global"):
            for _ in read_tar(io.BytesIO(blob), "bomb.tar.gz", lambda _: None):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20


def test_a_global_header_of_a_few_records_is_read() -> None:
    # `git archive` writes one global header (the commit id).
    blob = _global_header(_record("comment", "0" * 40)) + _archive(0, 0)
    member = tarfile.TarInfo("a")
    blob = blob[:-1024] + member.tobuf(tarfile.USTAR_FORMAT) + b"\0" * 1024
    names = [m.path for m in read_tar(io.BytesIO(blob), "git.tar", lambda _: None)]
    assert names == [b"a"]
    assert MAX_GLOBAL_RECORDS >= 64


def _old_gnu_sparse(extension_blocks: int) -> bytes:
    """An old-GNU sparse member ('S') whose header chains `extension_blocks`
    extension blocks of 21 regions each (the bomb: tarfile keeps them all)."""
    info = tarfile.TarInfo("sparse")
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = 0
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[482] = 1 if extension_blocks else 0  # isextended
    header[483:495] = b"%011o\0" % 0  # realsize
    header[148:156] = b" " * 8  # the checksum counts its own field as spaces
    header[148:155] = b"%06o\0" % sum(header)
    block = bytearray(512)
    for i in range(21):
        block[i * 24 : i * 24 + 12] = b"%011o\0" % (i + 1)
        block[i * 24 + 12 : i * 24 + 24] = b"%011o\0" % 1
    chain = bytearray()
    for n in range(extension_blocks):
        block[504] = 1 if n < extension_blocks - 1 else 0
        chain += block
    return bytes(header + chain + b"\0" * 1024)


def test_a_sparse_header_chain_is_bounded() -> None:
    data = gzip.compress(_old_gnu_sparse(20_000))
    tracemalloc.start()
    try:
        with pytest.raises(SourceError, match="extension headers"):
            for _ in read_tar(io.BytesIO(data), "bomb.tar.gz", lambda _: None):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_a_modest_sparse_header_chain_still_reads() -> None:
    names = [m.path for m in read_tar(io.BytesIO(_old_gnu_sparse(3)), "ok.tar", lambda _: None)]
    assert names == [b"sparse"]
