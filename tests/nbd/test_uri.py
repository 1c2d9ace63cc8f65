"""NBD URIs parse as qemu and libnbd read them, and bad ones fail in one line."""

from __future__ import annotations

import pytest

from strongroom.errors import UsageError
from strongroom.nbd.uri import NbdAddress, format_tcp_uri, format_unix_uri, parse_nbd_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("nbd://example.org/disk", NbdAddress(None, "example.org", 10809, "disk")),
        ("nbd://127.0.0.1:1234/", NbdAddress(None, "127.0.0.1", 1234, "")),
        ("nbd://host", NbdAddress(None, "host", 10809, "")),
        ("nbd://[::1]:99/a%20b", NbdAddress(None, "::1", 99, "a b")),
        ("nbd://h/dir/name", NbdAddress(None, "h", 10809, "dir/name")),
        ("nbd+unix:///disk?socket=/run/x.sock", NbdAddress("/run/x.sock", None, 0, "disk")),
        ("nbd+unix:///?socket=/tmp/s", NbdAddress("/tmp/s", None, 0, "")),
        ("NBD+UNIX:///e?socket=rel/s", NbdAddress("rel/s", None, 0, "e")),
    ],
)
def test_parse(uri: str, expected: NbdAddress) -> None:
    assert parse_nbd_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "http://host/x",
        "/dev/nbd0",
        "nbd:///disk",  # no host
        "nbd://host:notaport/x",
        "nbd://host:99999/x",
        "nbd+unix:///disk",  # no socket
        "nbd+unix:///disk?socket=",
        "nbd+unix:///d?socket=/a&socket=/b",
        "nbd+unix://host/disk?socket=/s",
        "nbd://host/x?socket=/s",
        "nbds://host/x",
        "nbd://host/a%00b",
    ],
)
def test_bad_uris_are_usage_errors(uri: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_nbd_uri(uri)
    assert "\n" not in str(info.value)
    assert uri in str(info.value)


def test_format_round_trips() -> None:
    for path, export in [("/tmp/s.sock", ""), ("/a b/s", "disk 1/x?y"), ("rel", "é")]:
        parsed = parse_nbd_uri(format_unix_uri(path, export))
        assert (parsed.unix_path, parsed.export) == (path, export)
    for host, port, export in [("127.0.0.1", 5, "d"), ("::1", 10809, ""), ("h", 1, "a/b c")]:
        parsed = parse_nbd_uri(format_tcp_uri(host, port, export))
        assert (parsed.host, parsed.port, parsed.export) == (host, port, export)
