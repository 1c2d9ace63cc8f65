"""`restore --include` lays a path out below the target with its full path, for
a files point and for the file system inside an image point alike."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.images import BS, backup, needs, run

TREE = {
    "docs/readme.md": b"# docs\n",
    "docs/deeper/notes.txt": b"notes\n" * 100,
    "docs/deeper/tiny.bin": b"\x01\x02",
    "media/photo.jpg": b"\xff\xd8" * 1000,
}


def files_below(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@needs("mke2fs")
def test_include_layout_is_the_same_for_files_and_image_points(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    src = tmp_path / "src"
    for rel, data in TREE.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    os.chmod(src / "docs", 0o750)
    os.utime(src / "docs", (1_600_000_000, 1_600_000_000))
    result = cli("backup", str(src), "--json")
    assert result.rc == 0, result.err
    files_point = result.summary()["point_id"]
    img = tmp_path / "ext4.img"
    run("mke2fs", "-q", "-F", "-t", "ext4", "-d", src, img, "16M")
    image_point = backup(cli, img, "--block-size", str(BS))["point_id"]

    from_files, from_image = tmp_path / "from-files", tmp_path / "from-image"
    outside = tmp_path / "outside"
    outside.mkdir()
    from_image.mkdir()
    (from_image / "docs").symlink_to(outside)  # a symlink on the way: replaced, not followed
    include = "/docs/deeper"
    result = cli("restore", files_point, "-t", str(from_files), "--include", f"{src}{include}")
    assert result.rc == 0, result.err
    result = cli("restore", image_point, "-t", str(from_image), "--include", include)
    assert result.rc == 0, result.err

    want = {
        "docs/deeper/notes.txt": TREE["docs/deeper/notes.txt"],
        "docs/deeper/tiny.bin": b"\x01\x02",
    }
    assert files_below(from_files / str(src).lstrip("/")) == want
    assert files_below(from_image) == want
    assert list(outside.iterdir()) == []
    refused = cli("restore", image_point, "-t", str(tmp_path / "x"), "--overwrite", "never")
    assert refused.rc == 2 and "files points" in refused.err  # an image has no per-file modes
    # The directories on the way have the image's metadata, as a files point's do.
    for restored in (from_files / str(src).lstrip("/") / "docs", from_image / "docs"):
        st = os.stat(restored)
        assert not restored.is_symlink() and st.st_mode & 0o777 == 0o750
        assert int(st.st_mtime) == 1_600_000_000
