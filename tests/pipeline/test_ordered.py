"""OrderedWork: parallel jobs, results and callbacks consumed strictly in order."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.pipeline.ordered import OrderedWork

steps = st.lists(
    st.one_of(
        st.tuples(st.just("job"), st.floats(0, 0.003)), st.tuples(st.just("then"), st.none())
    ),
    max_size=40,
)


@settings(max_examples=50)
@given(steps=steps, workers=st.integers(1, 4), depth=st.integers(1, 6))
def test_results_and_callbacks_arrive_in_submission_order(
    steps: list[tuple[str, float | None]], workers: int, depth: int
) -> None:
    seen: list[int] = []
    running = 0
    peak = 0
    lock = threading.Lock()

    def make_job(i: int, delay: float):  # type: ignore[no-untyped-def]
        def job() -> int:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(delay)
            with lock:
                running -= 1
            return i

        return job

    caller = threading.get_ident()
    with OrderedWork(workers, depth) as work:
        for i, (kind, delay) in enumerate(steps):
            if kind == "job":
                assert delay is not None
                work.submit(make_job(i, delay), seen.append)
            else:
                work.then(lambda i=i: seen.append(i))  # type: ignore[misc]
        work.finish()
        assert threading.get_ident() == caller
    assert seen == list(range(len(steps)))
    assert peak <= min(workers, depth)


def test_sinks_run_on_the_calling_thread() -> None:
    threads = set()
    with OrderedWork(3, 5) as work:
        for _ in range(20):
            work.submit(lambda: 1, lambda _: threads.add(threading.get_ident()))
        work.finish()
    assert threads == {threading.get_ident()}


def test_a_failing_job_raises_in_order() -> None:
    seen: list[int] = []

    def boom() -> int:
        raise ValueError("job failed")

    with pytest.raises(ValueError, match="job failed"), OrderedWork(2, 4) as work:
        work.submit(lambda: 1, seen.append)
        work.submit(boom, seen.append)
        work.submit(lambda: 3, seen.append)
        work.finish()
    assert seen == [1]


def test_futures_from_elsewhere_are_sunk_in_order_with_jobs_and_callbacks() -> None:
    """`submit_future`: work running elsewhere (a worker process) keeps its place."""
    from concurrent.futures import Future

    seen: list[object] = []
    late: Future[str] = Future()
    with OrderedWork(2, depth=3) as work:
        work.submit_future(late, seen.append)
        work.submit(lambda: "job", seen.append)
        work.then(lambda: seen.append("then"))
        assert seen == []  # nothing passes the future that is not done
        late.set_result("future")
        work.finish()
    assert seen == ["future", "job", "then"]
