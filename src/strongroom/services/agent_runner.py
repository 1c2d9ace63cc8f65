"""`strongroom agent run`: the agent's job loop. It claims the jobs of its
machine from the server, runs each with the SAME code as `backup --server`
(files, `--image` or `--vm`) and `restore --server` (services/agent_backup.py,
services/agent_images.py, services/agent_vms.py), reports progress as its
heartbeat and finishes the job with the point made or the error's one line
(docs/server.md, "Schedules and jobs on agents").

Contract:
- one job at a time; a `RemoteStore` of its own per job over one client
  (failover across the server's addresses is the client's);
- progress (files, bytes, rate) goes to the server every `beat` seconds
  while the job runs; the server answering that the job is no longer this
  agent's (cancelled, or taken back after a lost heartbeat) cancels it here;
- the server unreachable: the loop waits with a doubling backoff (to
  `MAX_BACKOFF`) and asks again; it never exits for that;
- `stop` (SIGTERM, SIGINT) ends the loop; a job in flight is cancelled at
  once (the pipelines check the event between entries) and FINISHED AS
  FAILED with the outcome `agent stopped`, so the server and its alerts know
  now rather than after the heartbeat timeout. The next scheduled run or an
  operator runs it again;
- a VM backup job names the VM; its block layer and disks are the agent's
  own `[vm.NAME]` table of its config file (read when the job runs, as
  `backup --vm` reads it), never the server's to say;
- an image backup job's spec is checked again here with the server's own
  checks (services/agent_job_specs.py): a source path or NBD URI, a QMP
  socket, node and scratch folder, a bitmap name, allow_backing, nothing
  `backup --image` would refuse;
- an image or VM restore writes raw, or qcow2 with `format: qcow2`;
- a restore with `overwrite: refuse` fails before writing anything when its
  target folder exists and is not empty (a files or VM point); of an image
  point, when its target exists and is anything but an empty regular file.
- a job runs at its kind's priority (services/impact.py: VM backups idle,
  the others normal; the config file's `priority` overrides), on a thread of
  its own so the loop itself keeps its priority; image and VM backups read
  their disks at most at the config file's `limit_read`.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from strongroom.config import Settings, VmSpec, load_settings
from strongroom.errors import Interrupted, RemoteError, StrongroomError, UsageError
from strongroom.model.kinds import PointKind
from strongroom.remote.client import Client
from strongroom.remote.config import AgentConfig
from strongroom.remote.jobs import ClaimedJob, JobsClient
from strongroom.remote.store import RemoteStore
from strongroom.services.agent_backup import (
    agent_points,
    backup_through_server,
    find_own,
    restore_through_server,
)
from strongroom.services.agent_images import (
    backup_image_through_server,
    restore_image_through_server,
)
from strongroom.services.agent_job_specs import (
    JOB_CHANGED_SINCE,
    check_image_backup,
    restore_format,
)
from strongroom.services.agent_vm_leases import check_vm_name
from strongroom.services.backup import BackupRequest
from strongroom.services.image_backup import ImageBackupRequest
from strongroom.services.impact import JobKind, run_at
from strongroom.types import Progress

log = logging.getLogger(__name__)

BEAT = 5.0  # seconds between progress reports (the server's timeout is 60 s)
WAIT = 15.0  # seconds a claim waits on the server for a job (long poll)
BACKOFF = 1.0
MAX_BACKOFF = 60.0
STOPPED = "agent stopped"


@dataclass(frozen=True)
class JobResult:
    id: int
    kind: str
    ok: bool
    outcome: str
    point: str | None = None


def configured_vms() -> Mapping[str, VmSpec]:
    """The `[vm.NAME]` tables of the config file, as the CLI reads it
    (STRONGROOM_CONFIG or the default path), read anew for each VM job."""
    return load_settings().vms


def job_settings() -> Settings:
    """The config file's and environment's settings, read anew for each job:
    its `priority` and `limit_read`."""
    return load_settings()


class _Lost(StrongroomError):
    """The server says the job is no longer this agent's."""


