"""Golden repositories: what earlier strongroom wrote, today's strongroom reads.

Each `tests/data/repo-v<N>.tar.xz` is a repository made once by the code that
introduced format N (`tests/data/make_golden.py`), with the restore output it
must give recorded beside it in `repo-v<N>.json`. Every test here unpacks it,
then checks through the real program: `check --read-data` finds nothing,
`snapshots --json` shows the recorded ids, kinds, paths and parent links, and
every point restores byte for byte with its metadata (files points: every
entry's type, mode, owner, times with nanoseconds, size, content, link target,
xattrs, hard links; image points: each disk's bytes, the files inside, the
export to VHD as an independent reader sees it). A format change that makes an
old repository unreadable fails here (docs/format.md §13).

As root everything is compared; otherwise what only root can restore (owners,
device nodes, xattrs outside `user.`) is left out of the comparison.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.format.golden import DATA, golden_text, listing, sha256_file
from tests.helpers.cli import CliResult, run_cli
from tests.helpers.libvhdi import open_chain

IS_ROOT = os.geteuid() == 0
MANIFESTS = sorted(DATA.glob("repo-v*.json"))


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _cases(kinds: tuple[str, ...]) -> list[Any]:
    """(manifest, point index) of every point of these kinds, in every golden repository."""
    cases = []
    for path in MANIFESTS:
        seen: dict[str, int] = {}
        for i, point in enumerate(_load(path)["points"]):
            kind = "protect" if point["paths"][0].startswith("protect:") else point["kind"]
            seen[kind] = seen.get(kind, 0) + 1
            if kind in kinds:
                case_id = f"v{_load(path)['format_version']}-{kind}-{seen[kind]}"
                cases.append(pytest.param(path, i, id=case_id))
    return cases


def test_there_is_a_golden_repository_of_the_current_format() -> None:
    from strongroom.repository.format import FORMAT_VERSION

    versions = {_load(p)["format_version"] for p in MANIFESTS}
    assert versions == set(range(1, FORMAT_VERSION + 1)), (
        "every format version keeps a golden repository: run tests/data/make_golden.py "
        "once for a new version (docs/format.md §13)"
    )


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """Manifest -> the folder its repository was unpacked into (once per module)."""
    out = {}
    for manifest in MANIFESTS:
        where = tmp_path_factory.mktemp(manifest.stem)
        with tarfile.open(DATA / _load(manifest)["repository"]) as tar:
            tar.extractall(where, filter="data")
        out[manifest] = where / "repo"
    return out


class Golden:
    """One golden repository, driven through the real `strongroom` program."""

    def __init__(self, manifest: Path, repo: Path) -> None:
        self.doc = _load(manifest)
        self.env = dict(os.environ)
        self.env["STRONGROOM_REPO"] = str(repo)
        self.env["STRONGROOM_PASSWORD"] = self.doc["password"]
        self.env["TZ"] = "UTC"

    def cli(self, *args: str, ok: tuple[int, ...] = (0,)) -> CliResult:
        result = run_cli(list(args), self.env)
        assert result.rc in ok, f"strongroom {' '.join(args)}: rc {result.rc}\n{result.err}"
        assert "Traceback" not in result.err, result.err
        return result

    def point(self, index: int) -> dict[str, Any]:
        point: dict[str, Any] = self.doc["points"][index]
        return point


@pytest.fixture
def golden(unpacked: dict[Path, Path]) -> Any:
    """`golden(manifest)`: that golden repository, unpacked once per module."""

    def make(manifest: Path) -> Golden:
        return Golden(manifest, unpacked[manifest])

    return make


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_check_read_data_finds_nothing(manifest: Path, golden: Any) -> None:
    repo = golden(manifest)
    result = repo.cli("check", "--read-data", "--json")
    doc = result.document()
    assert doc["ok"] is True and doc["errors"] == [] and doc["warnings"] == [], doc
    assert doc["damaged_files"] == {}


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_points_keep_their_ids_kinds_paths_and_parents(manifest: Path, golden: Any) -> None:
    repo = golden(manifest)
    listed = {p["id"]: p for p in repo.cli("snapshots", "--json").json()}
    expected = repo.doc["points"]
    assert sorted(listed) == sorted(p["id"] for p in expected)
    for point in expected:
        got = listed[point["id"]]
        for key in ("version", "kind", "paths", "parent", "tree", "host", "user", "tags",
                    "consistency", "program"):  # fmt: skip
            assert got[key] == point[key], (point["id"][:8], key)
        assert datetime.fromisoformat(got["time"]) == datetime.fromisoformat(point["time"])


def _comparable(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What this user's restore can reproduce: all of it as root; otherwise no owners,
    no device nodes and only `user.` xattrs."""
    out = []
    for entry in entries:
        entry = dict(entry)
        if entry["type"] == "l":
            entry.pop("atime_ns", None)  # no restore sets a symlink's atime the format promises
        if not IS_ROOT:
            if entry["type"] in ("c", "b"):
                continue
            entry.pop("uid")
            entry.pop("gid")
            entry["xattrs"] = {k: v for k, v in entry["xattrs"].items() if k.startswith("user.")}
        out.append(entry)
    return out


