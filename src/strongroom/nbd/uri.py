"""NBD URIs (the NBD URI standard, as qemu and libnbd read them).

`nbd://host[:port][/export]` is TCP (port 10809 by default);
`nbd+unix:///[export]?socket=/path` is a Unix socket. The export name is the
path without its leading slash, percent-decoded. TLS (`nbds`) is refused with
a clear message: neither side of this package speaks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

from strongroom.errors import UsageError
from strongroom.nbd.protocol import DEFAULT_PORT, MAX_STRING


@dataclass(frozen=True)
class NbdAddress:
    """Where an NBD export is: a Unix socket path or a TCP host/port, and its name."""

    unix_path: str | None
    host: str | None
    port: int
    export: str


def parse_nbd_uri(uri: str) -> NbdAddress:
    """Parse an `nbd://` or `nbd+unix://` URI; anything else raises UsageError."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as err:
        raise UsageError(f"invalid NBD URI {uri!r}: {err}") from None
    scheme = parts.scheme.lower()
    if scheme in ("nbds", "nbds+unix", "nbd+vsock", "nbds+vsock"):
        raise UsageError(f"unsupported NBD URI {uri!r}: only nbd:// and nbd+unix:// are supported")
    if scheme not in ("nbd", "nbd+unix", "nbd+tcp"):
        raise UsageError(f"not an NBD URI: {uri!r} (expected nbd://host/export or nbd+unix://)")
    export = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if "\0" in export or len(export.encode()) > MAX_STRING:
        raise UsageError(f"invalid NBD URI {uri!r}: bad export name")
    query = parse_qs(parts.query, keep_blank_values=True)
    if scheme == "nbd+unix":
        if parts.netloc:
            raise UsageError(f"invalid NBD URI {uri!r}: nbd+unix:// takes no host")
        sockets = query.get("socket", [])
        if len(sockets) != 1 or not sockets[0]:
            raise UsageError(f"invalid NBD URI {uri!r}: needs exactly one ?socket=PATH")
        return NbdAddress(unix_path=sockets[0], host=None, port=0, export=export)
    if "socket" in query:
        raise UsageError(f"invalid NBD URI {uri!r}: ?socket= needs nbd+unix://")
    if not parts.hostname:
        raise UsageError(f"invalid NBD URI {uri!r}: no host")
    return NbdAddress(
        unix_path=None,
        host=parts.hostname,
        port=DEFAULT_PORT if port is None else port,
        export=export,
    )


def format_unix_uri(path: str, export: str) -> str:
    """The `nbd+unix` URI of `export` on the Unix socket `path`."""
    return f"nbd+unix:///{quote(export, safe='')}?socket={quote(path, safe='/')}"


def format_tcp_uri(host: str, port: int, export: str) -> str:
    """The `nbd://` URI of `export` at host:port (IPv6 literals get brackets)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"nbd://{shown}:{port}/{quote(export, safe='')}"
