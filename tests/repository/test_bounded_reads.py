"""Objects read whole from storage are read with a bound (docs/design.md §7): a
planted multi-GiB object under a point's, lock's, lease's, index file's, key
file's, pack's or the config's name is refused with one line, in bounded
memory. Each attack runs in a child process under an address-space limit
(RLIMIT_AS) well below the planted size, so an unbounded read fails there
with MemoryError instead of hurting the machine."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from strongroom.errors import IntegrityError
from strongroom.repository import format as fmt
from strongroom.repository.compress import ZSTD
from strongroom.repository.format import BlobType
from strongroom.repository.pack import blob_ad
from strongroom.repository.repo import MAX_CHUNK_SIZE, Repository
from strongroom.storage.base import get_bounded
from strongroom.storage.memory import MemoryBackend

GiB = 1 << 30
PLANTED = 3 * GiB
AS_LIMIT = 2 * GiB  # the child may use this much address space, less than PLANTED
HEX = "ab" * 32

_CHILD = r"""
import json, sys
from strongroom.storage.local import LocalBackend
from strongroom.repository.pack import blob_ad
from strongroom.repository.repo import MAX_CHUNK_SIZE, Repository
from strongroom.repository.locks import list_locks
from strongroom.repository.leases import LeaseStore
from strongroom.repository.repair import salvage_packs
from strongroom.errors import StrongroomError

path, what = sys.argv[1], sys.argv[2]
out = {}
try:
    repo = Repository.open(LocalBackend(path), b"%s")
    if what == "points":
        repo.load_point("%s")
    elif what == "locks":
        out["locks"] = len(list_locks(repo.backend, repo.sealer))
    elif what == "leases":
        out["lease"] = LeaseStore(repo.backend, repo.sealer).current("vm1").holder
    elif what == "index":
        out["index"] = len(repo.read_index_files())
    elif what == "data":
        out["skipped"] = list(salvage_packs(repo).packs_skipped.values())
    out["damage"] = list(repo.damage.found.values())
except StrongroomError as err:
    out["error"] = str(err)
# VmHWM is this program's own peak: ru_maxrss would also count the pytest worker
# this child was forked from (Linux keeps the larger across exec).
with open("/proc/self/status") as status:
    out["maxrss_kib"] = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
print(json.dumps(out))
"""


def _plant(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(PLANTED)  # sparse: costs no disk


def _run(repo_path: Path, what: str) -> dict[str, object]:
    from tests.helpers.cli import PASSWORD

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

    code = _CHILD % (PASSWORD, HEX)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(repo_path), what],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, object] = json.loads(proc.stdout)
    assert int(str(result["maxrss_kib"])) < 400 * 1024  # never near the planted size
    return result


def _one_line_naming(text: object, name: str) -> None:
    assert isinstance(text, str) and "\n" not in text
    assert name in text and "larger than" in text


@pytest.mark.parametrize(
    ("what", "where"),
    [
        ("points", f"points/{HEX}"),
        ("locks", f"locks/{HEX}"),
        ("leases", "leases/vm1/0000000000000001"),
        ("index", f"index/{HEX}"),
        ("keys", f"keys/{HEX}"),
        ("data", f"data/ab/{HEX}"),
    ],
)
def test_a_planted_huge_object_is_refused_in_bounded_memory(
    local_repo: Repository, repo_path: Path, what: str, where: str
) -> None:
    local_repo.put_chunk(BlobType.DATA, b"some data" * 100)
    local_repo.flush()
    _plant(repo_path / where)
    result = _run(repo_path, what)
    assert "error" not in result or what == "points", result
    if what == "points":
        _one_line_naming(result["error"], where)
    elif what == "locks":
        assert result["locks"] == 0  # not a lock anyone holds
    elif what == "leases":
        assert result["lease"] == ""  # a damaged generation holds nothing
    elif what == "data":
        (why,) = result["skipped"]  # type: ignore[misc]
        _one_line_naming(why, where)
    else:  # index files and key files are reported as damage
        (why,) = result["damage"]  # type: ignore[misc]
        assert isinstance(why, str) and "\n" not in why and where in why
    assert os.path.getsize(repo_path / where) == PLANTED  # left in place, not deleted


def test_a_planted_huge_config_is_refused_in_bounded_memory(
    local_repo: Repository, repo_path: Path
) -> None:
    _plant(repo_path / fmt.CONFIG_NAME)
    result = _run(repo_path, "open")
    _one_line_naming(result["error"], fmt.CONFIG_NAME)


def test_get_bounded_reads_no_more_than_the_bound() -> None:
    backend = MemoryBackend()
    backend.put("a/b", b"x" * 1000)
    asked: list[int] = []
    real = backend.get_range

    def get_range(name: str, offset: int, length: int) -> bytes:
        asked.append(length)
        return real(name, offset, length)

    backend.get_range = get_range  # type: ignore[method-assign]
    assert get_bounded(backend, "a/b", 1000) == b"x" * 1000
    with pytest.raises(IntegrityError, match="larger than 999 bytes"):
        get_bounded(backend, "a/b", 999)
    with pytest.raises(IntegrityError, match="larger than 10 bytes"):
        get_bounded(backend, "a/b", 10, size=1000)  # the listed size: nothing read
    assert get_bounded(backend, "a/b", 5000, size=10) == b"x" * 1000  # grew since listed
    assert max(asked) <= 5001 and asked[2:4] == [11, 4990]


# --- the size a tree declares (2.2) ------------------------------------------------


def test_a_tree_declaring_a_huge_chunk_cannot_make_zstd_allocate_it(
    memory_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key holder stores a zstd frame declaring 3 GiB of zeros and a tree
    whose entry (`cs`) declares 3 GiB: the declared size is refused before
    anything is decompressed (a spy stands in for zstd so that the old code
    fails the test instead of allocating 3 GiB)."""
    huge = 3 * GiB
    frame = zstandard.ZstdCompressor().compressobj(size=huge).compress(b"")  # header only
    cid = memory_repo.chunk_id(b"never decompressed")
    sealed = memory_repo.sealer.seal(bytes([ZSTD]) + frame, blob_ad(cid, BlobType.DATA))
    memory_repo.add_sealed_copy(cid, BlobType.DATA, bytes(sealed), huge)
    memory_repo.flush()
    bounds: list[int] = []

    def unpack(payload: bytes, max_size: int) -> bytes:
        bounds.append(max_size)
        assert max_size <= MAX_CHUNK_SIZE[BlobType.DATA], "zstd would allocate this"
        return b""

    monkeypatch.setattr(memory_repo.compressor, "unpack", unpack)
    with pytest.raises(IntegrityError, match="declared size 3221225472 is impossible"):
        memory_repo.load_chunk(cid, BlobType.DATA, raw_length=huge)
    assert bounds == []


def test_repair_refuses_an_index_size_above_the_maximum(memory_repo: Repository) -> None:
    from strongroom.repository.repair import _chunk_ok

    data = b"abc" * 100
    cid = memory_repo.put_chunk(BlobType.DATA, data)
    memory_repo.flush()
    loc = memory_repo.locate(cid)
    sealed = memory_repo.backend.get_range(fmt.pack_name(loc.pack.hex()), loc.offset, loc.length)
    assert _chunk_ok(memory_repo, cid, sealed, len(data), int(BlobType.DATA))
    too_big = MAX_CHUNK_SIZE[BlobType.DATA] + 1
    assert not _chunk_ok(memory_repo, cid, sealed, too_big, int(BlobType.DATA))
