"""Authenticated encryption of every stored object, and keyed chunk ids.

Sealed layout: nonce (12 random bytes) || ciphertext || tag (16 bytes), with
AES-256-GCM. The associated data binds a sealed blob to what it claims to be
(a chunk's id and type, or the object kind), so blobs cannot be swapped.
Random 96-bit nonces keep the collision risk below 2^-32 for up to 2^32 seals
per key, i.e. about 4 PiB of 1 MiB chunks per repository key.
"""

from __future__ import annotations

import os
import threading

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.errors import IntegrityError

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
KEY_SIZE = 32

# Bumped in a forked child: a nonce pool drawn before a fork exists in both
# processes, and using it on both sides would repeat nonces under one key
# (fatal for GCM). Every pool records the generation it was drawn in.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class Sealer:
    """AES-256-GCM with random nonces; thread-safe (one cipher object per thread)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("encryption key must be 32 bytes")
        self._key = key
        self._local = threading.local()

    def _cipher(self) -> AESGCM:
        cipher: AESGCM | None = getattr(self._local, "cipher", None)
        if cipher is None:
            cipher = AESGCM(self._key)
            self._local.cipher = cipher
        return cipher

    def _nonce(self) -> bytes:
        """A fresh random nonce; drawn from the OS in batches (one syscall per 256),
        never from a batch drawn before this process was forked."""
        local = self._local
        pool: bytes | None = getattr(local, "nonces", None)
        pos: int = getattr(local, "pos", 0)
        if pool is None or pos >= len(pool) or local.generation != _fork_generation:
            pool = local.nonces = os.urandom(NONCE_SIZE * 256)
            local.generation = _fork_generation
            pos = 0
        local.pos = pos + NONCE_SIZE
        return pool[pos : pos + NONCE_SIZE]

    def seal(self, plaintext: bytes | bytearray | memoryview, associated: bytes) -> bytearray:
        """nonce | ciphertext | tag, built in one buffer (no concatenation copy)."""
        out = bytearray(NONCE_SIZE + len(plaintext) + TAG_SIZE)
        view = memoryview(out)
        nonce = self._nonce()
        view[:NONCE_SIZE] = nonce
        self._cipher().encrypt_into(nonce, plaintext, associated, view[NONCE_SIZE:])
        return out

    def open(self, sealed: bytes | memoryview, associated: bytes, what: str) -> bytes:
        """Decrypt and authenticate; IntegrityError naming `what` if it was altered."""
        view = memoryview(sealed)
        if len(view) < OVERHEAD:
            raise IntegrityError(f"{what} is truncated ({len(view)} bytes)")
        try:
            return self._cipher().decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], associated)
        except InvalidTag:
            raise IntegrityError(f"{what} failed authentication (damaged or altered)") from None


class ChunkHasher:
    """Keyed BLAKE3: ids depend on the repository key, so they reveal nothing."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("id key must be 32 bytes")
        self._key = key

    def __call__(self, data: bytes | bytearray | memoryview) -> bytes:
        return blake3.blake3(data, key=self._key).digest()


def derive_key(context: str, secret: bytes) -> bytes:
    """A 32-byte subkey for one purpose (BLAKE3 derive_key mode)."""
    return blake3.blake3(secret, derive_key_context=context).digest()


def content_hash(data: bytes | bytearray | memoryview) -> bytes:
    """Unkeyed BLAKE3, for names of whole objects (packs, points, index files)."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest()
