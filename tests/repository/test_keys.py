"""Key files: the master secret wrapped under each password."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from strongroom.errors import RepositoryError, WrongPassword
from strongroom.repository.keys import (
    KdfParams,
    MasterKey,
    key_file_info,
    open_key_file,
    parse_key_file,
    wrap_master_key,
)

CHEAP = KdfParams(time_cost=1, memory_kib=8, parallelism=1)
passwords = st.binary(min_size=1, max_size=64)


@settings(max_examples=30)
@given(password=passwords, other=passwords)
def test_key_file_opens_with_its_password_only(password: bytes, other: bytes) -> None:
    assume(password != other)
    master = MasterKey.generate()
    blob = wrap_master_key(master, password, CHEAP)
    assert open_key_file(parse_key_file(blob), password) == master
    with pytest.raises(WrongPassword):
        open_key_file(parse_key_file(blob), other)


@settings(max_examples=30)
@given(
    password=passwords,
    field=st.sampled_from(["data", "salt"]),
    position=st.integers(0, 10_000),
    flip=st.integers(1, 255),
)
def test_damaged_key_material_never_opens(
    password: bytes, field: str, position: int, flip: int
) -> None:
    """The wrapped secret and the salt are authenticated: any change is a wrong password.
    (The other fields, created/host/user, are informational.)"""
    doc = json.loads(wrap_master_key(MasterKey.generate(), password, CHEAP))
    raw = bytearray(base64.b64decode(doc[field]))
    raw[position % len(raw)] ^= flip
    doc[field] = base64.b64encode(raw).decode()
    with pytest.raises(WrongPassword):
        open_key_file(parse_key_file(json.dumps(doc).encode()), password)


def test_key_file_holds_no_secret_in_clear() -> None:
    master = MasterKey.generate()
    blob = wrap_master_key(master, b"pw", CHEAP)
    assert master.secret not in blob
    assert master.secret.hex().encode() not in blob
    info = key_file_info(parse_key_file(blob))
    assert set(info) == {"created", "host", "user", "kdf", "memory_kib", "time_cost"}


def test_kdf_parameters_are_stored_and_used() -> None:
    params = KdfParams(time_cost=2, memory_kib=16, parallelism=1)
    doc = json.loads(wrap_master_key(MasterKey.generate(), b"pw", params))
    assert (doc["time_cost"], doc["memory_kib"], doc["parallelism"]) == (2, 16, 1)


@pytest.mark.parametrize(
    "blob",
    [
        b"not json",
        b"[]",
        b'{"kdf": "scrypt"}',
        b'{"kdf": "argon2id"}',
        b'{"kdf": "argon2id", "time_cost": "x"}',
    ],
)
def test_malformed_key_files_are_repository_errors(blob: bytes) -> None:
    with pytest.raises(RepositoryError) as info:
        open_key_file(parse_key_file(blob), b"pw")
    assert not isinstance(info.value, WrongPassword)


def test_kdf_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRONGROOM_KDF", "2,10240,3")
    assert KdfParams.from_env() == KdfParams(time_cost=2, memory_kib=10240, parallelism=3)
    monkeypatch.setenv("STRONGROOM_KDF", "0,1,2")  # raised to the floor: t=1, 8 MiB
    assert KdfParams.from_env() == KdfParams(time_cost=1, memory_kib=8192, parallelism=2)
    monkeypatch.delenv("STRONGROOM_KDF")
    assert KdfParams.from_env() == KdfParams()


def test_kdf_from_env_raises_memory_with_parallelism(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the floor 8*p once used p before it was raised to 1."""
    monkeypatch.setenv("STRONGROOM_KDF", "1,1,0")
    params = KdfParams.from_env()
    assert params.memory_kib >= 8 * params.parallelism
    wrap_master_key(MasterKey.generate(), b"pw", params)


def test_subkeys_are_distinct_and_stable() -> None:
    master = MasterKey.generate()
    keys = {master.encryption_key, master.id_key}
    assert len(keys) == 2 and all(len(k) == 32 for k in keys)
    assert MasterKey(master.secret).id_key == master.id_key
    assert master.chunker_seed & 1
