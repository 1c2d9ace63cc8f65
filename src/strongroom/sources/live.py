"""A disk in use by a QEMU block layer: a frozen view through QMP, read over NBD.

While writers keep writing to node `node`, strongroom asks the block layer for
a point-in-time view (image fleecing): a temporary qcow2 node whose backing is
the disk, filled by a `blockdev-backup sync=none` job with the old contents of
every block written after the instant. In the same QMP `transaction` the dirty
bitmaps rotate (a new one starts, the previous ones stop), so the bitmap that
the next backup reads begins exactly at this view's instant: no write is
recorded by neither. The temporary node is exported read-only on the block
layer's NBD server, together with the stopped bitmaps.

This is the sequence that Debian's QEMU 7.2 accepts (see the issue notes):
blockdev-add of the fleece node, then the transaction, then block-export-add.
Cleanup runs in reverse and tolerates pieces that never came to be.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from strongroom.errors import SourceError
from strongroom.hostid import host_id
from strongroom.nbd.uri import NbdAddress, format_tcp_uri, format_unix_uri, parse_nbd_uri
from strongroom.sources.block import NbdSource
from strongroom.sources.qemu_img import QEMU_IMG, BitmapInfo, need_tool, run_tool
from strongroom.sources.qmp import QmpClient

log = logging.getLogger(__name__)


# Which pid namespace a token's pid belongs to (hostid.py): only a token of
# ours is judged by its pid.
_HOST_TAG = host_id()[:6]


_TOKEN = re.compile(r"^[0-9]{1,10}-[0-9a-f]{6}-[0-9a-f]{6}$")


def new_token() -> str:
    """PID-HOSTTAG-RANDOM: names the view's QEMU objects and tells who owns them."""
    return f"{os.getpid()}-{_HOST_TAG}-{secrets.token_hex(3)}"


def _owner_dead(tok: str) -> bool:
    pid, _, rest = tok.partition("-")
    host, _, _ = rest.partition("-")
    if host != _HOST_TAG or not pid.isdigit():
        return False  # another host's (or an older format): not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _note(found: dict[str, set[str]], name: str, prefix: str, step: str) -> str | None:
    if not name.startswith(prefix):
        return None
    tok = name[len(prefix) :]
    found.setdefault(tok, set()).add(step)
    return tok


def _export_uri(server: NbdAddress, export: str) -> str:
    if server.unix_path is not None:
        return format_unix_uri(server.unix_path, export)
    return format_tcp_uri(server.host or "127.0.0.1", server.port, export)


@dataclass
class ViewPlan:
    """How a disk's bitmaps rotate at the instant of its view."""

    add: str | None  # bitmap started at the instant
    granularity: int
    disable: list[str] = field(default_factory=list)  # ours that stop recording there


def freeze_together(qmp: QmpClient, disks: Sequence[tuple[LiveDisk, ViewPlan]]) -> float:
    """Freeze every disk at one instant: one QMP `transaction` holds every
    disk's bitmap rotation and copy-before-write job, so the block layer
    applies them between the same two guest writes (all or none). Each disk
    must be prepared (`prepare_view`). Returns the wall-clock time the
    transaction returned."""
    actions: list[dict[str, Any]] = []
    for disk, plan in disks:
        actions += disk.view_actions(plan)
        disk._steps.append("job")  # noted first: see prepare_view
    qmp.execute("transaction", {"actions": actions})
    return time.time()


