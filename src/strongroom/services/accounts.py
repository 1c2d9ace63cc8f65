"""Users of the backup server: passwords, sign-in sessions, the first
administrator and the audit log, over the catalog.

Contract:
- passwords are hashed with argon2id (argon2-cffi's PasswordHasher, its
  parameters in the PHC string, so stronger ones later still verify old
  hashes); a password is never stored, logged or returned;
- `sign_in` costs one argon2 verification whether the user exists or not,
  is disabled or not: the answer and its time say nothing of which names
  exist. It returns None on any failure, never why;
- a session token is 32 random bytes (URL-safe text) handed to the client
  once; the catalog keeps only its SHA-256, so a copy of the catalog signs
  nobody in. Sessions expire (`SESSION_LIFETIME`, idle `SESSION_IDLE`);
- the CSRF token of a session is HMAC-SHA256(token, label): nothing to
  store, and it cannot be derived without the cookie the browser guards;
- an API token (for scripts) is `srt_` and 32 random bytes, shown once; the
  catalog keeps its SHA-256 and its name. It acts as its user with the
  user's role of the moment, until it expires, is removed, or the user is
  disabled or removed; it is a bearer credential, so no CSRF token goes with
  it (`SignedIn.by_token`), and it cannot make other tokens;
- `ensure_administrator` creates the first administrator when the catalog
  has no enabled one: with the password the caller asks for, or a generated
  one that is returned once (the caller prints it; nobody logs it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from strongroom.catalog import ApiToken, AuditEntry, Catalog, LoginSession, Role, User
from strongroom.errors import UsageError

__all__ = ["Accounts", "ApiToken", "AuditEntry", "Role", "SignedIn", "User"]

SESSION_LIFETIME = timedelta(hours=12)
SESSION_IDLE = timedelta(hours=1)
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 takes any length: bound the work a request can ask for
FIRST_ADMINISTRATOR = "admin"
_CSRF_LABEL = b"strongroom csrf v1"
TOKEN_PREFIX = "srt_"
MAX_TOKEN_DAYS = 3650
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class SignedIn:
    """A session as the server sees one request's caller."""

    user: User
    token: str  # the client's token (the catalog has only its digest)
    expires: datetime | None  # None: an API token without an end
    by_token: bool = False  # an API token (a bearer): no CSRF, no new tokens

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(token: str) -> str:
    return hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UsageError(f"a password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


class Accounts:
    def __init__(
        self,
        catalog: Catalog,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.catalog = catalog
        self._hasher = hasher or PasswordHasher()
        self._clock = clock
        # verified against when the name is unknown: same cost as a real check
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    @classmethod
    def open(cls, catalog_url: str | None) -> Accounts:
        """Over the catalog at `catalog_url` (None: the embedded SQLite one),
        migrated to this strongroom's schema; `close()` closes it."""
        return cls(Catalog.open(catalog_url))

    def close(self) -> None:
        self.catalog.close()

    # --- users ---------------------------------------------------------------

    def create_user(self, name: str, password: str, role: Role) -> User:
        check_password(password)
        return self.catalog.add_user(
            User(name=name, password_hash=self._hasher.hash(password), role=role,
                 created=self._clock())
        )  # fmt: skip

    def set_password(self, name: str, password: str) -> User:
        check_password(password)
        return self.catalog.update_user(name, password_hash=self._hasher.hash(password))

    def ensure_administrator(self, ask: Callable[[], str | None]) -> tuple[str, str | None] | None:
        """None when an enabled administrator exists. Otherwise creates
        `admin` (or `admin-N` when that name is taken by a non-administrator)
        with `ask()`'s password, or a generated one when `ask` returns None:
        returns (name, generated password or None)."""
        if self.catalog.count_administrators() > 0:
            return None
        name = FIRST_ADMINISTRATOR
        n = 1
        while self.catalog.find_user(name) is not None:
            n += 1
            name = f"{FIRST_ADMINISTRATOR}-{n}"
        given = ask()
        password = given if given is not None else secrets.token_urlsafe(18)
        self.create_user(name, password, Role.ADMINISTRATOR)
        return name, (None if given is not None else password)

    # --- sessions ------------------------------------------------------------

    def sign_in(self, name: str, password: str) -> SignedIn | None:
        if len(password) > MAX_PASSWORD:
            password = password[:MAX_PASSWORD]  # still verified (and fails): same time
        user = self.catalog.find_user(name) if len(name) <= 64 else None
        stored = user.password_hash if user is not None else self._dummy
        try:
            ok: bool = self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or user is None or user.disabled:
            return None
        if self._hasher.check_needs_rehash(stored):
            self.catalog.update_user(user.name, password_hash=self._hasher.hash(password))
        now = self._clock()
        token = secrets.token_urlsafe(32)
        expires = now + SESSION_LIFETIME
        self.catalog.add_login_session(
            LoginSession(token_digest(token), user.name, now, expires, now)
        )
        return SignedIn(user, token, expires)

    def session(self, token: str) -> SignedIn | None:
        """The signed-in caller of a token, or None (unknown, expired, idle
        too long, or the user disabled). Refreshes `last_seen`."""
        if not 0 < len(token) <= 128:
            return None
        digest = token_digest(token)
        found = self.catalog.find_login_session(digest)
        if found is None:
            return None
        session, user = found
        now = self._clock()
        if user.disabled or now >= session.expires or now - session.last_seen > SESSION_IDLE:
            self.catalog.remove_login_session(digest)
            return None
        self.catalog.touch_login_session(digest, now)
        return SignedIn(user, token, session.expires)

    def sign_out(self, token: str) -> bool:
        return self.catalog.remove_login_session(token_digest(token))

    # --- API tokens ------------------------------------------------------------

    def create_api_token(self, user: str, name: str, days: int | None) -> tuple[ApiToken, str]:
        """A new token of `user` named `name`, valid `days` days (None: until
        removed); returns it and its secret, which nobody sees again.
        UsageError for a bad name or lifetime; CatalogError for a name the
        user has already."""
        if not _TOKEN_NAME.fullmatch(name):
            raise UsageError("a token's name is 1-64 letters, digits, '.', '_' or '-'")
        if days is not None and not 0 < days <= MAX_TOKEN_DAYS:
            raise UsageError(f"a token lasts 1 to {MAX_TOKEN_DAYS} days (or until removed)")
        now = self._clock()
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(name, user, now, None if days is None else now + timedelta(days=days))
        return self.catalog.add_api_token(token, token_digest(secret)), secret

    def api_token(self, secret: str) -> SignedIn | None:
        """The caller of a bearer API token, or None (unknown, expired, or
        its user disabled). Records when it was last used."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 128:
            return None
        digest = token_digest(secret)
        found = self.catalog.find_api_token(digest)
        if found is None:
            return None
        token, user = found
        now = self._clock()
        if user.disabled or (token.expires is not None and now >= token.expires):
            return None
        self.catalog.touch_api_token(digest, now)
        return SignedIn(user, secret, token.expires, by_token=True)

    # --- audit ---------------------------------------------------------------

    def audit(
        self,
        action: str,
        target: str,
        outcome: str,
        user: str | None = None,
        address: str | None = None,
    ) -> None:
        self.catalog.add_audit(AuditEntry(self._clock(), action, target, outcome, user, address))
