"""The protection service: `strongroom protect --policy NAME` in the foreground.

Every source of the chosen policies runs in its own thread, on the policy's
cycle (start to start), so a slow source never delays another's cycle:

- a **tree** has its tracker as a child process (`strongroom journal run TREE
  --state DIR`), restarted whenever it is found dead (a restart marks the
  journal out of sync, as designed: the next cycle compares in full). A cycle
  takes the journal's sequence S inside the quiesced instant (pre hooks, the
  freeze of the tree's file system, S, thaw, post hooks) and then reads the
  changed files while writers run (`journal_cycle`, with its re-check). On a
  btrfs subvolume the instant is a read-only snapshot instead of the freeze
  (pre hooks, S, snapshot, post hooks); the changed files are read from it and
  it is deleted after the cycle, whatever happened (sources/btrfs.py). On a
  file system with reflinks (XFS, or btrfs where no snapshot fits) a
  journal-driven cycle makes reflink copies of the changed files inside the
  hooks' hold instead (no fsfreeze: it would block them) and reads those
  files from the copies (sources/reflink.py);
- a **volume** (`volume attach`ed) runs `volume_cycle` with the quiesce
  engine plugged in around its QMP transaction;
- a **VM** runs `backup_vm` (its bitmaps, one QMP transaction for all its
  disks) with the quiesce engine plugged in around that transaction: the
  policy's pre hooks, the guest freeze (its `[vm.NAME]` guest agent or
  commands, under the engine's watchdog), the transaction, the thaw, the
  post hooks;
- a volume of a policy with a VHD chain `destination` runs `chain_cycle`:
  today's `protect VOLUME --to DEST` cycle on a quiesced view of the volume,
  no repository (no point, no retention: the status record is its history).

Through a backup server (`agent`, `strongroom protect --policy NAME --server
URL`): trees, volumes and VMs (a VM's points are its cluster's:
`check_through_server` refuses a VM source on a machine in no cluster before
anything starts); a volume of a policy with
a VHD chain destination ships there exactly as without a server (the chain is
the machine's to write; nothing goes to the server). Else each cycle opens the
agent's store, takes its parent among the machine's own points and backs up
through the server (services/agent_backup.py; a volume's cycle over a
`VolumeTarget` of the agent's store); it applies no retention: the
source's retention is registered with the server once per run, before its
first point, as a forget schedule of the machine's points (a refused or
failed registration fails the cycle: no point without its retention).

The first cycle of a source is its first instant (a full point: no parent,
or the tracker just started). After a point is committed: retention
(`apply_retention`), then the status record (`record_cycle`). A cycle that
fails records no point: its error goes to the status record and the log, and
the next cycle sends what is missing (the journal keeps its records, the
bitmaps stay).

Stopping (`stop` set: SIGTERM/SIGINT in the CLI): each source ends after its
current step (a running backup is cancelled and recorded as failed, nothing
committed; a freeze always ends, the quiesce engine guarantees it); the
trackers are stopped (SIGTERM, then SIGKILL after 10 s).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial

from strongroom.config import Settings, VmSpec, child_environment
from strongroom.errors import StrongroomError, UsageError
from strongroom.model.blockmap import BlockMap
from strongroom.model.kinds import PointKind
from strongroom.model.point import RecoveryPoint, at_instant, now
from strongroom.protect.cycles import ProtectOptions
from strongroom.protect.freeze import FsFreeze, GuestFreeze, mount_of
from strongroom.protect.hooks import Hook, build_hook
from strongroom.protect.policy import Policy, PolicySource, SourceKind
from strongroom.protect.quiesce import Quiescing, quiesce
from strongroom.protect.source_points import PROTECT_TAG, protect_summary, source_points
from strongroom.protect.status_record import CycleStatus, record_cycle
from strongroom.repository.repo import Repository
from strongroom.services.agent_backup import (
    AgentConfig,
    RemoteStore,
    agent_points,
    backup_through_server,
)
from strongroom.services.agent_images import adopt_parent
from strongroom.services.backup import BackupRequest, BackupResult, backup_files
from strongroom.services.chain_cycle import chain_cycle
from strongroom.services.journal import BackupRun, journal_cycle, journal_folder, take_sequence
from strongroom.services.points import list_points
from strongroom.services.policies import load_policies
from strongroom.services.protect import chain_destination, default_state_folder
from strongroom.services.retention import apply_retention
from strongroom.services.session import LockMode, open_repository
from strongroom.services.vm_backup import VmBackupResult, VmQuiesce, backup_vm
from strongroom.services.vms import vm_path
from strongroom.services.volume_cycle import VolumeTarget, volume_cycle
from strongroom.sources.btrfs import TreeSnapshot, ignored_folder, nested_subvolumes, plan_snapshot
from strongroom.sources.reflink import ReflinkCopies, plan_copies
from strongroom.sources.volume_state import load_state
from strongroom.trackers.journal import INFO, OUT_OF_SYNC, Journal

log = logging.getLogger("strongroom.protect.service")

OpenRepository = Callable[[], AbstractContextManager[Repository]]
TRACKER_STOP_WAIT = 10.0  # seconds a tracker gets to stop cleanly before SIGKILL
TRACKER_READY_WAIT = 10.0  # seconds a starting tracker gets to set its watches
TRACKER_RESTART_MAX = 60.0  # longest wait before starting again a tracker that failed to start
CHAIN_STATE = "chain"  # the VHD mode's state folder, inside the source's
_TICK = 0.5  # how often a waiting source checks its tracker and the stop event


@dataclass
class CycleOutcome:
    """What one cycle did, for the log and the CLI's line per cycle."""

    source: str
    started: datetime
    finished: datetime
    point: RecoveryPoint | None = None
    consistency: str = ""
    reason: str = ""
    error: str = ""
    full: bool = False  # the full comparison ran (first instant, out of sync)
    bytes_shipped: int = 0
    bytes_changed: int = 0
    forgotten: list[str] = field(default_factory=list)
    in_sync: bool = True
    sync_reason: str = ""
    shipped_to: str = ""  # a VHD chain destination: the cycle's VHD ("": none, no change)

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat(),
            "point": self.point.id if self.point else None,
            "consistency": self.consistency,
            "reason": self.reason,
            "error": self.error,
            "full": self.full,
            "bytes_shipped": self.bytes_shipped,
            "bytes_changed": self.bytes_changed,
            "forgotten": self.forgotten,
            "tracker_in_sync": self.in_sync,
            "shipped_to": self.shipped_to,
        }


