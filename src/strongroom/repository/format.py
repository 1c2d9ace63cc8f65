"""Names and constants of the repository format (docs/format.md is the specification).

Object layout in a backend:

    config                  encrypted repository settings (version, chunker, sizes)
    keys/<hex>              one key file per password: KDF parameters + wrapped master secret
    data/<hh>/<hex>         pack files; <hex> = BLAKE3 of the whole pack file
    index/<hex>             index files: chunk id -> (pack, offset, length)
    points/<hex>            recovery point objects
    seeds/<hex>             seed (golden image) objects
    locks/<hex>             lock objects
"""

from __future__ import annotations

from enum import IntEnum

FORMAT_VERSION = 1

KiB = 1024
MiB = 1024 * KiB

CONFIG_NAME = "config"
KEYS_PREFIX = "keys/"
DATA_PREFIX = "data/"
INDEX_PREFIX = "index/"
POINTS_PREFIX = "points/"
SEEDS_PREFIX = "seeds/"
LOCKS_PREFIX = "locks/"

DEFAULT_PACK_SIZE = 16 * MiB
DEFAULT_CDC_MIN = 256 * KiB
DEFAULT_CDC_AVG = 768 * KiB  # real mean is about avg + min = 1 MiB
DEFAULT_CDC_MAX = 4 * MiB
DEFAULT_BLOCK_SIZE = 1 * MiB
DEFAULT_COMPRESSION_LEVEL = 1  # zstd-1: 1.5x the speed of -3 for ~3% more bytes (bench/)


class BlobType(IntEnum):
    """What a chunk holds; data and tree chunks go to separate packs."""

    DATA = 0
    TREE = 1


def pack_name(pack_hex: str) -> str:
    return f"{DATA_PREFIX}{pack_hex[:2]}/{pack_hex}"


def pack_hex_from_name(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def index_name(index_hex: str) -> str:
    return f"{INDEX_PREFIX}{index_hex}"


def point_name(point_hex: str) -> str:
    return f"{POINTS_PREFIX}{point_hex}"


def key_name(key_hex: str) -> str:
    return f"{KEYS_PREFIX}{key_hex}"


def lock_name(lock_hex: str) -> str:
    return f"{LOCKS_PREFIX}{lock_hex}"


def seed_name(seed_hex: str) -> str:
    return f"{SEEDS_PREFIX}{seed_hex}"
