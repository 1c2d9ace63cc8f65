"""Worker processes for the file backup: small files read and sealed, chunks sealed.

Why processes: on two cores the backup's Python work (per-file bookkeeping,
AES-GCM, which holds the GIL) serialises on one interpreter, and every system
call of the walking thread waits for the GIL again behind the sealing threads
(docs/performance.md, "File backup on both cores"). Forked workers each have
their own interpreter.

The contract (docs/design.md, "Backup worker processes"):
- Workers are forked from the backup process, so they inherit the opened
  repository's keys, its chunker seed and a snapshot of its chunk index. A
  worker answers "known" only for a chunk the snapshot names in a pack that
  existed; the parent's index is a superset, so its sink re-checks every
  "known" answer (which also records the pack relied on) and re-adds nothing.
  A stale "unknown" answer only costs a duplicate seal: `add_sealed` drops it.
- A worker never writes to the repository: it returns ids, lengths and sealed
  bytes. The parent alone writes packs and the index, in walk order, so the
  point's tree ids do not depend on the number of workers.
- Small files are handed over as directory descriptors (`socket.send_fds`)
  plus names; the worker opens each name with `openat(O_NOFOLLOW)` below its
  descriptor (sources/files.py), never by a path string.
- A worker dies with its parent (`PR_SET_PDEATHSIG`, and end of input on its
  socket). A worker that dies or fails makes the next result raise a one-line
  `WorkerFailed`; the pipeline then abandons its buffered packs.
- Each worker draws its own AES-GCM nonces: repository/crypto.py redraws in a
  forked child.

Wire format on each worker's unix stream socket: a request is a header
`<BIQ` (kind, number of descriptors, payload length; the descriptors ride on
the header's message) and the payload (`SEAL`: the raw chunk; `READ`: a pickled
list of (descriptor index, name)). A response is `<Q` (length) and a pickled
`(ok, value)`. Each worker answers its requests in order, so the parent pairs
responses with a queue of futures per worker.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import struct
import threading
from collections import deque
from concurrent.futures import Future, InvalidStateError
from typing import Any

from strongroom.errors import StrongroomError
from strongroom.pipeline.small_files import Sealed, SmallFile, read_small_file
from strongroom.repository.store import ChunkStore

SEAL = 1
READ = 2
_REQUEST = struct.Struct("<BIQ")
_RESPONSE = struct.Struct("<Q")
_MAX_FDS = 253  # SCM_MAX_FD
_PR_SET_PDEATHSIG = 1

SealResult = tuple[bytes, int, Sealed | None]


class WorkerFailed(StrongroomError):
    """A backup worker process died or raised: the backup stops (one line)."""


def _recv_exact(sock: socket.socket, size: int) -> bytearray | None:
    """`size` bytes, or None at end of input before the first byte."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0:
                return None
            raise EOFError("truncated message")
        got += n
    return buf


def _recv_request(sock: socket.socket) -> tuple[int, list[int], bytearray] | None:
    """One request (kind, descriptors, payload), or None at end of input."""
    header = bytearray()
    fds: list[int] = []
    while len(header) < _REQUEST.size:
        data, got, _, _ = socket.recv_fds(sock, _REQUEST.size - len(header), _MAX_FDS)
        fds += got
        if not data:
            for fd in fds:
                os.close(fd)
            if not header:
                return None
            raise EOFError("truncated request")
        header += data
    kind, nfds, length = _REQUEST.unpack(header)
    if nfds != len(fds):
        for fd in fds:
            os.close(fd)
        raise EOFError("descriptors lost in transit")
    payload = _recv_exact(sock, length) if length else bytearray()
    if payload is None:
        raise EOFError("truncated request")
    return kind, fds, payload


def _serve(sock: socket.socket, repo: ChunkStore, limit: int, dry_run: bool) -> None:
    """A worker's loop: answer requests in order until the parent closes."""
    while True:
        request = _recv_request(sock)
        if request is None:
            return
        kind, fds, payload = request
        try:
            value: Any
            if kind == SEAL:
                cid, sealed = repo.seal_new(memoryview(payload), dry_run=dry_run)
                value = (cid, len(payload), sealed)
            else:
                items: list[tuple[int, bytes]] = pickle.loads(payload)
                value = [read_small_file(repo, fds[i], name, limit, dry_run) for i, name in items]
            answer = pickle.dumps((True, value), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # reported to the parent as one line
            text = " ".join(f"{type(err).__name__}: {err}".split())
            answer = pickle.dumps((False, text))
        finally:
            for fd in fds:
                os.close(fd)
        sock.sendall(_RESPONSE.pack(len(answer)) + answer)


_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())


