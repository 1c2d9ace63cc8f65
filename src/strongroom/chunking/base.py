"""The chunker protocol: a stream in, chunk payloads out, in order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol


class Chunker(Protocol):
    """Cuts a stream into chunks. Yielded views are valid until the next one is
    requested: callers that keep a chunk must copy it."""

    max_size: int

    def chunks(self, stream: BinaryIO) -> Iterator[memoryview]: ...
