"""The catalog's part for the backup server's agents (revision 0003):
machines, one-time enrollment tokens and the commits agents made; the
machines' VM clusters (revision 0006). Mixed into
`Catalog`: same transactions, same contract (records in and out,
CatalogError on failure).

No hashing and no randomness here: services/agents.py makes the tokens and
secrets and hands in their SHA-256 digests; the catalog stores and finds
digests only, so a copy of the catalog enrolls nobody and signs no agent in.

`consume_enrollment` is the one step that must hold with several server
processes on one PostgreSQL catalog: a conditional UPDATE (`used IS NULL AND
expires > now`) whose row count says whether this caller won; a token is
consumed exactly once, whoever races for it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from strongroom.catalog.records import check_user_name
from strongroom.catalog.schema import agent_commits, enrollment_tokens, machines
from strongroom.errors import CatalogError


@dataclass(frozen=True)
class Machine:
    """An enrolled machine (agent). `secret_digest` is the SHA-256 of its secret."""

    name: str
    agent_id: str
    secret_digest: str
    created: datetime
    last_seen: datetime | None = None
    disabled: bool = False
    id: int | None = None
    cluster: str | None = None  # the VM cluster it is a node of (revision 0006)


@dataclass(frozen=True)
class Enrollment:
    """A one-time enrollment token as the catalog keeps it (its digest)."""

    token_digest: str
    machine: str
    created: datetime
    expires: datetime
    used: datetime | None = None


class MachinesMixin:
    """The machines, enrollment tokens and agent commits of `Catalog`."""

    if TYPE_CHECKING:  # provided by Catalog; declared here for the type checker only

        def transaction(self) -> AbstractContextManager[sa.Connection]: ...

    # --- enrollment tokens ---------------------------------------------------

    def add_enrollment(self, token: Enrollment) -> None:
        check_user_name(token.machine)
        with self.transaction() as c:
            c.execute(
                enrollment_tokens.insert().values(
                    token_digest=token.token_digest,
                    machine=token.machine,
                    created=token.created,
                    expires=token.expires,
                    used=None,
                )
            )

    def consume_enrollment(self, token_digest: str, now: datetime) -> str | None:
        """Mark the token used and return its machine name, or None when it is
        unknown, used already or expired (which one is not said). Atomic: of
        two callers racing for one token, exactly one gets the name."""
        with self.transaction() as c:
            done = c.execute(
                enrollment_tokens.update()
                .where(
                    enrollment_tokens.c.token_digest == token_digest,
                    enrollment_tokens.c.used.is_(None),
                    enrollment_tokens.c.expires > now,
                )
                .values(used=now)
            )
            if done.rowcount != 1:
                return None
            name = c.scalar(
                sa.select(enrollment_tokens.c.machine).where(
                    enrollment_tokens.c.token_digest == token_digest
                )
            )
        return None if name is None else str(name)

    def remove_stale_enrollments(self, now: datetime) -> int:
        """Tokens expired or used: nothing can be done with them any more."""
        with self.transaction() as c:
            return c.execute(
                enrollment_tokens.delete().where(
                    sa.or_(enrollment_tokens.c.expires <= now, enrollment_tokens.c.used.isnot(None))
                )
            ).rowcount

    # --- machines ------------------------------------------------------------

    def enroll_machine(self, machine: Machine) -> Machine:
        """Add the machine, or give an existing one of that name these new
        credentials (re-enrolling a reinstalled machine; enabled again): the
        administrator's token for that name is the authority."""
        check_user_name(machine.name)
        values = {
            "agent_id": machine.agent_id,
            "secret_digest": machine.secret_digest,
            "disabled": False,
        }
        with self.transaction() as c:
            found = c.scalar(sa.select(machines.c.id).where(machines.c.name == machine.name))
            if found is None:
                c.execute(
                    machines.insert().values(
                        name=machine.name, created=machine.created, last_seen=None, **values
                    )
                )
            else:
                c.execute(machines.update().where(machines.c.id == found).values(**values))
        return self.get_machine(machine.name)

    def find_machine(self, name: str) -> Machine | None:
        with self.transaction() as c:
            row = c.execute(sa.select(machines).where(machines.c.name == name)).first()
        return None if row is None else _machine(row)

    def get_machine(self, name: str) -> Machine:
        found = self.find_machine(name)
        if found is None:
            raise CatalogError(f"catalog: no machine {name[:64]}")
        return found

    def find_agent(self, agent_id: str) -> Machine | None:
        """The machine with this agent id (the public half of its credentials)."""
        with self.transaction() as c:
            row = c.execute(sa.select(machines).where(machines.c.agent_id == agent_id)).first()
        return None if row is None else _machine(row)

    def list_machines(self) -> list[Machine]:
        with self.transaction() as c:
            return [_machine(r) for r in c.execute(sa.select(machines).order_by(machines.c.name))]

    def set_machine_disabled(self, name: str, disabled: bool) -> Machine:
        with self.transaction() as c:
            done = c.execute(
                machines.update().where(machines.c.name == name).values(disabled=disabled)
            )
            if done.rowcount != 1:
                raise CatalogError(f"catalog: no machine {name[:64]}")
        return self.get_machine(name)

    def set_machine_cluster(self, name: str, cluster: str | None) -> Machine:
        """Put the machine in the cluster `cluster` (a name under the user
        name rules), or in none (None)."""
        if cluster is not None:
            check_user_name(cluster)
        with self.transaction() as c:
            done = c.execute(
                machines.update().where(machines.c.name == name).values(cluster=cluster)
            )
            if done.rowcount != 1:
                raise CatalogError(f"catalog: no machine {name[:64]}")
        return self.get_machine(name)

    def touch_machine(self, machine_id: int, last_seen: datetime) -> None:
        with self.transaction() as c:
            c.execute(
                machines.update().where(machines.c.id == machine_id).values(last_seen=last_seen)
            )

    # --- commits -------------------------------------------------------------

    def find_agent_commit(self, machine_id: int, commit_id: str) -> str | None:
        """The point a commit of this machine made, or None."""
        with self.transaction() as c:
            found = c.scalar(
                sa.select(agent_commits.c.point_id).where(
                    agent_commits.c.machine_id == machine_id,
                    agent_commits.c.commit_id == commit_id,
                )
            )
        return None if found is None else str(found)

    def add_agent_commit(self, machine_id: int, commit_id: str, point_id: str, at: datetime) -> str:
        """Record commit -> point; if a racing retry recorded this commit
        first, its point is returned (and kept)."""
        try:
            with self.transaction() as c:
                c.execute(
                    agent_commits.insert().values(
                        machine_id=machine_id, commit_id=commit_id, point_id=point_id, at=at
                    )
                )
        except CatalogError:
            first = self.find_agent_commit(machine_id, commit_id)
            if first is None:
                raise
            return first
        return point_id


def _machine(row: sa.Row[Any]) -> Machine:
    return Machine(
        name=row.name,
        agent_id=row.agent_id,
        secret_digest=row.secret_digest,
        created=row.created,
        last_seen=row.last_seen,
        disabled=bool(row.disabled),
        id=row.id,
        cluster=row.cluster,
    )
