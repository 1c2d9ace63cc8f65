"""Jobs run by agents, on the server's side: the `backup` and `restore` jobs
of an enrolled machine, their specs, and what an agent may do with them
(docs/server.md, "Schedules and jobs on agents").

Contract:
- a spec is checked when it is queued (`check_spec`; UsageError with one
  line that never echoes a value): bounded lists of absolute paths without
  NUL, known fields only. A backup is of files (`paths`) or, with `kind:
  image`, of one block source of the machine (`source`: a file, a qcow2 or
  a block device, an absolute path; or with `qmp` and `node` a live disk
  behind its block layer's NBD URI; `changed_since` auto, compare, none or
  bitmap[:NAME]: services/agent_job_specs.py)
  or, with `kind: vm`, of one VM of the machine's cluster (`vm`: its name,
  the machine name rules; the agent's own `[vm.NAME]` table says where its
  disks are), queued only for a machine that is in a cluster.
  A restore names a point of THAT machine (its host is the machine's name:
  agents' points always are) or a VM point of its cluster (its host is the
  cluster's name); of a files point, paths found in it, checked against
  the repository before the job is queued, into a folder; of a block image
  point, the whole disk onto a target file or device; of a VM point, every
  disk into a folder as DISK.raw (the spec says which with its `kind`, set
  from the point's; `format: qcow2` writes qcow2 instead of raw);
- the machine must be enrolled and enabled;
- an agent claims only its own machine's jobs (`claim` with
  `machine=NAME`, through the catalog's one claim); its worker name is
  `agent:NAME`, so only that machine's agent can beat or finish them, and
  a job of another machine is the same "no such job" as one that does not
  exist (the API's 404): an agent learns nothing of other machines;
- a finish that names a point names one of ITS machine (it exists, its host
  is the machine) or a VM point of its cluster (the host is the cluster's
  name: a VM job's point), or it is refused (UsageError) and the job stays running
  for the agent to finish properly;
- a failed job raises the alert event `job.failed` (services/jobs.py), as
  the server's own jobs do.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from strongroom.catalog import Catalog, Job, JobState
from strongroom.errors import PathNotFound, PointNotFound, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.services.agent_intake import visible
from strongroom.services.agent_job_specs import (
    JOB_CHANGED_SINCE,
    MAX_PATH,
    MAX_TAG,
    MAX_TAGS,
    absolute,
    changed_since,
    check_image_backup,
    restore_format,
    texts,
    unknown,
)
from strongroom.services.agent_vm_leases import check_vm_name
from strongroom.services.agents import check_machine_name
from strongroom.services.dashboard import RepositoryView
from strongroom.services.jobs import Jobs, job_doc
from strongroom.services.restore import point_path
from strongroom.services.walk import find_node

AGENT_KINDS = ("backup", "restore")
SCHEDULED_AGENT_KINDS = ("backup",)  # a restore is asked for once, never on a timer
MAX_PATHS = 64  # a backup's paths
MAX_EXCLUDES = 256
MAX_PICKS = 1000  # a restore's paths inside the point
MAX_WAIT = 20.0  # seconds a claim may wait for a job
POLL = 0.5  # seconds between claims of a long poll
MAX_PROGRESS = 4096  # bytes of a progress document (JSON)
MAX_PROGRESS_KEYS = 32
MAX_OUTCOME = 1000
OVERWRITE = ("replace", "refuse")
_POINT = re.compile(r"[0-9a-f]{64}")


def worker_of(machine: str) -> str:
    """The `claimed_by` of a machine's agent."""
    return f"agent:{machine}"


