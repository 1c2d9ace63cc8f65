"""The chunker protocol: a stream in, chunk payloads out, in order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Stream(Protocol):
    """A raw binary stream (FileIO, a socket file, an NBD reader)."""

    def readinto(self, buffer: bytearray | memoryview, /) -> int | None: ...


class Chunker(Protocol):
    """Cuts a stream into chunks. Yielded views are valid until the next one is
    requested: callers that keep a chunk must copy it."""

    max_size: int

    def chunks(self, stream: Stream) -> Iterator[memoryview]: ...
