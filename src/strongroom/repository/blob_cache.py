"""A bounded on-disk cache of blobs by id, one folder per repository, under
`$XDG_CACHE_HOME/strongroom/<kind>/<repository id>/` (as restic's cache).

The agent keeps its tree blobs here (remote/store.py), so a backup over an
unchanged tree asks its server for none; a session on a remote repository
keeps the index files, points and trees it read (repo.py `attach_cache`).

Contract:
- nothing read back is trusted: `get` returns the stored bytes (at most
  `max_blob`) and the caller verifies them as it verifies a read from the
  repository, calling `drop` on a mismatch and fetching again. An unreadable,
  oversized or missing entry is a miss, never an error; every failure to
  write is ignored (a cache that cannot write only costs reads);
- the entries live in one SQLite database, `blobs.sqlite` in the folder
  (WAL, no fsync per write: a crash loses recent entries at worst; a file
  SQLite cannot read is removed and started again, once). One file, not a
  file per blob: creating a file costs a few hundred microseconds of kernel
  time on a busy virtual disk, and a first backup caches thousands of trees
  (2.5 s of system CPU for a 256 MiB backup, measured). The database is
  created 0600 in a folder made 0700, never through a symlink. Files of the
  earlier layout (a file per blob in 256 hex sub-folders) are removed when
  the database is made;
- the total size is bounded (`limit`): when a write takes it over, the least
  recently used entries (by the time of their last write or hit) go until
  it is under 90 % of the bound. Processes sharing a cache share the
  database (SQLite's locking), each evicting on its own writes (counting
  the others' writes: the total is counted again when another wrote);
- `put_soon` hands the write to one background thread, which writes what is
  queued in one transaction; `wait` returns once every handed write is done,
  `close` also stops the thread and closes the database (a later call opens
  it again).

Thread safety: any thread may call any method (one lock around the
connection). A forked child must not use a cache its parent opened.
"""

from __future__ import annotations

import os
import pathlib
import queue
import re
import shutil
import sqlite3
import threading
import time
from typing import Any