def check_backup(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A backup job's spec with its defaults: paths (1-64 absolute),
    excludes, tags, one_file_system, kind (`files`; `image`: see
    `check_image_backup`; `vm`: see `check_vm_backup`)."""
    if spec.get("kind") == "image":
        return check_image_backup(spec)
    if spec.get("kind") == "vm":
        return check_vm_backup(spec)
    unknown(spec, {"paths", "excludes", "tags", "one_file_system", "kind"}, "backup")
    kind = spec.get("kind", "files")
    if kind != "files":
        raise UsageError("backup: kind must be 'files', 'image' or 'vm'")
    paths = absolute(texts(spec, "paths", MAX_PATHS, MAX_PATH, "backup"), "backup", "paths")
    if not paths:
        raise UsageError("backup: give at least one path")
    one_fs = spec.get("one_file_system", False)
    if not isinstance(one_fs, bool):
        raise UsageError("backup: one_file_system is true or false")
    return {
        "kind": "files",
        "paths": paths,
        "excludes": texts(spec, "excludes", MAX_EXCLUDES, MAX_PATH, "backup"),
        "tags": texts(spec, "tags", MAX_TAGS, MAX_TAG, "backup"),
        "one_file_system": one_fs,
    }


def check_vm_backup(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A VM backup job's spec with its defaults: vm (the VM's name, the
    machine name rules: the agent looks it up in its own config's
    `[vm.NAME]` tables, as `backup --vm` does), changed_since (`auto`: the
    VM's dirty bitmaps, `compare` or `none`, as `backup --vm` takes them),
    tags. Whether the machine is in a cluster is `AgentJobs.check_spec`'s."""
    unknown(spec, {"kind", "vm", "changed_since", "tags"}, "backup")
    vm = spec.get("vm")
    if not isinstance(vm, str):
        raise UsageError("backup: vm must be the VM's name")
    check_vm_name(vm)
    changed = changed_since(spec, bitmaps=False)
    return {
        "kind": "vm",
        "vm": vm,
        "changed_since": changed,
        "tags": texts(spec, "tags", MAX_TAGS, MAX_TAG, "backup"),
    }


def check_restore(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A restore job's spec, on its own (the point and its paths are checked
    against the repository by `AgentJobs.check_spec`): point (a full id),
    paths inside it (none: all of it), target (an absolute folder on the
    machine), overwrite (`replace` what is in the way, as `restore` does; or
    `refuse` unless the target is absent or empty), kind (`files`, `image`
    or `vm`: what the point is; `check_spec` sets `image` or `vm` from the
    point). Of an image point, the target is the file or block device the
    disk is written to; of a VM point, the folder its disks are written to
    (DISK.raw); no paths are picked of either. `format` (`raw` or `qcow2`,
    as `restore --format` takes it) is of image and VM points only: the
    disk file, or each DISK.FORMAT, is written in it."""
    unknown(spec, {"point", "paths", "target", "overwrite", "kind", "format"}, "restore")
    kind = spec.get("kind")
    if kind not in (None, "files", "image", "vm"):
        raise UsageError("restore: kind is 'files', 'image' or 'vm' (the point's)")
    point = spec.get("point")
    if not isinstance(point, str) or not _POINT.fullmatch(point):
        raise UsageError("restore: point must be a full point id (64 hex digits)")
    picks = texts(spec, "paths", MAX_PICKS, MAX_PATH, "restore")
    try:
        paths = list(dict.fromkeys(point_path(p) for p in picks))
    except UsageError:
        raise UsageError("restore: each of paths must be a path of the point, from /") from None
    target = spec.get("target")
    if not isinstance(target, str) or not 1 < len(target) <= MAX_PATH or "\0" in target:
        raise UsageError("restore: target must be an absolute path of 2-4096 characters")
    absolute([target], "restore", "target")
    overwrite = spec.get("overwrite", "replace")
    if overwrite not in OVERWRITE:
        raise UsageError("restore: overwrite is 'replace' or 'refuse'")
    fmt = restore_format(spec)
    checked = {"point": point, "paths": paths, "target": target, "overwrite": overwrite}
    return checked | ({"kind": kind} if kind else {}) | ({"format": fmt} if fmt else {})


def check_progress(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A progress document from an agent: a flat object of at most 32
    scalars (texts cut to 200), at most 4 KiB as JSON."""
    if len(doc) > MAX_PROGRESS_KEYS:
        raise UsageError(f"progress: at most {MAX_PROGRESS_KEYS} fields")
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if not isinstance(key, str) or not re.fullmatch(r"[a-z_]{1,32}", key):
            raise UsageError("progress: field names are 1-32 of a-z and _")
        if isinstance(value, str):
            value = value[:200]
        elif value is not None and not isinstance(value, bool | int | float):
            raise UsageError("progress: values are numbers, texts, true/false or null")
        out[key] = value
    if len(json.dumps(out)) > MAX_PROGRESS:
        raise UsageError(f"progress: at most {MAX_PROGRESS} bytes")
    return out


@dataclass
class AgentJobs:
    """The server's side of agents' jobs. `find_point` gives a point by its
    full id (PointNotFound), `find_path` checks a path is in a point
    (PathNotFound): the dashboard's repository view."""

    catalog: Catalog
    find_point: Callable[[str], RecoveryPoint]
    find_path: Callable[[RecoveryPoint, str], None]
    jobs: Jobs = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = Jobs(self.catalog)

    @classmethod
    def over(cls, catalog: Catalog, view: RepositoryView) -> AgentJobs:
        """Points and paths looked up in the dashboard's repository view."""

        def find_path(point: RecoveryPoint, path: str) -> None:
            find_node(view.repository(), bytes.fromhex(point.tree), path)

        return cls(catalog, functools.partial(view.point, fresh=True), find_path)

    # --- queueing (operators, schedules) -----------------------------------------

    def check_spec(
        self, kind: str, machine: str | None, spec: Mapping[str, Any], *, scheduled: bool = False
    ) -> dict[str, Any]:
        """The checked spec of an agent job for `machine` (UsageError)."""
        allowed = SCHEDULED_AGENT_KINDS if scheduled else AGENT_KINDS
        if kind not in allowed:
            raise UsageError(f"agents run only {', '.join(allowed)} jobs here")
        if machine is None:
            raise UsageError(f"a {kind} job needs the machine that runs it")
        check_machine_name(machine)
        found = self.catalog.find_machine(machine)
        if found is None or found.disabled:
            raise UsageError("no such enrolled (and enabled) machine")
        if kind == "backup":
            checked = check_backup(spec)
            if checked["kind"] == "vm" and not found.cluster:
                raise UsageError(
                    "backup: the machine is in no VM cluster (an administrator puts it in one: "
                    "PUT /api/v1/machines/NAME/cluster)"
                )
            return checked
        checked = check_restore(spec)
        try:
            point = self.find_point(checked["point"])
        except PointNotFound:
            raise UsageError("restore: no such point of that machine") from None
        if not visible(point, machine, found.cluster):
            raise UsageError("restore: no such point of that machine")
        if point.kind not in (PointKind.FILES, PointKind.BLOCK, PointKind.VM):
            raise UsageError("restore: agents restore files, block image and VM points only")
        kinds: dict[str, str] = {PointKind.BLOCK: "image", PointKind.VM: "vm"}
        kind = kinds.get(point.kind, "files")
        if checked.get("kind", kind) != kind:
            raise UsageError(f"restore: the point is a {kind} point")
        if kind == "files" and "format" in checked:
            raise UsageError("restore: format is of image and VM points only")
        if kind != "files":  # the agent is told (a files restore's spec is as it was)
            if checked["paths"]:
                raise UsageError(f"restore: an {kind} point is restored whole (no paths)")
            return checked | {"kind": kind}
        for path in checked["paths"]:
            try:
                self.find_path(point, path)
            except PathNotFound:
                raise UsageError("restore: a picked path is not in the point") from None
        return checked

    def submit(self, kind: str, machine: str, spec: Mapping[str, Any]) -> Job:
        return self.jobs.enqueue(kind, self.check_spec(kind, machine, spec), machine=machine)

    # --- the agent's calls ---------------------------------------------------------

    def claim(self, machine: str) -> Job | None:
        """The next due job of `machine`, now running for its agent; None
        when none is due (the API waits and asks again: a long poll)."""
        return self.jobs.claim(worker_of(machine), AGENT_KINDS, machine=machine)

    def _mine(self, machine: str, job_id: int) -> Job | None:
        job = self.catalog.find_job(job_id)
        return job if job is not None and job.machine == machine else None

    def progress(self, machine: str, job_id: int, doc: Mapping[str, Any]) -> bool | None:
        """Heartbeat with progress: None when there is no such job of this
        machine; False when it no longer runs for this agent (cancelled,
        taken back): the agent stops it."""
        job = self._mine(machine, job_id)
        if job is None:
            return None
        return self.jobs.heartbeat(job, worker_of(machine), check_progress(doc))

    def finish(
        self, machine: str, job_id: int, ok: bool, outcome: str, point: str | None
    ) -> Job | None:
        """Record the end (a failure raises `job.failed`); None when there is
        no such job of this machine. The job as it is now (a job no longer
        the agent's keeps its state)."""
        job = self._mine(machine, job_id)
        if job is None:
            return None
        line = (outcome.splitlines() or [""])[0][:MAX_OUTCOME] or ("done" if ok else "failed")
        if point is not None:
            self._check_own_point(machine, point)  # before anything is recorded
            line = f"point {point}: {line}"
        if job.state is JobState.RUNNING:
            self.jobs.finish(job, worker_of(machine), ok, line)
        return self.catalog.get_job(job_id)

    def _check_own_point(self, machine: str, point_id: str) -> None:
        """A point an agent reports must exist and be its machine's (its host
        is the machine's name): an agent cannot have a job claim another
        machine's point, or one that was never made (UsageError, the same
        line for both, so nothing is learnt of other machines). A VM point
        of the machine's cluster (its host is the cluster's name) is also
        the machine's to report: a VM job makes one."""
        if not _POINT.fullmatch(point_id):
            raise UsageError("finish: point must be a full point id")
        try:
            point = self.find_point(point_id)
        except PointNotFound:
            raise UsageError("finish: no such point of this machine") from None
        found = self.catalog.find_machine(machine)
        if not visible(point, machine, found.cluster if found is not None else None):
            raise UsageError("finish: no such point of this machine")


def agent_job_doc(job: Job) -> dict[str, Any]:
    """What an agent is told of a job it claimed."""
    return {"id": job.id, "kind": job.kind, "spec": job.spec, "tries": job.tries}


__all__ = ["AGENT_KINDS", "JOB_CHANGED_SINCE", "MAX_PATH", "MAX_TAG", "MAX_TAGS", "AgentJobs",
           "agent_job_doc", "check_backup", "check_image_backup", "check_restore",
           "check_vm_backup", "job_doc"]  # fmt: skip