Report = Callable[[CycleOutcome], None]


def repository_opener(location: str, password: bytes) -> OpenRepository:
    """Each cycle opens the repository for itself (a SHARED lock held for the
    cycle only: `prune` may run between cycles)."""
    return lambda: open_repository(location, password, lock=LockMode.SHARED)


def select_policies(settings: Settings, names: list[str]) -> list[Policy]:
    """The policies to run (every one when `names` is empty), checked with
    their sources present now. UsageError for an unknown name or none at all."""
    policies = load_policies(settings, check_paths=True)
    if not names:
        if not policies:
            raise UsageError("no [protect.NAME] policy in the config file: 'strongroom policy add'")
        return list(policies.values())
    missing = [n for n in names if n not in policies]
    if missing:
        raise UsageError(f"no policy {missing[0]} in the config file ('strongroom policy list')")
    return [policies[n] for n in dict.fromkeys(names)]


def check_runnable(policies: list[Policy], settings: Settings) -> None:
    """Refuse what the service cannot run (before anything starts)."""
    for policy in policies:
        for source in policy.sources:
            if policy.destination is not None and source.kind != SourceKind.VOLUME:
                raise UsageError(
                    f"policy {policy.name}: {source.spec}: a VHD chain destination takes "
                    "volumes only (trees and VMs go to the repository)"
                )
            if source.kind == SourceKind.VOLUME and load_state(source.path) is None:
                log.warning(
                    "%s: %s is not attached: its cycles fail until it is", source.name, source.path
                )
            if source.kind == SourceKind.VM and source.path not in settings.vms:
                raise UsageError(f"policy {policy.name}: no [vm.{source.path}] table")


