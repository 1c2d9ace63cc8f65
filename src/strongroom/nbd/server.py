"""A read-only NBD server: listeners, the accept loop, and connection threads.

`NbdServer` listens on Unix sockets and/or TCP and serves up to
`ServerLimits.max_clients` clients at once (two threads each, see `session`);
one more is accepted and closed at once, without a thread, and the refusal is
logged at most once per interval. The reads themselves run in one bounded
worker pool shared round-robin by the clients (`pool.FairPool`), so a slow
`Export.read` (decompression, decryption) overlaps across requests and
clients while no client can take every worker. When accept fails for lack of
resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) the loop backs off exponentially
instead of spinning on a listener that stays readable, and logs once per
interval with a count. Exports are read-only: NBD_FLAG_READ_ONLY and
NBD_FLAG_CAN_MULTI_CONN are advertised, writes get EPERM. A failure in one
connection is logged and ends only that connection.

Lifecycle: `listen_*` (any number, before or after starting), then
`serve_forever()` in the calling thread or `start()` in a background one;
`shutdown()` stops accepting, closes every connection, joins the threads and
removes the Unix socket files it created. Usable as a context manager.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import stat
import threading
from collections.abc import Mapping
from types import TracebackType

from strongroom.errors import UsageError
from strongroom.nbd import protocol as p
from strongroom.nbd.exports import Export, MemoryExport, Segment, clip_extents
from strongroom.nbd.limits import Budget, LogThrottle, ServerLimits
from strongroom.nbd.pool import FairPool
from strongroom.nbd.session import ServerContext, Session, peer_name
from strongroom.nbd.uri import format_tcp_uri, format_unix_uri
from strongroom.nbd.wire import tune

__all__ = ["Export", "MemoryExport", "NbdServer", "Segment", "ServerLimits", "clip_extents"]

_log = logging.getLogger(__name__)

DEFAULT_PREFERRED_BLOCK = 1 << 20
BACKLOG = 64
# accept failures that mean "out of resources": retrying at once only spins
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept failures that concern one connection only: the next accept may work
TRANSIENT_ERRORS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0


class NbdServer:
    """Serves `exports` (by name) read-only over NBD; see the module docstring.

    With `default_export` None and exactly one export, that export is also
    served under the empty name, as clients that name no export expect.
    """

    def __init__(
        self,
        exports: Mapping[str, Export],
        *,
        limits: ServerLimits | None = None,
        default_export: str | None = None,
        preferred_block: int = DEFAULT_PREFERRED_BLOCK,
    ) -> None:
        if not exports:
            raise UsageError("an NBD server needs at least one export")
        for name in exports:
            try:
                p.encode_string(name)
            except ValueError:
                raise UsageError(f"invalid NBD export name {name!r}") from None
        if default_export is None and len(exports) == 1:
            default_export = next(iter(exports))
        if default_export is not None and default_export not in exports:
            raise UsageError(f"default export {default_export!r} is not among the exports")
        if preferred_block & (preferred_block - 1) or not 512 <= preferred_block <= p.MAX_BLOCK:
            raise UsageError(f"preferred block size {preferred_block} is not a power of two")
        self.limits = limits = limits or ServerLimits()
        self._exports = dict(exports)
        self._default = default_export
        self._pool = FairPool(limits.workers, limits.client_workers)
        self._ctx = ServerContext(
            exports=self._exports,
            default_export=default_export,
            pool=self._pool,
            preferred_block=preferred_block,
            limits=limits,
            count_served=self._count_served,
            total=Budget(1 << 62, limits.max_total_bytes),
        )
        self._throttle = LogThrottle(_log)
        self._lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self._unix_paths: list[str] = []
        self._sessions: dict[Session, threading.Thread] = {}
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._serving = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._bytes_served = 0
        self._connections = 0
        self._refused = 0
        self._backoff = 0.0

    # --- statistics ---------------------------------------------------------------------------

    @property
    def bytes_served(self) -> int:
        """Export bytes answered by successful reads (holes included)."""
        return self._bytes_served

    @property
    def connections(self) -> int:
        """Connections accepted since the server was made."""
        return self._connections

    @property
    def refused(self) -> int:
        """Connections closed at once because `max_clients` were being served."""
        return self._refused

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _count_served(self, n: int) -> None:
        with self._lock:
            self._bytes_served += n

    # --- listening ---------------------------------------------------------------------------

    def _uri_export(self) -> str:
        return self._default if self._default is not None else next(iter(self._exports))

    def listen_unix(self, path: str) -> str:
        """Listen on a Unix socket at `path` (a stale socket file there is replaced);
        returns the nbd+unix URI of the default export."""
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(BACKLOG)
        except OSError as err:
            sock.close()
            raise UsageError(f"cannot listen on {path}: {err.strerror or err}") from None
        with self._lock:
            self._unix_paths.append(path)
        self._add_listener(sock)
        return format_unix_uri(path, self._uri_export())

    def listen_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on TCP host:port (0 picks a free port); returns the nbd:// URI with the
        real port."""
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        except OSError as err:
            raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        self._add_listener(sock)
        return format_tcp_uri(host, sock.getsockname()[1], self._uri_export())

    def _add_listener(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                raise UsageError("the NBD server is shut down")
            self._listeners.append(sock)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # --- serving ----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept connections until `shutdown()`; each is served in its own thread."""
        with self._lock:
            if self._serving or self._stopping.is_set():
                raise UsageError("the NBD server is already serving or shut down")
            self._serving = True
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        registered: set[socket.socket] = set()
        try:
            while not self._stopping.is_set():
                with self._lock:
                    current = list(self._listeners)
                for sock in current:
                    if sock not in registered:
                        selector.register(sock, selectors.EVENT_READ)
                        registered.add(sock)
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        self._wake_r.recv(4096)
                    else:
                        assert isinstance(key.fileobj, socket.socket)
                        self._accept(key.fileobj)
                if self._backoff:
                    # out of resources: wait (shutdown still wakes us) instead of
                    # spinning on a listener that stays readable
                    self._stopping.wait(self._backoff)
        finally:
            selector.close()
            self._stopped.set()

    def start(self) -> None:
        """Run `serve_forever` in a background daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="nbd-accept", daemon=True)
        self._thread.start()

    def _accept(self, listener: socket.socket) -> None:
        """Accept what is pending (at most a backlog's worth, so one busy listener
        cannot starve the others or shutdown); sets or clears the back-off."""
        for _ in range(BACKLOG):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in TRANSIENT_ERRORS:
                    continue
                # EMFILE and friends (or anything unexpected): keep serving the
                # clients we have, retry later, and say so once per interval
                self._backoff = min(max(self._backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
                self._throttle.warning(
                    f"accept:{err.errno}",
                    f"nbd accept failed: {err.strerror or err}; retrying with back-off",
                )
                return
            self._backoff = 0.0
            self.serve_connection(conn, background=True)

    def serve_connection(self, conn: socket.socket, *, background: bool = False) -> bool:
        """Serve one connected socket (the server owns it from now on): in the calling
        thread, or in a new daemon thread with `background`. Socket activation and
        tests use this; the accept loop does too. False if it was closed at once:
        the server is stopping, serves `max_clients` already, or has no thread left."""
        try:
            conn.setblocking(True)
            tune(conn)
        except OSError:  # the client is already gone
            conn.close()
            return False
        session = Session(self._ctx, conn, peer_name(conn))
        thread = threading.Thread(
            target=self._run_session, args=(session,), name="nbd-conn", daemon=True
        )
        with self._lock:
            stopping = self._stopping.is_set()
            full = len(self._sessions) >= self.limits.max_clients
            if full and not stopping:
                self._refused += 1
            if not (stopping or full):
                self._connections += 1
                self._sessions[session] = thread
        if stopping or full:
            conn.close()
            if full and not stopping:
                self._throttle.warning(
                    "max-clients",
                    f"nbd connection refused: {self.limits.max_clients} clients are being served",
                )
            return False
        _log.debug("nbd connection from %s", session.peer)
        if not background:
            self._run_session(session)
            return True
        try:
            thread.start()
        except RuntimeError as err:  # "can't start new thread": the system's limit
            with self._lock:
                self._sessions.pop(session, None)
            conn.close()
            self._throttle.warning("thread", f"nbd connection refused: {err}")
            return False
        return True

    def _run_session(self, session: Session) -> None:
        try:
            session.run()
        finally:
            with self._lock:
                self._sessions.pop(session, None)

    def shutdown(self) -> None:
        """Stop accepting, close every connection, join threads, remove socket files.
        Idempotent; safe from any thread except a connection's own."""
        with self._lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            listeners, self._listeners = self._listeners, []
            paths, self._unix_paths = self._unix_paths, []
        self._wake()
        if self._serving:
            self._stopped.wait()
        if self._thread is not None:
            self._thread.join()
        for sock in listeners:
            sock.close()
        for path in paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        with self._lock:
            sessions = dict(self._sessions)
        for session in sessions:
            session.abort()
        current = threading.current_thread()
        for thread in sessions.values():
            if thread is not current and thread.ident is not None:
                thread.join()
        self._pool.shutdown()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> NbdServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on; refuse to touch anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"cannot listen on {path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise UsageError(f"cannot listen on {path}: another server is listening there")
    finally:
        probe.close()
