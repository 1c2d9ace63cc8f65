"""A bounded on-disk cache of blobs by id, one folder per repository, under
`$XDG_CACHE_HOME/strongroom/<kind>/<repository id>/` (as restic's cache).

The agent keeps its tree blobs here (remote/store.py), so a backup over an
unchanged tree asks its server for none; a local cache of index and tree
objects for remote repositories (issue #17) is meant to be another `kind`.

Contract:
- nothing read back is trusted: `get` returns the file's bytes (at most
  `max_blob`) and the caller verifies them as it verifies a read from the
  repository, calling `drop` on a mismatch and fetching again. An unreadable,
  oversized or missing entry is a miss, never an error; every failure to
  write is ignored (a cache that cannot write only costs reads);
- names are the blobs' ids in lower-case hex (validated, so no path is made
  from foreign text), in 256 sub-folders by their first two digits; the
  repository id names the folder only if it is hex of a sane length;
- files are written atomically (atomic.py, not durably: a torn file after a
  crash fails verification), mode 0600 in folders made 0700;
- the total size is bounded (`limit`): when a write takes it over, the least
  recently used entries (by modification time, refreshed on a hit) go until
  it is under 90 % of the bound. The sizes are counted from a scan of the
  folder at the first write, so two processes sharing a cache may overshoot
  briefly; each evicts on its own writes.

- `put_soon` hands the write to one background thread (a file create costs
  about as much as a small network answer on a busy disk, and a first backup
  stores thousands of trees); `wait` returns once every handed write is done,
  `close` also stops the thread.

Thread safety: any thread may call any method.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import threading
import time

from strongroom.atomic import atomic_write

DEFAULT_LIMIT = 256 << 20
NO_CACHE_VARIABLE = "STRONGROOM_NO_CACHE"  # 1: no cache at all (`--no-cache`)
QUEUED = 4096  # writes handed to the background thread, at most (then `put_soon` waits)
_KINDS = frozenset({"agent", "repository"})
_REPOSITORY_ID = re.compile(r"[0-9a-f]{16,128}\Z")
_NAME = re.compile(r"[0-9a-f]{64}\Z")
_PREFIX = re.compile(r"[0-9a-f]{2}\Z")


def caching_disabled() -> bool:
    """`--no-cache` or STRONGROOM_NO_CACHE=1: every object read from storage."""
    return os.environ.get(NO_CACHE_VARIABLE, "").strip() not in ("", "0")


def cache_home() -> str:
    """`$XDG_CACHE_HOME/strongroom` (`~/.cache/strongroom` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "strongroom")


def repository_folder(kind: str, repository_id: str, home: str | None = None) -> str | None:
    """The cache folder of one repository, or None when `repository_id` (from
    a server or a config: foreign text) is not hex of 16-128 digits."""
    if kind not in _KINDS:
        raise ValueError(f"unknown cache kind {kind!r}")
    if not _REPOSITORY_ID.match(repository_id):
        return None
    return os.path.join(home or cache_home(), kind, repository_id)


