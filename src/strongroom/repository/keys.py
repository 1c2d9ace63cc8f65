"""Passwords, key files and the master secret.

The repository has one random 64-byte master secret. Each password has a key
file that wraps the secret with a key-encryption key derived from the password
by argon2id (parameters stored in the file). Every working key derives from
the secret with BLAKE3's derive_key, one context per purpose, so adding or
changing a password never re-encrypts data.

Key files come from storage and are hostile until one opens: their argon2
parameters are bounded before any derivation (docs/format.md §5), so a planted
key file cannot make a command hang, exhaust memory or crash argon2, and a
malformed one is reported as damaged (IntegrityError), never as a wrong
password. Derivation runs in a worker thread so that SIGTERM and Ctrl-C still
end the command while argon2 computes.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from argon2.low_level import Type, hash_secret_raw

from strongroom.errors import ConfigError, IntegrityError, UnsupportedVersion, WrongPassword
from strongroom.repository.crypto import OVERHEAD, Sealer, derive_key

SECRET_SIZE = 64
KEY_FILE_VERSION = 1
_KEY_AD = b"strongroom key file v1"

# Bounds on the parameters of a key file read from storage (docs/format.md §5).
# The upper ones admit every cost a real deployment picks (Bitwarden's maximum
# is 1 GiB and 10 passes; our default is 64 MiB, 3 passes) while a planted key
# file costs a small 2-core box at most a few seconds and 1 GiB, once.
MAX_TIME_COST = 16
MAX_MEMORY_KIB = 1024 * 1024  # 1 GiB
MAX_PARALLELISM = 16
MAX_WORK = 2 * 1024 * 1024  # time_cost x memory_kib: 2 GiB-passes (2 at 1 GiB, 16 at 128 MiB)
# Opening tries key files until one opens; the work of all tries together is capped too.
KDF_BUDGET = 4 * MAX_WORK
MAX_KEY_FILE_SIZE = 64 * 1024
SALT_SIZES = range(8, 65)  # argon2's minimum salt is 8 bytes; we write 16
# The lowest cost STRONGROOM_KDF may ask for (tests use exactly this).
FLOOR_TIME_COST = 1
FLOOR_MEMORY_KIB = 8 * 1024  # 8 MiB
# Passwords shorter than this get a warning (`init` refuses them unless told otherwise).
MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True)
class KdfParams:
    """argon2id cost; the defaults take about 0.3 s and 64 MiB on a small server."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 2

    @property
    def work(self) -> int:
        """The cost in KiB-passes: argon2 fills `memory_kib` `time_cost` times."""
        return self.time_cost * self.memory_kib

    def bounds_error(self) -> str | None:
        """Why these parameters are out of the documented bounds, or None."""
        t, m, p = self.time_cost, self.memory_kib, self.parallelism
        if not 1 <= p <= MAX_PARALLELISM:
            return f"parallelism {p} is outside 1..{MAX_PARALLELISM}"
        if not 1 <= t <= MAX_TIME_COST:
            return f"time_cost {t} is outside 1..{MAX_TIME_COST}"
        if not 8 * p <= m <= MAX_MEMORY_KIB:
            return f"memory_kib {m} is outside {8 * p}..{MAX_MEMORY_KIB}"
        if self.work > MAX_WORK:
            return f"time_cost x memory_kib {self.work} exceeds {MAX_WORK}"
        return None

    @classmethod
    def from_env(cls) -> KdfParams:
        """Tests may lower the cost with STRONGROOM_KDF=t,m,p, never below the floor
        (t=1, m=8 MiB) nor above the bounds a key file may have."""
        spec = os.environ.get("STRONGROOM_KDF")
        if not spec:
            return cls()
        try:
            t, m, p = (int(x) for x in spec.split(","))
        except ValueError:
            raise ConfigError(
                f"STRONGROOM_KDF={spec!r}: give time,memory_kib,parallelism"
            ) from None
        p = max(1, p)
        params = cls(
            time_cost=max(FLOOR_TIME_COST, t),
            memory_kib=max(FLOOR_MEMORY_KIB, 8 * p, m),
            parallelism=p,
        )
        problem = params.bounds_error()
        if problem:
            raise ConfigError(f"STRONGROOM_KDF: {problem}")
        return params


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


