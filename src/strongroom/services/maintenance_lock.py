"""An exclusive maintenance lock in the catalog that a dead holder loses.

`with maintenance_lock(catalog, "prune", holder):` runs its block in at
most one process of every server sharing the catalog; a second taker gets
`MaintenanceLocked` at once (it never waits: the job is retried later).

- PostgreSQL: a session-level `pg_try_advisory_lock` on a connection held
  for the block. A holder that dies (SIGKILL, a lost host) drops its
  connection and the server drops the lock with it: the next taker gets it
  at once, with no expiry to wait for.
- SQLite: a lease row (`maintenance_locks`) with an expiry, renewed by a
  heartbeat thread every third of the lease. A dead holder stops renewing
  and its lease expires after at most `lease` seconds. A holder whose
  renewal finds the lease taken logs it (its clock or disk stalled longer
  than the lease); the repository's own exclusive lock still guards the
  data, so the lease only keeps the servers from queueing behind each
  other.

This lock sits in front of the repository lock (services/session.py), it
does not replace it: a CLI `prune` run by hand still meets the repository's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from strongroom.catalog import Catalog
from strongroom.errors import MaintenanceLocked

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0


@contextmanager
def maintenance_lock(
    catalog: Catalog, name: str, holder: str, *, lease: float = LEASE_SECONDS
) -> Iterator[None]:
    if catalog.dialect == "postgresql":
        with catalog.hold_advisory_lock(name) as got:
            if not got:
                raise MaintenanceLocked(f"maintenance lock {name} is held by another server")
            yield
        return
    with _lease(catalog, name, holder, lease):
        yield


@contextmanager
def _lease(catalog: Catalog, name: str, holder: str, lease: float) -> Iterator[None]:
    def until() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=lease)

    other = catalog.take_lease(name, holder, until(), datetime.now(UTC))
    if other is not None:
        raise MaintenanceLocked(f"maintenance lock {name} is held by {other[:64]}")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease / 3):
            try:
                if not catalog.renew_lease(name, holder, until()):
                    log.warning("maintenance lock %s: the lease was taken over", name)
                    return
            except Exception as err:  # keep renewing: the catalog may come back
                log.warning("maintenance lock %s: renewal failed: %s", name, err)

    renewer = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        catalog.drop_lease(name, holder)
