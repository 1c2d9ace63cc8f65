"""Passwords, key files and the master secret.

The repository has one random 64-byte master secret. Each password has a key
file that wraps the secret with a key-encryption key derived from the password
by argon2id (parameters stored in the file). Every working key derives from
the secret with BLAKE3's derive_key, one context per purpose, so adding or
changing a password never re-encrypts data.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import socket
import time
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw

from strongroom.errors import IntegrityError, RepositoryError, UnsupportedVersion, WrongPassword
from strongroom.repository.crypto import Sealer, derive_key

SECRET_SIZE = 64
KEY_FILE_VERSION = 1
_KEY_AD = b"strongroom key file v1"


@dataclass(frozen=True)
class KdfParams:
    """argon2id cost; the defaults take about 0.3 s and 64 MiB on a small server."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 2

    @classmethod
    def from_env(cls) -> KdfParams:
        """Tests may lower the cost with STRONGROOM_KDF=t,m,p (never below argon2's floor)."""
        spec = os.environ.get("STRONGROOM_KDF")
        if not spec:
            return cls()
        t, m, p = (int(x) for x in spec.split(","))
        p = max(1, p)
        return cls(time_cost=max(1, t), memory_kib=max(8 * p, m), parallelism=p)


@dataclass(frozen=True)
class MasterKey:
    """The unwrapped master secret and the subkeys derived from it."""

    secret: bytes

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(SECRET_SIZE))

    @property
    def encryption_key(self) -> bytes:
        return derive_key("strongroom 2026-11 encryption key", self.secret)

    @property
    def id_key(self) -> bytes:
        return derive_key("strongroom 2026-11 chunk id key", self.secret)

    @property
    def chunker_seed(self) -> int:
        """Keys the CDC gear table so chunk boundaries leak nothing about content."""
        raw = derive_key("strongroom 2026-11 chunker seed", self.secret)
        return int.from_bytes(raw[:8], "little") | 1


def _kek(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    return hash_secret_raw(
        password,
        salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        type=Type.ID,
    )


def wrap_master_key(master: MasterKey, password: bytes, params: KdfParams | None = None) -> bytes:
    """Return a key file's bytes (JSON) for `password`."""
    params = params or KdfParams.from_env()
    salt = os.urandom(16)
    sealed = Sealer(_kek(password, salt, params)).seal(master.secret, _KEY_AD)
    doc = {
        "version": KEY_FILE_VERSION,
        "kdf": "argon2id",
        "time_cost": params.time_cost,
        "memory_kib": params.memory_kib,
        "parallelism": params.parallelism,
        "salt": base64.b64encode(salt).decode(),
        "data": base64.b64encode(sealed).decode(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
    }
    return json.dumps(doc, indent=1).encode()


def key_file_info(blob: bytes) -> dict[str, object]:
    """The key file's public fields (no secret material), for `key list`."""
    doc = _parse(blob)
    return {k: doc[k] for k in ("created", "host", "user", "kdf", "memory_kib", "time_cost")}


def _parse(blob: bytes) -> dict[str, object]:
    try:
        doc = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as err:
        raise RepositoryError(f"key file is not valid JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("kdf") != "argon2id":
        raise RepositoryError("key file has an unknown format")
    if int(doc.get("version", 0)) > KEY_FILE_VERSION:
        raise UnsupportedVersion(
            f"key file version {doc.get('version')} is newer than this strongroom understands"
        )
    return doc


def unwrap_master_key(blob: bytes, password: bytes) -> MasterKey:
    """Unwrap with `password`; WrongPassword if it does not open this key file."""
    doc = _parse(blob)
    try:
        params = KdfParams(
            time_cost=int(doc["time_cost"]),  # type: ignore[call-overload]
            memory_kib=int(doc["memory_kib"]),  # type: ignore[call-overload]
            parallelism=int(doc["parallelism"]),  # type: ignore[call-overload]
        )
        salt = base64.b64decode(str(doc["salt"]))
        sealed = base64.b64decode(str(doc["data"]))
    except (KeyError, ValueError) as err:
        raise RepositoryError(f"key file is malformed: {err}") from None
    try:
        secret = Sealer(_kek(password, salt, params)).open(sealed, _KEY_AD, "key file")
    except IntegrityError:
        raise WrongPassword("wrong password, or no key file matches it") from None
    if len(secret) != SECRET_SIZE:
        raise RepositoryError("key file holds a secret of the wrong size")
    return MasterKey(secret)
