"""Hostile key files (issue #10): bounded KDF costs, damage told from a wrong
password, an order that a planted key cannot starve, interruptible derivation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from strongroom.errors import IntegrityError, WrongPassword
from strongroom.repository.crypto import content_hash
from strongroom.repository.keys import (
    KDF_BUDGET,
    MAX_WORK,
    KdfParams,
    MasterKey,
    parse_key_file,
    wrap_master_key,
)
from strongroom.repository.repo import Repository
from tests.conftest import open_local_repository
from tests.helpers.cli import PASSWORD, strongroom_command


def _plant(repo_path: Path, blob: bytes) -> str:
    name = content_hash(blob).hex()
    (repo_path / "keys" / name).write_bytes(blob)
    return f"keys/{name}"


def _with_params(t: int, m: int, p: int = 1) -> bytes:
    doc = json.loads(wrap_master_key(MasterKey.generate(), b"other", KdfParams(1, 8, 1)))
    doc.update(time_cost=t, memory_kib=m, parallelism=p)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("t", "m", "p"),
    [(2**31, 8192, 1), (1, 8 * 1024 * 1024, 1), (3, 1024 * 1024, 1), (1, 8192, 1000), (0, 8192, 1)],
)
def test_out_of_bounds_kdf_parameters_are_never_derived(
    local_repo: Repository, repo_path: Path, t: int, m: int, p: int
) -> None:
    """The attack: time_cost 2^31 hung every command; 8 GiB crashed argon2."""
    planted = _plant(repo_path, _with_params(t, m, p))
    started = time.monotonic()
    repo = open_local_repository(repo_path)
    assert time.monotonic() - started < 5
    assert "out-of-bounds" in repo.damage.found[planted]
    with pytest.raises(IntegrityError, match="out-of-bounds"):
        parse_key_file(_with_params(t, m, p))


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(time_cost="3"),
        lambda d: d.update(salt="!!not base64!!"),
        lambda d: d.update(data=d["data"][:-8]),
        lambda d: d.pop("salt"),
        lambda d: d.update(version="1"),
    ],
)
def test_a_tampered_key_file_is_damaged_not_a_wrong_password(edit: object) -> None:
    doc = json.loads(wrap_master_key(MasterKey.generate(), b"pw", KdfParams(1, 8, 1)))
    edit(doc)  # type: ignore[operator]
    with pytest.raises(IntegrityError) as info:
        parse_key_file(json.dumps(doc).encode())
    assert not isinstance(info.value, WrongPassword)


def test_an_edited_key_file_no_longer_matches_its_name(
    local_repo: Repository, repo_path: Path
) -> None:
    (key_file,) = (repo_path / "keys").iterdir()
    doc = json.loads(key_file.read_bytes())
    doc["user"] = "mallory"
    key_file.write_bytes(json.dumps(doc).encode())
    with pytest.raises(IntegrityError, match="does not match its name") as info:
        open_local_repository(repo_path)
    assert not isinstance(info.value, WrongPassword)


def test_planted_expensive_keys_cannot_starve_the_real_one(
    local_repo: Repository, repo_path: Path
) -> None:
    """Keys at the bound, listed first by name: the key with the parameters this
    program writes is tried first, so they cost nothing."""
    for _ in range(3):
        blob = _with_params(16, MAX_WORK // 16)
        name = content_hash(blob).hex()
        (repo_path / "keys" / ("0" + name[1:])).write_bytes(blob)  # sorts first, misnamed
        _plant(repo_path, blob)
    started = time.monotonic()
    repo = open_local_repository(repo_path)
    assert time.monotonic() - started < 2
    assert repo.key_name == local_repo.key_name


def test_the_total_kdf_budget_bounds_a_wrong_password(
    local_repo: Repository, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many cheap planted keys: their work together stays within KDF_BUDGET."""
    derived: list[int] = []
    import strongroom.repository.keys as keys

    real = keys._kek

    def counting(password: bytes, salt: bytes, params: KdfParams) -> bytes:
        derived.append(params.work)
        return real(password, salt, KdfParams(1, 8, 1))

    monkeypatch.setattr(keys, "_kek", counting)
    for _ in range(12):
        _plant(repo_path, _with_params(1, MAX_WORK // 2))
    with pytest.raises(WrongPassword):
        Repository.open(local_repo.backend, b"wrong password")
    assert sum(derived) <= KDF_BUDGET


def test_the_kdf_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRONGROOM_KDF", "1,8192,1")  # what the tests use: allowed
    assert KdfParams.from_env() == KdfParams(1, 8192, 1)
    monkeypatch.setenv("STRONGROOM_KDF", "1,64,1")
    assert KdfParams.from_env().memory_kib == 8192


def _threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def test_sigterm_ends_a_command_during_key_derivation(
    local_repo: Repository, repo_path: Path, tmp_path: Path
) -> None:
    """argon2 runs in C for seconds: SIGTERM must still end the command at once."""
    for key in (repo_path / "keys").iterdir():
        key.unlink()
    blob = wrap_master_key(local_repo.master, PASSWORD.encode(), KdfParams(16, MAX_WORK // 16))
    _plant(repo_path, blob)
    env = {**os.environ, "STRONGROOM_REPO": str(repo_path), "STRONGROOM_PASSWORD": "wrong pw!"}
    proc = subprocess.Popen(
        [*strongroom_command(), "snapshots"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # Signal once the derivation's thread runs (start-up is a few hundred ms
    # and varies with the machine's load; a fixed sleep could land after it).
    deadline = time.monotonic() + 20
    while _threads(proc.pid) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "no derivation began"
        time.sleep(0.01)
    time.sleep(0.05)
    assert proc.poll() is None, "derivation should still be running"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    assert time.monotonic() - sent < 1.0
    assert rc == 130, (rc, proc.stderr.read() if proc.stderr else "")
    assert sys.platform.startswith("linux")
