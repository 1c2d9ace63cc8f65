"""Seeds from tar archives (pipeline/archive_tree.py, sources/tar_stream.py).

The dedup promise: the same files as a directory and as a tar archive (any
compression) give the very same chunk list per file. Then tar semantics
(order, implied directories, replacement, hard links) and hostile archives:
refused names, damage and truncation are one SourceError line, and nothing
is recorded.
"""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.errors import SourceError
from strongroom.model.tree import DIR, FILE, SYMLINK
from strongroom.pipeline.archive_tree import ArchiveTree
from strongroom.repository.repo import Repository
from strongroom.services.seed_add import (
    SeedRequest,
    SourceKind,
    add_seed,
    detect_source,
    tree_from_tar,
)
from strongroom.services.seeds import list_seeds
from strongroom.sources.tar_stream import MAX_CHAIN, MAX_EXTENDED, read_tar
from strongroom.storage.memory import MemoryBackend
from tests.helpers.cli import PASSWORD
from tests.helpers.seed_sources import (
    CDC_MIN,
    MTIME_NS,
    TAR_FLAGS,
    gnu_tar,
    make_machine_tree,
    seed_files,
)


def add(repo: Repository, name: str, source: Path) -> dict[str, object]:
    seed = add_seed(repo, SeedRequest(name=name, sources=[str(source)]))
    return {"seed": seed, "files": seed_files(repo, seed.tree)}


