"""Agents of the backup server: one-time enrollment tokens, machines and
their credentials, over the catalog (docs/server.md, "Agents").

Contract:
- an enrollment token is 32 random bytes (URL-safe text) shown once to the
  administrator who asked for it; the catalog keeps only its SHA-256. It
  names the machine it enrolls, expires (`DEFAULT_ENROLLMENT`, at most
  `MAX_ENROLLMENT`) and is consumed exactly once (catalog/machines.py);
- enrolling gives the machine an agent id (public, 16 random bytes as hex)
  and a secret (32 random bytes): the agent presents `<agent_id>.<secret>`
  as a bearer token; the catalog keeps the secret's SHA-256 only (a 256-bit
  random secret needs no slow hash), compared in constant time;
- an administrator puts a machine in a VM cluster (a name under the
  machine name rules) or in none: its agent then takes the cluster's VM
  leases and points (services/agent_vm_leases.py, agent_intake.py);
- `authenticate` answers None for anything wrong (malformed, unknown,
  wrong secret, disabled machine), never why.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from strongroom.catalog import Catalog, Enrollment, Machine
from strongroom.catalog.records import check_user_name
from strongroom.errors import CatalogError, UsageError

__all__ = ["Agents", "Enrolled", "Machine"]

DEFAULT_ENROLLMENT = timedelta(days=1)
MAX_ENROLLMENT = timedelta(days=7)
_SEEN_EVERY = timedelta(minutes=1)  # last_seen is written at most this often
_AGENT_ID = re.compile(r"[0-9a-f]{32}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Enrolled:
    """A machine's credentials, handed to its agent once."""

    machine: str
    agent_id: str
    secret: str

    @property
    def bearer(self) -> str:
        return f"{self.agent_id}.{self.secret}"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def check_machine_name(name: str) -> str:
    """Same rules as user names: letters, digits, `. _ @ -`, 1-64, no leading
    punctuation (so no `..`, `/` or NUL)."""
    try:
        return check_user_name(name)
    except CatalogError:
        raise UsageError(
            "a machine name is 1-64 letters, digits, . _ @ - (first: a letter or digit)"
        ) from None


class Agents:
    def __init__(
        self, catalog: Catalog, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.catalog = catalog
        self._clock = clock

    def create_enrollment(
        self, machine: str, expires_in: timedelta = DEFAULT_ENROLLMENT
    ) -> tuple[str, datetime]:
        """A new one-time token for `machine` and when it expires."""
        check_machine_name(machine)
        if not timedelta(seconds=1) <= expires_in <= MAX_ENROLLMENT:
            raise UsageError(f"an enrollment expires within 1 to {MAX_ENROLLMENT.days} days")
        now = self._clock()
        token = secrets.token_urlsafe(32)
        expires = now + expires_in
        self.catalog.remove_stale_enrollments(now)
        self.catalog.add_enrollment(Enrollment(_digest(token), machine, now, expires))
        return token, expires

    def enroll(self, token: str) -> Enrolled | None:
        """Consume the token and give its machine new credentials; None for a
        token that is malformed, unknown, used or expired (one answer)."""
        if not _TOKEN.fullmatch(token):
            return None
        now = self._clock()
        machine = self.catalog.consume_enrollment(_digest(token), now)
        if machine is None:
            return None
        agent_id = secrets.token_hex(16)
        secret = secrets.token_urlsafe(32)
        self.catalog.enroll_machine(Machine(machine, agent_id, _digest(secret), now))
        return Enrolled(machine, agent_id, secret)

    def authenticate(self, bearer: str) -> Machine | None:
        """The enabled machine whose credentials `bearer` (`<agent_id>.<secret>`)
        is, or None. Refreshes `last_seen` (at most once a minute)."""
        agent_id, _, secret = bearer.partition(".")
        if not _AGENT_ID.fullmatch(agent_id) or not _SECRET.fullmatch(secret):
            return None
        machine = self.catalog.find_agent(agent_id)
        expected = machine.secret_digest if machine is not None else "0" * 64
        ok = hmac.compare_digest(_digest(secret).encode(), expected.encode())
        if not ok or machine is None or machine.disabled or machine.id is None:
            return None
        now = self._clock()
        if machine.last_seen is None or now - machine.last_seen >= _SEEN_EVERY:
            self.catalog.touch_machine(machine.id, now)
        return machine

    def list_machines(self) -> list[Machine]:
        return self.catalog.list_machines()

    def set_cluster(self, name: str, cluster: str | None) -> Machine | None:
        """Put the machine in the VM cluster `cluster` (machine name rules) or
        in none; None for an unknown machine."""
        if cluster is not None:
            check_machine_name(cluster)
        if self.catalog.find_machine(name) is None:
            return None
        return self.catalog.set_machine_cluster(name, cluster)

    def set_disabled(self, name: str, disabled: bool) -> Machine | None:
        if self.catalog.find_machine(name) is None:
            return None
        return self.catalog.set_machine_disabled(name, disabled)
