"""Debian packages as seed sources (sources/deb.py): real packages built by
dpkg-deb, several merged into one tree, and damaged ones refused in one line
with nothing recorded."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.errors import SourceError
from strongroom.repository.repo import Repository
from strongroom.services.seed_add import SeedRequest, SourceKind, add_seed, detect_source
from strongroom.services.seeds import list_seeds
from strongroom.sources.deb import ar_members, data_members, read_deb
from tests.helpers.seed_sources import build_deb, seed_files
from tests.helpers.tree import random_bytes

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


def make_ar(members: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6)
        out += b"100644".ljust(8) + str(len(data)).encode().ljust(10) + b"`\n" + data
        if len(data) % 2:
            out += b"\n"
    return bytes(out)


def seed_from(repo: Repository, *debs: Path, name: str = "app") -> tuple[object, list[str]]:
    warnings: list[str] = []
    seed = add_seed(
        repo, SeedRequest(name=name, sources=[str(d) for d in debs]), warn=warnings.append
    )
    return seed, warnings


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd", "none"])
def test_a_real_package_reads_as_its_files(tmp_path: Path, compression: str) -> None:
    deb = build_deb(
        tmp_path,
        "hello-tool",
        {"usr/bin/hello": b"#!/bin/sh\necho hi\n", "usr/share/doc/hello-tool/copyright": b"(c)"},
        version="2:1.2~rc1-3",
        compression=compression,
    )
    assert detect_source(str(deb)) == SourceKind.DEB
    with open(deb, "rb") as f:
        package = read_deb(f, str(deb), print)
        assert package.as_dict() == {
            "name": "hello-tool",
            "version": "2:1.2~rc1-3",
            "architecture": "amd64",
        }
        members = {m.path: m for m in data_members(f, package, print) if m.data is None}
    assert b"usr/share/doc/hello-tool" in members  # directories, all named below /


def test_packages_merge_into_one_tree_and_the_later_wins(
    local_repo: Repository, tmp_path: Path
) -> None:
    big = random_bytes(3 * 2**20, 9)
    first = build_deb(
        tmp_path,
        "libfoo1",
        {"usr/lib/libfoo.so.1": big, "usr/share/common/x": b"from libfoo\n"},
    )
    second = build_deb(
        tmp_path,
        "foo-bin",
        {"usr/bin/foo": b"binary", "usr/share/common/x": b"from foo-bin\n"},
        version="3.0",
        compression="zstd",
    )
    seed, warnings = seed_from(local_repo, first, second)
    files = seed_files(local_repo, seed.tree)  # type: ignore[attr-defined]
    assert {"usr/lib/libfoo.so.1", "usr/bin/foo", "usr/share/common/x"} <= set(files)
    assert files["usr/lib/libfoo.so.1"].size == len(big)
    assert files["usr/share/common/x"].size == len(b"from foo-bin\n")
    assert files["usr/bin"].uid == 0 and files["usr/bin"].user == "root"
    assert seed.packages == [  # type: ignore[attr-defined]
        {"name": "libfoo1", "version": "1.0-1", "architecture": "amd64"},
        {"name": "foo-bin", "version": "3.0", "architecture": "amd64"},
    ]
    assert seed.summary["replaced"] == 1  # type: ignore[attr-defined]
    assert warnings == ["usr/share/common/x: given by libfoo1 and foo-bin; foo-bin's kept"]
    # The package's files chunk like the same file on disk does.
    on_disk = tmp_path / "disk"
    (on_disk / "lib").mkdir(parents=True)
    (on_disk / "lib/libfoo.so.1").write_bytes(big)
    plain = add_seed(local_repo, SeedRequest(name="plain", sources=[str(on_disk)]))
    same = seed_files(local_repo, plain.tree)["lib/libfoo.so.1"]
    assert same.chunks == files["usr/lib/libfoo.so.1"].chunks


def test_debs_mixed_with_other_sources_are_refused(local_repo: Repository, tmp_path: Path) -> None:
    deb = build_deb(tmp_path, "one", {"a": b"1"})
    with pytest.raises(Exception, match="only as Debian packages"):
        add_seed(local_repo, SeedRequest(name="mix", sources=[str(deb), str(tmp_path)]))


# --- damaged packages ----------------------------------------------------------


@pytest.fixture
def good_deb(tmp_path: Path) -> bytes:
    return build_deb(
        tmp_path, "good", {"usr/share/good/data": random_bytes(40_000, 1)}
    ).read_bytes()


def _replace_member(deb: bytes, name: bytes, data: bytes) -> bytes:
    with io.BytesIO(deb) as f:
        members = ar_members(f, "x")
    parts = []
    for m in members:
        content = deb[m.offset : m.offset + m.size]
        parts.append((m.name.encode(), data if m.name.encode() == name else content))
    return make_ar(parts)


def damaged_variants(deb: bytes) -> dict[str, tuple[bytes, str]]:
    with io.BytesIO(deb) as f:
        members = ar_members(f, "x")
    control, data = members[1], members[2]
    payload = deb[data.offset : data.offset + data.size]
    corrupt = bytearray(payload)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = b"\xa5" * 64
    return {
        "bad magic": (b"!<arxh>\n" + deb[8:], "not a Debian package"),
        "cut in the data member": (deb[: data.offset + data.size // 2], "truncated"),
        "cut in a header": (deb[: data.offset - 30], "truncated"),
        "cut in the control member": (deb[: control.offset + 10], "truncated"),
        "no data member": (deb[: data.offset - 60], "no data archive"),
        "format 3.0": (_replace_member(deb, b"debian-binary", b"3.0\n"), "not 2.0"),
        "corrupt compression": (
            _replace_member(deb, data.name.encode(), bytes(corrupt)),
            "damaged",
        ),
        "truncated compression": (
            _replace_member(deb, data.name.encode(), payload[: len(payload) - 40]),
            "damaged or truncated",
        ),
        "GNU symbol table": (make_ar([(b"/", b"x"), (b"debian-binary", b"2.0\n")]), "not one"),
        "BSD long name": (make_ar([(b"#1/20", b"x" * 20)]), "not one"),
        "control without control": (
            make_ar(
                [
                    (b"debian-binary", b"2.0\n"),
                    (b"control.tar", b"\0" * 1024),
                    (b"data.tar", b"\0" * 1024),
                ]
            ),
            "no control file",
        ),
        "huge size": (deb[:8] + deb[8:56] + b"9999999999" + deb[66:], "truncated"),
    }


@pytest.mark.parametrize(
    "case",
    ["bad magic", "cut in the data member", "cut in a header", "cut in the control member",
     "no data member", "format 3.0", "corrupt compression", "truncated compression",
     "GNU symbol table", "BSD long name", "control without control", "huge size"],
)  # fmt: skip
def test_damaged_packages_are_one_line_and_record_nothing(
    local_repo: Repository, tmp_path: Path, good_deb: bytes, case: str
) -> None:
    content, expected = damaged_variants(good_deb)[case]
    bad = tmp_path / "bad.deb"
    bad.write_bytes(content)
    good = tmp_path / "other.deb"
    good.write_bytes(good_deb)
    with pytest.raises(SourceError) as err:
        add_seed(local_repo, SeedRequest(name="broken", sources=[str(good), str(bad)]))
    message = str(err.value)
    assert "\n" not in message and str(bad) in message and expected in message, message
    assert list_seeds(local_repo) == []


def test_sqlite3_from_the_archive(local_repo: Repository, tmp_path: Path) -> None:
    """A package as Debian ships it (skipped offline or without apt)."""
    if shutil.which("apt-get") is None:
        pytest.skip("no apt-get")
    try:
        done = subprocess.run(
            ["apt-get", "download", "sqlite3"], cwd=tmp_path, capture_output=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.skip("apt-get download timed out (offline?)")
    debs = sorted(tmp_path.glob("sqlite3_*.deb"))
    if done.returncode != 0 or not debs:
        pytest.skip("apt-get download sqlite3 failed (offline?)")
    seed, _ = seed_from(local_repo, debs[0], name="sqlite3")
    files = seed_files(local_repo, seed.tree)  # type: ignore[attr-defined]
    listed = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[0])], capture_output=True)
    assert listed.returncode == 0
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(listed.stdout)) as tar:
        for member in tar.getmembers():
            path = member.name.removeprefix("./").rstrip("/")
            if path in ("", "."):
                continue
            node = files[path]
            assert node.mode == member.mode & 0o7777, path
            if member.isfile():
                assert node.size == member.size, path
    assert seed.packages[0]["name"] == "sqlite3"  # type: ignore[attr-defined]
    assert files["usr/bin/sqlite3"].size > 0


# --- property: the ar parser ---------------------------------------------------


@settings(max_examples=300)
@given(
    data=st.one_of(
        st.binary(max_size=400).map(lambda b: b"!<arch>\n" + b),
        st.lists(
            st.tuples(
                st.sampled_from([b"debian-binary", b"control.tar", b"data.tar", b"_x", b"a/b",
                                 b"/", b"#1/3", b"debian-binary/"]),
                st.binary(max_size=200),
            ),
            max_size=5,
        ).map(make_ar),
    )
)  # fmt: skip
def test_any_ar_bytes_are_a_package_or_one_line(data: bytes) -> None:
    try:
        with io.BytesIO(data) as f:
            package = read_deb(f, "p.deb", lambda _: None)
            list(data_members(f, package, lambda _: None))
    except SourceError as err:
        assert "\n" not in str(err) and str(err).startswith("p.deb")


@settings(max_examples=150)
@given(
    cut=st.integers(0, 2000),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=4),
)
def test_mutated_real_package_is_read_or_refused(cut: int, flips: list[tuple[int, int]]) -> None:
    deb = bytearray(_real_deb())
    for pos, xor in flips:
        if pos < len(deb):
            deb[pos] ^= xor
    data = bytes(deb[: len(deb) - cut])
    try:
        with io.BytesIO(data) as f:
            package = read_deb(f, "p.deb", lambda _: None)
            for member in data_members(f, package, lambda _: None):
                if member.data is not None:
                    member.data.read()
    except SourceError as err:
        assert "\n" not in str(err) and str(err).startswith("p.deb")


_CACHE: list[bytes] = []


def _real_deb() -> bytes:
    if not _CACHE:
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            deb = build_deb(
                Path(work), "fuzz", {"etc/fuzz.conf": b"key = value\n" * 20}, compression="gzip"
            )
            _CACHE.append(deb.read_bytes())
    return _CACHE[0]