def check_through_server(policies: list[Policy], cluster: Callable[[], str]) -> None:
    """Through a server the service protects trees, volumes and VMs into the
    server's repository, and volumes into a VHD chain destination (a folder
    or S3 location: the machine writes it itself, the server is not
    involved). A VM source needs the machine in a VM cluster (its points are
    the cluster's): `cluster` names it or raises UsageError, asked once and
    only when a policy has a VM source."""
    for policy in policies:
        for source in policy.sources:
            if source.kind == SourceKind.VM:
                try:
                    cluster()
                except UsageError as err:
                    raise UsageError(f"policy {policy.name}: {source.spec}: {err}") from None
                return


def register_source_retention(store: RemoteStore, policy: Policy, source: PolicySource) -> None:
    """Hand the source's retention to the server (an agent never deletes):
    it keeps it as a forget schedule of this machine's points of the tree
    (services/agent_retention.py), run every cycle (at least every minute)."""
    r = policy.retention
    path = os.path.abspath(source.path)
    if source.kind == SourceKind.VOLUME:  # its points' `paths`: services/volume_cycle.py
        path = f"volume:{os.path.realpath(source.path)}"
    elif source.kind == SourceKind.VM:  # the cluster's points of the VM (services/vms.py)
        path = vm_path(source.path)
    store.client.post_json(
        "/api/v1/agent/retention",
        {
            "source": source.name,
            "path": path,
            "every": max(1, round(policy.cycle)),
            "keep_last": r.keep_last,
            "keep_within": math.ceil(r.keep_within),  # a fraction never becomes 0
            "hourly": r.hourly,
            "daily": r.daily,
            "weekly": r.weekly,
        },
    )


@dataclass
class AgentTarget:
    """The service as an enrolled agent: `open` gives the agent's config and
    a store over its server(s) for one cycle (services/agent_backup.py)."""

    open: Callable[[], AbstractContextManager[tuple[AgentConfig, RemoteStore]]]


def _config_env() -> dict[str, str]:
    config = os.environ.get("STRONGROOM_CONFIG")
    return {"STRONGROOM_CONFIG": config} if config else {}


