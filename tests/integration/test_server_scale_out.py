"""Scale-out for real (issue #15's check): two `strongroom server` processes
over one repository in a Ceph RADOS Gateway bucket and one PostgreSQL
catalog; four agents (the `strongroom` CLI, each its own enrolled machine,
no repository password and no S3 credentials) back up at once, two through
each server first. One server is SIGKILLed while every agent is held at a
batch boundary (tests/server/agent_pause.py) and the first batches of its
two agents are stored through it; its agents then finish through the other.

Checked: every agent exits 0; content shared between machines is sent once
(the other machines' backups add only their own bytes); each machine lists
exactly its own one point, and the server lists exactly four (no half
point); each point restores byte-exactly; `check --read-data` on the bucket
passes; the surviving server still serves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from argon2 import PasswordHasher

from strongroom.chunking.cdc import CdcChunker
from strongroom.remote.config import AgentConfig, RepositoryInfo
from strongroom.repository.crypto import ChunkHasher
from strongroom.services.accounts import Accounts
from tests.catalog.conftest import pg_cluster  # noqa: F401 (fixture)
from tests.helpers.cli import PASSWORD, run_cli, strongroom_command
from tests.helpers.compare import walk_differences
from tests.helpers.pg_cluster import PORT, Cluster
from tests.helpers.s3 import Gateway, cluster_dir, start_gateway, stop_gateway
from tests.server.test_server_process import _free_port, _stop, _wait_up

MiB = 1 << 20
PAUSE = Path(__file__).parents[1] / "server" / "agent_pause.py"
MACHINES = ("alpha", "bravo", "charlie", "delta")  # alpha, bravo: server 1 first
SHARED = 2 * MiB  # identical in every tree
BEFORE_GATE = (15, 17, 3, 3)  # MiB: alpha and bravo send a batch through server 1 first
ADMIN = "scale-out administrator"
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # the server re-hashes
GATE = "p-gate"  # large file where each agent is held (after its first batch)


pytestmark = pytest.mark.xdist_group("postgresql")  # the worker with the PostgreSQL cluster


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    directory = cluster_dir()  # tests/storage's fixture finds (and reuses) the same one
    gw = start_gateway(directory)
    yield gw
    stop_gateway(directory)


def _tree(root: Path, seed: int, shared: bytes, before: int) -> int:
    """A machine's files; the bytes only this machine has (for the dedup check).

    In sorted (walk) order: on alpha the shared file first, then `before`
    MiB of its own big files, the gate, elsewhere the shared file (asked
    about once alpha stored it), then small files, a hard link, a symlink,
    a sparse file. The walk's sealing runs up to 6 chunks (~6 MiB) behind
    it: an agent that must have sent its first 8 MiB batch when it is held
    at the gate has 17 MiB before it."""
    rnd = os.urandom
    (root / "d").mkdir(parents=True)
    (root / ("a-shared.bin" if seed == 0 else "s-shared.bin")).write_bytes(shared)
    own = 0
    for i in range(0, before, 3):
        size = min(3, before - i) * MiB
        (root / f"b-own{i:02}.bin").write_bytes(rnd(size))
        own += size
    (root / GATE).write_bytes(rnd(MiB))
    (root / "q-tail.bin").write_bytes(rnd(MiB + seed * 4096))
    own += 2 * MiB + seed * 4096
    (root / "d" / "note.txt").write_text(f"machine {seed}\n" * 40)
    os.link(root / "d" / "note.txt", root / "d" / "hard.txt")
    os.symlink("../q-tail.bin", root / "d" / "link")
    with open(root / "sparse.img", "wb") as f:
        f.truncate(2 * MiB)
        f.seek(MiB)
        f.write(rnd(4096))
    return own + 2 * MiB  # the sparse file is one chunk (its zeros hold no cut point)


def _start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*strongroom_command(), "server", "--listen", f"127.0.0.1:{port}"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _stored(base: str, config: AgentConfig, path: Path) -> bool:
    """Whether the server holds every chunk of `path` (the agents' own question)."""
    info = config.repository
    chunker = CdcChunker(info.cdc_min, info.cdc_avg, info.cdc_max, info.chunker_seed)
    chunk_id = ChunkHasher(bytes.fromhex(info.id_key))
    ids = [chunk_id(view).hex() for view in chunker.cut(path.read_bytes())]
    answer = httpx.post(
        f"{base}/api/v1/agent/chunks/missing",
        json={"ids": ids},
        headers={"Authorization": f"Bearer {config.bearer}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    missing: list[str] = answer.json()["missing"]
    return not missing


def _enroll(admin: httpx.Client, base: str, name: str, servers: list[str], path: Path
            ) -> AgentConfig:  # fmt: skip
    """What `agent enroll` does (tests/server/test_agents_process.py runs the command)."""
    token = admin.post("/api/v1/enrollments", json={"machine": name}).json()["token"]
    doc = httpx.post(f"{base}/api/v1/agent/enroll", json={"token": token}, timeout=30).json()
    config = AgentConfig(servers, doc["machine"], doc["agent_id"], doc["secret"],
                         RepositoryInfo.from_doc(doc["repository"]))  # fmt: skip
    config.save(str(path))
    return config


def _spawn(env: dict[str, str], *args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*strongroom_command(), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _finish(proc: subprocess.Popen[bytes], what: str) -> str:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"{what}: {err.decode()}"
    return out.decode()


def test_four_agents_two_servers_one_killed_s3_and_postgresql(
    gateway: Gateway,
    pg_cluster: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    database = f"scale_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    catalog = f"postgresql://postgres@/{database}?host={pg_cluster.socket_dir}&port={PORT}"
    env = {
        **os.environ,
        **gateway.env,
        "AWS_EC2_METADATA_DISABLED": "true",
        "STRONGROOM_REPO": gateway.location(prefix="fleet"),
        "STRONGROOM_CATALOG": catalog,
    }
    # the agents hold neither the repository's password nor the bucket's keys
    agent_env = {k: v for k, v in os.environ.items()
                 if k not in ("STRONGROOM_PASSWORD", "STRONGROOM_REPO")
                 and not k.startswith("AWS_")}  # fmt: skip
    assert run_cli(["init"], env, timeout=60).rc == 0
    accounts = Accounts.open(catalog)  # migrated, with an administrator: both servers start
    try:
        Accounts(accounts.catalog, hasher=CHEAP).ensure_administrator(lambda: ADMIN)
    finally:
        accounts.close()

    shared = os.urandom(SHARED)
    sources, own = {}, {}
    for i, name in enumerate(MACHINES):
        sources[name] = tmp_path / name / "src"
        own[name] = _tree(sources[name], i, shared, BEFORE_GATE[i])

    ports = [_free_port(), _free_port()]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    logs = [tmp_path / "s1.log", tmp_path / "s2.log"]
    procs = [_start_server(env, port, log) for port, log in zip(ports, logs, strict=True)]
    agents: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for proc, base, log in zip(procs, bases, logs, strict=True):
            _wait_up(proc, base, log, timeout=60)
        admin = httpx.Client(base_url=bases[1], timeout=30)
        signed = admin.post("/api/v1/session", json={"name": "admin", "password": ADMIN})
        admin.headers["X-CSRF-Token"] = signed.json()["csrf_token"]
        paths = {name: tmp_path / name / "agent.json" for name in MACHINES}
        configs = {  # alpha and bravo: server 1 first; charlie and delta: server 2
            name: _enroll(admin, bases[1], name, bases if i < 2 else bases[::-1], paths[name])
            for i, name in enumerate(MACHINES)
        }

        # all four at once, each held at its gate; server 1 has stored alpha's
        # first batch (with the shared file) and bravo's
        for name in MACHINES:
            agents[name] = subprocess.Popen(
                [sys.executable, PAUSE, GATE, tmp_path / name / "ready", tmp_path / "go",
                 "--json", "backup", sources[name], "--agent-config", paths[name],
                 *(arg for url in configs[name].servers for arg in ("--server", url))],
                env=agent_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        firsts = {"alpha": "a-shared.bin", "bravo": "b-own00.bin"}
        deadline = time.monotonic() + 90
        while not (
            all((tmp_path / n / "ready").exists() for n in MACHINES)
            and all(_stored(bases[0], configs[n], sources[n] / f) for n, f in firsts.items())
        ):
            for name, proc in agents.items():
                assert proc.poll() is None, f"{name}: {proc.communicate()[1].decode()}"
            assert time.monotonic() < deadline, "the agents did not reach their gates"
            time.sleep(0.1)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        (tmp_path / "go").touch()

        results = {n: json.loads(_finish(p, n).splitlines()[-1]) for n, p in agents.items()}
        assert results["alpha"]["data_added"] >= own["alpha"] + SHARED
        for name in MACHINES[1:]:  # the shared file was alpha's: not sent again
            assert own[name] <= results[name]["data_added"] < own[name] + (256 << 10), name
        for result in results.values():  # the negotiation's cost, as bench/server.py reads it
            traffic = result["traffic"]
            assert traffic["questions"] >= 1 and traffic["requests"] > traffic["questions"]
            assert traffic["question_bytes"] >= 64 * traffic["asked"] + 9 * traffic["questions"]
            assert 0 < traffic["answer_bytes"] <= traffic["question_bytes"] + 64

        # through the survivor (server 1 is still named first: the agents move on)
        listing = {n: _spawn(agent_env, "--json", "snapshots", "--agent-config", paths[n])
                   for n in MACHINES}  # fmt: skip
        restoring = {
            n: _spawn(
                agent_env,
                "restore",
                results[n]["point_id"][:12],
                "--target",
                tmp_path / n / "restored",
                "--agent-config",
                paths[n],
            )
            for n in MACHINES
        }
        checking = _spawn(env, "--json", "check", "--read-data")
        for name in MACHINES:  # each machine sees exactly its own point, whole
            points = json.loads(_finish(listing[name], f"snapshots of {name}"))
            assert [(p["id"], p["host"]) for p in points] == [(results[name]["point_id"], name)]
        everyone = admin.get("/api/v1/points").json()  # and no half point anywhere
        assert sorted((p["host"], p["id"]) for p in everyone) == sorted(
            (name, results[name]["point_id"]) for name in MACHINES
        )
        for name in MACHINES:
            _finish(restoring[name], f"restore of {name}")
            src = sources[name]
            restored = tmp_path / name / "restored" / str(src).lstrip("/")
            assert walk_differences(src, restored, check_root=False, check_atime=False) == []
        _finish(checking, "check --read-data")
        assert procs[1].poll() is None  # the survivor kept serving
        assert httpx.get(f"{bases[1]}/api/v1/health", timeout=5).status_code == 200
        assert PASSWORD not in logs[1].read_text()
    finally:
        for proc in agents.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for proc in procs:
            if proc.poll() is None:
                _stop(proc)
        with psycopg.connect(pg_cluster.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {database} WITH (FORCE)")
