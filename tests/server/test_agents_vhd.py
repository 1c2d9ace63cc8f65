"""The VHD backup mode as an enrolled agent of a real `strongroom server`
(no repository password in the agent's environment):

- `protect DIR --to-repository --server URL`: each cycle is a block point of
  the metadata disk in the server's repository, the machine's own (its
  host, its parent the previous cycle's); the chain `export --chain` gives
  from the server's repository, flattened by libvhdi, is the metadata disk
  and the tree; the dashboard's VHD download of the last point reads back
  through libvhdi as the same disk;
- `protect DIR --to FOLDER --server URL`: the chain is shipped to the folder
  as without a server (libvhdi reads it as the tree), nothing is sent.

(A policy's VHD chain destination, no longer refused through a server, is
checked in test_agents_protect_retention.py: its cycle is the local one.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.helpers.listing import points_listing
from tests.helpers.tree import random_bytes, write_file
from tests.protect.mirror import (
    KiB,
    MiB,
    chain_files,
    flatten,
    need,
    need_e2fsprogs,
    same_bytes,
    tree_differences,
)
from tests.server.test_agents_protect import served


@pytest.fixture(autouse=True)
def _tools() -> None:
    need_e2fsprogs()
    need("vhdiinfo")


def test_vhd_mode_into_the_servers_repository_and_a_folder(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "data"
    write_file(src / "a.txt", b"first\n")
    write_file(src / "sub" / "b.bin", random_bytes(300 * KiB, 5))
    state = tmp_path / "state"
    with served(cli, cli_env, tmp_path) as site:
        protect = ["protect", str(src), "--to-repository", "--state", str(state), "--size", "32M"]
        done = []
        for cycle in range(2):
            if cycle:
                write_file(src / "new.bin", random_bytes(200 * KiB, 7))
                os.chmod(src / "a.txt", 0o600)
            doc = site.agent(*protect)[-1]
            assert doc["cycle"] == cycle and doc["kind"] == ("base", "differencing")[cycle], doc
            done.append(doc)

        listed = points_listing(
            lambda: site.http.get("/api/v1/points").json(),
            lambda found: sum(p["kind"] == "block" for p in found) >= 2,
        )
        points = [p for p in listed if p["kind"] == "block"]
        assert [p["paths"] for p in points] == [["protect:data"]] * 2
        assert {p["host"] for p in points} == {"web1"}
        assert points[1]["parent"] == points[0]["id"] and points[0]["parent"] is None
        # the second cycle sent only its changed blocks: far less than the disk
        assert points[1]["summary"]["bytes_read"] < 8 * MiB

        out = tmp_path / "exported"  # from the server's repository (the server's password)
        exported = cli("export", "--chain", "protect:data", str(out), "--json")
        assert exported.rc == 0, exported.err
        files = [Path(f["path"]) for f in exported.summary()["files"]]
        flat = tmp_path / "flat.img"
        assert flatten(files, flat) == 32 * MiB
        assert same_bytes(flat, state / "meta.vhd", 32 * MiB)
        assert tree_differences(src, flat, tmp_path / "compare") == []

        # the dashboard serves the last point's disk as a dynamic VHD
        csrf = site.http.headers["X-CSRF-Token"]
        url = f"/points/{points[1]['id']}/disk"
        with site.http.stream("POST", url, data={"csrf_token": csrf, "format": "vhd-dynamic"}) as r:
            assert r.status_code == 200, r.read()
            with open(tmp_path / "down.vhd", "wb") as f:
                for piece in r.iter_bytes():
                    f.write(piece)
        down = tmp_path / "down.raw"  # read by libvhdi
        assert flatten([tmp_path / "down.vhd"], down) == 32 * MiB
        assert same_bytes(down, flat, 32 * MiB)

        # a chain folder under --server: shipped as without a server
        chain = tmp_path / "chain"
        doc = site.agent("protect", str(src), "--to", str(chain), "--state",
                         str(tmp_path / "state2"), "--size", "32M")[-1]  # fmt: skip
        assert doc["kind"] == "base" and Path(doc["location"]).parent == chain
        flat2 = tmp_path / "flat2.img"
        assert flatten(chain_files(chain, "data"), flat2) == 32 * MiB
        assert tree_differences(src, flat2, tmp_path / "compare2") == []
        after = [p for p in site.http.get("/api/v1/points").json() if p["kind"] == "block"]
        assert len(after) == 2  # nothing went to the server