def derive_kek(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    """argon2id in a daemon thread, waited for interruptibly.

    argon2 runs in C for up to seconds; a Python signal handler only runs on the
    main thread between bytecodes, so computing there would hold SIGTERM and
    Ctrl-C until it finished. Waiting on a lock is interruptible (POSIX), and a
    daemon thread left computing does not keep the process alive."""
    done = threading.Event()
    result: list[bytes] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(_kek(password, salt, params))
        except BaseException as err:  # handed to the waiting thread
            failure.append(err)
        finally:
            done.set()

    threading.Thread(target=work, name="kdf", daemon=True).start()
    done.wait()
    if failure:
        raise IntegrityError(f"key derivation failed: {failure[0]}")
    return result[0]


def wrap_master_key(master: MasterKey, password: bytes, params: KdfParams | None = None) -> bytes:
    """Return a key file's bytes (JSON) for `password`."""
    params = params or KdfParams.from_env()
    problem = params.bounds_error()
    if problem:
        raise ConfigError(f"key derivation parameters: {problem}")
    salt = os.urandom(16)
    sealed = Sealer(derive_kek(password, salt, params)).seal(master.secret, _KEY_AD)
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


@dataclass(frozen=True)
class KeyFile:
    """A key file's fields, checked for type and bounds (not yet opened)."""

    params: KdfParams
    salt: bytes
    sealed: bytes
    doc: dict[str, Any]


def parse_key_file(blob: bytes, what: str = "key file") -> KeyFile:
    """Parse and bound-check without deriving anything; IntegrityError if malformed."""
    if len(blob) > MAX_KEY_FILE_SIZE:
        raise IntegrityError(f"{what} is too large to be a key file ({len(blob)} bytes)")
    try:
        doc = json.loads(blob)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"{what} is not valid JSON (damaged)") from None
    if not isinstance(doc, dict) or doc.get("kdf") != "argon2id":
        raise IntegrityError(f"{what} has an unknown format")
    version = doc.get("version", 0)
    if type(version) is not int:
        raise IntegrityError(f"{what} has a malformed version")
    if version > KEY_FILE_VERSION:
        raise UnsupportedVersion(
            f"{what} has version {version}, newer than this strongroom understands"
        )
    ints = [doc.get(k) for k in ("time_cost", "memory_kib", "parallelism")]
    if not all(type(v) is int for v in ints):
        raise IntegrityError(f"{what} is malformed: KDF parameters are not integers")
    params = KdfParams(*ints)  # type: ignore[arg-type]
    problem = params.bounds_error()
    if problem:
        raise IntegrityError(f"{what} has out-of-bounds KDF parameters: {problem}")
    try:
        salt = base64.b64decode(str(doc.get("salt")), validate=True)
        sealed = base64.b64decode(str(doc.get("data")), validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"{what} is malformed: bad base64") from None
    if len(salt) not in SALT_SIZES:
        raise IntegrityError(f"{what} is malformed: a salt of {len(salt)} bytes")
    if len(sealed) != SECRET_SIZE + OVERHEAD:
        raise IntegrityError(f"{what} is malformed: wrapped secret of {len(sealed)} bytes")
    return KeyFile(params, salt, sealed, doc)


def key_file_info(key: KeyFile | None) -> dict[str, Any]:
    """A key file's public fields (no secret material), for `key list`; "?"
    for each of a key file that could not be read (None)."""
    fields = ("created", "host", "user", "kdf", "memory_kib", "time_cost")
    return {k: (key.doc.get(k, "?") if key else "?") for k in fields}


def open_key_file(key: KeyFile, password: bytes) -> MasterKey:
    """Unwrap a parsed key file; WrongPassword if `password` does not open it.

    (A wrong password and an altered ciphertext look the same to AES-GCM.)"""
    try:
        secret = Sealer(derive_kek(password, key.salt, key.params)).open(
            key.sealed, _KEY_AD, "key file"
        )
    except IntegrityError:
        raise WrongPassword("wrong password, or no key file matches it") from None
    return MasterKey(secret)
