"""Small value types shared by every layer: ids and progress events.

Standard library only, so that every package may import it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

ID_SIZE = 32


class ObjectId(bytes):
    """A 32-byte identifier shown as lowercase hex; subclasses tell kinds apart."""

    __slots__ = ()

    def __new__(cls, raw: bytes) -> ObjectId:
        if len(raw) != ID_SIZE:
            raise ValueError(f"{cls.__name__} must be {ID_SIZE} bytes, got {len(raw)}")
        return super().__new__(cls, raw)

    @classmethod
    def from_hex(cls, text: str) -> ObjectId:
        return cls(bytes.fromhex(text))

    @property
    def hex_id(self) -> str:
        return self.hex()

    @property
    def short(self) -> str:
        return self.hex()[:8]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hex()[:16]}…)"


class ChunkId(ObjectId):
    """Keyed BLAKE3 of a chunk's plaintext."""

    __slots__ = ()


class PackId(ObjectId):
    """BLAKE3 of a pack file's stored bytes (checkable without the key)."""

    __slots__ = ()


class PointId(ObjectId):
    """BLAKE3 of a recovery point object's stored bytes."""

    __slots__ = ()


@dataclass
class Progress:
    """Running totals of a long job, handed to a reporter callback.

    The pipeline updates it in place; reporters read it (the CLI draws a bar,
    `--json` prints lines, the server streams events).
    """

    job: str
    files_done: int = 0
    files_total: int | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    bytes_added: int = 0
    errors: int = 0
    current: str = ""
    started: float = field(default_factory=time.monotonic)
    unit: str = "file"  # what files_done counts: "file", or "pack" for check --read-data

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        elapsed = self.elapsed
        return self.bytes_done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if not self.bytes_total or self.rate <= 0:
            return None
        return max(0.0, (self.bytes_total - self.bytes_done) / self.rate)

    def as_dict(self) -> dict[str, object]:
        return {
            "message_type": "status",
            "job": self.job,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "bytes_added": self.bytes_added,
            "errors": self.errors,
            "seconds_elapsed": round(self.elapsed, 3),
            "seconds_remaining": None if self.eta is None else round(self.eta, 1),
            "current": self.current,
            "unit": self.unit,
        }


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A reporter that ignores events."""