@dataclass
class AgentRunner:
    config: AgentConfig
    client: Client
    stop: threading.Event = field(default_factory=threading.Event)
    beat: float = BEAT
    say: Callable[[str], None] = lambda _line: None
    vms: Callable[[], Mapping[str, VmSpec]] = configured_vms

    def __post_init__(self) -> None:
        self.jobs = JobsClient(self.client)
        self._limit_read: int | None = None  # the running job's (config limit_read)

    # --- the loops ---------------------------------------------------------------

    def run_once(self) -> list[JobResult]:
        """Run every job of this machine that is due now, then return."""
        done: list[JobResult] = []
        while not self.stop.is_set():
            job = self.jobs.claim(0.0)
            if job is None:
                break
            done.append(self.run(job))
        return done

    def run_forever(self, wait: float = WAIT) -> None:
        """Claim and run jobs until `stop` is set."""
        delay = BACKOFF
        while not self.stop.is_set():
            try:
                job = self.jobs.claim(wait)
            except RemoteError as err:  # unreachable, or refusing for now
                self.say(f"the server does not answer ({str(err)[:200]}); again in {delay:.0f} s")
                self.stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = BACKOFF
            if job is not None:
                self.run(job)

    # --- one job -----------------------------------------------------------------

    def run(self, job: ClaimedJob) -> JobResult:
        """Run one claimed job to its end and tell the server how it ended."""
        self.say(f"job {job.id}: {job.kind} started")
        latest: dict[str, Any] = {}
        cancel = threading.Event()
        done = threading.Event()
        lost = threading.Event()

        def report(progress: Progress) -> None:
            latest.update(_progress_doc(progress))

        def pulse() -> None:
            waited = 0.0
            while not done.wait(0.2):
                if self.stop.is_set():
                    cancel.set()
                waited += 0.2
                if waited < self.beat:
                    continue
                waited = 0.0
                try:
                    if not self.jobs.progress(job.id, dict(latest)):
                        lost.set()
                        cancel.set()
                except StrongroomError as err:
                    log.warning("job %s: progress not sent: %s", job.id, err)

        beating = threading.Thread(target=pulse, name=f"job-{job.id}-progress", daemon=True)
        beating.start()
        point: str | None = None
        try:
            settings = job_settings()
            self._limit_read = settings.limit_read
            point, outcome = run_at(
                _job_kind(job), settings.priority, lambda: self._body(job, report, cancel)
            )
            ok = True
        except Interrupted:
            ok, outcome = False, STOPPED if self.stop.is_set() else "cancelled by the server"
        except StrongroomError as err:
            ok, outcome = False, _line(err)
        except OSError as err:
            ok, outcome = False, _line(err)
        except Exception as err:  # a bug: the server still hears of the job's end
            log.exception("job %s (%s) crashed", job.id, job.kind)
            ok, outcome = False, f"internal error: {type(err).__name__}"
        finally:
            done.set()
            beating.join()
        if self.stop.is_set() and not ok:
            outcome = STOPPED
        if not lost.is_set():
            self.jobs.finish(job.id, ok, outcome, point)
        self.say(f"job {job.id}: {job.kind} {'done' if ok else 'failed'}: {outcome}")
        return JobResult(job.id, job.kind, ok, outcome, point)

    def _body(
        self, job: ClaimedJob, report: Callable[[Progress], None], cancel: threading.Event
    ) -> tuple[str | None, str]:
        store = RemoteStore(self.client, self.config.repository)
        try:
            if job.kind == "backup" and job.spec.get("kind") == "image":
                return self._backup_image(store, job.spec, report, cancel)
            if job.kind == "backup" and job.spec.get("kind") == "vm":
                return self._backup_vm(store, job.spec, report, cancel)
            if job.kind == "backup":
                return self._backup(store, job.spec, report, cancel)
            if job.spec.get("kind") == "image":
                return None, self._restore_image(store, job.spec, report, cancel)
            if job.spec.get("kind") == "vm":
                return None, self._restore_vm(store, job.spec, report, cancel)
            return None, self._restore(store, job.spec, report, cancel)
        finally:
            store.close()

    def _backup(
        self,
        store: RemoteStore,
        spec: dict[str, Any],
        report: Callable[[Progress], None],
        cancel: threading.Event,
    ) -> tuple[str | None, str]:
        request = BackupRequest(
            paths=_strings(spec.get("paths")),
            excludes=_strings(spec.get("excludes")),
            one_file_system=spec.get("one_file_system") is True,
            tags=_strings(spec.get("tags")),
        )
        if not request.paths:
            raise UsageError("the job names no path to back up")
        result = backup_through_server(store, self.config.machine, request, report, cancel)
        s = result.summary
        point = result.point.id if result.point is not None else None
        text = (
            f"{s.total_files} files, {s.total_bytes} bytes; {s.data_added} bytes added "
            f"in {result.seconds:.1f} s"
        )
        if s.unreadable:
            text += f"; {s.unreadable} files could not be read"
        return point, text

    def _backup_image(
        self,
        store: RemoteStore,
        spec: dict[str, Any],
        report: Callable[[Progress], None],
        cancel: threading.Event,
    ) -> tuple[str | None, str]:
        checked = check_image_backup(spec)  # the server's checks, again: never trusted
        request = ImageBackupRequest(
            source=checked["source"],
            changed_since=checked["changed_since"],
            qmp=checked.get("qmp"),
            node=checked.get("node"),
            scratch=checked.get("scratch"),
            allow_backing=checked.get("allow_backing", False),
            tags=checked["tags"],
            limit_read=self._limit_read,
        )
        result = backup_image_through_server(store, self.config.machine, request, report, cancel)
        s = result.summary
        text = (
            f"image of {s.size} bytes: {s.bytes_changed} bytes changed, {s.data_added} bytes "
            f"added in {result.seconds:.1f} s ({s.tracker or 'full'})"
        )
        return result.point.id, text

    def _backup_vm(
        self,
        store: RemoteStore,
        spec: dict[str, Any],
        report: Callable[[Progress], None],
        cancel: threading.Event,
    ) -> tuple[str | None, str]:
        from strongroom.services.agent_vms import backup_vm_through_server

        name = spec.get("vm")
        changed_since = spec.get("changed_since", "auto")
        if not isinstance(name, str) or changed_since not in JOB_CHANGED_SINCE:
            raise UsageError("the VM backup job is malformed (vm, changed_since)")
        check_vm_name(name)
        vm = self.vms().get(name)
        if vm is None:
            raise UsageError(
                f"no VM {name} in this machine's configuration: describe it in a [vm.{name}] "
                "table of the config file"
            )
        result = backup_vm_through_server(
            store,
            vm,
            block_size=self.config.repository.block_size,
            changed_since=str(changed_since),
            tags=_strings(spec.get("tags")),
            progress=report,
            cancel=cancel,
            limit_read=self._limit_read,
        )
        s = result.point.summary
        text = (
            f"VM {name}: {len(result.disks)} disks, {s.get('size', 0)} bytes: "
            f"{s.get('bytes_changed', 0)} bytes changed, {s.get('data_added', 0)} bytes added "
            f"in {result.seconds:.1f} s ({s.get('tracker') or 'full'}, {result.consistency})"
        )
        return result.point.id, text

    def _restore_vm(
        self,
        store: RemoteStore,
        spec: dict[str, Any],
        report: Callable[[Progress], None],
        cancel: threading.Event,
    ) -> str:
        from strongroom.services.agent_vms import restore_vm_through_server

        ref, target = _restore_target(spec, _full_folder, _FULL_FOLDER)
        point = find_own(agent_points(store), ref)
        if point.kind != PointKind.VM:
            raise UsageError(f"point {point.short_id} is not a VM point")
        fmt = _format(spec)
        disks = restore_vm_through_server(store, point, target, fmt, report, cancel)
        damaged = sum(len(s.damaged) for _, _, s in disks)
        if damaged:
            raise UsageError(f"{damaged} blocks could not be restored (damaged data)")
        size = sum(s.size for _, _, s in disks)
        return (
            f"restored {len(disks)} disks, {size} bytes, of VM point {point.short_id} to "
            f"{target} (DISK.{fmt})"
        )

    def _restore_image(
        self,
        store: RemoteStore,
        spec: dict[str, Any],
        report: Callable[[Progress], None],
        cancel: threading.Event,
    ) -> str:
        point, target = _restore_target(
            spec, _occupied, "the target exists and is not an empty file (overwrite: refuse)"
        )
        fmt = _format(spec)
        found, s = restore_image_through_server(store, point, target, fmt, report, cancel)
        if s.damaged:
            raise UsageError(f"{len(s.damaged)} blocks could not be restored (damaged data)")
        return (
            f"restored {s.size} bytes ({s.bytes_written} written) of point {found.short_id} "
            f"to {target} ({fmt})"
        )

    def _restore(
        self,
        store: RemoteStore,
        spec: dict[str, Any],
        report: Callable[[Progress], None],
        cancel: threading.Event,
    ) -> str:
        point, target = _restore_target(spec, _full_folder, _FULL_FOLDER)
        includes = _strings(spec.get("paths")) or None
        found, s = restore_through_server(store, point, target, report, includes, cancel)
        if s.damaged:
            raise UsageError(f"{len(s.damaged)} files could not be fully restored (damaged data)")
        return (
            f"restored {s.files} files, {s.dirs} folders, {s.bytes_written} bytes of point "
            f"{found.short_id} to {target}"
        )