@pytest.fixture
def machine(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path / "machine"
    return root, make_machine_tree(root)


# --- the dedup promise -----------------------------------------------------------


@pytest.mark.parametrize("compression", list(TAR_FLAGS))
def test_tar_and_directory_give_the_same_chunks_per_file(
    local_repo: Repository, machine: tuple[Path, dict[str, bytes]], tmp_path: Path, compression: str
) -> None:
    root, contents = machine
    archive = gnu_tar(root, tmp_path / f"machine.tar.{compression}", compression)
    assert detect_source(str(archive)) == SourceKind.TAR
    from_dir = add(local_repo, "dir", root)
    from_tar = add(local_repo, "tar", archive)
    dir_files, tar_files = from_dir["files"], from_tar["files"]
    assert isinstance(dir_files, dict) and isinstance(tar_files, dict)
    assert sorted(dir_files) == sorted(tar_files)
    for path, node in dir_files.items():
        other = tar_files[path]
        assert (other.type, other.mode, other.size) == (node.type, node.mode, node.size), path
        assert other.mtime_ns == node.mtime_ns == MTIME_NS, path
        assert other.chunks == node.chunks and other.chunk_sizes == node.chunk_sizes, path
        assert other.link_target == node.link_target, path
        assert {k: v for k, v in other.xattrs.items() if k.startswith(b"user.")} == {
            k: v for k, v in node.xattrs.items() if k.startswith(b"user.")
        }, path
    # The chunking rules each size class exercises.
    assert len(tar_files["usr/lib/exact.so"].chunks) == 1
    assert len(tar_files["usr/lib/big.so"].chunks) > 1
    assert tar_files["etc/empty.conf"].chunks == []
    assert tar_files["usr/lib/outside"].type == SYMLINK
    assert tar_files["usr/lib/outside"].link_target == b"../../etc/passwd"
    assert tar_files["var/empty-dir"].type == DIR and tar_files["var/empty-dir"].mode == 0o700
    if dir_files["etc/hostname"].xattrs:
        assert tar_files["etc/hostname"].xattrs[b"user.origin"] == b"seed\x00\xff"
    big, link = tar_files["usr/lib/big.so"], tar_files["usr/lib/big-link.so"]
    assert big.nlink == link.nlink == 2 and big.inode == link.inode != 0
    # Everything the tar holds was stored already: only its trees are new.
    seed = from_tar["seed"]
    summary = seed.summary  # type: ignore[attr-defined]
    assert summary["files"] == len(contents)
    assert summary["bytes"] == sum(len(v) for v in contents.values())
    assert summary["data_added"] < 16 * 1024, summary


def test_tar_seed_first_then_directory_adds_no_data(
    local_repo: Repository, machine: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, contents = machine
    archive = gnu_tar(root, tmp_path / "m.tar.zst", "zst")
    first = add(local_repo, "tar", archive)["seed"]
    unique = sum(len(v) for k, v in contents.items() if k != "usr/lib/big-link.so")
    assert first.summary["data_added"] >= unique  # type: ignore[attr-defined]
    # (FileBackup's summary counts the Repository object's whole session: measure here.)
    before = local_repo.stats.bytes_added_raw
    add(local_repo, "dir", root)
    assert local_repo.stats.bytes_added_raw - before < 16 * 1024


# --- tar semantics ---------------------------------------------------------------


def make_tar(
    members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT
) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.mtime = 1_600_000_000
    for key, value in fields.items():
        setattr(member, key, value)
    return member


def ingest(repo: Repository, data: bytes, label: str = "t.tar") -> dict[str, object]:
    warnings: list[str] = []
    with ArchiveTree(repo) as tree:
        tree.add(read_tar(io.BytesIO(data), label, warnings.append), label)
        result = tree.finish()
    return {"files": seed_files(repo, result.tree), "summary": result.summary}


def test_any_order_implied_directories_and_later_members_win(memory_repo: Repository) -> None:
    data = make_tar(
        [
            (info("./a/b/c.txt", mode=0o600), b"deep"),
            (info("a", tarfile.DIRTYPE, mode=0o700, uid=7, uname="ann"), None),
            (info("/x.txt"), b"first"),
            (info("x.txt"), b"second"),
            (info("./", tarfile.DIRTYPE, mode=0o711), None),  # the root: nothing to place
        ]
    )
    files = ingest(memory_repo, data)["files"]
    assert isinstance(files, dict)
    assert sorted(files) == ["a", "a/b", "a/b/c.txt", "x.txt"]
    assert (files["a"].mode, files["a"].uid, files["a"].user) == (0o700, 7, "ann")
    assert (files["a/b"].mode, files["a/b"].uid, files["a/b"].mtime_ns) == (0o755, 0, 0)
    assert files["x.txt"].size == len(b"second")
    assert files["a/b/c.txt"].mtime_ns == 1_600_000_000 * 10**9


def test_directory_member_after_its_files_keeps_them(memory_repo: Repository) -> None:
    data = make_tar([(info("d/f"), b"1"), (info("d", tarfile.DIRTYPE, mode=0o750), None)])
    files = ingest(memory_repo, data)["files"]
    assert isinstance(files, dict)
    assert files["d"].mode == 0o750 and "d/f" in files


def test_hard_link_keeps_content_when_its_target_is_replaced(memory_repo: Repository) -> None:
    big_a, big_b = b"A" * (CDC_MIN + 10), b"B" * 1000
    data = make_tar(
        [
            (info("f"), big_a),
            (info("l", tarfile.LNKTYPE, linkname="./f"), None),
            (info("f"), big_b),
        ]
    )
    files = ingest(memory_repo, data)["files"]
    assert isinstance(files, dict)
    assert files["l"].size == len(big_a) and files["f"].size == len(big_b)
    assert files["l"].nlink == files["f"].nlink == 1 and files["l"].inode == 0


def test_unsupported_member_types_are_skipped_with_a_warning(memory_repo: Repository) -> None:
    label = info("volume", b"V")  # a GNU volume label
    warnings: list[str] = []
    with ArchiveTree(memory_repo) as tree:
        data = make_tar([(label, None), (info("kept"), b"1")], fmt=tarfile.GNU_FORMAT)
        tree.add(read_tar(io.BytesIO(data), "t.tar", warnings.append), "t.tar")
        files = seed_files(memory_repo, tree.finish().tree)
    assert sorted(files) == ["kept"]
    assert warnings == ["t.tar: volume: unsupported member type b'V', skipped"]


def test_hard_link_to_a_missing_target_is_refused(memory_repo: Repository) -> None:
    data = make_tar([(info("l", tarfile.LNKTYPE, linkname="nowhere"), None)])
    with pytest.raises(SourceError, match="hard link l names nowhere"):
        ingest(memory_repo, data)


def test_devices_fifos_and_times_with_nanoseconds(memory_repo: Repository) -> None:
    dev = info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
    fifo = info("run/fifo", tarfile.FIFOTYPE)
    exact = info("t")
    exact.pax_headers = {"mtime": "1700000000.123456789", "atime": "1700000001.5"}
    files = ingest(memory_repo, make_tar([(dev, None), (fifo, None), (exact, b"x")]))["files"]
    assert isinstance(files, dict)
    assert files["dev/null"].rdev == __import__("os").makedev(1, 3)
    assert files["run/fifo"].type == "p"
    assert files["t"].mtime_ns == 1_700_000_000_123_456_789
    assert files["t"].atime_ns == 1_700_000_001_500_000_000


# --- hostile archives ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../etc/passwd", "'..'"),
        ("a/../../b", "'..'"),
        ("a//b", "empty"),
        ("a/./b", "empty or '.'"),
        ("a\x00b", "NUL"),
        ("x" * 300, "longer than 255"),
        ("/".join(["d"] * 300), "deeper than"),
    ],
)
def test_hostile_names_are_refused_and_nothing_recorded(
    local_repo: Repository, tmp_path: Path, name: str, problem: str
) -> None:
    member = info("placeholder")
    member.pax_headers = {"path": name}
    source = tmp_path / "hostile.tar"
    source.write_bytes(make_tar([(info("fine"), b"ok"), (member, b"evil")]))
    with pytest.raises(SourceError) as err:
        add_seed(local_repo, SeedRequest(name="hostile", sources=[str(source)]))
    message = str(err.value)
    assert "\n" not in message and str(source) in message and problem in message
    assert list_seeds(local_repo) == []


