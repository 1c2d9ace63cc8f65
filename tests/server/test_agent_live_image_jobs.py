"""A live disk's image jobs through `strongroom agent run --once` and a real
server: a qcow2 run by a qemu-storage-daemon with the user's persistent
dirty bitmap, backed up by jobs naming its QMP socket, block node and the
bitmap by name (`backup --image NBD-URI --qmp SOCKET --node NODE
--changed-since bitmap:NAME --server`): the second point holds only the
changed blocks, its snapshot overlay in the job's `scratch` folder (made by
the agent, empty again after); an image restore job with `format: qcow2` writes a qcow2
that `qemu-img compare` finds equal to the disk when it was backed up. Bad values of these
fields are refused with 400 before anything is queued."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import CliRunner
from tests.helpers.block_servers import StorageDaemon
from tests.helpers.images import BS, MiB, assert_same_image, needs, run, touched
from tests.helpers.listing import points_listing
from tests.server.test_agent_image_jobs import _job, _run_once
from tests.server.test_agents_protect import served

pytestmark = needs("qemu-img", "qemu-io", "qemu-storage-daemon")

WRITES = [(1 * MiB + 512, 4096), (5 * MiB, 128 * 1024)]


def _point(http: httpx.Client, point: str) -> dict[str, Any]:
    got = points_listing(
        lambda: http.get("/api/v1/points").json(),
        lambda found: point in {p["id"] for p in found},
    )
    return next(p for p in got if p["id"] == point)


def test_a_live_disk_by_its_named_bitmap_and_a_qcow2_restore_through_jobs(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", disk, 8 * MiB)
    run("qemu-img", "bitmap", "--add", "-g", BS, disk, "mine")
    daemon = StorageDaemon(disk, tmp_path / "qsd").start()
    try:
        daemon.write("write -P 0x11 0 3M", "write -P 0x12 6M 1M")
        with served(cli, cli_env, tmp_path) as site:
            http = site.http
            live = {"kind": "image", "source": daemon.nbd_uri, "qmp": str(daemon.qmp),
                    "node": daemon.NODE, "changed_since": "bitmap:mine"}  # fmt: skip
            for bad in (
                {**live, "qmp": "qmp.sock"},
                {**live, "qmp": "/run/../qmp.sock"},
                {**live, "node": "-x"},
                {**live, "scratch": "scratch"},
                {**live, "scratch": "/tmp/../etc"},
                {**live, "changed_since": "bitmap:a b"},
                {**live, "source": "/var/lib/disk.qcow2"},  # with qmp: the NBD URI
                {"kind": "image", "source": daemon.nbd_uri, "node": daemon.NODE},
            ):
                answer = http.post("/api/v1/jobs", json={"kind": "backup", "machine": "web1",
                                                         "spec": bad})  # fmt: skip
                assert answer.status_code == 400, (bad, answer.text)

            first_job = _job(http, "backup", live)
            rc, ran, err = _run_once(site)
            assert rc == 0 and [(r["id"], r["ok"]) for r in ran] == [(first_job, True)], err
            first = _point(http, ran[0]["point"])
            assert first["summary"]["tracker"] == "full" and first["host"] == "web1"
            assert "mine" not in daemon.bitmap_names()  # adopted, then rotated to mine.TOKEN
            assert [n for n in daemon.bitmap_names() if n.startswith("mine.")]

            v1 = daemon.snapshot(tmp_path / "v1.raw")
            target = tmp_path / "restored.qcow2"
            bad = {"point": first["id"], "target": str(target), "format": "vhd"}
            refused = http.post("/api/v1/jobs", json={"kind": "restore", "machine": "web1",
                                                      "spec": bad})  # fmt: skip
            assert refused.status_code == 400 and "format is" in refused.text

            # one run: the first point restored as a qcow2, the changed disk backed up
            daemon.write(*(f"write -P 0x21 {o} {n}" for o, n in WRITES))
            restore = _job(http, "restore", {**bad, "format": "qcow2"})
            scratch = tmp_path / "scratch"  # the snapshot overlay's folder (--scratch)
            second_job = _job(http, "backup", {**live, "scratch": str(scratch)})
            rc, ran, err = _run_once(site)
            assert rc == 0 and {r["id"]: r["ok"] for r in ran} == {
                restore: True,
                second_job: True,
            }, err
            (restored,) = [r for r in ran if r["id"] == restore]
            assert restored["outcome"].endswith("(qcow2)")
            assert_same_image(v1, target, "raw", "qcow2")
            assert scratch.is_dir() and list(scratch.iterdir()) == []  # made, used, cleaned
            (made,) = [r for r in ran if r["id"] == second_job]
            second = _point(http, made["point"])
            summary = second["summary"]
            dirty = touched(WRITES, summary["block_size"])
            assert second["parent"] == first["id"] and summary["tracker"] == "bitmap", summary
            assert summary["blocks_examined"] == summary["blocks_changed"] == len(dirty)
            assert summary["bytes_read"] <= len(dirty) * summary["block_size"]
    finally:
        daemon.stop()
