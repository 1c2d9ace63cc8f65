"""Image points through a real `strongroom server` with the real CLI as the
agent (no repository password in its environment): a qcow2 written with
qemu-io backed up, then its incremental through the image's own dirty bitmap
(the tracker's state stays in the image on the agent; its lineage comes back
from the server in the parent point), restored and exported through the
server, and `qemu-img compare`d with the source."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tests.conftest import CliRunner
from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.images import BS, QEMU, MiB, qemu_io, run
from tests.server.test_server_process import _free_port, _start, _stop, _wait_up, admin_client

pytestmark = QEMU


def _agent(env: dict[str, str], *args: str) -> dict[str, object]:
    done = run_cli(["--json", *args], env, timeout=120)
    assert done.rc == 0, done.err
    doc: dict[str, object] = json.loads(done.out.splitlines()[-1])
    doc["stderr"] = done.err
    return doc


def _sent(doc: dict[str, object]) -> tuple[int, int]:
    found = re.search(r"(\d+) chunk ids asked, (\d+) missing", str(doc["stderr"]))
    assert found is not None, doc["stderr"]
    return int(found[1]), int(found[2])


def test_a_qcow2_image_through_a_real_server_with_its_dirty_bitmap(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert cli("init").rc == 0
    env = {**cli_env, "STRONGROOM_CATALOG": str(tmp_path / "catalog.sqlite")}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = _start(env, port, log)
    try:
        _wait_up(server, base, log)
        http = admin_client(base, log)
        token = http.post("/api/v1/enrollments", json={"machine": "vmhost"}).json()["token"]
        agent_env = {k: v for k, v in os.environ.items()
                     if k not in ("STRONGROOM_PASSWORD", "STRONGROOM_REPO")}  # fmt: skip
        _agent(agent_env, "agent", "enroll", "--server", base, "--token", token)

        disk = tmp_path / "disk.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", disk, 16 * MiB)
        qemu_io(disk, "write -P 0x11 0 2M", "write -P 0x12 8M 1M", "write -P 0x11 12M 64k")
        first = _agent(agent_env, "backup", "--image", str(disk), "--block-size", str(BS),
                       "--server", base)  # fmt: skip
        assert first["tracker"] == "full" and first["bytes_read"] == 3 * MiB + 64 * 1024
        asked, missing = _sent(first)
        assert missing == asked  # a first backup: every distinct block is new

        qemu_io(disk, "write -P 0x33 1M 64k", "write -P 0x44 9M 4k")
        second = _agent(agent_env, "backup", "--image", str(disk), "--server", base)
        assert second["tracker"] == "bitmap" and second["parent"] == first["point_id"]
        assert second["blocks_read"] == 2 and second["blocks_changed"] == 2
        assert _sent(second) == (2 + 2, 2 + 2)  # the two blocks, a map segment, the root

        out = tmp_path / "restored.raw"
        _agent(agent_env, "restore", str(second["point_id"])[:12], "--target", str(out),
               "--server", base)  # fmt: skip
        run("qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", disk, out)
        vhd = tmp_path / "disk.vhd"
        _agent(agent_env, "export", "latest", str(vhd), "--server", base)
        run("qemu-img", "compare", "-q", "-f", "qcow2", "-F", "vpc", disk, vhd)
    finally:
        _stop(server)


def test_what_does_not_go_through_a_server_is_refused_in_one_line(
    cli: CliRunner, tmp_path: Path
) -> None:
    url = "http://127.0.0.1:9"  # refused before anything is sent
    protect = cli("protect", str(tmp_path), "--to-repository", "--server", url,
                  "--agent-config", str(tmp_path / "none.json"))  # fmt: skip
    assert protect.rc != 0  # the VHD mode goes through the server as an enrolled agent only
    assert_one_line_error(protect, "none.json: No such file or directory")
    hosted = cli("backup", "--image", str(tmp_path), "--host", "other", "--server", url)
    assert hosted.rc == 2 and "through a server: no --host" in hosted.err
    assert "Traceback" not in hosted.err