class TrackerChild:
    """A tree's tracker process: started, restarted when found dead, stopped."""

    def __init__(self, tree: str, state: str) -> None:
        self.tree, self.state = tree, state
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._backoff = 0.0  # after a start that failed: seconds before the next one
        self._not_before = 0.0

    def ensure(self) -> None:
        """Start the tracker unless it runs. One that ended before it watched
        the tree (the tree is gone, another tracker holds the journal) is
        started again after a delay doubling up to TRACKER_RESTART_MAX, not at
        every check (the cycles meanwhile find no tracker of ours: see take_sequence)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        if time.monotonic() < self._not_before:
            return
        try:
            ready = self._start()
        except (StrongroomError, OSError) as err:
            log.error("%s: cannot start the journal tracker: %s", self.tree, _line(err))
            ready = False
        self._backoff = 0.0 if ready else min(max(1.0, 2 * self._backoff), TRACKER_RESTART_MAX)
        self._not_before = time.monotonic() + self._backoff

    def _start(self) -> bool:
        if self.proc is not None:
            self.restarts += 1
            log.warning(
                "%s: the journal tracker exited (%s): restarting it (next cycle: full comparison)",
                self.tree,
                self.proc.returncode,
            )
        Journal(journal_folder(self.state)).create()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "strongroom",
                "journal",
                "run",
                self.tree,
                "--state",
                self.state,
            ],
            stdin=subprocess.DEVNULL,
            # No secrets (the tracker needs none), but the same config file:
            # the CLI reads it at start and a default one might not parse.
            env=child_environment(_config_env()),
            start_new_session=False,  # one control group with the service (systemd stops both)
        )
        return self._wait_ready()

    def _wait_ready(self) -> bool:
        """Until the tracker watches the tree (it then records its pid), so the
        first cycle's barrier is answered at once instead of during a freeze.
        False when it ended first."""
        info = os.path.join(journal_folder(self.state), INFO)
        deadline = time.monotonic() + TRACKER_READY_WAIT
        while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
            try:
                with open(info, encoding="utf-8") as f:
                    if json.load(f).get("pid") == self.proc.pid:
                        return True
            except (OSError, ValueError, AttributeError):
                pass
            time.sleep(0.02)
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TRACKER_STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class SourceRunner:
    """One source's loop: a cycle every `cycle` seconds until `stop`."""

    def __init__(
        self,
        policy: Policy,
        source: PolicySource,
        settings: Settings,
        open_repo: OpenRepository,
        stop: threading.Event,
        report: Report,
        state_folder: Callable[[str], str] = default_state_folder,
        max_cycles: int | None = None,
        agent: AgentTarget | None = None,
    ) -> None:
        self.policy, self.source, self.settings = policy, source, settings
        self.agent = agent  # through a backup server, as its enrolled agent
        self.retention_registered = False
        self.open_repo, self.stop, self.report = open_repo, stop, report
        self.state = str(state_folder(source.name))
        self.max_cycles = max_cycles
        self.tracker = (
            TrackerChild(source.path, self.state) if source.kind == SourceKind.TREE else None
        )
        self.outcomes: list[CycleOutcome] = []
        self.no_reflink = ""  # why the tree's file system makes no reflink copies (once known)

    def run(self) -> None:
        os.makedirs(self.state, exist_ok=True)
        try:
            self._loop()
        finally:
            if self.tracker is not None:
                self.tracker.stop()

    def _loop(self) -> None:
        cycle = self.policy.cycle
        next_start = time.monotonic()
        if self.tracker is not None:
            self.tracker.ensure()
        while not self.stop.is_set():
            outcome = self.cycle_once()
            self.outcomes.append(outcome)
            self.report(outcome)
            if self.max_cycles is not None and len(self.outcomes) >= self.max_cycles:
                return
            next_start += cycle
            if next_start < time.monotonic():  # late: start the next one now, skip the missed
                next_start = time.monotonic()
            while not self.stop.is_set():
                left = next_start - time.monotonic()
                if left <= 0:
                    break
                if self.tracker is not None:
                    self.tracker.ensure()
                self.stop.wait(min(_TICK, left))
            if self.tracker is not None and not self.stop.is_set():
                self.tracker.ensure()

    def cycle_once(self) -> CycleOutcome:
        outcome = CycleOutcome(self.source.name, now(), now())
        try:
            if self.policy.destination is not None:
                self._chain(self.policy.destination, outcome)
            else:
                self._into_repository(outcome)
        except Exception as err:  # the service outlives a cycle's failure, any failure
            if not isinstance(err, StrongroomError | OSError):
                log.exception("%s: the cycle failed", self.source.name)
            outcome.point = None
            outcome.error = _line(err)
            if self.stop.is_set():
                outcome.error = f"the service stopped during the cycle ({outcome.error})"
            log.error("%s: cycle failed: %s", self.source.name, outcome.error)
        outcome.finished = now()
        self._sync_state(outcome)
        try:
            self._record(outcome)
        except (StrongroomError, OSError) as err:  # a report: never the end of the source
            log.error("%s: cannot write the status record: %s", self.source.name, _line(err))
        return outcome

    def _into_repository(self, outcome: CycleOutcome) -> None:
        if self.agent is not None:
            self._through_server(self.agent, outcome)
            return
        with self.open_repo() as repo:
            self._run_kind(repo, outcome)
            if outcome.point is not None:
                result = apply_retention(repo, self.source.name, self.policy.retention)
                outcome.forgotten = result.forgotten

    def _through_server(self, agent: AgentTarget, outcome: CycleOutcome) -> None:
        """A tree's, a volume's or a VM's cycle as the enrolled agent: the
        machine's own points (a VM's: its cluster's) on the server, chunks and
        the point sent to it, no retention here (the server's forget schedule
        registered for this source applies it)."""
        with agent.open() as (config, store):
            if not self.retention_registered:
                register_source_retention(store, self.policy, self.source)
                self.retention_registered = True
            if self.source.kind == SourceKind.VOLUME:
                self._volume(agent_block_target(store, config), outcome)
                return
            if self.source.kind == SourceKind.VM:
                self._vm_through_server(store, config, outcome)
                return
            own = source_points(agent_points(store), self.source.name)

            def run(req: BackupRequest, cancel: threading.Event | None) -> BackupResult:
                return backup_through_server(store, config.machine, req, cancel=cancel)

            self._tree(own, run, outcome)

    def _record(self, outcome: CycleOutcome) -> None:
        record_cycle(
            self.state,
            self.source.name,
            CycleStatus(
                started=outcome.started,
                finished=outcome.finished,
                ok=not outcome.error,
                point=outcome.point.id if outcome.point is not None else None,
                bytes_shipped=outcome.bytes_shipped,
                bytes_changed=outcome.bytes_changed,
                consistency=outcome.consistency,
                reason=outcome.reason[:1000],
                error=outcome.error[:1000],
            ),
            in_sync=outcome.in_sync,
            sync_reason=outcome.sync_reason[:1000],
        )

    def _run_kind(self, repo: Repository, outcome: CycleOutcome) -> None:
        kind = self.source.kind
        if kind == SourceKind.TREE:
            # The parent is this source's own newest point: with two policies on
            # one tree, the newest point of the tree may be the other source's,
            # which its journal does not continue (a full comparison every cycle).
            own = source_points(list_points(repo), self.source.name)

            def run(req: BackupRequest, cancel: threading.Event | None) -> BackupResult:
                return backup_files(repo, req, cancel=cancel)

            self._tree(own, run, outcome)
        elif kind == SourceKind.VOLUME:
            self._volume(repo, outcome)
        else:
            self._vm(repo, outcome)

    def _hooks(self) -> list[Hook]:
        return [build_hook(h) for h in self.policy.hooks]

    # --- a directory tree: the change journal ------------------------------------

    def _tree(self, own: list[RecoveryPoint], run: BackupRun, outcome: CycleOutcome) -> None:
        snap, note = self._snapshot_plan()
        if snap is not None:
            try:
                snap.delete()  # what a killed cycle of this source left behind
                self._tree_cycle(run, outcome, own, snap, note)
            finally:
                snap.delete()
            return
        copies = self._copies_plan(own)
        try:
            self._tree_cycle(run, outcome, own, None, note if copies is None else "", copies)
        finally:
            if copies is not None:
                copies.delete()

    def _copies_plan(self, own: list[RecoveryPoint]) -> ReflinkCopies | None:
        """This cycle's reflink copies, prepared (None: the tree is read live).
        Only a journal-driven cycle makes them: a full comparison has no list
        of files to copy. What a killed cycle left is deleted either way."""
        copies = None if self.no_reflink else plan_copies(self.source.path, self.source.name)
        if copies is None:
            return None
        journal = Journal(journal_folder(self.state))
        base = journal.read().base
        if journal.flag() is not None or not own or own[-1].summary.get("journal_sequence") != base:
            copies.delete()
            return None
        why = copies.prepare()
        if why:
            self.no_reflink = why
            log.info("%s: read live: %s", self.source.name, why)
            return None
        return copies

    def _snapshot_plan(self) -> tuple[TreeSnapshot | None, str]:
        """The btrfs snapshot this cycle reads from (None: the live tree), and
        why a tree on btrfs is read live."""
        tree = self.source.path
        snap = plan_snapshot(tree, self.source.name)
        if snap is None:
            return None, ""
        try:
            if nested_subvolumes(tree):
                return None, "read live: a btrfs subvolume below the tree is not in its snapshot"
        except StrongroomError as err:
            return None, f"read live: {_line(err)}"
        return snap, ""

    def _tree_cycle(
        self,
        run: BackupRun,
        outcome: CycleOutcome,
        own: list[RecoveryPoint],
        snap: TreeSnapshot | None,
        note: str,
        copies: ReflinkCopies | None = None,
    ) -> None:
        tree, state = self.source.path, self.state
        live = snap is None and copies is None
        target: FsFreeze | None = FsFreeze(tree) if live else None
        notes: list[str] = []  # why the point is crash-consistent anyway
        if live and mount_of(state).mount_point == mount_of(tree).mount_point != "/":
            # The journal's barrier is written in the state folder: frozen with
            # the tree, the tracker could not answer it.
            target = None
            notes.append(f"not frozen: the state folder {state} is on the tree's file system")
        frozen_at = time.time()
        taken: dict[str, object] = {}
        with quiesce(self._hooks(), target, self.policy.freeze_timeout) as q:
            seq = take_sequence(state)
            if snap is not None:  # the instant: atomic by itself, no fsfreeze (it would hang)
                began = time.time()
                snap.take()
                taken = {"kind": "btrfs", "began": began, "ended": time.time()}
            if copies is not None:  # inside the hooks' hold: see sources/reflink.py
                taken, fallback = self._copy_changed(copies, seq)
                if fallback:
                    notes.append(fallback)
                    copies = None
        thawed_at = time.time()
        # Every change made before the snapshot is at or below this one: read up
        # to it, commit S (journal_cycle).
        read_seq = take_sequence(state) if snap is not None else None
        result = q.result
        if copies is not None and result.consistency != "application-consistent":
            notes.append("reflink copies: each file is its own instant (no hook held the writers)")
        reasons = [r for r in (note, *notes, result.reason or "") if r]
        consistency = result.consistency if not notes else "crash-consistent"
        reason = "; ".join(reasons)
        instant = at_instant(result.instant or frozen_at, now())
        request = BackupRequest(
            paths=[tree],
            parent=own[-1].id if own else None,
            tags=[PROTECT_TAG],
            consistency=str(consistency),
            point_time=instant,
            summary_extra={
                "protect": protect_summary(
                    self.source.name,
                    reason,
                    policy=self.policy.name,
                    frozen_at=frozen_at,
                    thawed_at=thawed_at,
                    quiesce=result.summary(),
                    **({"snapshot": taken} if taken else {}),
                )
            },
        )
        inside = ignored_folder(tree)  # the snapshots' and copies' folder
        request.omit = [os.path.join(tree, os.fsdecode(inside))] if inside else []
        if snap is not None:
            request.read_from = snap.read_root
        if copies is not None:
            request.copies, request.copy_folder = copies.recorded(tree), copies.path
        backup, driven = journal_cycle(
            None, tree, state, request, seq=seq, read_seq=read_seq, cancel=self.stop, backup=run
        )
        outcome.point = backup.point
        outcome.consistency, outcome.reason = str(consistency), reason
        outcome.full = not driven
        outcome.bytes_shipped = backup.summary.data_added_stored
        outcome.bytes_changed = backup.summary.bytes_read

    def _copy_changed(self, copies: ReflinkCopies, seq: int) -> tuple[dict[str, object], str]:
        """Reflink the files changed up to `seq`, within the freeze timeout:
        the summary's `snapshot` record, and why the cycle reads live instead."""
        began = time.time()
        changes = Journal(journal_folder(self.state)).changes_up_to(seq)
        if changes is OUT_OF_SYNC:
            copies.delete()
            fallback = "read live: the journal is out of sync (full comparison)"
        else:
            deadline = time.monotonic() + self.policy.freeze_timeout
            fallback = copies.copy(changes, deadline) or ""  # type: ignore[arg-type]
        taken: dict[str, object] = {
            "kind": "reflink",
            "began": began,
            "ended": time.time(),
            "files": len(copies.files),
            "read_live": copies.not_copied,
        }
        return taken, fallback

    # --- a protected volume --------------------------------------------------------

    def _volume(self, repo: Repository | VolumeTarget, outcome: CycleOutcome) -> None:
        hooks, timeout = self._hooks(), self.policy.freeze_timeout

        def engine(mount: str) -> AbstractContextManager[Quiescing]:
            return quiesce(hooks, FsFreeze(mount), timeout)

        result = volume_cycle(
            repo,
            self.source.path,
            quiesce=engine,
            freeze_timeout=timeout,
            cancel=self.stop,
            protect_name=self.source.name,
        )
        outcome.point = result.point
        outcome.consistency = result.consistency
        outcome.reason = str(result.summary.get("consistency_note") or "")
        outcome.full = result.tracker != "bitmap"
        outcome.bytes_shipped = int(result.summary.get("data_added_stored") or 0)
        outcome.bytes_changed = int(result.summary.get("bytes_changed") or 0)

    # --- a volume into a VHD chain ------------------------------------------------------

    def _chain(self, location: str, outcome: CycleOutcome) -> None:
        """Today's `protect VOLUME --to DEST` cycle, in a `chain` folder of the
        source's state folder, its instant quiesced (services/chain_cycle.py)."""
        hooks, timeout = self._hooks(), self.policy.freeze_timeout

        def engine(mount: str) -> AbstractContextManager[Quiescing]:
            return quiesce(hooks, FsFreeze(mount) if mount else None, timeout)

        options = ProtectOptions(name=self.source.name)
        dest = chain_destination(location, self.settings.limit_upload)
        try:
            done = chain_cycle(
                self.source.path,
                dest,
                options,
                os.path.join(self.state, CHAIN_STATE),
                engine,
                timeout,
            )
        finally:
            dest.close()
        result = done.result
        outcome.consistency, outcome.reason = done.consistency, done.reason
        outcome.full = True  # every piece of the view is read and hashed
        outcome.shipped_to = result.location
        outcome.bytes_shipped = result.vhd_bytes
        outcome.bytes_changed = result.bytes_changed
        if result.recovered:
            log.warning("%s: %s", self.source.name, result.recovered)

    # --- a VM ------------------------------------------------------------------------

    def _vm(self, repo: Repository, outcome: CycleOutcome) -> None:
        spec, engine = self._vm_plan()
        result = backup_vm(
            repo, spec, cancel=self.stop, protect_name=self.source.name, quiesce=engine
        )
        self._vm_outcome(result, outcome)

    def _vm_through_server(
        self, store: RemoteStore, config: AgentConfig, outcome: CycleOutcome
    ) -> None:
        """The same cycle into the server: the VM's point is its cluster's, the
        lease is taken through the server (services/agent_vms.py)."""
        from strongroom.services.agent_vms import backup_vm_through_server

        spec, engine = self._vm_plan()
        result = backup_vm_through_server(
            store,
            spec,
            block_size=config.repository.block_size,
            cancel=self.stop,
            protect_name=self.source.name,
            quiesce=engine,
        )
        self._vm_outcome(result, outcome)

    def _vm_plan(self) -> tuple[VmSpec, VmQuiesce]:
        spec = self.settings.vms[self.source.path]
        if self.source.disk:
            spec = _one_disk(spec, self.source.disk)
        hooks, timeout = self._hooks(), self.policy.freeze_timeout

        def engine(guest: GuestFreeze) -> AbstractContextManager[Quiescing]:
            return quiesce(hooks, guest, timeout)

        return spec, engine

    @staticmethod
    def _vm_outcome(result: VmBackupResult, outcome: CycleOutcome) -> None:
        outcome.point = result.point
        outcome.consistency = result.consistency
        outcome.reason = result.reason
        outcome.full = any(d.get("tracker") != "bitmap" for d in result.disks)
        outcome.bytes_shipped = sum(int(d.get("data_added_stored", 0)) for d in result.disks)
        outcome.bytes_changed = sum(int(d.get("bytes_changed", 0)) for d in result.disks)

    def _sync_state(self, outcome: CycleOutcome) -> None:
        """Whether the tracker has every change since the last point, after the cycle.
        A chain's cycle compares every piece's hash: never out of sync."""
        if self.policy.destination is not None:
            return
        try:
            if self.source.kind == SourceKind.TREE:
                doc = Journal(journal_folder(self.state)).status()
                outcome.in_sync = bool(doc["in_sync"])
                outcome.sync_reason = str(doc["reason"] or "")
            elif self.source.kind == SourceKind.VOLUME:
                state = load_state(self.source.path)
                if state is None:
                    outcome.in_sync, outcome.sync_reason = False, "the volume is not attached"
                else:
                    outcome.in_sync, outcome.sync_reason = state.in_sync, state.sync_note
        except (StrongroomError, OSError, ValueError) as err:
            outcome.in_sync, outcome.sync_reason = False, _line(err)


