"""The guest never chooses what the host reads (issue #10).

A raw disk's guest writes any bytes at its start: a qcow2 header there naming
`/host/secret` as backing or external data file used to make the first
`backup --image guest.raw` back up the host's file. Each test plants a unique
marker in the "host secret" and checks that it never reaches the repository
(by restoring what was stored), and that the refusal is one line naming the
file and the two ways out.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import SourceError
from strongroom.formats.vhd import ParentInfo, write_vhd
from strongroom.sources.image_refs import header_refs, sniff_format
from strongroom.sources.images import OpenRules, probe_image
from strongroom.sources.qemu import QemuImageSource
from strongroom.sources.qemu_img import ImageInfo, image_info
from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error
from tests.helpers.images import (
    BS,
    QEMU,
    MiB,
    backup,
    list_points,
    restore,
    restore_and_compare,
    run,
    write_random,
)

MARKER = b"HOST-SECRET-7f3a9c-" * 64
SIZE = 4 * MiB


def host_secret(tmp: Path) -> Path:
    folder = tmp / "host"
    folder.mkdir(exist_ok=True)
    secret = folder / "secret"
    secret.write_bytes(MARKER * (SIZE // len(MARKER) + 1))
    return secret


def guest_raw_with_header(tmp: Path, *create: str) -> Path:
    """A raw guest disk whose first bytes are the header of a qcow2 that
    `qemu-img create ARGS` makes (e.g. one naming the host secret)."""
    header = tmp / "header.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", *create, header, str(SIZE))
    guest = tmp / "guest" / "guest.raw"
    guest.parent.mkdir(exist_ok=True)
    data = bytearray(SIZE)
    head = header.read_bytes()
    data[: len(head)] = head
    data[2 * MiB : 2 * MiB + 13] = b"guest's bytes"
    guest.write_bytes(bytes(data))
    header.unlink()
    return guest


def point_format(cli: CliRunner, point_id: str) -> str:
    (point,) = [p for p in list_points(cli) if p["id"] == point_id]
    return str(point["summary"]["image_format"])


def assert_marker_absent(cli: CliRunner, tmp: Path) -> None:
    """Nothing stored in the repository holds the marker."""
    for point in list_points(cli):
        target = tmp / f"check-{point['id'][:8]}.raw"
        restore(cli, point["id"], target)
        assert MARKER[:19] not in target.read_bytes()
        target.unlink()


@QEMU
@pytest.mark.parametrize("fmt", [None, "qcow2"])
def test_a_guest_written_backing_file_is_refused(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, fmt: str | None
) -> None:
    secret = host_secret(tmp_path)
    guest = guest_raw_with_header(tmp_path, "-b", str(secret), "-F", "raw")
    named = ("--format", fmt) if fmt else ()
    result = cli("backup", "--image", str(guest), *named)
    assert result.rc == 1, result.err
    assert_one_line_error(result, str(secret), "--allow-backing", "--format raw")
    assert list_points(cli) == []  # nothing was read, nothing stored


@QEMU
def test_format_raw_backs_up_the_guest_bytes(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    secret = host_secret(tmp_path)
    guest = guest_raw_with_header(tmp_path, "-b", str(secret), "-F", "raw")
    point = backup(cli, guest, "--format", "raw")
    target = tmp_path / "restored.raw"
    restore(cli, point["point_id"], target)
    assert target.read_bytes() == guest.read_bytes()
    # The next backup keeps the recorded format: the guest cannot switch it.
    again = backup(cli, guest)
    assert point_format(cli, again["point_id"]) == "raw"
    assert_marker_absent(cli, tmp_path)


@QEMU
def test_a_guest_written_external_data_file_is_refused(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    secret = host_secret(tmp_path)
    copy = tmp_path / "host" / "datafile"  # qemu-img create writes the data file: a copy
    copy.write_bytes(secret.read_bytes())
    guest = guest_raw_with_header(tmp_path, "-o", f"data_file={copy}")
    result = cli("backup", "--image", str(guest))
    assert result.rc == 1, result.err
    assert_one_line_error(result, "external data file", str(copy), "--allow-backing")
    assert list_points(cli) == []


@QEMU
@pytest.mark.parametrize(
    "name",
    [
        'json:{"driver":"raw","file":{"driver":"file","filename":"SECRET"}}',
        "nbd:localhost:10809",
        "nbd+unix:///export?socket=/run/x.sock",
        "http://host/secret.img",
        "file:SECRET",
    ],
)
def test_protocol_and_json_names_are_refused_even_when_allowed(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, name: str
) -> None:
    secret = host_secret(tmp_path)
    name = name.replace("SECRET", str(secret))
    guest = guest_raw_with_header(tmp_path, "-u", "-b", name, "-F", "raw")
    result = cli("backup", "--image", str(guest), "--allow-backing")
    assert result.rc == 1, result.err
    assert_one_line_error(result, "not a plain file path", "--format raw")
    assert list_points(cli) == []


@QEMU
def test_allowed_chains_show_the_real_paths(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """A symlink or a relative name cannot hide where the chain goes."""
    secret = host_secret(tmp_path)
    folder = tmp_path / "vm"
    folder.mkdir()
    os.symlink(secret, folder / "base.raw")
    top = folder / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top)
    refused = cli("backup", "--image", str(top))
    assert refused.rc == 1
    assert_one_line_error(refused, "base.raw", str(secret))  # the real path is said
    result = cli("backup", "--image", str(top), "--allow-backing")
    assert result.rc == 0, result.err
    assert f"also reads: {secret}" in result.err
    (point,) = list_points(cli)
    assert point["summary"]["backing_files"] == [str(secret)]


@QEMU
def test_qemu_is_told_not_to_open_a_backing_file(tmp_path: Path) -> None:
    """Defence in depth: even an ImageInfo that slipped past the checks makes
    qemu-nbd open no backing file (`"backing": null`), so zeros, not the secret."""
    secret = host_secret(tmp_path)
    top = tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", top, str(SIZE))
    info = ImageInfo(str(top), "qcow2", SIZE)  # follow=False
    source = QemuImageSource(info)
    try:
        data = b"".join(bytes(d) for _, d in source.read_blocks([(0, SIZE)]))
    finally:
        source.close()
    assert data == bytes(SIZE)
    assert image_info(str(top)).backing_name == str(secret)  # qemu still says what is named


@QEMU
def test_a_self_contained_qcow2_opens_without_flags(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    disk = tmp_path / "vm.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", disk, str(SIZE))
    info = probe_image(str(disk))
    assert (info.format, info.follow, info.followed) == ("qcow2", False, [])
    assert point_format(cli, backup(cli, disk)["point_id"]) == "qcow2"


VMDK_DESCRIPTOR = """# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="monolithicFlat"

