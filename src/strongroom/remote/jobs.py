"""The agent's calls for its jobs (server/agent_jobs_api.py): claim the next
job of its machine, report progress, finish it.

Contract: every call goes through `Client` (failover across the server's
addresses, bounded retries; RemoteUnavailable when none answers). A
claim whose answer was lost leaves a job running for this agent that it
never saw: no heartbeat comes, so the server's recovery queues it again
after its heartbeat timeout (60 s); retrying a claim is safe. What the
server sends is checked before use: a job is a dict with an integer id, a
known kind and a dict spec, or RemoteError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strongroom.errors import RemoteError
from strongroom.remote.client import Client

KINDS = ("backup", "restore")


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    spec: dict[str, Any]
    tries: int


class JobsClient:
    def __init__(self, client: Client) -> None:
        self.client = client

    def claim(self, wait: float = 0.0) -> ClaimedJob | None:
        """The next due job of this machine (now running for this agent), or
        None after the server waited up to `wait` seconds (at most 20)."""
        answer = self.client.request("POST", "/api/v1/agent/jobs/claim", json={"wait": wait})
        if answer.status_code == 204:
            return None
        try:
            doc = answer.json()
            job = ClaimedJob(int(doc["id"]), str(doc["kind"]), dict(doc["spec"]),
                             int(doc.get("tries", 1)))  # fmt: skip
        except (ValueError, KeyError, TypeError) as err:
            raise RemoteError(f"the server's job is malformed: {str(err)[:80]}") from None
        if job.kind not in KINDS:
            raise RemoteError(f"the server sent a job of unknown kind {job.kind[:32]!r}")
        return job

    def progress(self, job_id: int, progress: dict[str, Any]) -> bool:
        """Heartbeat; False when the job is no longer this agent's (stop it)."""
        doc = self.client.post_json(f"/api/v1/agent/jobs/{job_id}/progress",
                                    {"progress": progress})  # fmt: skip
        return bool(isinstance(doc, dict) and doc.get("running") is True)

    def finish(self, job_id: int, ok: bool, outcome: str, point: str | None = None) -> None:
        body: dict[str, Any] = {"ok": ok, "outcome": outcome[:1000]}
        if point is not None:
            body["point"] = point
        self.client.post_json(f"/api/v1/agent/jobs/{job_id}/finish", body)