def test_symlink_targets_are_data(memory_repo: Repository) -> None:
    data = make_tar([(info("l", tarfile.SYMTYPE, linkname="../../../../etc/shadow"), None)])
    files = ingest(memory_repo, data)["files"]
    assert isinstance(files, dict)
    assert files["l"].link_target == b"../../../../etc/shadow"


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gz":
        return gzip.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "zst":
        return zstandard.ZstdCompressor().compress(data)
    if kind == "bz2":
        import bz2

        return bz2.compress(data)
    return data


@pytest.fixture
def sample_tar() -> bytes:
    return make_tar(
        [
            (info("a/one"), b"1" * 5000),
            (info("a/two"), bytes(range(256)) * 2000),
            (info("b", tarfile.DIRTYPE), None),
            (info("b/three"), b"3" * 3000),
        ]
    )


@pytest.mark.parametrize("kind", list(TAR_FLAGS))
@pytest.mark.parametrize("keep", [0.5, 0.9, -1])
def test_truncated_archives_are_one_line_and_record_nothing(
    local_repo: Repository, tmp_path: Path, sample_tar: bytes, kind: str, keep: float
) -> None:
    whole = compress(sample_tar, kind)
    cut = whole[: int(len(whole) * keep)] if keep > 0 else whole[:-1]
    source = tmp_path / f"cut.tar.{kind}"
    source.write_bytes(cut)
    if kind == "" and keep == -1:
        # The last byte of a plain tar is end-of-archive padding: still readable.
        add_seed(local_repo, SeedRequest(name="whole", sources=[str(source)]))
        return
    with pytest.raises(SourceError) as err:
        add_seed(local_repo, SeedRequest(name="cut", sources=[str(source)]))
    assert "\n" not in str(err.value) and str(source) in str(err.value)
    assert list_seeds(local_repo) == []


