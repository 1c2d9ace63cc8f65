"""Sign-in rate limiting, kept in the catalog so that it holds across every
server process sharing it (table `sign_in_limits`, revision 0004).

Each failed sign-in counts against two keys: the name tried and the
client's address. `max_failures` failures of one key within `window` block
that key for `block`: sign-ins for that name, or from that address, are
answered 429 (with Retry-After) without looking at the password, so a
blocked guesser costs no argon2 work. A successful sign-in clears its
name's count (not its address's: one good account must not reset a
guesser's address). Loopback addresses are not limited (a reverse proxy
on the same host, which the server does not take forwarded addresses
from, would make every client one address): names still are.

The price of limiting by name: someone who knows a user's name can keep
it blocked. The block is short (minutes) and every refusal is in the
audit log (`session.create`, outcome `limited`).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from strongroom.catalog import Catalog

MAX_KEY = 160


def _keys(name: str, address: str | None) -> list[str]:
    keys = [f"name:{name.lower()[:64]}"]
    if address and not _loopback(address):
        keys.append(f"address:{address[:64]}")
    return keys


def _loopback(address: str) -> bool:
    """A reverse proxy on the same host makes every client loopback: an
    address limit there would lock everyone out, so only names count."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass
class SignInLimiter:
    catalog: Catalog
    max_failures: int = 10
    window: timedelta = timedelta(minutes=10)
    block: timedelta = timedelta(minutes=10)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def retry_after(self, name: str, address: str | None) -> int:
        """Seconds until `name` may try from `address` again; 0: now."""
        now = self.clock()
        waits = [
            (limit.blocked_until - now).total_seconds()
            for limit in self.catalog.get_sign_in_limits(_keys(name, address))
            if limit.blocked_until is not None and limit.blocked_until > now
        ]
        return max(1, math.ceil(max(waits))) if waits else 0

    def failed(self, name: str, address: str | None) -> None:
        now = self.clock()
        with self.catalog.transaction():
            for key in _keys(name, address):
                self.catalog.count_sign_in_failure(
                    key, now, now - self.window, self.max_failures, now + self.block
                )

    def succeeded(self, name: str) -> None:
        self.catalog.clear_sign_in_limit(_keys(name, None)[0])