RW {sectors} FLAT "{secret}" 0

ddb.virtualHWVersion = "4"
"""


@QEMU
def test_a_guest_written_vmdk_descriptor_is_not_followed(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    secret = host_secret(tmp_path)
    guest = tmp_path / "guest.raw"
    text = VMDK_DESCRIPTOR.format(sectors=SIZE // 512, secret=secret).encode()
    guest.write_bytes(text + bytes(SIZE - len(text)))
    assert sniff_format(str(guest)) == "vmdk"
    result = cli("backup", "--image", str(guest))
    assert result.rc == 1
    assert_one_line_error(result, "looks like a vmdk", "--format vmdk", "--format raw")
    named = cli("backup", "--image", str(guest), "--format", "vmdk")
    assert named.rc == 1
    assert_one_line_error(named, "extent file", str(secret), "--allow-backing")
    assert list_points(cli) == []
    point = backup(cli, guest, "--format", "raw")
    assert point_format(cli, point["point_id"]) == "raw"
    assert_marker_absent(cli, tmp_path)


def _vhd_pair(tmp: Path, parent_dir: Path) -> tuple[Path, Path]:
    """A dynamic parent in `parent_dir` and a differencing child in tmp/vm."""
    parent_dir.mkdir(parents=True, exist_ok=True)
    parent = parent_dir / "base.vhd"
    with open(parent, "wb") as f:
        write_vhd(f, SIZE, [(0, (MARKER * 64)[: 64 * 1024])], kind="dynamic")
    child_dir = tmp / "vm"
    child_dir.mkdir(exist_ok=True)
    child = child_dir / "child.vhd"
    with open(child, "wb") as f:
        write_vhd(
            f, SIZE, [(MiB, b"c" * 4096)], kind="differencing",
            parent=ParentInfo.from_file(parent, child),
        )  # fmt: skip
    return parent, child


def test_a_vhd_parent_outside_the_folder_is_refused(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    parent, child = _vhd_pair(tmp_path, tmp_path / "host")
    result = cli("backup", "--image", str(child))
    assert result.rc == 1, result.err
    assert_one_line_error(result, "outside its own folder", "--allow-backing")
    assert list_points(cli) == []
    allowed = cli("backup", "--image", str(child), "--allow-backing")
    assert allowed.rc == 0, allowed.err
    assert f"also reads: {parent}" in allowed.err


def test_a_vhd_parent_in_the_folder_is_followed_but_not_a_symlink_out(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    parent, child = _vhd_pair(tmp_path, tmp_path / "vm")
    first = backup(cli, child)
    assert point_format(cli, first["point_id"]) == "vhd"
    # The same name in the folder, now a symlink to a VHD elsewhere.
    elsewhere = tmp_path / "host" / "base.vhd"
    elsewhere.parent.mkdir()
    os.replace(parent, elsewhere)
    os.symlink(elsewhere, parent)
    result = cli("backup", "--image", str(child))
    assert result.rc == 1
    assert_one_line_error(result, str(elsewhere), "outside its own folder")


@QEMU
def test_protect_block_mode_refuses_a_guest_written_backing_file(
    tmp_path: Path, cli: CliRunner
) -> None:
    secret = host_secret(tmp_path)
    guest = guest_raw_with_header(tmp_path, "-b", str(secret), "-F", "raw")
    out = tmp_path / "chain"
    out.mkdir()
    state = tmp_path / "state"
    result = cli("protect", str(guest), "--to", str(out), "--state", str(state))
    assert result.rc == 1, result.err
    assert_one_line_error(result, str(secret), "--allow-backing", "--format raw")
    assert list(out.iterdir()) == []
    shipped = cli("protect", str(guest), "--to", str(out), "--state", str(state), "--format", "raw")
    assert shipped.rc == 0, shipped.err
    vhds = sorted(out.glob("*.vhd"))
    assert vhds and all(MARKER[:19] not in v.read_bytes() for v in vhds)
    # the next cycle keeps the recorded format
    again = cli("protect", str(guest), "--to", str(out), "--state", str(state))
    assert again.rc == 0, again.err


@given(st.binary(min_size=0, max_size=600))
def test_header_parsing_of_hostile_bytes_fails_cleanly(tail: bytes) -> None:
    import tempfile

    for magic in (
        b"QFI\xfb\x00\x00\x00\x03",
        b"QFI\xfb\x00\x00\x00\x02",
        b"QFI\xfb\x00\x00\x00\x01",
    ):
        with tempfile.NamedTemporaryFile() as f:
            f.write(magic + tail)
            f.flush()
            fmt = sniff_format(f.name)
            try:
                header_refs(f.name, fmt)
            except SourceError as err:
                assert "\n" not in str(err)
            try:
                probe_image(f.name, rules=OpenRules(allow_backing=False))
            except SourceError:
                pass


def test_vhd_info_and_check_keep_to_the_folder(tmp_path: Path, cli: CliRunner) -> None:
    parent, child = _vhd_pair(tmp_path, tmp_path / "host")
    info = cli("vhd", "info", str(child), "--json")
    assert info.rc == 0, info.err
    doc = info.values()[0]
    assert len(doc["files"]) == 1 and "outside its own folder" in doc["problem"]
    check = cli("vhd", "check", str(child))
    assert check.rc == 1
    assert_one_line_error(check, "outside its own folder", "--allow-backing")
    allowed = cli("vhd", "check", str(child), "--allow-backing", "--json")
    assert allowed.rc == 0, allowed.err
    assert [f["path"] for f in allowed.values()[0]["files"]][-1] == str(parent)


@QEMU
def test_a_raw_disk_stays_raw_when_its_guest_writes_a_qcow2_header(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path
) -> None:
    """The format is pinned by the first point: a guest cannot make strongroom read
    another disk (or a host file named as backing) by writing a header."""
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 16 * MiB)
    write_random(disk, 4 * MiB, 2 * MiB, seed=1)
    first = backup(cli, disk, "--block-size", str(BS))
    secret = tmp_path / "hostfile"
    secret.write_bytes(b"secret-host-data" * 4096)
    header = tmp_path / "evil.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", header, "1M")
    with open(disk, "r+b") as f:
        f.write(header.read_bytes())
    second = backup(cli, disk)
    assert second["parent"] == first["point_id"]
    assert second["size"] == 16 * MiB
    restore_and_compare(cli, second["point_id"], disk, tmp_path)  # the raw bytes, header and all


@QEMU
@pytest.mark.parametrize("written", [b"nbd", b"ssh"])
def test_a_backing_format_that_is_not_an_image_format_is_refused(
    tmp_path: Path, cli: CliRunner, initialized_repo: Path, written: bytes
) -> None:
    """The backing format in a qcow2 header is the writer's word: a protocol
    driver there is refused even with --allow-backing, never passed to qemu."""
    folder = tmp_path / "vm"
    folder.mkdir()
    (folder / "base.raw").write_bytes(MARKER * (SIZE // len(MARKER) + 1))
    top = folder / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top)
    head = bytearray(top.read_bytes()[:4096])
    at = head.index(b"\xe2\x79\x2a\xca")  # backing format header extension
    assert head[at + 8 : at + 11] == b"raw"
    head[at + 8 : at + 11] = written
    with top.open("r+b") as f:
        f.write(head)
    assert header_refs(str(top), "qcow2").backing_format == written.decode()
    result = cli("backup", "--image", str(top), "--allow-backing")
    assert result.rc == 1, result.err
    assert_one_line_error(result, "base.raw", written.decode(), "not an image format")
    assert list_points(cli) == []