class LiveDisk:
    """One node of a running block layer (QEMU or qemu-storage-daemon)."""

    def __init__(self, qmp: QmpClient, node: str, nbd_uri: str, scratch: str | None = None):
        self.qmp = qmp
        self.node = node
        self.server = parse_nbd_uri(nbd_uri)
        self.scratch = scratch or tempfile.gettempdir()
        self._info = self._node_info()
        self.size = int(self._info["image"]["virtual-size"])
        self._token = ""
        self._fleece_file = ""
        self._steps: list[str] = []

    def _node_info(self) -> dict[str, Any]:
        nodes = self.qmp.execute("query-named-block-nodes", {"flat": True})
        for n in nodes:
            if n.get("node-name") == self.node:
                return dict(n)
        names = ", ".join(sorted(str(n.get("node-name")) for n in nodes)) or "none"
        raise SourceError(f"block node {self.node!r} not found (nodes: {names})")

    def bitmaps(self) -> list[BitmapInfo]:
        info = self._node_info()
        return [
            BitmapInfo(
                name=str(b["name"]),
                granularity=int(b.get("granularity", 65536)),
                recording=bool(b.get("recording", True)),
                inconsistent=bool(b.get("inconsistent", False)),
            )
            for b in info.get("dirty-bitmaps", []) or []
            if b.get("name")  # anonymous ones belong to block jobs
        ]

    def open_view(
        self,
        add: str | None,
        granularity: int,
        disable: Sequence[str],
        read: Sequence[str],
    ) -> NbdSource:
        """Freeze the disk now; return the frozen view with bitmaps `read` exported."""
        self.prepare_view()
        freeze_together(self.qmp, [(self, ViewPlan(add, granularity, list(disable)))])
        return self.export_view(read)

    def reserve_token(self) -> str:
        """Choose the next view's token now, so it can be recorded (in a lease)
        before anything exists on the block layer under that name."""
        if self._steps:
            raise SourceError(f"a view of {self.node} is already open")
        if not self._token:
            self._token = new_token()
        return self._token

    def prepare_view(self) -> None:
        """Create the fleece node (its file, then the qcow2 node backed by the disk).
        Nothing is frozen yet: `freeze_together` does that, for many disks at once."""
        if self._steps:
            raise SourceError(f"a view of {self.node} is already open")
        self.reap_stale_views()
        tok = self.reserve_token()
        os.makedirs(self.scratch, exist_ok=True)
        self._fleece_file = self.fleece_path(tok)
        # Each step is noted before it is taken: an answer lost to a timeout or
        # an interrupt must not hide the piece from the teardown (which
        # tolerates pieces that never came to be).
        self._steps.append("file")
        run_tool(
            [need_tool(QEMU_IMG), "create", "-q", "-f", "qcow2", self._fleece_file, str(self.size)],
            f"{self._fleece_file}: cannot create the snapshot overlay",
        )
        self._steps.append("node")
        self.qmp.execute(
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": f"sr-fleece-{tok}",
                "file": {"driver": "file", "filename": self._fleece_file},
                "backing": self.node,
            },
        )

    def view_actions(self, plan: ViewPlan) -> list[dict[str, Any]]:
        """This disk's part of the freezing transaction: bitmaps rotate, the
        copy-before-write job starts."""
        tok = self._token
        actions: list[dict[str, Any]] = []
        if plan.add:
            actions.append(
                {
                    "type": "block-dirty-bitmap-add",
                    "data": {
                        "node": self.node,
                        "name": plan.add,
                        # Only qcow2 stores bitmaps; elsewhere the lineage lives
                        # until the block layer restarts (then: "gone", compare).
                        "persistent": self._info.get("drv") == "qcow2",
                        "granularity": plan.granularity,
                    },
                }
            )
        for name in plan.disable:
            actions.append(
                {"type": "block-dirty-bitmap-disable", "data": {"node": self.node, "name": name}}
            )
        actions.append(
            {
                "type": "blockdev-backup",
                "data": {
                    "job-id": f"sr-job-{tok}",
                    "device": self.node,
                    "target": f"sr-fleece-{tok}",
                    "sync": "none",
                    "auto-finalize": True,
                    "auto-dismiss": True,
                },
            }
        )
        return actions

    def export_view(self, read: Sequence[str]) -> NbdSource:
        """Export the frozen view read-only, with the bitmaps `read`."""
        tok = self._token
        export = f"sr-view-{tok}"
        self._steps.append("export")
        self.qmp.execute(
            "block-export-add",
            {
                "type": "nbd",
                "id": export,
                "node-name": f"sr-fleece-{tok}",
                "name": export,
                "writable": False,
                "bitmaps": list(read),
            },
        )
        contexts = [f"qemu:dirty-bitmap:{b}" for b in read]
        return NbdSource(
            _export_uri(self.server, export), contexts, description=f"{self.node} (frozen view)"
        )

    def close_view(self) -> None:
        """Remove the export, stop the job, drop the fleece node and file."""
        tok = self._token
        if not tok:
            return
        steps, self._steps = self._steps, []
        self._teardown(tok, steps, self._fleece_file)
        self._token = ""

    def _teardown(self, tok: str, steps: Iterable[str], fleece_file: str | None) -> None:
        steps = set(steps)
        if "export" in steps and self._try(
            "block-export-del", {"id": f"sr-view-{tok}", "mode": "hard"}
        ):
            try:
                self.qmp.wait_event(
                    "BLOCK_EXPORT_DELETED", lambda d: d.get("id") == f"sr-view-{tok}", timeout=30
                )
            except SourceError as err:
                log.warning("export sr-view-%s: %s", tok, err)
        if "job" in steps and self._try(
            "block-job-cancel", {"device": f"sr-job-{tok}", "force": True}
        ):
            try:
                self.qmp.wait_event(
                    "BLOCK_JOB_CANCELLED",
                    lambda d: d.get("device") == f"sr-job-{tok}",
                    timeout=30,
                )
            except SourceError as err:
                log.warning("job sr-job-%s: %s", tok, err)
        if "node" in steps:
            self._try("blockdev-del", {"node-name": f"sr-fleece-{tok}"})
        if "file" in steps and fleece_file:
            try:
                os.unlink(fleece_file)
            except OSError:
                pass

    def fleece_path(self, tok: str) -> str:
        return os.path.join(self.scratch, f"strongroom-fleece-{tok}.qcow2")

    @property
    def token(self) -> str:
        """The current view's token ("" when none is open)."""
        return self._token

    def reap_stale_views(self, orphans: Iterable[str] = ()) -> list[str]:
        """Tear down the frozen views of backups on this host that died (SIGKILL),
        and the views named by `orphans` (tokens a dead holder of the VM's
        lease recorded: views of another host, known dead).

        A view left running costs the disk's writers a copy of every block
        they overwrite, for ever. The token in each name carries its owner's
        host tag and pid, so views of backups still running, here or on
        another host, are left alone. Returns the tokens reaped."""
        found: dict[str, set[str]] = {}
        files: dict[str, str] = {}
        for export in self.qmp.execute("query-block-exports") or []:
            _note(found, str(export.get("id", "")), "sr-view-", "export")
        for job in self.qmp.execute("query-block-jobs") or []:
            _note(found, str(job.get("device", "")), "sr-job-", "job")
        for node in self.qmp.execute("query-named-block-nodes", {"flat": True}) or []:
            tok = _note(found, str(node.get("node-name", "")), "sr-fleece-", "node")
            if tok:
                # Only ever our own scratch file: the name QEMU reports for a
                # node is whatever whoever added it said, and is never unlinked.
                files[tok] = self.fleece_path(tok)
        reaped = []
        dead = set(orphans)
        for tok, steps in sorted(found.items()):
            if not _TOKEN.match(tok):
                continue  # not a name strongroom makes
            if tok in dead or _owner_dead(tok):
                log.warning("removing the frozen view %s of a backup that died", tok)
                self._teardown(tok, steps | {"file"}, files.get(tok))
                reaped.append(tok)
        return reaped

    def remove_bitmaps(self, names: Iterable[str]) -> None:
        for name in names:
            self._try("block-dirty-bitmap-remove", {"node": self.node, "name": name})

    def _try(self, command: str, arguments: dict[str, Any]) -> bool:
        try:
            self.qmp.execute(command, arguments)
            return True
        except SourceError as err:  # QmpError, or the connection itself failing
            log.warning("cleanup %s: %s", command, err)
            return False
