"""The job queue of the backup server, claimed through the catalog.

Contract:
- `enqueue` records a job (queued; due now unless told);
- `claim(worker, kinds, machine=None)` gives one due queued job to exactly
  one caller across every thread and process sharing the catalog (the
  catalog's claim: `FOR UPDATE SKIP LOCKED` on PostgreSQL, serialised
  writers on SQLite). `machine=None` takes the server's own jobs; an agent
  takes its machine's with `machine=NAME`: the same one call;
- a worker `heartbeat`s while it runs (with progress); `finish` records
  done or failed. Both answer False once the job is no longer the worker's;
- `recover` takes back running jobs whose heartbeat stopped for
  `heartbeat_timeout`: queued again for another worker, or failed with an
  alert event once tried `max_tries` times;
- a failed job raises an alert: an event `job.failed` (severity error) in
  the catalog's events table.

`run_claimed` is the body of every runner: claim, heartbeat on a thread
while the handler works, finish with its outcome or its one-line error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom.catalog import AuditEntry, Catalog, Event, Job, JobState, Severity
from strongroom.errors import StrongroomError

__all__ = ["Job", "JobState", "Jobs", "Progress"]

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT = timedelta(seconds=60)
MAX_TRIES = 3
RETRY_DELAY = timedelta(seconds=60)
MAX_SPEC_BYTES = 16 * 1024

Progress = Callable[[dict[str, Any]], None]
Handler = Callable[[Job, Progress], str]  # returns its outcome, raises on failure


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Jobs:
    catalog: Catalog
    clock: Callable[[], datetime] = _now
    heartbeat_timeout: timedelta = HEARTBEAT_TIMEOUT
    max_tries: int = MAX_TRIES
    handlers: dict[str, Handler] = field(default_factory=dict)  # server-side kinds

    def enqueue(
        self,
        kind: str,
        spec: Mapping[str, Any] | None = None,
        *,
        machine: str | None = None,
        due: datetime | None = None,
    ) -> Job:
        now = self.clock()
        job = Job(kind=kind, spec=dict(spec or {}), due=due or now, created=now, machine=machine)
        return self.catalog.add_job(job)

    def claim(self, worker: str, kinds: Sequence[str], machine: str | None = None) -> Job | None:
        return self.catalog.claim_job(worker, kinds, machine, self.clock())

    def heartbeat(self, job: Job, worker: str, progress: dict[str, Any] | None = None) -> bool:
        assert job.id is not None
        return self.catalog.heartbeat_job(job.id, worker, self.clock(), progress)

    def finish(self, job: Job, worker: str, ok: bool, outcome: str) -> bool:
        """Record the end; a failure also raises an alert event."""
        assert job.id is not None
        state = JobState.DONE if ok else JobState.FAILED
        now = self.clock()
        with self.catalog.transaction():
            mine = self.catalog.finish_job(job.id, worker, state, outcome, now)
            if mine and job.machine is None:  # the server's own work: in the audit log
                self.catalog.add_audit(
                    AuditEntry(now, f"job.{job.kind}", f"job {job.id}", "ok" if ok else "failed")
                )
            if mine and not ok:
                self.catalog.add_event(
                    _alert(job, now, f"job {job.id} ({job.kind}) failed: {outcome}")
                )
        return mine

    def retry_later(self, job: Job, worker: str, why: str) -> bool:
        """Back to the queue, due after `RETRY_DELAY` (a lock was busy)."""
        assert job.id is not None
        now = self.clock()
        return self.catalog.release_job(job.id, worker, now + RETRY_DELAY, f"retrying: {why}", now)

    def cancel(self, job_id: int) -> bool:
        return self.catalog.cancel_job(job_id, self.clock())

    def recover(self) -> list[Job]:
        """Take back the jobs of workers that stopped; returns them."""
        now = self.clock()
        with self.catalog.transaction():
            changed = self.catalog.take_back_stale_jobs(
                now - self.heartbeat_timeout, self.max_tries, now
            )
            for job in changed:
                if job.state is JobState.FAILED:
                    why = f"job {job.id} ({job.kind}) abandoned: {job.outcome}"
                    self.catalog.add_event(_alert(job, now, why))
        for job in changed:
            log.warning("job %s (%s) taken back: now %s", job.id, job.kind, job.state)
        return changed

    # --- running server-side jobs -------------------------------------------

    def run_one(self, worker: str, beat: float | None = None) -> Job | None:
        """Claim one server-side job of a kind with a handler and run it here
        to its end; None when none was due."""
        job = self.claim(worker, sorted(self.handlers))
        if job is None:
            return None
        self.run_claimed(job, worker, beat)
        return self.catalog.get_job(job.id) if job.id is not None else job

    def run_claimed(self, job: Job, worker: str, beat: float | None = None) -> None:
        """Run a claimed job's handler with a heartbeat every `beat` seconds
        (a third of the timeout by default) and record how it ended."""
        interval = beat if beat is not None else self.heartbeat_timeout.total_seconds() / 3
        latest: dict[str, Any] = {}
        stop = threading.Event()

        def report(progress: dict[str, Any]) -> None:
            latest.clear()
            latest.update(progress)

        def pulse() -> None:
            while not stop.wait(interval):
                try:
                    if not self.heartbeat(job, worker, dict(latest) or None):
                        log.warning("job %s is no longer ours", job.id)
                        return
                except StrongroomError as err:
                    log.warning("job %s: heartbeat failed: %s", job.id, err)

        beating = threading.Thread(target=pulse, name=f"job-{job.id}-heartbeat", daemon=True)
        beating.start()
        try:
            outcome = self.handlers[job.kind](job, report)
        except StrongroomError as err:
            ok, outcome = False, str(err).splitlines()[0] if str(err) else type(err).__name__
            if err.retryable and job.tries < self.max_tries:
                stop.set()
                beating.join()
                self.retry_later(job, worker, outcome)
                return
        except Exception as err:  # a bug must not kill the runner: recorded, logged
            log.exception("job %s (%s) crashed", job.id, job.kind)
            ok, outcome = False, f"internal error: {type(err).__name__}"
        else:
            ok = True
        finally:
            stop.set()
            beating.join()
        self.finish(job, worker, ok, outcome)


def _alert(job: Job, at: datetime, message: str) -> Event:
    data: dict[str, Any] = {"job": job.id, "kind": job.kind}
    if job.machine is not None:
        data["machine"] = job.machine
    if job.schedule_id is not None:
        data["schedule"] = job.schedule_id
    return Event(at, "job.failed", message[:1000], Severity.ERROR, data=data)


def job_doc(job: Job) -> dict[str, Any]:
    """A job as the API answers it."""

    def when(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": job.id,
        "kind": job.kind,
        "machine": job.machine,
        "spec": job.spec,
        "state": str(job.state),
        "created": when(job.created),
        "due": when(job.due),
        "claimed_by": job.claimed_by,
        "claimed_at": when(job.claimed_at),
        "heartbeat": when(job.heartbeat),
        "finished": when(job.finished),
        "outcome": job.outcome,
        "progress": job.progress,
        "tries": job.tries,
        "schedule": job.schedule_id,
    }