class BlobCache:
    """The cache in `folder` (created 0700 on first write)."""

    def __init__(self, folder: str, *, limit: int = DEFAULT_LIMIT, max_blob: int) -> None:
        self.folder = folder
        self.limit = limit
        self.max_blob = max_blob
        self._lock = threading.Lock()
        self._sizes: dict[str, tuple[int, float]] | None = None  # name -> size, mtime
        self._total = 0
        self._made: set[str] = set()  # sub-folders known to exist
        self._queue: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue(maxsize=QUEUED)
        self._writer: threading.Thread | None = None

    def _path(self, blob_id: bytes) -> str:
        if len(blob_id) != 32:
            raise ValueError("a cached blob's id is 32 bytes")
        name = blob_id.hex()
        return f"{self.folder}/{name[:2]}/{name}"

    def has(self, blob_id: bytes) -> bool:
        return os.path.isfile(self._path(blob_id))

    def get(self, blob_id: bytes) -> bytes | None:
        """The cached bytes of `blob_id` (unverified: see the module's
        contract), or None."""
        path = self._path(blob_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size + 1) if 0 < size <= self.max_blob else b""
        except OSError:
            return None
        finally:
            os.close(fd)
        if not 0 < len(data) <= min(size, self.max_blob):  # oversized, empty or growing
            self.drop(blob_id)
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:
            pass
        with self._lock:
            if self._sizes is not None and path[-64:] in self._sizes:
                self._sizes[path[-64:]] = (len(data), time.time())
        return data

    def put(self, blob_id: bytes, data: bytes) -> None:
        """Keep `data` as `blob_id` (best effort: see the module's contract)."""
        if not data or len(data) > min(self.max_blob, self.limit):
            return
        path = self._path(blob_id)
        sub = os.path.dirname(path)
        try:
            if sub not in self._made:
                _make_private(self.folder)
                _make_private(sub)
                self._made.add(sub)
            atomic_write(path, lambda f: f.write(data), durable=False)
        except OSError:
            return
        with self._lock:
            sizes = self._scanned()
            old = sizes.get(os.path.basename(path))
            self._total += len(data) - (old[0] if old else 0)
            sizes[os.path.basename(path)] = (len(data), time.time())
            if self._total > self.limit:
                self._evict(sizes)

    def put_soon(self, blob_id: bytes, data: bytes) -> None:
        """`put`, on the background thread (see the module's contract)."""
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop, name="blob-cache", daemon=True
                    )
                    self._writer.start()
        self._queue.put((blob_id, data))

    def wait(self) -> None:
        """Return once every write handed to `put_soon` is done."""
        if self._writer is not None:
            self._queue.join()

    def close(self) -> None:
        """`wait`, then stop the background thread (a later `put_soon`
        starts another): a long-lived process opens a cache per job."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            blob_id, data = item
            try:
                self.put(blob_id, data)
            except (OSError, ValueError):
                pass  # best effort, as `put`
            finally:
                self._queue.task_done()

    def drop(self, blob_id: bytes) -> None:
        """Forget `blob_id` (a corrupt or unwanted entry)."""
        name = blob_id.hex()
        try:
            os.unlink(self._path(blob_id))
        except (OSError, ValueError):
            pass
        with self._lock:
            if self._sizes is not None and name in self._sizes:
                self._total -= self._sizes.pop(name)[0]

    def clear(self) -> None:
        """Remove the whole folder."""
        with self._lock:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._sizes, self._total = None, 0
            self._made = set()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            self._scanned()
            return self._total

    def _scanned(self) -> dict[str, tuple[int, float]]:
        """Under `_lock`: the entries on disk, listed once."""
        if self._sizes is not None:
            return self._sizes
        sizes: dict[str, tuple[int, float]] = {}
        try:
            subs = [e for e in os.scandir(self.folder) if _PREFIX.match(e.name) and e.is_dir()]
        except OSError:
            subs = []
        for sub in subs:
            try:
                for entry in os.scandir(sub.path):
                    if _NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        sizes[entry.name] = (st.st_size, st.st_mtime)
            except OSError:
                continue
        self._sizes = sizes
        self._total = sum(size for size, _ in sizes.values())
        return sizes

    def _evict(self, sizes: dict[str, tuple[int, float]]) -> None:
        """Under `_lock`: the oldest entries, until under 90 % of the bound."""
        goal = self.limit * 9 // 10
        for name in sorted(sizes, key=lambda n: sizes[n][1]):
            if self._total <= goal:
                break
            try:
                os.unlink(os.path.join(self.folder, name[:2], name))
            except OSError:
                pass
            self._total -= sizes.pop(name)[0]


def _make_private(folder: str) -> None:
    """`folder` exists, is a real folder (no symlink) and is 0700."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
