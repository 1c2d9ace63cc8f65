"""An image job of a qcow2 with a backing file, run by `strongroom agent run
--once` against a real server: without `allow_backing` the agent refuses to
read the file the image names (the job fails with the CLI's line); with it
(`backup --image TOP --allow-backing`) the point holds the whole disk,
backing data included, restored byte for byte by a restore job. The
`overlay` tracker is refused when queued. The spec checks themselves are in
test_agent_image_specs.py."""

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
        overlay = http.post("/api/v1/jobs", json={"kind": "backup", "machine": "web1",
                            "spec": {**spec, "changed_since": "overlay"}})  # fmt: skip
        assert overlay.status_code == 400 and "not offered" in overlay.text
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
