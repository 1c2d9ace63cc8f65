"""The local caches under `$XDG_CACHE_HOME/strongroom/`: what they hold and
removing those no longer used (`strongroom cache`, as restic's `cache`).

A cache folder is `<kind>/<repository id>/` (repository/blob_cache.py):
`repository` for remote repositories read directly, `agent` for the trees an
agent reads through its server. Its last use is the newest modification time
inside it (a session's first hit refreshes its database's time); its entries
are the rows of its databases."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass

from strongroom.repository.blob_cache import DATABASE, cache_home, count_entries

KINDS = ("repository", "agent")


@dataclass
class CacheFolder:
    kind: str
    repository_id: str
    path: str
    bytes: int
    entries: int
    last_used: float  # epoch seconds

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def list_caches(home: str | None = None) -> list[CacheFolder]:
    """Every cache folder, most recently used first (symlinks are not followed)."""
    home = home or cache_home()
    found = []
    for kind in KINDS:
        base = os.path.join(home, kind)
        try:
            names = sorted(os.listdir(base))
        except OSError:
            continue
        for name in names:
            path = os.path.join(base, name)
            if os.path.islink(path) or not os.path.isdir(path):
                continue
            size = count = 0
            newest = os.lstat(path).st_mtime
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
                for file in files:
                    try:
                        st = os.lstat(os.path.join(root, file))
                    except OSError:
                        continue
                    size += st.st_size
                    if file == DATABASE:
                        count += count_entries(os.path.join(root, file))
                    newest = max(newest, st.st_mtime)
            found.append(CacheFolder(kind, name, path, size, count, newest))
    return sorted(found, key=lambda c: c.last_used, reverse=True)


def clean_caches(max_unused: float, home: str | None = None) -> list[CacheFolder]:
    """Remove the cache folders unused for more than `max_unused` seconds;
    returns them. Nothing is lost: a cache only saves reads."""
    limit = time.time() - max_unused
    removed = []
    for cache in list_caches(home):
        if cache.last_used < limit:
            shutil.rmtree(cache.path, ignore_errors=True)
            removed.append(cache)
    return removed