def _fresh_locks(obj: object, depth: int = 2) -> None:
    """In a forked worker: replace the locks of `obj` (the store) and of the
    project objects it holds. A thread of the parent (an upload, the remote
    sender) may have held one at the fork, and it does not exist here."""
    attrs = getattr(obj, "__dict__", None)
    if attrs is None:
        return
    for name, value in list(attrs.items()):
        if isinstance(value, _LOCK):
            attrs[name] = threading.Lock()
        elif isinstance(value, _RLOCK):
            attrs[name] = threading.RLock()
        elif depth > 1 and type(value).__module__.startswith("strongroom."):
            _fresh_locks(value, depth - 1)


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the parent dies (Linux); exit if it already has."""
    import ctypes  # only in a worker: the backup process does not pay for it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: end of input on the socket still stops the worker
    if os.getppid() != parent:
        os._exit(1)


class _Worker:
    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.pending: deque[Future[Any]] = deque()
        self.lock = threading.Lock()  # pending: appended by the sender, popped by the reader
        self.reader: threading.Thread | None = None
        self.status: int | None = None


class WorkerPool:
    """`count` forked workers for one backup; `start()` forks them (lazily, once
    there is work worth it: the caller decides), `close()` ends them."""

    def __init__(self, repo: ChunkStore, count: int, limit: int, dry_run: bool) -> None:
        self.repo = repo
        self.count = max(1, count)
        self.limit = limit
        self.dry_run = dry_run
        self.workers: list[_Worker] = []
        self._next = 0
        self._closing = False
        self._failure: str | None = None

    @property
    def started(self) -> bool:
        return bool(self.workers)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def start(self) -> None:
        """Fork the workers. Call with no work of this backup in flight on other
        threads (the caller drains its queue first), so no lock a worker needs
        is held; the index and the pack listing are loaded before forking."""
        self.repo.has_chunk(bytes(32))  # index and pack listing, inherited by the workers
        parent = os.getpid()
        for _ in range(self.count):
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            pid = os.fork()
            if pid == 0:  # the worker
                status = 0
                try:
                    _die_with_parent(parent)
                    # The backup process handles ^C (this may not be Python's main thread).
                    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
                    mine.close()
                    for other in self.workers:
                        other.sock.close()
                    _fresh_locks(self.repo)
                    _serve(theirs, self.repo, self.limit, self.dry_run)
                except BaseException as err:
                    status = 1
                    with contextlib.suppress(OSError):
                        os.write(2, f"strongroom: backup worker: {err!r}\n".encode())
                finally:
                    os._exit(status)
            theirs.close()
            worker = _Worker(pid, mine)
            self.workers.append(worker)
            worker.reader = threading.Thread(
                target=self._read, args=(worker,), name=f"worker-{pid}", daemon=True
            )
            worker.reader.start()

    # --- requests (from the walking thread) ---------------------------------

    def seal(self, data: bytes | memoryview) -> Future[SealResult]:
        """The chunk's id, length, and sealed form unless known (see the module)."""
        return self._request(SEAL, [], data)

    def read_batch(self, items: list[tuple[int, bytes]]) -> Future[list[SmallFile | OSError]]:
        """Read, id and seal small files: `items` are (directory fd, name); the
        descriptors are passed to the worker (the caller may close its own)."""
        fds: list[int] = []
        slots: dict[int, int] = {}
        names = []
        for fd, name in items:
            slot = slots.get(fd)
            if slot is None:
                slot = slots[fd] = len(fds)
                fds.append(fd)
            names.append((slot, name))
        return self._request(READ, fds, pickle.dumps(names, protocol=pickle.HIGHEST_PROTOCOL))

    def _request(self, kind: int, fds: list[int], payload: bytes | memoryview) -> Future[Any]:
        if self._failure is not None:
            raise WorkerFailed(self._failure)
        worker = min(self.workers, key=lambda w: len(w.pending))
        fut: Future[Any] = Future()
        with worker.lock:
            worker.pending.append(fut)
        try:
            header = _REQUEST.pack(kind, len(fds), len(payload))
            if fds:
                socket.send_fds(worker.sock, [header], fds)
            else:
                worker.sock.sendall(header)
            worker.sock.sendall(payload)
        except OSError:
            if worker.reader is not None:  # it saw the end too: let it say how
                worker.reader.join(timeout=5)
            raise WorkerFailed(self._failure or f"backup worker {worker.pid} died") from None
        return fut

    # --- responses (one reader thread per worker) -----------------------------

    def _read(self, worker: _Worker) -> None:
        try:
            while True:
                head = _recv_exact(worker.sock, _RESPONSE.size)
                if head is None:
                    break
                (length,) = _RESPONSE.unpack(head)
                body = _recv_exact(worker.sock, length)
                if body is None:
                    break
                ok, value = pickle.loads(body)
                with worker.lock:
                    fut = worker.pending.popleft()
                with contextlib.suppress(InvalidStateError):  # cancelled after an error
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(WorkerFailed(f"backup worker failed: {value}"))
        except (OSError, EOFError, pickle.UnpicklingError):
            pass
        self._ended(worker)

    def _ended(self, worker: _Worker) -> None:
        """End of a worker's output: reap it; fail what it still owed."""
        with contextlib.suppress(ChildProcessError):
            _, worker.status = os.waitpid(worker.pid, 0)
        with worker.lock:
            pending = list(worker.pending)
            worker.pending.clear()
        if self._closing and not pending:
            return
        status = worker.status or 0
        if os.WIFSIGNALED(status):
            how = f"killed by signal {os.WTERMSIG(status)}"
        else:
            how = f"exit status {os.waitstatus_to_exitcode(status)}"
        self._failure = self._failure or f"backup worker {worker.pid} died ({how})"
        for fut in pending:
            with contextlib.suppress(InvalidStateError):
                fut.set_exception(WorkerFailed(self._failure))

    def close(self, kill: bool = False) -> None:
        """End the workers and reap them: at end of input when done, by SIGKILL
        after an error (their results are no longer wanted)."""
        self._closing = True
        for worker in self.workers:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                worker.sock.shutdown(socket.SHUT_WR)
        for worker in self.workers:
            if worker.reader is not None:
                worker.reader.join()
            worker.sock.close()
        self.workers = []
