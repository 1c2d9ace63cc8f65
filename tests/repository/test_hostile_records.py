"""Lock and lease records and the config object are written by any key holder.

A hostile lock or lease (a pid beyond `kill()`, a time beyond `localtime()`,
NaN, deep nesting, missing fields) is skipped as unreadable, never an internal
error that also keeps `unlock --remove-all` from cleaning up; a description
shows the host on one line. A config object out of its bounds is an
IntegrityError naming it, not an internal error at the first backup."""

from __future__ import annotations

import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from strongroom.errors import IntegrityError, RepositoryLocked
from strongroom.repository.format import lock_name
from strongroom.repository.leases import LEASES_PREFIX
from strongroom.repository.locks import list_locks
from strongroom.repository.repo import Repository
from tests.conftest import CliRunner, open_local_repository

NOW = time.time()
LOCKS = {
    "time beyond localtime": {"time": 1e300},
    "time infinite": {"time": float("inf")},
    "time NaN": {"time": float("nan")},
    "pid beyond kill": {"pid": 2**70},
    "pid negative": {"pid": -5},
    "pid text": {"pid": "5"},
}


def put_lock(repo: Repository, raw: bytes) -> str:
    name = lock_name(secrets.token_hex(32))
    repo.backend.create(name, repo.sealer.seal(raw, b"lock"))
    return name


def lock_doc(**fields: Any) -> bytes:
    doc = {"exclusive": True, "host": socket.gethostname(), "pid": 1, "user": "u", "time": NOW}
    doc.update(fields)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("fields", LOCKS.values(), ids=LOCKS.keys())
def test_hostile_lock_records_are_skipped(memory_repo: Repository, fields: dict[str, Any]) -> None:
    put_lock(memory_repo, lock_doc(**fields))
    assert list_locks(memory_repo.backend, memory_repo.sealer) == []
    memory_repo.lock(exclusive=True).release()  # nothing blocks, nothing crashes


def test_deeply_nested_lock_record_is_skipped(memory_repo: Repository) -> None:
    put_lock(memory_repo, b"[" * 100_000)
    assert list_locks(memory_repo.backend, memory_repo.sealer) == []


def test_lock_holder_is_described_on_one_line(memory_repo: Repository) -> None:
    put_lock(memory_repo, lock_doc(host="x\nstrongroom: error: forged\x1b[2J", pid=1))
    with pytest.raises(RepositoryLocked) as caught:
        memory_repo.lock(exclusive=True)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


def test_commands_survive_hostile_locks(
    cli: CliRunner, initialized_repo: Path, tmp_path: Path
) -> None:
    repo = open_local_repository(initialized_repo)
    for fields in LOCKS.values():
        put_lock(repo, lock_doc(**fields))
    put_lock(repo, b"[" * 100_000)
    repo.close()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    for args in (["backup", str(src)], ["unlock", "--remove-all"], ["prune"], ["check"]):
        result = cli(*args)
        assert result.rc == 0, (args, result.err)
        assert "internal error" not in result.err


LEASES = {
    "missing holder": {"holder": None},
    "pid beyond kill": {"pid": 2**70},
    "taken beyond localtime": {"taken": 1e300},
    "expires NaN": {"expires": float("nan")},
    "data not a map": {"data": [1]},
}


@pytest.mark.parametrize("fields", LEASES.values(), ids=LEASES.keys())
def test_hostile_lease_records_hold_nothing(local_repo: Repository, fields: dict[str, Any]) -> None:
    lease_id = local_repo.lease_id("vm:vm1")
    doc = {"holder": "f0" * 8, "host": "elsewhere", "pid": 1, "expires": NOW + 3600,
           "taken": NOW, "what": "VM vm1", "data": {}}  # fmt: skip
    doc.update(fields)
    if doc["holder"] is None:
        del doc["holder"]
    name = f"{LEASES_PREFIX}{lease_id}/{0:016d}"
    local_repo.backend.create(name, local_repo.sealer.seal(json.dumps(doc).encode(), b"lease"))
    record = local_repo.leases().current(lease_id)
    assert record is not None and record.free and record.generation == 0
    record.describe()


def test_lease_holder_is_described_on_one_line(local_repo: Repository) -> None:
    lease_id = local_repo.lease_id("vm:vm1")
    doc = {"holder": "f0" * 8, "host": "a\nforged\x1b[2J", "pid": 1, "expires": NOW + 3600,
           "taken": NOW, "what": "VM vm1"}  # fmt: skip
    name = f"{LEASES_PREFIX}{lease_id}/{0:016d}"
    local_repo.backend.create(name, local_repo.sealer.seal(json.dumps(doc).encode(), b"lease"))
    record = local_repo.leases().current(lease_id)
    assert record is not None
    text = record.describe()
    assert "\n" not in text and "\x1b" not in text


CONFIGS = {
    "pack size buffering a whole backup": {"pack_size": 2**50},
    "pack size zero": {"pack_size": 0},
    "block size not a power of two": {"block_size": 3 * 4096},
    "chunker refused by pyfastcdc": {"chunker": {"min": 0, "avg": 0, "max": 0}},
    "chunker inverted": {"chunker": {"min": 1 << 20, "avg": 4096, "max": 8192}},
    "zstd level refused by zstd": {"compression": {"level": 99}},
    "version infinite": {"version": float("inf")},
    "chunker missing": {"chunker": None},
}


@pytest.mark.parametrize("fields", CONFIGS.values(), ids=CONFIGS.keys())
def test_a_hostile_config_object_is_an_integrity_error(
    local_repo: Repository, repo_path: Path, fields: dict[str, Any]
) -> None:
    doc = json.loads(local_repo.config.encode())
    doc.update(fields)
    local_repo.backend.put("config", local_repo.sealer.seal(json.dumps(doc).encode(), b"config"))
    with pytest.raises(IntegrityError, match="config object"):
        open_local_repository(repo_path)


def test_a_deeply_nested_config_object_is_an_integrity_error(
    local_repo: Repository, repo_path: Path
) -> None:
    # 20,000 levels fit under the config's 64 KiB read bound, so the decoder meets them.
    local_repo.backend.put("config", local_repo.sealer.seal(b"[" * 20_000, b"config"))
    with pytest.raises(IntegrityError, match="config object"):
        open_local_repository(repo_path)


def test_the_config_this_version_writes_opens(local_repo: Repository, repo_path: Path) -> None:
    open_local_repository(repo_path).close()


def test_an_index_entry_of_an_unknown_chunk_type_is_damage() -> None:
    from strongroom.repository.index import IndexFile

    plain = IndexFile.build({b"p" * 32: [(b"c" * 32, 0, 100, 100, 9)]}).encode()
    with pytest.raises(IntegrityError, match="unknown chunk type"):
        IndexFile.decode(plain, "index/x")  # check, prune and repair ended in BlobType(9)