@pytest.mark.parametrize(("manifest", "index"), _cases(("files",)))
def test_files_points_restore_byte_for_byte(
    manifest: Path, index: int, golden: Any, tmp_path: Path
) -> None:
    repo = golden(manifest)
    point = repo.point(index)
    target = tmp_path / "restored"
    repo.cli("restore", point["id"], "--target", str(target), ok=(0,) if IS_ROOT else (0, 3))
    expected = _comparable(point["restore"]["listing"])
    got = _comparable(listing(target))
    assert [e["path"] for e in got] == [e["path"] for e in expected]
    for want, have in zip(expected, got, strict=True):
        assert have == want, want["path"]


def _same_ls(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [e["path"] for e in got] == [e["path"] for e in expected]
    for have, want in zip(got, expected, strict=True):
        for key, value in want.items():
            if key == "mtime":
                assert datetime.fromisoformat(have[key]) == datetime.fromisoformat(value)
            else:
                assert have[key] == value, (want["path"], key)


@pytest.mark.parametrize(("manifest", "index"), _cases(("block", "protect")))
def test_image_points_restore_list_and_extract(
    manifest: Path, index: int, golden: Any, tmp_path: Path
) -> None:
    repo = golden(manifest)
    point = repo.point(index)
    disk = tmp_path / "disk.raw"
    repo.cli("restore", point["id"], "--target", str(disk))
    assert disk.stat().st_size == point["restore"]["size"]
    assert sha256_file(disk) == point["restore"]["sha256"]

    # The file system inside the image, read without restoring the disk.
    listed = repo.cli("ls", "--json", point["id"], "/").lines()
    _same_ls(listed, point["ls"])
    for path, digest in point["files_inside"].items():
        out = tmp_path / "extracted"
        repo.cli("restore", point["id"], "--target", str(out), "--include", path)
        assert sha256_file(out / path.lstrip("/")) == digest


@pytest.mark.parametrize(("manifest", "index"), _cases(("vm",)))
def test_vm_points_restore_every_disk(
    manifest: Path, index: int, golden: Any, tmp_path: Path
) -> None:
    repo = golden(manifest)
    point = repo.point(index)
    target = tmp_path / "vm"
    repo.cli("restore", point["id"], "--target", str(target))
    disks = point["restore"]["disks"]
    assert sorted(os.listdir(target)) == sorted(f"{d}.raw" for d in disks)
    for name, want in disks.items():
        raw = target / f"{name}.raw"
        assert raw.stat().st_size == want["size"]
        assert sha256_file(raw) == want["sha256"], name


def _vhd_digest(paths: list[Path], size: int) -> str:
    with open_chain(paths) as vhd:
        assert vhd.get_media_size() == size
        h = hashlib.sha256()
        vhd.seek_offset(0, os.SEEK_SET)
        left = size
        while left:
            block = vhd.read_buffer(min(left, 1 << 20))
            assert block, "the VHD ended early"
            h.update(block)
            left -= len(block)
        return h.hexdigest()


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_block_points_export_as_vhds(manifest: Path, golden: Any, tmp_path: Path) -> None:
    """Each block point as a dynamic and a fixed VHD, and a later point as a
    differencing VHD on its parent's: libvhdi reads the recorded disks."""
    repo = golden(manifest)
    blocks = [p for p in repo.doc["points"] if p["kind"] == "block" and p["parent"] is None]
    assert blocks
    for base in blocks:
        size, digest = base["restore"]["size"], base["restore"]["sha256"]
        for kind in ("dynamic", "fixed"):
            out = tmp_path / f"{base['id'][:8]}-{kind}.vhd"
            repo.cli("export", base["id"], str(out), "--type", kind)
            assert _vhd_digest([out], size) == digest
        child = next(p for p in repo.doc["points"] if p["parent"] == base["id"])
        parent_vhd = tmp_path / f"{base['id'][:8]}-dynamic.vhd"
        diff = tmp_path / f"{child['id'][:8]}-diff.vhd"
        repo.cli(
            "export", child["id"], str(diff),
            "--incremental-from", base["id"], "--parent", str(parent_vhd),
        )  # fmt: skip
        assert _vhd_digest([parent_vhd, diff], size) == child["restore"]["sha256"]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_the_same_file_today_deduplicates_against_its_old_chunks(
    manifest: Path, tmp_path: Path
) -> None:
    """The chunker is pinned end to end: the golden multi-chunk file, backed up again
    today somewhere else (no parent to take it from), stores none of its data: the
    repository's keyed FastCDC cuts it into exactly the chunks stored back then."""
    text = golden_text()
    digest = hashlib.sha256(text).hexdigest()
    files = [e for p in _load(manifest)["points"] for e in p.get("restore", {}).get("listing", [])]
    if not any(e.get("sha256") == digest for e in files):
        pytest.skip("this golden repository does not hold the golden text")
    with tarfile.open(DATA / _load(manifest)["repository"]) as tar:
        tar.extractall(tmp_path, filter="data")
    repo = Golden(manifest, tmp_path / "repo")
    src = tmp_path / "again"
    src.mkdir()
    (src / "text.txt").write_bytes(text)
    summary = repo.cli("backup", str(src), "--json").summary()
    assert summary["files_new"] == 1 and summary["bytes_read"] == len(text)
    # Only the new directory trees are stored: a few KiB, not 6 MiB of data.
    assert summary["data_added"] < 64 * 1024, summary
