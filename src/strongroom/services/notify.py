"""Telling the user about new media: a command hook, a webhook, email.

An inventory hands one `Notice` per run (every new medium it found, so a
rebuild of 400 cartridges sends one mail, not 400) to `notify`, which tries
each configured notifier (`[notify]`, config.NotifySpec) within its timeout
and returns what happened to each. A notifier that fails never fails the
inventory: it is a `Delivery` with ok=False (the caller logs a warning and
records an event), since the catalog and the command's output already hold
the news.

- command: run without a shell (the line split like a shell would), its
  environment the usual child environment (no secrets) plus
  STRONGROOM_NOTIFY_KIND, _LIBRARY, _SUBJECT, _COUNT, _BARCODES (space
  separated, `-` for a cartridge without one) and _JSON (the whole notice);
  a non-zero exit is a failure whose reason is its last line on stderr.
- webhook: an HTTP POST of the notice as JSON (urllib); any status other
  than 2xx is a failure. Its URL often is the credential (a token in the
  path or query, or user:password@): failures name only scheme://host:port.
- email: one message to `email_to` through the SMTP server (smtplib).
"""

from __future__ import annotations

import json
import logging
import shlex
import smtplib
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from strongroom.config import NotifySpec, child_environment

log = logging.getLogger(__name__)
MAX_REASON = 300


@dataclass(frozen=True)
class Notice:
    kind: str  # "new-media"
    library: str
    subject: str
    media: list[dict[str, Any]] = field(default_factory=list)  # barcode, slot, class, ...

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "library": self.library,
            "subject": self.subject,
            "media": self.media,
        }

    def lines(self) -> list[str]:
        out = [self.subject, ""]
        for m in self.media:
            where = f"slot {m['slot']}" if m.get("slot") is not None else "a drive"
            why = f": {m['reason']}" if m.get("reason") else ""
            out.append(f"{m.get('barcode') or '(no barcode)'} in {where}: {m['class']}{why}")
        return out


@dataclass(frozen=True)
class Delivery:
    notifier: str  # command | webhook | email
    ok: bool
    message: str = ""


def configured(spec: NotifySpec) -> bool:
    return bool(spec.command or spec.webhook or spec.email_to)


def notify(spec: NotifySpec, notice: Notice) -> list[Delivery]:
    """Every configured notifier, each within `spec.timeout`; never raises
    for a notifier's failure."""
    out = []
    senders = (
        ("command", spec.command, _command),
        ("webhook", spec.webhook, _webhook),
        ("email", spec.email_to, _email),
    )
    for name, wanted, send in senders:
        if not wanted:
            continue
        try:
            send(spec, notice)
        except (OSError, ValueError, subprocess.SubprocessError, smtplib.SMTPException) as err:
            reason = _one_line(err)
            log.warning("notifier %s failed: %s", name, reason)
            out.append(Delivery(name, False, reason))
        else:
            out.append(Delivery(name, True))
    return out


def _command(spec: NotifySpec, notice: Notice) -> None:
    assert spec.command is not None
    argv = shlex.split(spec.command)
    if not argv:
        raise ValueError("the notify command is empty")
    barcodes = " ".join(m.get("barcode") or "-" for m in notice.media)
    details = {
        "STRONGROOM_NOTIFY_KIND": notice.kind,
        "STRONGROOM_NOTIFY_LIBRARY": notice.library,
        "STRONGROOM_NOTIFY_SUBJECT": notice.subject,
        "STRONGROOM_NOTIFY_COUNT": str(len(notice.media)),
        "STRONGROOM_NOTIFY_BARCODES": barcodes,
        "STRONGROOM_NOTIFY_JSON": json.dumps(notice.as_dict()),
    }
    try:
        done = subprocess.run(
            argv,
            env=child_environment(details),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=spec.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise subprocess.SubprocessError(
            f"{argv[0]}: no answer within {spec.timeout:g} s"
        ) from None
    if done.returncode != 0:
        lines = done.stderr[:65536].decode("utf-8", "replace").strip().splitlines()
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise subprocess.SubprocessError(f"{argv[0]}: {why}")


def webhook_site(url: str) -> str:
    """The URL as messages may show it: scheme and host[:port], nothing that
    can hold a secret (user info, path, query)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the webhook"
    return f"{parts.scheme}://{host}{port}"


def _webhook(spec: NotifySpec, notice: Notice) -> None:
    assert spec.webhook is not None
    site = webhook_site(spec.webhook)
    try:
        _post(spec.webhook, notice, spec.timeout)
    except urllib.error.HTTPError as err:
        raise OSError(f"{site}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise OSError(f"{site}: {_scrub(str(err.reason), spec.webhook)}") from None
    except (OSError, ValueError) as err:
        raise OSError(f"{site}: {_scrub(str(err), spec.webhook)}") from None


def _scrub(text: str, url: str) -> str:
    """`text` without the URL or any of its secret-bearing parts."""
    parts = urllib.parse.urlsplit(url)
    for secret in (url, parts.password, parts.username, parts.path, parts.query):
        if secret and len(secret) > 1:
            text = text.replace(secret, "***")
    return text


def _post(url: str, notice: Notice, timeout: float) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(notice.as_dict()).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "strongroom"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read(65536)


def _email(spec: NotifySpec, notice: Notice) -> None:
    message = EmailMessage()
    message["Subject"] = f"strongroom: {notice.subject}"
    message["From"] = spec.email_from
    message["To"] = ", ".join(spec.email_to)
    message.set_content("\n".join(notice.lines()) + "\n")
    with smtplib.SMTP(spec.smtp_host, spec.smtp_port, timeout=spec.timeout) as smtp:
        smtp.send_message(message)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:MAX_REASON]
