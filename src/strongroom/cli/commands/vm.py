"""strongroom vm: the cluster's VMs (backup --vm and restore --vm live with backup/restore)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict

import click

from strongroom.cli.context import App, pass_app
from strongroom.cli.output import human_bytes
from strongroom.config import VmSpec
from strongroom.errors import StrongroomError, UsageError
from strongroom.model.names import printable
from strongroom.services.session import LockMode
from strongroom.services.vm_backup import VmBackupResult, backup_vm
from strongroom.services.vms import vm_status
from strongroom.types import ProgressCallback


def vm_spec(app: App, name: str) -> VmSpec:
    spec = app.settings.vms.get(name)
    if spec is None:
        known = ", ".join(sorted(app.settings.vms)) or "none"
        raise UsageError(
            f"no VM {name!r} in the configuration (known: {known}); describe it in a [vm.{name}] "
            "table of the config file"
        )
    return spec


def backup_vm_cmd(
    app: App,
    names: list[str],
    changed_since: str,
    tags: list[str],
    server: tuple[tuple[str, ...], str | None] | None = None,
) -> None:
    """Back up each VM in turn in one repository session (one start-up for a
    cluster), or (`server`: the `--server` URLs and `--agent-config`) through
    the backup server as a node of the machine's cluster. A VM that fails
    (busy, unreachable) is reported and the others still run; the exit code
    is then that of the last failure."""
    out = app.out
    if names == ["all"]:
        names = sorted(app.settings.vms)
        if not names:
            raise UsageError("no VM is configured: describe them in [vm.NAME] tables")
    specs = [vm_spec(app, name) for name in names]  # all known before any runs
    failed: StrongroomError | None = None
    with ExitStack() as stack:
        if server is None:
            repo = stack.enter_context(app.repository(LockMode.SHARED))

            def run(spec: VmSpec, progress: ProgressCallback) -> VmBackupResult:
                return backup_vm(
                    repo, spec, changed_since=changed_since, tags=tags, progress=progress,
                    limit_read=app.settings.limit_read,
                )  # fmt: skip
        else:
            from strongroom.services.agent_backup import open_agent
            from strongroom.services.agent_vms import backup_vm_through_server

            config, store = stack.enter_context(open_agent(server[1], list(server[0])))

            def run(spec: VmSpec, progress: ProgressCallback) -> VmBackupResult:
                before = asdict(store.traffic)
                result = backup_vm_through_server(
                    store,
                    spec,
                    block_size=config.repository.block_size,
                    changed_since=changed_since,
                    tags=tags,
                    progress=progress,
                    limit_read=app.settings.limit_read,
                )
                t = {k: v - before[k] for k, v in asdict(store.traffic).items()}
                result.traffic = t
                out.notice(
                    f"through the server: {t['asked']} chunk ids asked, {t['missing']} missing, "
                    f"{t['bundles']} bundles ({human_bytes(t['bytes_sent'])}) sent"
                )
                return result

        for spec in specs:
            try:
                with out.progress("backup") as progress:
                    result = run(spec, progress)
            except StrongroomError as err:
                if len(specs) == 1:
                    raise
                out.error(f"VM {spec.name}: {err}")
                failed = err
                continue
            _report(app, spec.name, result)
    if failed is not None:
        raise SystemExit(failed.exit_code)


def dry_run_vm_cmd(
    app: App,
    names: list[str],
    changed_since: str,
    server: tuple[tuple[str, ...], str | None],
) -> None:
    """`backup --vm NAME --dry-run` through the server: each VM's disks read
    and compared with its parent point, the server asked which chunks it
    lacks; nothing sent, no point, the guest and its bitmaps untouched."""
    from strongroom.services.agent_backup import open_agent
    from strongroom.services.agent_dry_runs import dry_run_vm_through_server

    out = app.out
    if names == ["all"]:
        names = sorted(app.settings.vms)
        if not names:
            raise UsageError("no VM is configured: describe them in [vm.NAME] tables")
    specs = [vm_spec(app, name) for name in names]
    with open_agent(server[1], list(server[0])) as (config, store):
        for spec in specs:
            before = asdict(store.traffic)
            with out.progress("backup") as progress:
                found = dry_run_vm_through_server(
                    store, spec, block_size=config.repository.block_size,
                    changed_since=changed_since, progress=progress,
                    limit_read=app.settings.limit_read,
                )  # fmt: skip
            traffic = {k: v - before[k] for k, v in asdict(store.traffic).items()}
            for warning in found.warnings:
                out.warn(warning)
            lines = [
                f"disk {d['disk']}: {human_bytes(int(d['size']))}, tracker {d['tracker']}; "
                f"read {human_bytes(int(d['bytes_read']))}, "
                f"changed {human_bytes(int(d['bytes_changed']))}"
                for d in found.disks
            ]
            lines.append(
                f"VM {printable(spec.name)}: would add {human_bytes(found.data_added)} "
                f"({found.blocks_new} new blocks); dry run in {found.seconds:.1f} s, "
                "nothing sent, no point saved"
            )
            out.summary(
                {
                    "vm": spec.name, "point_id": None, "dry_run": True, "host": found.host,
                    "parent": found.parent, "disks": found.disks,
                    "blocks_new": found.blocks_new, "data_added": found.data_added,
                    "seconds": round(found.seconds, 3), "traffic": traffic,
                },
                lines,
            )  # fmt: skip


def _report(app: App, name: str, result: VmBackupResult) -> None:
    out = app.out
    for warning in result.warnings:
        out.warn(warning)
    point = result.point
    out.summary(
        {
            "vm": name,
            "point_id": point.id,
            "parent": point.parent,
            "consistency": result.consistency,
            "quiesce": result.quiesce_note,
            "host": point.host,
            "instant": point.summary.get("instant"),
            "disks": result.disks,
            **{k: point.summary.get(k) for k in ("bytes_read", "bytes_changed")},
            "data_added_stored": point.summary.get("data_added_stored"),
            "seconds": round(result.seconds, 3),
            **({"traffic": result.traffic} if result.traffic is not None else {}),
        },
        _describe(name, result),
    )


def _describe(name: str, result: VmBackupResult) -> Iterator[str]:
    for d in result.disks:
        note = f" ({d['tracker_note']})" if d.get("tracker_note") else ""
        read, changed = human_bytes(int(d["bytes_read"])), human_bytes(int(d["bytes_changed"]))
        yield (
            f"disk {d['disk']}: {human_bytes(int(d['size']))}, tracker {d['tracker']}{note}; "
            f"read {read}, changed {changed}, stored {human_bytes(int(d['data_added_stored']))}"
        )
    yield (
        f"point {result.point.short_id} of VM {name} saved ({result.consistency}) "
        f"in {result.seconds:.1f} s"
    )


@click.group()
def vm() -> None:
    """The cluster's VMs, as described in the config file's [vm.NAME] tables."""


@vm.command("list")
@pass_app
def list_vms(app: App) -> None:
    """List the configured VMs and their disks."""
    out = app.out
    specs = list(app.settings.vms.values())
    if out.json:
        out.document([{"vm": s.name, "disks": s.disks, "qmp": s.qmp, "nbd": s.nbd} for s in specs])
        return
    out.table(
        ["VM", "Disks", "QMP", "NBD"], [(s.name, ", ".join(s.disks), s.qmp, s.nbd) for s in specs]
    )


@vm.command("status")
@click.argument("names", nargs=-1)
@pass_app
def status(app: App, names: tuple[str, ...]) -> None:
    """Per VM: last point (when, which host, tracker, bytes changed and sent) and
    the lease holder while a backup runs."""
    out = app.out
    specs = [vm_spec(app, n) for n in names] if names else list(app.settings.vms.values())
    with app.repository(LockMode.NONE) as repo:
        found = vm_status(repo, specs)
    if out.json:
        out.document([s.as_dict() for s in found])
        return
    rows = []
    for s in found:
        doc = s.as_dict()
        last = doc["last_point"]
        holder = doc["lease_holder"]
        rows.append(
            (
                s.name,
                str(s.points),
                "" if last is None else f"{last['id'][:8]} {last['time'][:19]}",
                "" if last is None else printable(last["host"]),
                "" if last is None else printable(str(last["tracker"])),
                "" if last is None else human_bytes(int(last["bytes_changed"])),
                "" if last is None else human_bytes(int(last["bytes_sent"])),
                "" if last is None else printable(last["consistency"]),
                "" if holder is None else f"{printable(holder['host'])} pid {holder['pid']}",
            )
        )
    out.table(
        [
            "VM",
            "Points",
            "Last point",
            "Host",
            "Tracker",
            "Changed",
            "Sent",
            "Consistency",
            "Backing up",
        ],
        rows,
    )
