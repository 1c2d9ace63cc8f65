"""The jobs a server process runs itself: `forget` (a retention policy over
the points of a host/paths group) and `prune` (reclaim what no point uses).

Both run in the server process that claimed them, under the catalog's
maintenance lock `repository` (services/maintenance_lock.py: one at a time
across every server sharing the catalog, and a dead holder loses it), and
with the repository's own lock as the CLI takes it: shared for forget,
exclusive for prune. A lock held elsewhere (`retryable`) sends the job back
to the queue for later instead of failing it (services/jobs.py).

A job's spec is checked by `check_spec` when it is queued and again when it
runs (a schedule's spec may be older than this strongroom): a forget spec
keeps something (a policy of zeros would forget every point: refused).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from strongroom.catalog import Catalog, Job
from strongroom.errors import UsageError
from strongroom.repository.prune import PrunePlan
from strongroom.services import maintenance
from strongroom.services.forget import KeepPolicy, apply_policy, forget_points, group_points
from strongroom.services.jobs import Handler, Progress
from strongroom.services.maintenance_lock import maintenance_lock
from strongroom.services.points import PointFilter, list_points
from strongroom.services.session import LockMode, open_repository

SERVER_KINDS = ("forget", "prune")
LOCK_NAME = "repository"
_KEEP = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
_LISTS = ("hosts", "tags", "paths", "keep_tags")
_GROUPS = frozenset({"", "host", "paths", "tags", "host,paths", "host,tags", "paths,tags",
                     "host,paths,tags"})  # fmt: skip
MAX_KEEP = 100_000
MAX_ITEMS = 64
MAX_ITEM = 4096
MAX_WITHIN = 100 * 366 * 86400  # keep_within (seconds): as a protection policy's bound


def check_spec(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec of a server job, checked and with its defaults; UsageError
    names the first problem (never echoing the value)."""
    if kind == "prune":
        unknown = set(spec) - {"max_unused"}
        if unknown:
            raise UsageError(f"prune: unknown field(s) {', '.join(sorted(unknown))[:200]}")
        fraction = spec.get("max_unused", 0.0)
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise UsageError("prune: max_unused must be a number from 0 to 1")
        if not 0 <= fraction <= 1:
            raise UsageError("prune: max_unused must be a number from 0 to 1")
        return {"max_unused": float(fraction)}
    if kind != "forget":
        raise UsageError(f"the server runs only {', '.join(SERVER_KINDS)} jobs")
    unknown = set(spec) - set(_KEEP) - set(_LISTS) - {"group_by", "prune", "keep_within"}
    if unknown:
        raise UsageError(f"forget: unknown field(s) {', '.join(sorted(unknown))[:200]}")
    out: dict[str, Any] = {}
    for name in _KEEP:
        value = spec.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_KEEP:
            raise UsageError(f"forget: {name} must be a whole number from 0 to {MAX_KEEP}")
        out[name] = value
    within = spec.get("keep_within", 0)
    if isinstance(within, bool) or not isinstance(within, int) or not 0 <= within <= MAX_WITHIN:
        raise UsageError(f"forget: keep_within must be whole seconds from 0 to {MAX_WITHIN}")
    out["keep_within"] = within
    for name in _LISTS:
        items = spec.get(name, [])
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            raise UsageError(f"forget: {name} must be a list of at most {MAX_ITEMS} texts")
        for item in items:
            if not isinstance(item, str) or not 0 < len(item) <= MAX_ITEM or "\0" in item:
                raise UsageError(f"forget: each of {name} must be 1-{MAX_ITEM} characters")
        out[name] = list(items)
    group_by = spec.get("group_by", "host,paths")
    if not isinstance(group_by, str) or group_by not in _GROUPS:
        raise UsageError("forget: group_by is a comma list of host, paths, tags")
    out["group_by"] = group_by
    out["prune"] = spec.get("prune", False) is True
    if not any(out[k] for k in (*_KEEP, "keep_within")) and not out["keep_tags"]:
        raise UsageError("forget: give at least one keep_* rule (refusing to forget everything)")
    return out


def maintenance_handlers(
    catalog: Catalog, location: str, password: bytes, holder: str
) -> dict[str, Handler]:
    """The `forget` and `prune` handlers over the repository at `location`."""

    def forget(job: Job, progress: Progress) -> str:
        spec = check_spec("forget", job.spec)
        policy = KeepPolicy(
            last=spec["keep_last"],
            hourly=spec["keep_hourly"],
            daily=spec["keep_daily"],
            weekly=spec["keep_weekly"],
            monthly=spec["keep_monthly"],
            yearly=spec["keep_yearly"],
            tags=spec["keep_tags"],
            within=float(spec["keep_within"]),
        )
        flt = PointFilter(spec["hosts"], spec["tags"], spec["paths"])
        lock = LockMode.EXCLUSIVE if spec["prune"] else LockMode.SHARED
        with (
            maintenance_lock(catalog, LOCK_NAME, holder),
            open_repository(location, password, lock=lock) as repo,
        ):
            groups = group_points(list_points(repo, flt, on_damaged=_skip), spec["group_by"])
            removed = 0
            for n, members in enumerate(groups.values(), 1):
                removed += len(forget_points(repo, apply_policy(members, policy)))
                progress({"groups": n, "of": len(groups), "forgotten": removed})
            text = f"forgot {removed} point(s) in {len(groups)} group(s)"
            if spec["prune"]:
                text += "; " + _prune_text(maintenance.prune(repo, report=_note(progress)))
        return text

    def prune(job: Job, progress: Progress) -> str:
        spec = check_spec("prune", job.spec)
        with (
            maintenance_lock(catalog, LOCK_NAME, holder),
            open_repository(location, password, lock=LockMode.EXCLUSIVE) as repo,
        ):
            plan = maintenance.prune(repo, max_unused=spec["max_unused"], report=_note(progress))
        return _prune_text(plan)

    return {"forget": forget, "prune": prune}


def _prune_text(plan: PrunePlan) -> str:
    return (
        f"pruned: deleted {len(plan.delete)} pack(s), repacked {len(plan.repack)}, "
        f"freed {plan.unused_bytes} bytes"
    )


def _note(progress: Progress) -> Callable[[str], None]:
    return lambda message: progress({"step": message[:200]})


def _skip(_point: str, _err: Exception) -> None:
    """A damaged point is in no group: never forgotten by a policy."""
