"""A repository on an SFTP server, through the system's `ssh`.

Locations, as restic writes them: `sftp:[USER@]HOST:PATH` and
`sftp://[USER@]HOST[:PORT]//ABSOLUTE/PATH` (one slash after the host: a path
relative to the login's home). The connection is `ssh [ARGS] -s HOST sftp`,
run as the user would run it, so `~/.ssh/config` (aliases, ports, identities,
jump hosts), `known_hosts` and a running agent all apply exactly as for their
own `ssh`; paramiko speaks the SFTP protocol over that pipe. `STRONGROOM_SFTP_ARGS`
adds options to `ssh` (e.g. `-F FILE`, `-i KEY`); `BatchMode` is not forced, so
a passphrase may be asked on a terminal. An unknown host key is ssh's refusal,
not a prompt of ours.

Writes go to `tmp/<random>` and are renamed into place once written and, where
the server offers it (OpenSSH's `fsync@openssh.com`), flushed to its disk:
`put` with `posix-rename@openssh.com` (replaces atomically), `create` with the
plain SFTP rename, which OpenSSH's server performs with link() and unlink(), so
it fails if the name exists: exclusive and atomic on any file system with hard
links (the locks and keys need that). A server without those extensions is
refused for writing with a clear message rather than used unsafely.

One SFTP session serves every thread (paramiko's client is used under a lock),
so `parallel_requests` is 1; reads of a pack are ranged.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shlex
import stat
import subprocess
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from strongroom.config import child_environment
from strongroom.errors import (
    InvalidObjectName,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    UsageError,
)
from strongroom.storage.base import Capabilities, Content, ObjectInfo, check_name

if TYPE_CHECKING:
    import paramiko

TMP_DIR = "tmp"
_SHORT = re.compile(r"^sftp:(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>.*)$")
_URL = re.compile(
    r"^sftp://(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:\[\]]+|\[[0-9a-fA-F:.]+\])"
    r"(?::(?P<port>\d{1,5}))?/(?P<path>.*)$"
)
_CONNECT_TIMEOUT = 30


def parse_location(location: str) -> tuple[str | None, str, int | None, str]:
    """(user, host, port, path) of an sftp location; UsageError if malformed.
    The path is absolute (`/srv/repo`) or relative to the login's home."""
    found = _URL.match(location) or _SHORT.match(location)
    if found is None:
        raise UsageError(
            f"{location!r} is not an sftp location: use sftp:[USER@]HOST:PATH or "
            "sftp://[USER@]HOST[:PORT]//ABSOLUTE/PATH"
        )
    groups = found.groupdict()
    path = groups["path"]
    if not path or path in ("/", "."):
        raise UsageError(f"{location!r} names no folder for the repository")
    if "\0" in path or any(part == ".." for part in path.split("/")):
        raise UsageError(f"{location!r}: the path may not contain '..' or NUL")
    port = int(groups["port"]) if groups.get("port") else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"{location!r}: port {port} is out of range")
    host = groups["host"].strip("[]")
    if host.startswith("-") or (groups["user"] or "").startswith("-"):
        raise UsageError(f"{location!r}: a host or user may not start with '-'")
    return groups["user"], host, port, path.rstrip("/")


