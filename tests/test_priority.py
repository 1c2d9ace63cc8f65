"""--priority: SCHED_IDLE and the idle I/O class, or nice 10 and best-effort 7, per thread
or for every thread of a process. Each test changes a throwaway thread or process only."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from strongroom.priority import (
    IOPRIO_CLASS_BE,
    IOPRIO_CLASS_IDLE,
    Priority,
    ThreadPriority,
    apply_priority,
    parse_priority,
    thread_priority,
)
from strongroom.services.impact import job_priority, run_at

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux priorities")


def on_thread(body: Callable[[], object]) -> object:
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(body()))
    t.start()
    t.join()
    return out[0]


def test_idle_sets_sched_idle_and_the_idle_io_class_on_the_thread() -> None:
    def body() -> tuple[list[str], ThreadPriority]:
        return apply_priority(Priority.IDLE, scope="thread"), thread_priority()

    warnings, seen = on_thread(body)  # type: ignore[misc]
    assert warnings == []
    assert seen.policy == os.SCHED_IDLE and seen.io_class == IOPRIO_CLASS_IDLE
    assert thread_priority().policy != os.SCHED_IDLE  # the test's own thread is untouched


def test_low_is_nice_10_and_best_effort_7() -> None:
    def body() -> ThreadPriority:
        apply_priority(Priority.LOW, scope="thread")
        return thread_priority()

    seen = on_thread(body)
    assert isinstance(seen, ThreadPriority)
    assert seen.policy == os.SCHED_OTHER and seen.nice >= 10
    assert (seen.io_class, seen.io_level) == (IOPRIO_CLASS_BE, 7)


def test_process_scope_covers_threads_started_before_and_after() -> None:
    script = """
import os, threading
from strongroom.priority import Priority, apply_priority, thread_priority
ready, go = threading.Event(), threading.Event()
seen = {}
def early():
    ready.set(); go.wait(); seen["early"] = thread_priority().idle
t = threading.Thread(target=early); t.start(); ready.wait()
assert apply_priority(Priority.IDLE) == []
late = threading.Thread(target=lambda: seen.update(late=thread_priority().idle))
late.start(); late.join(); go.set(); t.join()
print(seen["early"], seen["late"], thread_priority().idle)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True"]


def test_defaults_by_kind_and_run_at_leaves_the_caller_alone() -> None:
    assert job_priority("vm", None) is Priority.IDLE
    assert job_priority("protect", None) is Priority.IDLE
    assert job_priority("files", None) is Priority.NORMAL
    assert job_priority("image", None) is Priority.NORMAL
    assert job_priority("vm", Priority.NORMAL) is Priority.NORMAL
    inside = run_at("vm", None, thread_priority)
    assert inside.idle
    assert not thread_priority().idle
    with pytest.raises(KeyError):
        run_at("vm", None, lambda: {}["missing"])


def test_names() -> None:
    assert parse_priority(" Idle ") is Priority.IDLE
    with pytest.raises(ValueError, match="idle, low, normal"):
        parse_priority("lowest")
