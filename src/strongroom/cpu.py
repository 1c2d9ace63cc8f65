"""How many workers a command runs when the user does not say.

Hashing, compression and encryption are CPU work; on a machine shared with
the workloads being protected the default takes the CPUs this process may run
on (its affinity, which containers and `taskset` narrow), capped so that a
large host does not get dozens of processes for one backup.
"""

from __future__ import annotations

import os

MAX_DEFAULT_JOBS = 8
MAX_JOBS = 64


def available_cpus() -> int:
    """The CPUs this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_jobs() -> int:
    """Workers for a command given no `--jobs`: the usable CPUs, at most 8."""
    return min(available_cpus(), MAX_DEFAULT_JOBS)


def resolve_jobs(jobs: int | None) -> int:
    """`jobs` as asked (1 to 64), or the default when None."""
    if jobs is None:
        return default_jobs()
    if not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"jobs must be between 1 and {MAX_JOBS}, not {jobs}")
    return jobs