class _SshPipe:
    """The socket paramiko's SFTP client needs, over `ssh ... -s sftp`'s pipes."""

    def __init__(self, argv: list[str]) -> None:
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_environment(user_credentials=True),
                start_new_session=True,  # a Ctrl-C reaches us, not ssh: we close it
            )
        except OSError as err:
            raise StorageError(f"cannot run {argv[0]}: {err.strerror}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin
        self._out = self.proc.stdout
        self.closed = False

    def send(self, data: bytes) -> int:
        try:
            self._in.write(data)
            self._in.flush()
        except (BrokenPipeError, ValueError):
            return 0
        return len(data)

    def recv(self, n: int) -> bytes:
        return os.read(self._out.fileno(), n)

    def recv_ready(self) -> bool:
        """Whether an answer is waiting (paramiko drains acks of pipelined writes)."""
        import select

        ready, _, _ = select.select([self._out.fileno()], [], [], 0)
        return bool(ready)

    def get_name(self) -> str:
        """For paramiko's log lines."""
        return "ssh"

    def stderr_tail(self) -> str:
        """What ssh said on stderr, once it has exited (its reason for failing)."""
        assert self.proc.stderr is not None
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return ""
        text = self.proc.stderr.read().decode("utf-8", "replace").strip()
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in (self._in, self._out):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class SftpBackend:
    """Objects as files below a folder on an SFTP server."""

    def __init__(self, location: str, ssh: str = "ssh") -> None:
        user, host, port, path = parse_location(location)
        argv = [ssh]
        argv += shlex.split(os.environ.get("STRONGROOM_SFTP_ARGS", ""))
        if port is not None:
            argv += ["-p", str(port)]
        argv += ["-s", "--", f"{user}@{host}" if user else host, "sftp"]
        self._connect(location, argv, path, "over ssh")

    def _connect(self, location: str, argv: list[str], path: str, how: str) -> None:
        import paramiko

        self.location = location
        self._exclusive_rename: bool | None = None  # probed before the first create
        self._pipe = _SshPipe(argv)
        try:
            self._sftp = paramiko.SFTPClient(self._pipe)
        except (EOFError, OSError, paramiko.SSHException) as err:
            reason = self._pipe.stderr_tail() or str(err) or type(err).__name__
            self._pipe.close()
            raise StorageError(f"cannot reach {location} {how}: {reason}") from None
        self._lock = threading.RLock()
        self._made_dirs: set[str] = set()
        try:
            home = "" if path.startswith("/") else self._sftp.normalize(".").rstrip("/")
        except OSError as err:
            self.close()
            raise StorageError(f"{location}: {err}") from None
        self.root = path if path.startswith("/") else f"{home}/{path}"

    @property
    def capabilities(self) -> Capabilities:
        """`atomic_create` only if this server's rename refuses an existing name
        (OpenSSH's does; rclone's and some others replace it). It is probed before
        the first exclusive create (a read-only session never writes the probe),
        so whoever checks after creating (the leases) reads the answer."""
        return Capabilities(
            atomic_create=self._exclusive_rename is not False,
            ranged_get=True,
            listing_consistent=True,
            parallel_requests=1,
            remote=True,
        )

    def _rename_is_exclusive(self) -> bool:
        """Rename one temporary file onto another: refused means exclusive."""
        with self._lock:
            if self._exclusive_rename is None:
                tmp_dir = f"{self.root}/{TMP_DIR}"
                first, second = (f"{tmp_dir}/probe-{secrets.token_hex(8)}" for _ in range(2))
                try:
                    self._ensure_dir(tmp_dir)
                    for name in (first, second):
                        with self._sftp.open(name, "wb") as f:
                            f.write(b"probe")
                    try:
                        self._sftp.rename(first, second)
                        self._exclusive_rename = False
                    except OSError:
                        self._exclusive_rename = True
                except OSError as err:
                    raise self._error(err, "probing the server's rename") from None
                finally:
                    for name in (first, second):
                        try:
                            self._sftp.remove(name)
                        except OSError:
                            pass
            return self._exclusive_rename

    # --- helpers -------------------------------------------------------------

    def _path(self, name: str) -> str:
        if check_name(name).split("/", 1)[0] == TMP_DIR:
            raise InvalidObjectName(f"object name {name!r} is reserved for temporary files")
        return f"{self.root}/{name}"

    def _error(self, err: OSError, what: str, name: str = "") -> StorageError:
        if isinstance(err, FileNotFoundError) or err.errno == errno.ENOENT:
            return ObjectNotFound(f"object {name} not found in {self.location}")
        return StorageError(f"{what} on {self.location}: {err.strerror or err}")

    def _ensure_dir(self, path: str) -> None:
        """mkdir -p on the server, remembering what exists."""
        if path in self._made_dirs or path in ("", "/"):
            return
        try:
            if stat.S_ISDIR(self._sftp.stat(path).st_mode or 0):
                self._made_dirs.add(path)
                return
        except FileNotFoundError:
            pass
        parent = path.rsplit("/", 1)[0]
        if parent and parent != path:
            self._ensure_dir(parent)
        try:
            self._sftp.mkdir(path)
        except OSError:
            if not stat.S_ISDIR(self._sftp.stat(path).st_mode or 0):
                raise
        self._made_dirs.add(path)

    def _fsync(self, handle: Any) -> None:
        """`fsync@openssh.com` on an open remote file, where the server has it."""
        from paramiko.sftp import CMD_EXTENDED

        try:
            self._sftp._request(CMD_EXTENDED, "fsync@openssh.com", handle.handle)
        except OSError:
            pass  # not offered: the server's own write-back applies

    # --- contract ------------------------------------------------------------

    def put(self, name: str, data: Content) -> None:
        self._write_whole(name, data, exclusive=False)

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self._write_whole(name, data, exclusive=True)

    def _write_whole(self, name: str, data: Content, exclusive: bool) -> None:
        self._path(name)
        temp = self.open_temp()
        try:
            for part in data if isinstance(data, list) else [data]:
                temp.write(part)
            temp.commit(name, exclusive=exclusive)
        except BaseException:
            temp.abort()
            raise

    def get(self, name: str) -> bytes:
        path = self._path(name)
        with self._lock:
            try:
                with self._sftp.open(path, "rb") as f:
                    f.prefetch()
                    return bytes(f.read())
            except OSError as err:
                raise self._error(err, f"reading {name}", name) from None

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        path = self._path(name)
        if length <= 0:
            return b""
        with self._lock:
            try:
                with self._sftp.open(path, "rb") as f:
                    f.seek(offset)
                    out = bytearray()
                    while len(out) < length:
                        piece = f.read(length - len(out))
                        if not piece:
                            break
                        out += piece
                    return bytes(out)
            except OSError as err:
                raise self._error(err, f"reading {name}", name) from None

    def size(self, name: str) -> int:
        path = self._path(name)
        with self._lock:
            try:
                return int(self._sftp.stat(path).st_size or 0)
            except OSError as err:
                raise self._error(err, f"reading {name}", name) from None

    def exists(self, name: str) -> bool:
        try:
            self.size(name)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        top = prefix.rstrip("/").rsplit("/", 1)[0] if "/" in prefix else ""
        found: list[ObjectInfo] = []
        pending = [top]
        with self._lock:
            while pending:
                rel_dir = pending.pop()
                if rel_dir == TMP_DIR:
                    continue
                remote = f"{self.root}/{rel_dir}" if rel_dir else self.root or "/"
                try:
                    entries = self._sftp.listdir_attr(remote)
                except FileNotFoundError:
                    continue
                except OSError as err:
                    raise self._error(err, "listing") from None
                for entry in entries:
                    rel = f"{rel_dir}/{entry.filename}" if rel_dir else entry.filename
                    mode = entry.st_mode or 0
                    if stat.S_ISDIR(mode):
                        if prefix.startswith(rel + "/") or rel.startswith(prefix):
                            pending.append(rel)
                    elif stat.S_ISREG(mode) and rel.startswith(prefix):
                        found.append(ObjectInfo(rel, int(entry.st_size or 0)))
        yield from sorted(found, key=lambda info: info.name)

    def delete(self, name: str) -> None:
        path = self._path(name)
        with self._lock:
            try:
                self._sftp.remove(path)
            except OSError as err:
                raise self._error(err, f"deleting {name}", name) from None

    def close(self) -> None:
        sftp = getattr(self, "_sftp", None)
        if sftp is not None:
            try:
                sftp.close()
            except (OSError, EOFError):
                pass
        self._pipe.close()

    def open_temp(self) -> _SftpTemp:
        """A remote file in `tmp/`, written as it comes; `commit` renames it into place."""
        tmp_dir = f"{self.root}/{TMP_DIR}"
        path = f"{tmp_dir}/{secrets.token_hex(16)}"
        with self._lock:
            try:
                self._ensure_dir(tmp_dir)
                handle = self._sftp.open(path, "wbx")
            except OSError as err:
                raise self._error(err, "creating a temporary object") from None
            handle.set_pipelined(True)
        return _SftpTemp(self, path, handle)

    def clean_temporary(self) -> int:
        """Remove temporary files left by killed writers; returns how many."""
        removed = 0
        with self._lock:
            try:
                names = self._sftp.listdir(f"{self.root}/{TMP_DIR}")
            except FileNotFoundError:
                return 0
            for entry in names:
                try:
                    self._sftp.remove(f"{self.root}/{TMP_DIR}/{entry}")
                    removed += 1
                except OSError:
                    pass
        return removed


class _SftpTemp:
    def __init__(self, backend: SftpBackend, path: str, handle: paramiko.SFTPFile) -> None:
        self._backend = backend
        self._path = path
        self._handle: paramiko.SFTPFile | None = handle

    def write(self, data: bytes | bytearray | memoryview) -> None:
        handle = self._handle
        if handle is None:
            raise StorageError("write to a temporary object already committed or aborted")
        with self._backend._lock:
            try:
                handle.write(bytes(data))
            except OSError as err:
                self.abort()
                raise self._backend._error(err, "writing a temporary object") from None

    def commit(self, name: str, exclusive: bool = False) -> None:
        backend = self._backend
        final = backend._path(name)
        handle = self._handle
        if handle is None:
            raise StorageError("commit of a temporary object already committed or aborted")
        with backend._lock:
            sftp = backend._sftp
            try:
                handle.flush()
                backend._fsync(handle)
                handle.close()
                self._handle = None
                backend._ensure_dir(final.rsplit("/", 1)[0])
                if exclusive and backend._rename_is_exclusive():
                    sftp.rename(self._path, final)  # OpenSSH: link() + unlink(): fails if it exists
                elif exclusive:  # best effort (capabilities say so): look, then rename
                    try:
                        sftp.stat(final)
                    except FileNotFoundError:
                        sftp.posix_rename(self._path, final)
                    else:
                        raise OSError(errno.EEXIST, "exists")
                else:
                    sftp.posix_rename(self._path, final)
            except OSError as err:
                exists = False
                if exclusive:
                    try:
                        sftp.stat(final)
                        exists = True
                    except OSError:
                        pass
                self.abort()
                if exists:
                    raise ObjectExists(f"object {name} already exists") from None
                raise backend._error(err, f"writing {name}") from None

    def abort(self) -> None:
        backend = self._backend
        with backend._lock:
            if self._handle is not None:
                try:
                    self._handle.close()
                except (OSError, EOFError):
                    pass
                self._handle = None
            try:
                backend._sftp.remove(self._path)
            except (OSError, EOFError):
                pass


_RCLONE = re.compile(r"^rclone:(?P<remote>[^:\s-][^:\s]*:)?(?P<path>.*)$")


def parse_rclone_location(location: str) -> str:
    """`rclone:REMOTE:PATH` (restic's form) -> the `REMOTE:PATH` rclone serves."""
    found = _RCLONE.match(location)
    if found is None or found.group("remote") is None:
        raise UsageError(
            f"{location!r} is not an rclone location: use rclone:REMOTE:PATH "
            "(a remote of `rclone config`, e.g. rclone:b2prod:bucket/strongroom)"
        )
    path = found.group("path")
    if "\0" in path or any(part == ".." for part in path.split("/")):
        raise UsageError(f"{location!r}: the path may not contain '..' or NUL")
    return f"{found.group('remote')}{path}"


class RcloneBackend(SftpBackend):
    """A repository on any remote rclone knows, served by `rclone serve sftp
    --stdio REMOTE:PATH` on a pipe (one process per session, as restic runs
    `rclone serve restic --stdio`). rclone's own config, `RCLONE_*` variables
    and `STRONGROOM_RCLONE_ARGS` (e.g. `--config FILE`) apply. rclone's SFTP
    server replaces a name on rename, so exclusive create is best effort here
    (`atomic_create` False): leases refuse, as on any such storage."""

    def __init__(self, location: str, rclone: str = "rclone") -> None:
        served = parse_rclone_location(location)
        argv = [rclone, "serve", "sftp", "--stdio", "--transfers", "1"]
        argv += shlex.split(os.environ.get("STRONGROOM_RCLONE_ARGS", ""))
        argv += ["--", served]
        self._connect(location, argv, "/", "through rclone")
        self.root = ""
        self._exclusive_rename = False  # rclone's rename replaces: known, no probe