def _job_kind(job: ClaimedJob) -> JobKind:
    """The job's kind for its priority (services/impact.py)."""
    if job.kind != "backup":
        return "restore"
    kind = job.spec.get("kind")
    return "image" if kind == "image" else "vm" if kind == "vm" else "files"


def _occupied(target: str) -> bool:
    """Whether an image restore would overwrite something: the target exists
    and is not an empty regular file (a device always holds something)."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return False
    return not (stat.S_ISREG(st.st_mode) and st.st_size == 0)


_FULL_FOLDER = "the target folder is not empty (overwrite: refuse)"


def _restore_target(
    spec: dict[str, Any], occupied: Callable[[str], bool], refusal: str
) -> tuple[str, str]:
    """A restore job's (point, target), checked: a full point id and an
    absolute target, which `overwrite: refuse` wants unoccupied."""
    point, target = str(spec.get("point", "")), str(spec.get("target", ""))
    if len(point) != 64 or not os.path.isabs(target):
        raise UsageError("the restore job is malformed (point, target)")
    if spec.get("overwrite") == "refuse" and occupied(target):
        raise UsageError(refusal)
    return point, target


def _format(spec: dict[str, Any]) -> str:
    """An image or VM restore job's format (raw unless it says qcow2)."""
    try:
        return restore_format(spec) or "raw"
    except UsageError:
        raise UsageError("the restore job is malformed (format)") from None


def _full_folder(path: str) -> bool:
    return os.path.isdir(path) and bool(os.listdir(path))


def _strings(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str)]


def _line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:1000]


def _progress_doc(p: Progress) -> dict[str, Any]:
    return {
        "files": p.files_done,
        "files_total": p.files_total,
        "bytes": p.bytes_done,
        "bytes_total": p.bytes_total,
        "bytes_added": p.bytes_added,
        "rate": int(p.rate),
        "errors": p.errors,
    }


def open_runner(config_path: str, servers: list[str] | None = None) -> AgentRunner:
    """A runner over the agent config at `config_path` (its servers, or
    `servers`); close its `client` when done."""
    from strongroom.remote.client import split_servers

    config = AgentConfig.load(config_path)
    urls = split_servers(servers) if servers else config.servers
    return AgentRunner(config, Client(urls, config.bearer, ca_cert=config.ca_cert))
