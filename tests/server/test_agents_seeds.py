"""Golden images (seeds) through a real `strongroom server` process, with the
real CLI as enrolled machines: a seeded files backup stores only the
machine's own bytes and records what a local seeded backup records;
`restore --server --scope` writes exactly what a local scoped restore of a
local seeded point of the same tree writes; `--seed NAME` and
`--trust-seed-metadata` through the server; the seed endpoints answer seeds
only, and a commit naming a seed the repository lacks is refused.

One server for the module (the everyday tests' fleet: its start and the
enrollments cost seconds)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from strongroom.remote.config import AgentConfig
from tests.helpers.cli import assert_one_line_error
from tests.helpers.compare import walk_differences
from tests.helpers.images import MiB, assert_same_image, needs
from tests.helpers.tree import random_bytes, write_file
from tests.server.test_agents_everyday import Fleet, fleet

__all__ = ["fleet"]  # the module's server, shared with the everyday tests' fixture

OWN = 120_000  # the machine's own new bytes
MTIME = 1_700_000_000_000_000_000


def _stamp(root: Path) -> None:
    """A package's mtimes: one fixed instant on every entry (as installed)."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(MTIME, MTIME), follow_symlinks=False)


@pytest.fixture(scope="module")
def seeded(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OS seed and an application seed in the server's repository, and a
    machine installed from them, then changed: a modified configuration, a
    deleted seed file, a moved one, and the machine's own files."""
    base = tmp_path_factory.mktemp("seeded")
    os_seed, app_seed, machine = base / "os", base / "app", base / "machine"
    for rel, data in {
        "etc/app.conf": b"listen = 80\nworkers = 4\n" * 40,
        "etc/gone.conf": b"deleted on the machine\n",
        "etc/hostname": b"seedhost\n",
        "usr/bin/tool": random_bytes(300_000, 1),
        "usr/lib/libx.so": random_bytes(150_000, 2),
        "usr/share/doc/readme": b"read me\n" * 30,
    }.items():
        write_file(os_seed / rel, data, 0o755 if "/bin/" in rel else 0o644)
    write_file(app_seed / "opt/app/bin/app", random_bytes(100_000, 3), 0o755)
    write_file(app_seed / "opt/app/share/app.dat", b"data\n" * 50)
    _stamp(os_seed)
    _stamp(app_seed)
    for name, tree, kind in (("gold-os", os_seed, "os"), ("gold-app", app_seed, "app")):
        added = fleet.local("seed", "add", name, str(tree), "--kind", kind)
        assert added.rc == 0, added.err
    shutil.copytree(os_seed, machine, symlinks=True)
    shutil.copytree(app_seed, machine, symlinks=True, dirs_exist_ok=True)
    _stamp(machine)
    (machine / "etc/app.conf").write_bytes(b"listen = 8080\nworkers = 4\n" * 40)
    (machine / "etc/gone.conf").unlink()
    (machine / "srv").mkdir()
    (machine / "usr/share/doc/readme").rename(machine / "srv/readme")
    write_file(machine / "home/me/own.bin", random_bytes(OWN, 4))
    write_file(machine / "home/me/note.txt", b"mine\n")
    return machine


def _backup(fleet: Fleet, machine_name: str, *args: str) -> dict[str, Any]:
    return fleet.ok(machine_name, "backup", "--jobs", "1", *args)


def test_seeded_backup_through_the_server_stores_the_delta_and_restores_as_locally(
    fleet: Fleet, seeded: Path, tmp_path: Path
) -> None:
    agent = _backup(fleet, "alpha", str(seeded))  # every seed that fits, as locally
    assert agent["seeds"] is not None
    assert sorted(u["name"] for u in agent["seeds"]["used"]) == ["gold-app", "gold-os"]
    # The server was sent about the machine's own bytes: its own files, the
    # modified configuration, the trees and the list of lacking seed files,
    # none of the seeds' 550 kB.
    assert OWN <= agent["data_added"] < OWN + 30_000, agent["data_added"]
    local = fleet.local("--json", "backup", "--jobs", "1", "--host", "local", str(seeded))
    assert local.rc == 0, local.err
    mine = json.loads(local.out.splitlines()[-1])
    assert mine["data_added"] < 10_000  # the agent stored the files already (trees aside)
    for key in ("classes", "root", "lacks_count", "seed_bytes"):
        assert agent["seeds"][key] == mine["seeds"][key], key
    assert agent["seeds"]["classes"]["own"]["files"] == 2
    assert agent["seeds"]["lacks_count"] == 2  # etc/gone.conf, usr/share/doc/readme
    shown = fleet.local("--json", "snapshots")
    listed = {p["id"]: p for p in json.loads(shown.out)}
    assert listed[agent["point_id"]]["host"] == "alpha"
    lacks: list[bytes] = []
    for scope in ("full", "user", "os", "app:gold-app"):
        there, here = tmp_path / f"agent-{scope}", tmp_path / f"local-{scope}"
        done = fleet.agent("alpha", "restore", "latest", "-t", str(there), "--scope", scope)
        assert done.rc == 0, done.err
        assert f"(scope {scope})" in done.out or scope == "full"
        again = fleet.local("restore", mine["point_id"], "-t", str(here), "--scope", scope)
        assert again.rc == 0, again.err
        listings = [(d / ".strongroom-lacks") for d in (here, there)]
        if scope == "user":  # written now (its mtime differs): its bytes are compared
            assert listings[0].read_bytes() == listings[1].read_bytes()
            lacks = listings[1].read_bytes().splitlines()
            for listing in listings:
                listing.unlink()
        # the machine's tree (its ancestors, /tmp..., change between the backups)
        inside = seeded.relative_to("/")
        assert walk_differences(here / inside, there / inside, check_atime=False) == [], scope
    assert walk_differences(seeded, tmp_path / "agent-full" / seeded.relative_to("/"),
                            check_atime=False, check_root=False) == []  # fmt: skip
    assert sorted(lacks) == [os.fsencode(seeded / p) for p in ("etc/gone.conf",
                                                               "usr/share/doc/readme")]  # fmt: skip
    listed_there = fleet.agent("alpha", "--json", "ls", "latest", "--scope", "user")
    listed_here = fleet.local("--json", "ls", mine["point_id"], "--scope", "user")
    assert listed_there.rc == 0, listed_there.err
    inside = str(seeded) + "/"  # the entries of the machine's tree, its ancestors' aside
    entries = [
        [doc for doc in map(json.loads, done.out.splitlines()) if doc["path"].startswith(inside)]
        for done in (listed_there, listed_here)
    ]
    assert entries[0] == entries[1]
    assert {doc["class"] for doc in entries[0]} >= {"own", "modified", "moved"}
    checked = fleet.local("check", "--read-data")
    assert checked.rc == 0, checked.err


def test_pinned_seed_and_trusted_metadata_through_the_server(
    fleet: Fleet, seeded: Path, tmp_path: Path
) -> None:
    machine = tmp_path / "beta"
    shutil.copytree(seeded, machine, symlinks=True)
    write_file(machine / "home/me/own.bin", random_bytes(OWN, 5))  # not alpha's
    _stamp(machine)  # as installed: path, size, mode and mtime equal the seed's
    dry = _backup(fleet, "beta", "--dry-run", "--seed", "gold-os", str(machine))
    assert dry["point_id"] is None and [u["name"] for u in dry["seeds"]["used"]] == ["gold-os"]
    done = _backup(fleet, "beta", "--seed", "gold-os", "--trust-seed-metadata",
                   "--seed-root", str(machine), str(machine))  # fmt: skip
    assert [u["name"] for u in done["seeds"]["used"]] == ["gold-os"]
    assert done["files_from_seed"] == 3  # etc/hostname, usr/bin/tool, usr/lib/libx.so: unread
    assert OWN <= done["data_added"] < OWN + 30_000  # its own bytes only
    out = tmp_path / "out"
    restored = fleet.agent("beta", "restore", "latest", "-t", str(out))
    assert restored.rc == 0, restored.err
    assert walk_differences(machine, out / machine.relative_to("/"), check_atime=False,
                            check_root=False) == []  # fmt: skip
    unknown = fleet.agent("beta", "backup", "--seed", "nosuch", str(machine))
    assert unknown.rc != 0
    assert_one_line_error(unknown, "no seed named nosuch")


def test_seed_endpoints_answer_seeds_only_and_a_commit_names_held_seeds(
    fleet: Fleet, seeded: Path, tmp_path: Path
) -> None:
    alpha = AgentConfig.load(fleet.configs["alpha"])
    beta = AgentConfig.load(fleet.configs["beta"])
    write_file(tmp_path / "theirs" / "note.txt", b"beta's\n")
    made = _backup(fleet, "beta", "--no-seeds", str(tmp_path / "theirs"))
    assert made["seeds"] is None
    pinned = _backup(fleet, "alpha", "--seed", "gold-os", str(seeded / "etc"))
    assert pinned["seeds"] is not None
    with httpx.Client(base_url=fleet.base) as http:
        auth = {"Authorization": f"Bearer {alpha.bearer}"}
        beta_auth = {"Authorization": f"Bearer {beta.bearer}"}
        listed = http.get("/api/v1/agent/seeds", headers=auth).json()
        assert {s["name"] for s in listed} >= {"gold-app", "gold-os"}
        one = http.get("/api/v1/agent/seeds/gold-os", headers=auth)
        assert one.status_code == 200 and one.json()["content"] == "files"
        assert (
            http.get(f"/api/v1/agent/seeds/{listed[0]['id'][:12]}", headers=auth).json()
            == (listed[0])
        )
        # another machine's point, by id or prefix, is no seed; nor is one's own
        own = http.get("/api/v1/agent/points", headers=auth).json()[-1]
        assert own["id"] == pinned["point_id"]
        for ref in (made["point_id"], made["point_id"][:12], own["id"]):
            answer = http.get(f"/api/v1/agent/seeds/{ref}", headers=auth)
            assert answer.status_code == 404, answer.text
            assert "host" not in answer.text
        assert http.get("/api/v1/agent/seeds").status_code == 401
        # a commit naming a seed the repository does not hold, or names wrongly
        doc = {k: v for k, v in own.items() if k != "id"}
        assert doc["seeds"] is not None
        used = doc["seeds"]["used"][0]
        forged = [
            {**used, "id": secrets.token_hex(32)},
            {**used, "name": "gold-other"},
        ]
        for seed in forged:
            point = {**doc, "seeds": {**doc["seeds"], "used": [seed]}, "parent": None}
            body = {"point": point, "commit_id": secrets.token_hex(16)}
            answer = http.post("/api/v1/agent/points", json=body, headers=auth)
            assert answer.status_code == 422, answer.text
            assert "which the repository does not hold" in answer.text
        lacks = {**doc["seeds"], "lacks": secrets.token_hex(32)}
        body = {"point": {**doc, "seeds": lacks, "parent": None}, "commit_id": "c" * 16}
        answer = http.post("/api/v1/agent/points", json=body, headers=auth)
        assert answer.status_code == 422 and "lacking seed files is not stored" in answer.text
        after = http.get("/api/v1/agent/points", headers=auth).json()
        assert after[-1]["id"] == own["id"]  # nothing forged was saved
        theirs = http.get("/api/v1/agent/points", headers=beta_auth)
        assert own["id"] not in {p["id"] for p in theirs.json()}


@needs("qemu-img")
def test_an_image_backup_builds_on_the_golden_image_and_restores_as_an_overlay(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A disk image against an image seed through the server: only the
    machine's own block is sent, and `restore --scope user --backing` writes
    the overlay a local restore of the point writes."""
    golden, machine = tmp_path / "golden.img", tmp_path / "machine.img"
    blocks = [random_bytes(MiB, 10 + n) for n in range(5)]
    golden.write_bytes(b"".join(blocks))
    blocks[1] = random_bytes(MiB, 99)  # the machine's own block
    blocks[3] = bytes(MiB)  # one it zeroed
    machine.write_bytes(b"".join(blocks))
    added = fleet.local("seed", "add", "gold-disk", str(golden), "--kind", "os")
    assert added.rc == 0, added.err
    chosen = fleet.ok("alpha", "backup", "--image", str(machine))  # the seed that matches
    assert [u["name"] for u in chosen["seeds"]["used"]] == ["gold-disk"]
    assert MiB <= chosen["data_added"] < MiB + 64 * 1024  # its own block and the map
    pinned = fleet.ok("beta", "backup", "--image", str(machine), "--seed", "gold-disk")
    assert [u["name"] for u in pinned["seeds"]["used"]] == ["gold-disk"]
    assert pinned["data_added"] < 64 * 1024  # alpha sent the block already
    again = fleet.ok("alpha", "backup", "--image", str(machine))  # an incremental inherits it
    assert [u["name"] for u in again["seeds"]["used"]] == ["gold-disk"]
    overlay, local = tmp_path / "agent.qcow2", tmp_path / "local.qcow2"
    done = fleet.ok("alpha", "restore", str(chosen["point_id"]), "--scope", "user", "--format",
                    "qcow2", "--backing", str(golden), "-t", str(overlay))  # fmt: skip
    assert done["backing"] == str(golden) and done["bytes_written"] == MiB
    assert_same_image(machine, overlay, "raw", "qcow2")
    here = fleet.local("--json", "restore", str(chosen["point_id"]), "--scope", "user",
                       "--format", "qcow2", "--backing", str(golden), "-t", str(local))  # fmt: skip
    assert here.rc == 0, here.err
    assert json.loads(here.out.splitlines()[-1])["bytes_written"] == done["bytes_written"]
    assert_same_image(local, overlay, "qcow2", "qcow2")
    wrong = fleet.agent("alpha", "restore", str(chosen["point_id"]), "--scope", "user",
                        "--format", "qcow2", "--backing", str(machine),
                        "-t", str(tmp_path / "no.qcow2"))  # fmt: skip
    assert wrong.rc == 2
    assert_one_line_error(wrong, "is not the image of seed gold-disk")
