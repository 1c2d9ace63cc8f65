"""`ChunkStore`: what the file backup and restore pipelines need of a
repository, so that a local `Repository` and an agent's `RemoteStore`
(remote/store.py, chunks through the backup server) run the same pipeline.

The contract is `Repository`'s (repo.py): `chunk_id` is the keyed id,
`has_chunk` answers from what is stored or queued, `seal_new` and
`add_sealed` are the worker and writer halves of storing a data chunk (what
`seal_new` returns is opaque to the caller: sealed for a local repository,
the plain bytes for a remote one, which compresses only what its server
lacks), `flush` makes every queued chunk durable, `abandon` drops what is
queued after an error, `save_point` stores a point document after `flush`
and returns its id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from strongroom.repository.format import BlobType

if TYPE_CHECKING:
    from strongroom.repository.repo import RepoConfig, WriteStats

Sealed = bytes | bytearray


class ChunkingKeys(Protocol):
    """What chunking needs of the keys: the seed of the CDC gear table."""

    @property
    def chunker_seed(self) -> int: ...


class ChunkReader(Protocol):
    """What reading a point's trees and files needs (walking, listing, `dump`,
    `find`, `diff`): a local `Repository` or an agent's `RemoteStore`."""

    def load_chunk(
        self, chunk_id: bytes, blob_type: BlobType = BlobType.DATA, raw_length: int | None = None
    ) -> bytes: ...


class ChunkStore(Protocol):
    """A repository as the file pipelines use it (see the module's contract)."""

    @property
    def config(self) -> RepoConfig: ...

    @property
    def master(self) -> ChunkingKeys: ...

    @property
    def stats(self) -> WriteStats: ...

    def chunk_id(self, data: bytes | bytearray | memoryview, /) -> bytes: ...

    def has_chunk(self, chunk_id: bytes) -> bool: ...

    def seal_new(
        self, data: bytes | memoryview, *, dry_run: bool = False
    ) -> tuple[bytes, Sealed | None]: ...

    def add_sealed(
        self, chunk_id: bytes, blob_type: BlobType, sealed: Sealed, raw_length: int
    ) -> bool: ...

    def put_chunk(self, blob_type: BlobType, data: bytes) -> bytes: ...

    def load_chunk(
        self, chunk_id: bytes, blob_type: BlobType = BlobType.DATA, raw_length: int | None = None
    ) -> bytes: ...

    def flush(self) -> None: ...

    def abandon(self) -> None: ...

    def save_point(self, doc: dict[str, Any]) -> str: ...
