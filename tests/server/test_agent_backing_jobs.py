"""An image job of a qcow2 with a backing file, run by `strongroom agent run
--once` against a real server: without `allow_backing` the agent refuses to
read the file the image names (the job fails with the CLI's line); with it
(`backup --image TOP --allow-backing`) the point holds the whole disk,
backing data included, restored byte for byte by a restore job. The
`overlay` tracker's first point of a new overlay builds on the point of its
backing image (the intake takes that parent) and reads only the overlay's
own clusters. The spec checks themselves are in test_agent_image_specs.py."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.images import QEMU, qemu_io, run, to_raw
from tests.server.test_agent_image_jobs import _job, _run_once
from tests.server.test_agents_protect import served

pytestmark = QEMU


def test_a_backing_file_is_read_only_when_the_job_allows_it(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
    qemu_io(base, "write -P 0x11 0 3M")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    qemu_io(top, "write -P 0x22 1M 64k")
    with served(cli, cli_env, tmp_path) as site:
        http = site.http
        spec = {"kind": "image", "source": str(top)}
        refused = _job(http, "backup", spec)
        allowed = _job(http, "backup", {**spec, "allow_backing": True})
        rc, ran, err = _run_once(site)
        oks = {r["id"]: r["ok"] for r in ran}
        assert oks == {refused: False, allowed: True}, (ran, err)
        line = http.get(f"/api/v1/jobs/{refused}").json()["outcome"]
        assert "names backing file" in line and "--allow-backing" in line
        point = next(r["point"] for r in ran if r["id"] == allowed)
        target = tmp_path / "restored.img"
        _job(http, "restore", {"point": point, "target": str(target)})
        rc, ran, err = _run_once(site)
        assert rc == 0 and [r["ok"] for r in ran] == [True], (ran, err)
        assert target.read_bytes() == to_raw(top, tmp_path / "top.raw").read_bytes()


def test_an_overlay_job_builds_on_the_point_of_its_backing_image(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "8M")
    qemu_io(base, "write -P 0x11 0 6M")
    with served(cli, cli_env, tmp_path) as site:
        http = site.http
        _job(http, "backup", {"kind": "image", "source": str(base)})
        rc, ran, err = _run_once(site)
        assert rc == 0 and [r["ok"] for r in ran] == [True], (ran, err)
        base_point = ran[0]["point"]
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
        qemu_io(top, "write -P 0x22 1M 64k")
        spec = {"kind": "image", "source": str(top), "allow_backing": True}
        _job(http, "backup", {**spec, "changed_since": "overlay"})
        rc, ran, err = _run_once(site)
        assert rc == 0 and [r["ok"] for r in ran] == [True], (ran, err)
        point = ran[0]["point"]
        docs = {p["id"]: p for p in http.get("/api/v1/points").json()}
        assert docs[point]["parent"] == base_point, docs[point]
        assert docs[point]["summary"]["tracker"] == "overlay", docs[point]
        assert docs[point]["summary"]["bytes_read"] == 1 << 20  # the one block of its cluster
        target = tmp_path / "restored.img"
        _job(http, "restore", {"point": point, "target": str(target)})
        rc, ran, err = _run_once(site)
        assert rc == 0 and [r["ok"] for r in ran] == [True], (ran, err)
        assert target.read_bytes() == to_raw(top, tmp_path / "top.raw").read_bytes()
