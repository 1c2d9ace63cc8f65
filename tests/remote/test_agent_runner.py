"""The agent's loop without a network: a stop (SIGTERM) during a job cancels
it and finishes it as failed with "agent stopped"; a job the server takes
back is cancelled and not finished; an unreachable server is waited for."""

from __future__ import annotations

import threading
from typing import Any

from strongroom.errors import Interrupted, RemoteUnavailable
from strongroom.remote.jobs import ClaimedJob
from strongroom.services.agent_runner import STOPPED, AgentRunner


class FakeJobs:
    def __init__(self, running: bool = True) -> None:
        self.finished: list[tuple[int, bool, str]] = []
        self.beats = 0
        self.running = running
        self.claims = 0

    def claim(self, wait: float = 0.0) -> ClaimedJob | None:
        self.claims += 1
        raise RemoteUnavailable("no backup server answers")

    def progress(self, job_id: int, progress: dict[str, Any]) -> bool:
        self.beats += 1
        return self.running

    def finish(self, job_id: int, ok: bool, outcome: str, point: str | None = None) -> None:
        self.finished.append((job_id, ok, outcome))


def _runner(jobs: FakeJobs, body: Any) -> AgentRunner:
    runner = AgentRunner.__new__(AgentRunner)
    runner.stop, runner.beat, runner.say = threading.Event(), 0.2, lambda _line: None
    runner.jobs = jobs  # type: ignore[assignment]
    runner._body = body  # type: ignore[method-assign]
    return runner


def _waits_for_cancel(job: ClaimedJob, report: Any, cancel: threading.Event) -> Any:
    assert cancel.wait(10), "never cancelled"
    raise Interrupted("interrupted")


def test_a_stop_finishes_the_running_job_as_failed() -> None:
    jobs = FakeJobs()
    runner = _runner(jobs, _waits_for_cancel)
    threading.Timer(0.3, runner.stop.set).start()
    result = runner.run(ClaimedJob(7, "backup", {"paths": ["/srv"]}, 1))
    assert (result.ok, result.outcome) == (False, STOPPED)
    assert jobs.finished == [(7, False, STOPPED)]


def test_a_job_taken_back_is_cancelled_and_not_finished() -> None:
    jobs = FakeJobs(running=False)
    result = _runner(jobs, _waits_for_cancel).run(ClaimedJob(8, "backup", {}, 1))
    assert not result.ok and jobs.beats >= 1 and jobs.finished == []


def test_an_unreachable_server_is_waited_for_until_stopped() -> None:
    jobs = FakeJobs()
    runner = _runner(jobs, _waits_for_cancel)
    threading.Timer(0.5, runner.stop.set).start()
    runner.run_forever(wait=0)  # returns once stopped, never raises
    assert jobs.claims >= 1
