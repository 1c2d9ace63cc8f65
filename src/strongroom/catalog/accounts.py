"""The catalog's part for the backup server: users, sign-in sessions and the
audit log (revision 0002), users' API tokens (revision 0005). Mixed into
`Catalog`: same transactions, same contract (records in and out,
CatalogError on failure).

No hashing here: the caller hands in an argon2id hash and a token digest
(services/accounts.py makes them); the catalog only stores and finds them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from strongroom.catalog.records import (
    ApiToken,
    AuditEntry,
    LoginSession,
    Role,
    User,
    check_user_name,
    valid_user_name,
)
from strongroom.catalog.schema import api_tokens, audit_log, login_sessions, users
from strongroom.errors import CatalogError

MAX_AUDIT_TARGET = 256


class AccountsMixin:
    """The users, sign-in sessions and audit log of `Catalog` (mixed into it)."""

    if TYPE_CHECKING:  # provided by Catalog; declared here for the type checker only

        def transaction(self) -> AbstractContextManager[sa.Connection]: ...

    # --- users ---------------------------------------------------------------

    def add_user(self, user: User) -> User:
        check_user_name(user.name)
        with self.transaction() as c:
            if c.scalar(sa.select(users.c.id).where(users.c.name == user.name)):
                raise CatalogError(f"catalog: user {user.name} already exists")
            new_id = c.execute(
                users.insert().values(
                    name=user.name,
                    password_hash=user.password_hash,
                    role=str(Role(user.role)),
                    created=user.created,
                    disabled=user.disabled,
                )
            ).inserted_primary_key
        return User(
            user.name, user.password_hash, Role(user.role), user.created, user.disabled,
            int(new_id[0]) if new_id else None,
        )  # fmt: skip

    def find_user(self, name: str) -> User | None:
        if not valid_user_name(name):  # no such user can exist (and PostgreSQL refuses NUL)
            return None
        with self.transaction() as c:
            row = c.execute(sa.select(users).where(users.c.name == name)).first()
        return None if row is None else _user(row)

    def get_user(self, name: str) -> User:
        found = self.find_user(name)
        if found is None:
            raise CatalogError(f"catalog: no user {name[:64]}")
        return found

    def list_users(self) -> list[User]:
        with self.transaction() as c:
            return [_user(r) for r in c.execute(sa.select(users).order_by(users.c.name))]

    def update_user(
        self,
        name: str,
        *,
        password_hash: str | None = None,
        role: Role | None = None,
        disabled: bool | None = None,
    ) -> User:
        """Change what is given; disabling a user or changing the password
        ends the user's sessions."""
        values: dict[str, Any] = {}
        if password_hash is not None:
            values["password_hash"] = password_hash
        if role is not None:
            values["role"] = str(Role(role))
        if disabled is not None:
            values["disabled"] = disabled
        with self.transaction() as c:
            user_id = self._user_id(c, name)
            if values:
                c.execute(users.update().where(users.c.id == user_id).values(**values))
            if password_hash is not None or disabled:
                c.execute(login_sessions.delete().where(login_sessions.c.user_id == user_id))
        return self.get_user(name)

    def remove_user(self, name: str) -> None:
        """Its sessions go with it; its audit rows stay (they name it as text)."""
        with self.transaction() as c:
            c.execute(users.delete().where(users.c.id == self._user_id(c, name)))

    def count_administrators(self) -> int:
        """Enabled administrators."""
        query = sa.select(sa.func.count()).where(
            users.c.role == str(Role.ADMINISTRATOR), users.c.disabled.is_(False)
        )
        with self.transaction() as c:
            return int(c.scalar(query) or 0)

    # --- sign-in sessions ----------------------------------------------------

    def add_login_session(self, session: LoginSession) -> None:
        with self.transaction() as c:
            c.execute(
                login_sessions.insert().values(
                    token_digest=session.token_digest,
                    user_id=self._user_id(c, session.user),
                    created=session.created,
                    expires=session.expires,
                    last_seen=session.last_seen,
                )
            )

    def find_login_session(self, token_digest: str) -> tuple[LoginSession, User] | None:
        """The session and its user, whatever their state (the caller checks
        expiry and `disabled`)."""
        query = (
            sa.select(login_sessions, users)
            .join(users, users.c.id == login_sessions.c.user_id)
            .where(login_sessions.c.token_digest == token_digest)
        )
        with self.transaction() as c:
            row = c.execute(query).first()
        if row is None:
            return None
        m = row._mapping
        session = LoginSession(
            token_digest=m[login_sessions.c.token_digest],
            user=m[users.c.name],
            created=m[login_sessions.c.created],
            expires=m[login_sessions.c.expires],
            last_seen=m[login_sessions.c.last_seen],
        )
        user = User(
            name=m[users.c.name],
            password_hash=m[users.c.password_hash],
            role=Role(m[users.c.role]),
            created=m[users.c.created],
            disabled=bool(m[users.c.disabled]),
            id=int(m[users.c.id]),
        )
        return session, user

    def touch_login_session(self, token_digest: str, last_seen: datetime) -> None:
        with self.transaction() as c:
            c.execute(
                login_sessions.update()
                .where(login_sessions.c.token_digest == token_digest)
                .values(last_seen=last_seen)
            )

    def remove_login_session(self, token_digest: str) -> bool:
        with self.transaction() as c:
            done = c.execute(
                login_sessions.delete().where(login_sessions.c.token_digest == token_digest)
            )
        return done.rowcount > 0

    def remove_expired_login_sessions(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        with self.transaction() as c:
            return c.execute(
                login_sessions.delete().where(login_sessions.c.expires <= now)
            ).rowcount

    # --- API tokens ------------------------------------------------------------

    def add_api_token(self, token: ApiToken, token_digest: str) -> ApiToken:
        """Store a user's token by its digest; CatalogError when the user has
        a token of that name already."""
        with self.transaction() as c:
            user_id = self._user_id(c, token.user)
            taken = c.scalar(
                sa.select(sa.func.count())
                .select_from(api_tokens)
                .where(api_tokens.c.user_id == user_id, api_tokens.c.name == token.name)
            )
            if taken:
                raise CatalogError(f"catalog: a token named {token.name} exists already")
            c.execute(
                api_tokens.insert().values(
                    name=token.name,
                    token_digest=token_digest,
                    user_id=user_id,
                    created=token.created,
                    expires=token.expires,
                    last_used=None,
                )
            )
        return token

    def find_api_token(self, token_digest: str) -> tuple[ApiToken, User] | None:
        """The token and its user, whatever their state (the caller checks
        expiry and `disabled`)."""
        query = (
            sa.select(api_tokens, users)
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.token_digest == token_digest)
        )
        with self.transaction() as c:
            row = c.execute(query).first()
        if row is None:
            return None
        m = row._mapping
        return _api_token(m), _user_of(m)

    def list_api_tokens(self, user: str) -> list[ApiToken]:
        query = (
            sa.select(api_tokens, users.c.name.label("user_name"))
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(users.c.name == user)
            .order_by(api_tokens.c.name)
        )
        with self.transaction() as c:
            return [_api_token(r._mapping) for r in c.execute(query)]

    def touch_api_token(self, token_digest: str, used: datetime) -> None:
        with self.transaction() as c:
            c.execute(
                api_tokens.update()
                .where(api_tokens.c.token_digest == token_digest)
                .values(last_used=used)
            )

    def remove_api_token(self, user: str, name: str) -> bool:
        with self.transaction() as c:
            owner = sa.select(users.c.id).where(users.c.name == user).scalar_subquery()
            done = c.execute(
                api_tokens.delete().where(api_tokens.c.user_id == owner, api_tokens.c.name == name)
            )
        return done.rowcount > 0

    # --- audit log -----------------------------------------------------------

    def add_audit(self, entry: AuditEntry) -> None:
        with self.transaction() as c:
            c.execute(
                audit_log.insert().values(
                    at=entry.at,
                    user_name=entry.user,
                    action=_printable(entry.action)[:64],
                    target=_printable(entry.target)[:MAX_AUDIT_TARGET],
                    outcome=entry.outcome[:16],
                    address=None if entry.address is None else entry.address[:64],
                )
            )

    def list_audit(self, *, action: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        query = sa.select(audit_log)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        query = query.order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit)
        with self.transaction() as c:
            return [
                AuditEntry(
                    at=r.at,
                    action=r.action,
                    target=r.target,
                    outcome=r.outcome,
                    user=r.user_name,
                    address=r.address,
                    id=r.id,
                )
                for r in c.execute(query)
            ]

    def _user_id(self, c: sa.Connection, name: str) -> int:
        found = c.scalar(sa.select(users.c.id).where(users.c.name == name))
        if found is None:
            raise CatalogError(f"catalog: no user {name[:64]}")
        return int(found)


def _printable(text: str) -> str:
    """An audit field as stored: what a request sent (a name tried, a path)
    may hold NUL or control characters (PostgreSQL refuses NUL in text;
    nobody wants a terminal escape in a log viewer): each becomes '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _user(row: sa.Row[Any]) -> User:
    return User(
        name=row.name,
        password_hash=row.password_hash,
        role=Role(row.role),
        created=row.created,
        disabled=bool(row.disabled),
        id=row.id,
    )


def _api_token(m: Any) -> ApiToken:
    user = m["user_name"] if "user_name" in m else m[users.c.name]
    return ApiToken(
        name=m[api_tokens.c.name],
        user=user,
        created=m[api_tokens.c.created],
        expires=m[api_tokens.c.expires],
        last_used=m[api_tokens.c.last_used],
    )


def _user_of(m: Any) -> User:
    return User(
        name=m[users.c.name],
        password_hash=m[users.c.password_hash],
        role=Role(m[users.c.role]),
        created=m[users.c.created],
        disabled=bool(m[users.c.disabled]),
        id=int(m[users.c.id]),
    )
