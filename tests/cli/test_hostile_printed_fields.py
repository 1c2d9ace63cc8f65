"""`vm status` and `key list` print what any key holder wrote (a point's host,
tracker and consistency, a lease holder's host, a key file's host and user):
one row each, control characters escaped, and hostile summary counts never end
it in an internal error."""

from __future__ import annotations

import getpass
import json
import socket
import time
from pathlib import Path

import msgpack
import pytest

from strongroom.model.point import RecoveryPoint, now
from strongroom.repository.format import BlobType
from tests.conftest import CliRunner, open_local_repository

EVIL = "evil\nforged line\x1b[2J"


def test_vm_status_shows_hostile_fields_escaped(
    cli: CliRunner, initialized_repo: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[vm.vm1]\nqmp = "/nonexistent.sock"\nnbd = "nbd+unix:///x?socket=/none"\n'
        'disks = ["vda"]\nscratch = "/tmp"\n'
    )
    repo = open_local_repository(initialized_repo)
    manifest = {"version": 1, "vm": "vm1", "disks": []}
    root = repo.put_chunk(BlobType.TREE, msgpack.packb(manifest, use_bin_type=True))
    repo.flush()
    summary = {"disks": 5, "bytes_changed": "abc", "tracker": {"a": 1}, "data_added_stored": -1}
    point = RecoveryPoint("vm", now(), EVIL, "u", ["vm:vm1"], root.hex(), summary=summary)
    point.consistency = EVIL
    repo.save_point(point.to_doc())
    lease = {"holder": "f0" * 8, "host": EVIL, "pid": 1, "expires": time.time() + 3600,
             "taken": time.time(), "what": "VM vm1"}  # fmt: skip
    name = f"leases/{repo.lease_id('vm:vm1')}/{0:016d}"
    repo.backend.put(name, repo.sealer.seal(json.dumps(lease).encode(), b"lease"))
    repo.close()

    result = cli("vm", "status", env={"STRONGROOM_CONFIG": str(config)})
    assert result.rc == 0, result.err
    assert "\x1b" not in result.out and "forged line" in result.out
    rows = [line for line in result.out.splitlines() if "vm1" in line]
    assert len(rows) == 1 and "evil\\x0aforged line" in rows[0], result.out
    as_json = cli("vm", "status", "--json", env={"STRONGROOM_CONFIG": str(config)})
    assert as_json.rc == 0, as_json.err
    assert as_json.json()[0]["last_point"]["bytes_changed"] == 0  # the junk count was dropped


def test_key_list_shows_a_key_holders_host_and_user_escaped(
    cli: CliRunner, initialized_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key file's host and user are plaintext that any key holder writes."""
    repo = open_local_repository(initialized_repo)
    monkeypatch.setattr(socket, "gethostname", lambda: EVIL)
    monkeypatch.setattr(getpass, "getuser", lambda: EVIL)
    repo.add_key(b"another long password")
    repo.close()
    monkeypatch.undo()
    result = cli("key", "list")
    assert result.rc == 0, result.err
    assert "\x1b" not in result.out and "forged line" in result.out
    rows = [line for line in result.out.splitlines() if "forged line" in line]
    assert len(rows) == 1 and "evil\\x0aforged line" in rows[0], result.out
