"""`strongroom copy` through a real `strongroom server` process, as enrolled
agents (the CLI, no server repository password in their environment):
`copy --agent-config --from-repo` moves a machine's earlier local history into
the server as its own points (files and image), incrementally and
idempotently, restoring equal to the source; another host's points are
refused unless `--host` names them, and never appear to another machine;
`copy --from-server --repo` takes a machine's own points out to a local
repository, and a copy back into the source recognises them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import open_local_repository
from tests.helpers.cli import PASSWORD, CliResult, run_cli
from tests.helpers.compare import walk_differences
from tests.helpers.tree import make_small_tree, random_bytes, write_file
from tests.server.test_agents_everyday import Fleet, fleet

__all__ = ["fleet"]  # the module's server with two enrolled machines, alpha and beta

OLD_PASSWORD = "the old local repository's password"


def _local(fleet: Fleet, repo: Path, password: str, *args: str) -> CliResult:
    env = {**fleet.agent_env, "STRONGROOM_REPO": str(repo), "STRONGROOM_PASSWORD": password}
    return run_cli(list(args), env, timeout=120)


def _summary(done: CliResult) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.out.splitlines()[-1])
    return doc


def _copy(fleet: Fleet, machine: str, old: Path, *args: str, rc: int = 0) -> dict[str, Any]:
    env = {**fleet.agent_env, "STRONGROOM_FROM_PASSWORD": OLD_PASSWORD}
    done = run_cli(["--json", "copy", "--from-repo", str(old), *args,
                    "--agent-config", fleet.configs[machine]], env, timeout=120)  # fmt: skip
    assert done.rc == rc, done.err
    return _summary(done)


def _own_points(fleet: Fleet, machine: str) -> dict[str, dict[str, Any]]:
    done = fleet.agent(machine, "--json", "snapshots")
    assert done.rc == 0, done.err
    return {p["id"]: p for p in json.loads(done.out)}


def test_copy_into_the_server_as_the_machines_points(fleet: Fleet, tmp_path: Path) -> None:
    old = tmp_path / "old-repo"
    assert _local(fleet, old, OLD_PASSWORD, "init").rc == 0
    src = tmp_path / "src"
    make_small_tree(src)
    write_file(src / "big.bin", random_bytes(1 << 20, 5))
    os.symlink("a.txt", src / "a-sym")
    backup = ("--json", "backup", "--host", "alpha", str(src))
    first = _summary(_local(fleet, old, OLD_PASSWORD, *backup))["point_id"]
    write_file(src / "sub" / "new.txt", b"one more file\n")
    second = _summary(_local(fleet, old, OLD_PASSWORD, *backup, "--tag", "t"))["point_id"]
    disk = tmp_path / "disk.raw"
    data = random_bytes(2 << 20, 9) + bytes(1 << 20) + b"tail"
    disk.write_bytes(data)
    image = _summary(_local(fleet, old, OLD_PASSWORD, "--json", "backup", "--host", "alpha",
                            "--image", str(disk)))["point_id"]  # fmt: skip
    gamma = _summary(_local(fleet, old, OLD_PASSWORD, "--json", "backup", "--host", "gamma",
                            str(src / "sub")))["point_id"]  # fmt: skip

    # the first point alone, then the rest: the parent's copy is learnt
    one = _copy(fleet, "alpha", old, first[:8])
    assert (one["points_copied"], one["data_added"] >= 1 << 20) == (1, True), one
    rest = _copy(fleet, "alpha", old, rc=3)  # gamma's point is another machine's
    statuses = {p["source_id"]: p["status"] for p in rest["points"]}
    assert statuses == {first: "skipped", second: "copied", image: "copied", gamma: "refused"}
    (refused,) = [p for p in rest["points"] if p["status"] == "refused"]
    assert "--host gamma" in refused["reason"]
    assert rest["bytes_read"] == len(b"one more file\n") + len(data) - (1 << 20), rest
    again = _copy(fleet, "alpha", old, rc=3)
    assert (again["points_copied"], again["points_skipped"], again["data_added"]) == (0, 3, 0)
    copies = {p["source_id"]: p["target_id"] for p in again["points"] if p["target_id"]}

    # the copies are alpha's own points, metadata kept, marks in the summary
    own = _own_points(fleet, "alpha")
    assert {copies[first], copies[second], copies[image]} <= set(own)
    copied = own[copies[second]]
    assert (copied["host"], copied["tags"], copied["paths"]) == ("alpha", ["t"], [str(src)])
    assert copied["parent"] == copies[first]
    repo = open_local_repository(fleet.root / "repo", PASSWORD)
    try:
        server_doc = repo.load_point(copies[second])
    finally:
        repo.close()
    assert server_doc["summary"]["original"] == second
    assert server_doc["summary"]["copied_from"]["point"] == second
    assert not set(copies.values()) & set(_own_points(fleet, "beta"))  # never beta's
    assert fleet.local("check", "--read-data").rc == 0

    # they restore (through the server) equal to the source points
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    assert fleet.agent("alpha", "restore", copies[second], "--target", str(mine)).rc == 0
    assert _local(fleet, old, OLD_PASSWORD, "restore", second, "--target", str(theirs)).rc == 0
    rel = str(src).lstrip("/")
    assert walk_differences(theirs / rel, mine / rel, check_atime=False) == []
    out = tmp_path / "disk-out.raw"
    assert fleet.agent("alpha", "restore", copies[image], "--target", str(out)).rc == 0
    assert out.read_bytes() == data

    # --host names the source host to file as this machine's (one only)
    as_beta = _copy(fleet, "beta", old, "--host", "gamma")
    assert [p["status"] for p in as_beta["points"]] == ["copied"]
    assert as_beta["points"][0]["target_id"] in _own_points(fleet, "beta")
    env = {**fleet.agent_env, "STRONGROOM_FROM_PASSWORD": OLD_PASSWORD}
    two = run_cli(["copy", "--from-repo", str(old), "--host", "a", "--host", "b",
                   "--agent-config", fleet.configs["beta"]], env)  # fmt: skip
    assert two.rc == 2 and "at most one --host" in two.err

    # out of the server into an off-site repository: alpha's points only, once
    usb = tmp_path / "usb"
    assert _local(fleet, usb, PASSWORD, "init").rc == 0
    usb_env = {**fleet.agent_env, "STRONGROOM_REPO": str(usb), "STRONGROOM_PASSWORD": PASSWORD}
    pulled = run_cli(["--json", "copy", "--from-server", "--agent-config",
                      fleet.configs["alpha"]], usb_env, timeout=120)  # fmt: skip
    assert pulled.rc == 0, pulled.err
    assert _summary(pulled)["points_copied"] == len(own)
    listed = json.loads(_local(fleet, usb, PASSWORD, "--json", "snapshots").out)
    assert {p["host"] for p in listed} == {"alpha"} and len(listed) == len(own)
    rerun = run_cli(["--json", "copy", "--from-server", "--agent-config",
                     fleet.configs["alpha"]], usb_env, timeout=120)  # fmt: skip
    assert _summary(rerun)["points_copied"] == 0, rerun.err
    back = tmp_path / "back"
    usb_copy = next(p["id"] for p in listed if p["tags"] == ["t"])
    assert _local(fleet, usb, PASSWORD, "restore", usb_copy, "--target", str(back)).rc == 0
    assert walk_differences(theirs / rel, back / rel, check_atime=False) == []
    assert _local(fleet, usb, PASSWORD, "check", "--read-data").rc == 0

    # the server's copies, copied back into the old repository, are recognised
    home = run_cli(["--json", "copy", "--from-server", "--agent-config", fleet.configs["alpha"],
                    "--tag", "t"], {**fleet.agent_env, "STRONGROOM_REPO": str(old),
                    "STRONGROOM_PASSWORD": OLD_PASSWORD}, timeout=120)  # fmt: skip
    assert home.rc == 0, home.err
    assert (_summary(home)["points_copied"], _summary(home)["points_skipped"]) == (0, 1)


def test_image_dry_run_through_the_server_says_what_a_real_run_uploads(
    fleet: Fleet, tmp_path: Path
) -> None:
    disk = tmp_path / "dry.raw"
    data = bytearray(random_bytes(3 << 20, 21) + bytes(1 << 20))
    disk.write_bytes(bytes(data))
    image = ("backup", "--image", str(disk))
    before = set(_own_points(fleet, "alpha"))

    dry = fleet.ok("alpha", *image, "--dry-run")
    assert (dry["point_id"], dry["dry_run"], dry["parent"]) == (None, True, None)
    assert dry["data_added"] == 3 << 20 and dry["traffic"]["bytes_sent"] == 0, dry
    assert set(_own_points(fleet, "alpha")) == before  # no point made
    real = fleet.ok("alpha", *image)
    assert real["blocks_new"] == dry["blocks_new"] == 3
    assert 0 <= real["data_added"] - dry["data_added"] < 4096  # its block map aside

    # incremental, on the real point: only the changed block would go
    data[(1 << 20) + 7 : (1 << 20) + 12] = b"fresh"
    disk.write_bytes(bytes(data))
    dry = fleet.ok("alpha", *image, "--dry-run")
    assert dry["parent"] == real["point_id"] and dry["tracker"] == "compare"
    assert (dry["blocks_new"], dry["data_added"]) == (1, real["block_size"]), dry
    again = fleet.ok("alpha", *image)
    assert again["blocks_new"] == 1 and 0 <= again["data_added"] - dry["data_added"] < 4096
    # what another machine stored already would not be sent
    assert fleet.ok("beta", *image, "--dry-run")["data_added"] == 0

    refused = fleet.agent("alpha", *image, "--dry-run", "--changed-since", "bitmap")
    assert refused.rc == 2 and "would change the source" in refused.err
    assert len(refused.err.strip().splitlines()) == 1
