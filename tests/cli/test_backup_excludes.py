"""`--exclude-caches`, `--exclude-if-present NAME[:HEADER]`,
`--exclude-larger-than SIZE` (issue #17), as restic's."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error
from tests.helpers.tree import write_file

TAG = b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache directory tag\n"


def _files(cli: CliRunner, src: Path) -> set[str]:
    listed = cli("ls", "latest", str(src), "--json").values()
    return {d["path"].removeprefix(str(src) + "/") for d in listed if d["type"] == "f"}


def test_markers_and_sizes(tmp_path: Path, cli: CliRunner, initialized_repo: Path) -> None:
    src = tmp_path / "src"
    write_file(src / "keep.txt", b"k")
    write_file(src / "cache" / "CACHEDIR.TAG", TAG)
    write_file(src / "cache" / "junk.bin", b"j" * 1000)
    write_file(src / "fake" / "CACHEDIR.TAG", b"no signature here")
    write_file(src / "fake" / "kept.bin", b"f")
    write_file(src / "build" / ".nobackup", b"")
    write_file(src / "build" / "out.o", b"o")
    write_file(src / "big.iso", b"x" * 600_000)

    assert cli("backup", str(src)).rc == 0
    everything = _files(cli, src)
    assert {"cache/junk.bin", "build/out.o", "big.iso"} <= everything

    done = cli(
        "backup", str(src), "--exclude-caches", "--exclude-if-present", ".nobackup",
        "--exclude-larger-than", "512K", "--json",
    )  # fmt: skip
    assert done.rc == 0, done.err
    assert done.summary()["excluded_dirs"] == 2
    assert _files(cli, src) == {
        "keep.txt",
        "cache/CACHEDIR.TAG",  # the tag itself is kept, as restic does
        "fake/CACHEDIR.TAG",
        "fake/kept.bin",  # no valid signature: not a cache
        "build/.nobackup",
    }
    header = cli("backup", str(src), "--exclude-if-present", "CACHEDIR.TAG:no signature")
    assert header.rc == 0 and "fake/kept.bin" not in _files(cli, src)
    assert "cache/junk.bin" in _files(cli, src)  # its tag does not start that way


def test_bad_exclusion_options(cli: CliRunner, initialized_repo: Path, tmp_path: Path) -> None:
    for args, needle in [
        (["--exclude-if-present", "a/b"], "give a file name"),
        (["--exclude-larger-than", "huge"], "is not a size"),
    ]:
        result = cli("backup", str(tmp_path), *args)
        assert result.rc == 2, result
        assert_one_line_error(result, needle)
