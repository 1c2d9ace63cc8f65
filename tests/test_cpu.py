"""The default worker count follows the process's CPU affinity."""

from __future__ import annotations

import os

import pytest

from strongroom.cpu import MAX_DEFAULT_JOBS, available_cpus, default_jobs, resolve_jobs


def test_default_follows_affinity_and_is_capped() -> None:
    assert available_cpus() == len(os.sched_getaffinity(0))
    assert default_jobs() == min(available_cpus(), MAX_DEFAULT_JOBS)


def test_affinity_narrowed_narrows_the_default() -> None:
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert default_jobs() == 1
    finally:
        os.sched_setaffinity(0, before)


def test_explicit_jobs_are_bounded() -> None:
    assert resolve_jobs(3) == 3
    assert resolve_jobs(None) == default_jobs()
    for bad in (0, -1, 65):
        with pytest.raises(ValueError, match="between 1 and 64"):
            resolve_jobs(bad)
