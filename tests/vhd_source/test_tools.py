"""`vhd info` and `vhd check` on good files, chains and damaged files: through
the service functions, the click group in process, and (once registered) the CLI."""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner as ClickRunner

from strongroom.cli.commands.vhd import vhd
from strongroom.cli.context import App
from strongroom.cli.main import COMMANDS
from strongroom.cli.output import Output
from strongroom.config import load_settings
from strongroom.formats.vhd import VhdError, open_vhd
from strongroom.services.vhd_tools import check_vhd, vhd_info
from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error
from tests.helpers.images import MiB
from tests.vhd_source.conftest import (
    ISLANDS,
    QEMU_IMG,
    SIZE,
    chain,
    own_vhd,
    qemu_vhd,
    raw_disk,
)

Damage = Callable[[Path], Path]
REGISTERED = pytest.mark.skipif("vhd" not in COMMANDS, reason="vhd command not registered yet")


def dynamic(tmp: Path) -> Path:
    return own_vhd(raw_disk(tmp / "disk.raw"), tmp / "disk.vhd")


def truncate(path: Path) -> Path:
    os.truncate(path, os.path.getsize(path) // 2)
    return path


def bad_checksum(path: Path) -> Path:
    with open(path, "r+b") as f:
        f.seek(-512 + 40, os.SEEK_END)  # the footer's original size
        f.write(b"\xff")
    return path


def bat_past_end(path: Path) -> Path:
    reader = open_vhd(path)
    assert reader.header is not None
    table = reader.header.table_offset
    reader.close()
    with open(path, "r+b") as f:
        f.seek(table)
        f.write(struct.pack(">I", (os.path.getsize(path) // 512) + 100))
    return path


def test_info_of_a_dynamic_vhd(tmp_path: Path) -> None:
    info = vhd_info(dynamic(tmp_path))
    assert info.problem is None
    (f,) = info.files
    assert f.type == "dynamic" and f.virtual_size == SIZE and f.block_size == 2 * MiB
    assert f.parent_uuid is None and f.parent_path is None
    touched_blocks = {o // (2 * MiB) for o, _ in ISLANDS}
    assert f.allocated == len(touched_blocks) * 2 * MiB
    assert f.file_size == os.path.getsize(tmp_path / "disk.vhd")


@QEMU_IMG
def test_info_of_a_fixed_vhd(tmp_path: Path) -> None:
    vhd_file = qemu_vhd(raw_disk(tmp_path / "disk.raw"), tmp_path / "disk.vhd", "fixed")
    (f,) = vhd_info(vhd_file).files
    assert f.type == "fixed" and f.block_size is None and f.allocated == f.virtual_size


def test_info_of_a_chain_names_the_resolved_parent(tmp_path: Path) -> None:
    base, child, _ = chain(tmp_path)
    info = vhd_info(child)
    assert info.problem is None
    top, bottom = info.files
    assert top.type == "differencing" and bottom.type == "dynamic"
    assert top.parent_uuid == bottom.uuid
    assert top.parent_path == str(base.resolve()) and top.parent_name == base.name
    assert top.allocated == 2 * 2 * MiB  # the child's writes touch blocks 0 and 2
    assert json.dumps(info.as_dict())


def test_info_reports_a_broken_chain_without_failing(tmp_path: Path) -> None:
    base, child, _ = chain(tmp_path)
    shutil.copy(own_vhd(raw_disk(tmp_path / "o.raw", seed=9), tmp_path / "o.vhd"), base)
    info = vhd_info(child)
    assert info.problem is not None and "child expects" in info.problem
    base.unlink()
    info = vhd_info(child)
    assert len(info.files) == 1 and info.files[0].parent_path is None
    assert info.problem is not None and "not found" in info.problem


@pytest.mark.parametrize("damage", [truncate, bad_checksum, bat_past_end])
def test_info_and_check_of_a_damaged_file_raise_one_line(tmp_path: Path, damage: Damage) -> None:
    path = damage(dynamic(tmp_path))
    for tool in (vhd_info, check_vhd):
        with pytest.raises(VhdError) as err:
            tool(path)
        assert "\n" not in str(err.value) and "disk.vhd" in str(err.value)


def test_check_reads_every_allocated_block_of_every_file(tmp_path: Path) -> None:
    _base, child, _ = chain(tmp_path)
    seen: list[int] = []
    result = check_vhd(child, progress=seen.append)
    assert [f.type for f in result.files] == ["differencing", "dynamic"]
    assert result.bytes_read == sum(f.allocated for f in result.files)
    assert seen[-1] == result.bytes_read
    assert result.as_dict()["ok"] is True


def test_check_fails_on_a_wrong_or_missing_parent(tmp_path: Path) -> None:
    base, child, _ = chain(tmp_path)
    shutil.copy(own_vhd(raw_disk(tmp_path / "o.raw", seed=9), tmp_path / "o.vhd"), base)
    with pytest.raises(VhdError, match="child expects"):
        check_vhd(child)
    base.unlink()
    with pytest.raises(VhdError, match="not found"):
        check_vhd(child)


# --- the click group, in process ----------------------------------------------


def invoke(*args: str, json_mode: bool = True) -> tuple[int, str, BaseException | None]:
    app = App(settings=load_settings(), out=Output(json_mode=json_mode))
    result = ClickRunner().invoke(vhd, list(args), obj=app)
    return result.exit_code, result.output, result.exception


def test_group_info_and_check_json(tmp_path: Path) -> None:
    _base, child, _ = chain(tmp_path)
    code, out, exc = invoke("info", str(child))
    assert code == 0, exc
    assert [f["type"] for f in json.loads(out)["files"]] == ["differencing", "dynamic"]
    code, out, exc = invoke("check", str(child))
    assert code == 0, exc
    assert json.loads(out)["ok"] is True


def test_group_check_of_a_damaged_file_raises(tmp_path: Path) -> None:
    path = bad_checksum(dynamic(tmp_path))
    _code, out, exc = invoke("check", str(path))
    assert isinstance(exc, VhdError)
    assert json.loads(out) == {"ok": False, "error": str(exc)}


def test_group_human_output(tmp_path: Path) -> None:
    path = dynamic(tmp_path)
    code, out, exc = invoke("check", str(path), json_mode=False)
    assert code == 0, exc
    assert "sound" in out


# --- the CLI, once registered ------------------------------------------------


@REGISTERED
def test_cli_info_and_check(tmp_path: Path, cli: CliRunner) -> None:
    _base, child, _ = chain(tmp_path)
    result = cli("vhd", "info", str(child), "--json")
    assert result.rc == 0, result.err
    assert len(json.loads(result.out)["files"]) == 2
    result = cli("vhd", "check", str(child))
    assert result.rc == 0, result.err
    assert "sound" in result.out


@REGISTERED
@pytest.mark.parametrize("damage", [truncate, bad_checksum, bat_past_end])
def test_cli_check_of_a_damaged_file_exits_1(
    tmp_path: Path, cli: CliRunner, damage: Damage
) -> None:
    path = damage(dynamic(tmp_path))
    result = cli("vhd", "check", str(path))
    assert result.rc == 1
    assert_one_line_error(result, "disk.vhd")