def test_a_tar_cut_at_a_member_boundary_is_truncated(memory_repo: Repository) -> None:
    data = make_tar([(info("a"), b"x" * 512), (info("b"), b"y" * 512)])
    with pytest.raises(SourceError, match="truncated"):
        ingest(memory_repo, data[:1024])  # member a whole, then nothing: no end block
    with pytest.raises(SourceError, match="truncated"):
        ingest(memory_repo, data[:1536])  # b's header without its data
    with pytest.raises(SourceError, match="truncated"):
        ingest(memory_repo, data[:1700])  # inside b's data


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x1f\x8b" + b"\x00" * 100, b"\xfd7zXZ\x00garbage", b"\x28\xb5\x2f\xfd" + b"\xff" * 64,
     b"BZh9" + b"1" * 100, b"not a tar at all" * 40],
)  # fmt: skip
def test_garbage_is_one_line(memory_repo: Repository, garbage: bytes) -> None:
    with pytest.raises(SourceError) as err:
        ingest(memory_repo, garbage)
    assert "\n" not in str(err.value)


def test_oversized_and_chained_extended_headers_are_refused(memory_repo: Repository) -> None:
    big = info("f")
    big.pax_headers = {"comment": "x" * (MAX_EXTENDED + 1)}
    with pytest.raises(SourceError, match="extended header"):
        ingest(memory_repo, make_tar([(big, b"1")]))
    one = info("f")
    one.pax_headers = {"comment": "c"}
    data = make_tar([(one, b"1")])
    pax = data[:1024]  # the PAX header block and its one data block
    assert pax[156:157] == tarfile.XHDTYPE
    with pytest.raises(SourceError, match="extended headers"):
        ingest(memory_repo, pax * (MAX_CHAIN + 2) + data)


def test_a_failed_ingest_leaves_a_clean_repository(
    local_repo: Repository, tmp_path: Path, sample_tar: bytes
) -> None:
    source = tmp_path / "cut.tar.gz"
    source.write_bytes(gzip.compress(sample_tar)[:-20])
    with pytest.raises(SourceError):
        tree_from_tar(local_repo, str(source))
    whole = tmp_path / "whole.tar.gz"
    whole.write_bytes(gzip.compress(sample_tar))
    content = tree_from_tar(local_repo, str(whole))
    files = seed_files(local_repo, content.tree)
    assert files["a/two"].type == FILE and files["a/two"].size == 512_000


# --- property: any bytes are an archive or one clear line -----------------------

_BASE = make_tar(
    [
        (info("d", tarfile.DIRTYPE), None),
        (info("d/f"), b"content" * 50),
        (info("d/l", tarfile.SYMTYPE, linkname="f"), None),
        (info("d/h", tarfile.LNKTYPE, linkname="d/f"), None),
        (info("long/" + "n" * 120), b"x"),
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["", "gz", "xz", "zst", "bz2"]))
    data = bytearray(compress(_BASE, kind) if draw(st.booleans()) else _BASE)
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=40))
        elif op == "zero":
            data[pos : pos + 512] = bytes(len(data[pos : pos + 512]))
    return bytes(data)


@settings(max_examples=300)
@given(data=st.one_of(mutated(), st.binary(max_size=3000)))
def test_mutated_archives_are_read_or_refused_in_one_line(data: bytes) -> None:
    repo = _property_repo()
    try:
        files = ingest(repo, data)["files"]
    except SourceError as err:
        assert "\n" not in str(err) and str(err).startswith("t.tar")
        return
    assert isinstance(files, dict)
    for path, node in files.items():
        assert ".." not in path.split("/") and not path.startswith("/")
        assert node.type != FILE or sum(node.chunk_sizes) == node.size


_REPOS: list[Repository] = []


def _property_repo() -> Repository:
    """One repository for all examples (a failed ingest abandons its session and
    leaves the repository usable, which every example after it relies on)."""
    if not _REPOS:
        _REPOS.append(Repository.init(MemoryBackend(), PASSWORD.encode()))
    return _REPOS[0]