def agent_block_target(store: RemoteStore, config: AgentConfig) -> VolumeTarget:
    """Block points through the server (a protected volume's, the VHD mode's
    `--to-repository` cycles): the machine's own block points of one source,
    the parent's chunks known stored (services/agent_images.py)."""

    def points(identity: str) -> list[RecoveryPoint]:
        return [
            p for p in agent_points(store) if p.kind == PointKind.BLOCK and p.paths == [identity]
        ]

    def adopt(parent: RecoveryPoint, block_map: BlockMap) -> None:
        adopt_parent(store, parent, block_map)

    info = config.repository
    return VolumeTarget(store, info.id, info.block_size, config.machine, points, adopt)


def _one_disk(spec: VmSpec, disk: str) -> VmSpec:
    return replace(spec, disks=[disk])


def run_service(
    settings: Settings,
    policies: list[Policy],
    open_repo: OpenRepository,
    stop: threading.Event,
    report: Report,
    *,
    state_folder: Callable[[str], str] = default_state_folder,
    max_cycles: int | None = None,
    agent: AgentTarget | None = None,
) -> list[SourceRunner]:
    """Run every source of `policies` until `stop` (or `max_cycles` each);
    with `agent`, through the backup server."""
    check_runnable(policies, settings)
    if agent is not None:
        check_through_server(policies, partial(_agent_cluster, agent))
    runners = [
        SourceRunner(p, s, settings, open_repo, stop, report, state_folder, max_cycles, agent)
        for p in policies
        for s in p.sources
    ]
    threads = [
        threading.Thread(target=r.run, name=f"protect-{r.source.name}", daemon=True)
        for r in runners
    ]
    for thread in threads:
        thread.start()
    with _joined(threads):
        for thread in threads:
            while thread.is_alive():
                thread.join(_TICK)
    return runners


def _agent_cluster(agent: AgentTarget) -> str:
    from strongroom.services.agent_vms import machine_cluster

    with agent.open() as (_, store):
        return machine_cluster(store)


@contextlib.contextmanager
def _joined(threads: list[threading.Thread]) -> Iterator[None]:
    try:
        yield
    finally:
        for thread in threads:
            thread.join()


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return " ".join(text[0].split()) if text else type(err).__name__
