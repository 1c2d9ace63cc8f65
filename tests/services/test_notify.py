"""Notifiers against real receivers on loopback: a command hook's
environment, a webhook received by http.server, an email received by
aiosmtpd; and failures that never raise."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from strongroom.config import NotifySpec
from strongroom.services.notify import Notice, notify

NOTICE = Notice(
    "new-media",
    "lab",
    "2 new media in library lab",
    [
        {"barcode": "A00001L8", "slot": 1, "class": "ours", "reason": ""},
        {"barcode": None, "slot": 5, "class": "blank", "reason": ""},
    ],
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[Any]]]:
    received: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append((self.headers["Content-Type"], json.loads(self.rfile.read(length))))
            self.send_response(204 if self.path == "/ok" else 500)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, _server: object, _session: object, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Inbox]]:
    inbox = _Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


def test_every_notifier_delivers(
    tmp_path: Path, webhook: tuple[str, list[Any]], smtp: tuple[int, _Inbox]
) -> None:
    url, received = webhook
    port, inbox = smtp
    out = tmp_path / "env"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\nenv > "{out}"\n')
    hook.chmod(0o755)
    spec = NotifySpec(
        command=f"{hook} --flag",
        webhook=f"{url}/ok",
        email_to=["ops@example.org"],
        email_from="strongroom@example.org",
        smtp_host="127.0.0.1",
        smtp_port=port,
        timeout=10,
    )
    deliveries = notify(spec, NOTICE)
    assert [(d.notifier, d.ok) for d in deliveries] == [
        ("command", True),
        ("webhook", True),
        ("email", True),
    ]
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["STRONGROOM_NOTIFY_KIND"] == "new-media"
    assert env["STRONGROOM_NOTIFY_LIBRARY"] == "lab"
    assert env["STRONGROOM_NOTIFY_COUNT"] == "2"
    assert env["STRONGROOM_NOTIFY_BARCODES"] == "A00001L8 -"
    assert json.loads(env["STRONGROOM_NOTIFY_JSON"]) == NOTICE.as_dict()
    assert "STRONGROOM_PASSWORD" not in env  # the child environment drops secrets
    assert received == [("application/json", NOTICE.as_dict())]
    [(sender, to, content)] = inbox.messages
    assert (sender, to) == ("strongroom@example.org", ["ops@example.org"])
    assert b"Subject: strongroom: 2 new media in library lab" in content
    assert b"A00001L8 in slot 1: ours" in content and b"(no barcode) in slot 5: blank" in content


def test_failing_notifiers_are_reported_never_raised(
    tmp_path: Path, webhook: tuple[str, list[Any]]
) -> None:
    url, received = webhook
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    spec = NotifySpec(
        command=str(slow),
        webhook=f"{url}/broken",
        email_to=["ops@example.org"],
        smtp_host="127.0.0.1",
        smtp_port=_free_port(),  # nobody listens
        timeout=0.5,
    )
    deliveries = notify(spec, NOTICE)
    assert [(d.notifier, d.ok) for d in deliveries] == [
        ("command", False),
        ("webhook", False),
        ("email", False),
    ]
    assert "no answer within 0.5 s" in deliveries[0].message
    assert "HTTP 500" in deliveries[1].message
    assert all("\n" not in d.message for d in deliveries)
    assert len(received) == 1
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\necho 'mailbox full' >&2\nexit 3\n")
    failing.chmod(0o755)
    [result] = notify(NotifySpec(command=str(failing)), NOTICE)
    assert (result.ok, result.message) == (False, f"{failing}: mailbox full")


def test_notify_settings(tmp_path: Path) -> None:
    from strongroom.config import load_settings
    from strongroom.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text('[notify]\nwebhook = "https://h/x"\nemail_to = "a@b"\nsmtp_port = 2525\n')
    spec = load_settings({}, path).notify
    assert (spec.webhook, spec.email_to, spec.smtp_port, spec.timeout) == (
        "https://h/x",
        ["a@b"],
        2525,
        10.0,
    )
    for bad, needle in (
        ('webhook = "ftp://h"', "http:// or https://"),
        ("smtp_port = 0", "smtp_port"),
        ('email_to = ["nobody"]', "email_to"),
        ('pager = "x"', "unknown setting(s) pager"),
    ):
        path.write_text(f"[notify]\n{bad}\n")
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            load_settings({}, path)