DEFAULT_LIMIT = 256 << 20
NO_CACHE_VARIABLE = "STRONGROOM_NO_CACHE"  # 1: no cache at all (`--no-cache`)
QUEUED = 4096  # writes handed to the background thread, at most (then `put_soon` waits)
DATABASE = "blobs.sqlite"
_BATCH = 512  # queued writes in one transaction, at most
_KINDS = frozenset({"agent", "repository"})
_REPOSITORY_ID = re.compile(r"[0-9a-f]{16,128}\Z")
_PREFIX = re.compile(r"[0-9a-f]{2}\Z")
_NAME = re.compile(r"[0-9a-f]{64}\Z")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS blobs (id BLOB PRIMARY KEY, data BLOB NOT NULL, used REAL NOT NULL)"
)


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
        self._db: sqlite3.Connection | None = None
        self._restarted = False  # an unreadable database was removed once
        self._broken = False  # ... and the new one failed too: no cache
        self._total: int | None = None  # bytes stored, counted at the first write
        self._version: int | None = None  # SQLite's data_version when `_total` was counted
        self._touched: dict[bytes, float] = {}  # hits since the last write
        self._hit = False  # the database file's time was refreshed (`list_caches`)
        self._queue: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue(maxsize=QUEUED)
        self._writer: threading.Thread | None = None

    @property
    def path(self) -> str:
        return os.path.join(self.folder, DATABASE)

    def has(self, blob_id: bytes) -> bool:
        _check_id(blob_id)
        with self._lock:
            return self._query("SELECT 1 FROM blobs WHERE id = ?", (blob_id,)) is not None

    def get(self, blob_id: bytes) -> bytes | None:
        """The cached bytes of `blob_id` (unverified: see the module's
        contract), or None."""
        _check_id(blob_id)
        with self._lock:
            # the bytes only of a blob within the bound (SQLite keeps any type
            # in a BLOB column, and a hostile row may be of any size): else NULL
            row = self._query(
                "SELECT CASE WHEN typeof(data) = 'blob' AND length(data) BETWEEN 1 AND ?"
                " THEN data END FROM blobs WHERE id = ?",
                (self.max_blob, blob_id),
            )
            if row is None:
                return None
            data = row[0]
            if not isinstance(data, bytes) or not 0 < len(data) <= self.max_blob:
                self._delete([blob_id])
                return None
            self._touched[blob_id] = time.time()  # recorded with the next write
            if not self._hit:
                self._hit = True
                try:
                    os.utime(self.path)  # in use: `cache --cleanup` keeps it
                except OSError:
                    pass
            return data

    def put(self, blob_id: bytes, data: bytes) -> None:
        """Keep `data` as `blob_id` (best effort: see the module's contract)."""
        _check_id(blob_id)
        self._put_many([(blob_id, data)])

    def put_soon(self, blob_id: bytes, data: bytes) -> None:
        """`put`, on the background thread (see the module's contract)."""
        _check_id(blob_id)
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
        """`wait`, then stop the background thread and close the database
        (a later call opens it again): a long-lived process opens a cache per
        job."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()
        with self._lock:
            if self._touched:
                self._write([])
            self._disconnect()

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[tuple[bytes, bytes]] = []
            stop = item is None
            if item is not None:
                batch.append(item)
            while not stop and len(batch) < _BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            try:
                self._put_many(batch)
            except (OSError, ValueError, sqlite3.Error):
                pass  # best effort, as `put`
            finally:
                for _ in range(len(batch) + (1 if stop else 0)):
                    self._queue.task_done()
            if stop:
                return

    def drop(self, blob_id: bytes) -> None:
        """Forget `blob_id` (a corrupt or unwanted entry)."""
        _check_id(blob_id)
        with self._lock:
            self._delete([blob_id])

    def clear(self) -> None:
        """Remove the whole folder."""
        with self._lock:
            self._disconnect()
            shutil.rmtree(self.folder, ignore_errors=True)
            self._total = None
            self._restarted = self._broken = False

    @property
    def total_bytes(self) -> int:
        with self._lock:
            row = self._query("SELECT coalesce(sum(length(data)), 0) FROM blobs", ())
            return 0 if row is None else int(row[0])

    # --- the database (all under `_lock`) -----------------------------------

    def _put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        keep = [(i, d) for i, d in items if d and len(d) <= min(self.max_blob, self.limit)]
        if keep or self._touched:
            with self._lock:
                self._write(keep)

    def _write(self, items: list[tuple[bytes, bytes]]) -> None:
        db = self._connect(create=True)
        if db is None:
            return
        now = time.time()
        try:
            # another process's writes (data_version moves) count too: counted again
            version = int(db.execute("PRAGMA data_version").fetchone()[0])
            if self._total is None or version != self._version:
                self._total = int(
                    db.execute("SELECT coalesce(sum(length(data)), 0) FROM blobs").fetchone()[0]
                )
                self._version = version
            with db:
                added = 0
                for blob_id, data in items:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO blobs (id, data, used) VALUES (?, ?, ?)",
                        (blob_id, data, now),
                    )
                    added += len(data) if cur.rowcount == 1 else 0
                db.executemany(
                    "UPDATE blobs SET used = ? WHERE id = ?",
                    [(at, blob_id) for blob_id, at in self._touched.items()],
                )
            self._touched.clear()
            self._total += added
            if self._total > self.limit:
                self._evict(db)
        except sqlite3.Error:
            self._failed()

    def _evict(self, db: sqlite3.Connection) -> None:
        """The least recently used entries, until under 90 % of the bound."""
        goal = self.limit * 9 // 10
        total = int(db.execute("SELECT coalesce(sum(length(data)), 0) FROM blobs").fetchone()[0])
        gone = []
        for blob_id, size in db.execute("SELECT id, length(data) FROM blobs ORDER BY used, id"):
            if total <= goal:
                break
            gone.append((blob_id,))
            total -= int(size)
        with db:
            db.executemany("DELETE FROM blobs WHERE id = ?", gone)
        self._total = total

    def _delete(self, blob_ids: list[bytes]) -> None:
        db = self._connect(create=False)
        if db is None:
            return
        try:
            with db:
                db.executemany("DELETE FROM blobs WHERE id = ?", [(b,) for b in blob_ids])
            self._total = None  # counted again at the next write
        except sqlite3.Error:
            self._failed()

    def _query(self, sql: str, args: tuple[object, ...]) -> tuple[Any, ...] | None:
        """One row of a read, or None (no row; no database; an unreadable one)."""
        db = self._connect(create=False)
        if db is None:
            return None
        try:
            row: tuple[Any, ...] | None = db.execute(sql, args).fetchone()
            return row
        except sqlite3.Error:
            self._failed()
            return None

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        """The open database; made (with its folder) only when `create`."""
        if self._db is not None or self._broken:
            return self._db
        path = self.path
        try:
            if create:
                _make_private(self.folder)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                os.close(fd)
                _remove_old_layout(self.folder)
            elif not os.path.isfile(path) or os.path.islink(path):
                return None
            db = sqlite3.connect(path, timeout=10, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(_SCHEMA)
        except (OSError, sqlite3.Error):
            self._failed()
            return None
        self._db = db
        return db

    def _failed(self) -> None:
        """An unreadable or unwritable database: remove it and start again
        once; after that, the cache is off for this process."""
        self._disconnect()
        self._total = None
        if self._restarted:
            self._broken = True
            return
        self._restarted = True
        try:  # in the folder itself, never through a symlink in its place
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        try:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(DATABASE + suffix, dir_fd=fd)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def _disconnect(self) -> None:
        self._version = None  # per connection
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None


def count_entries(path: str) -> int:
    """The entries of the cache database at `path` (0 if it cannot be read),
    for `strongroom cache`; opened read-only."""
    try:
        uri = pathlib.Path(os.path.abspath(path)).as_uri()  # '#', '?', '%' quoted
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=1)
        try:
            return int(db.execute("SELECT count(*) FROM blobs").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _check_id(blob_id: bytes) -> None:
    if len(blob_id) != 32:
        raise ValueError("a cached blob's id is 32 bytes")


def _remove_old_layout(folder: str) -> None:
    """The earlier layout's files (a file per blob, in hex sub-folders)."""
    try:
        subs = [
            e
            for e in os.scandir(folder)
            if _PREFIX.match(e.name) and e.is_dir(follow_symlinks=False)
        ]
    except OSError:
        return
    for sub in subs:
        try:
            names = [e.name for e in os.scandir(sub.path) if _NAME.match(e.name)]
            for name in names:
                os.unlink(os.path.join(sub.path, name))
            os.rmdir(sub.path)
        except OSError:
            continue


def _make_private(folder: str) -> None:
    """`folder` exists, is a real folder (no symlink) and is 0700."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
