"""The agent's local cache of tree blobs (repository/blob_cache.py): one
folder per repository id under `$XDG_CACHE_HOME/strongroom/agent/`, bounded
to `TREE_CACHE_BYTES` (oldest evicted). `STRONGROOM_NO_CACHE=1` turns it
off (every tree is then read from the server, as before the cache)."""

from __future__ import annotations

from strongroom.repository.blob_cache import (
    NO_CACHE_VARIABLE,
    BlobCache,
    caching_disabled,
    repository_folder,
)
from strongroom.repository.format import BlobType
from strongroom.repository.repo import MAX_CHUNK_SIZE

TREE_CACHE_BYTES = 256 << 20
__all__ = ["NO_CACHE_VARIABLE", "TREE_CACHE_BYTES", "cache_disabled", "open_tree_cache"]


cache_disabled = caching_disabled  # the agent's name for it


def open_tree_cache(repository_id: str, *, home: str | None = None) -> BlobCache | None:
    """The tree cache of the repository `repository_id` (as the server names
    it); None when turned off or when the id cannot name a folder."""
    if cache_disabled():
        return None
    folder = repository_folder("agent", repository_id, home)
    if folder is None:
        return None
    # an entry is a compressed payload: at most the tree's bound and its flag byte
    return BlobCache(folder, limit=TREE_CACHE_BYTES, max_blob=MAX_CHUNK_SIZE[BlobType.TREE] + 1)
