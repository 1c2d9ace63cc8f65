"""Agents for real: two `strongroom server` processes (HTTPS, a
self-signed certificate the agent trusts with --ca-cert) over one repository
and catalog, and the `strongroom` CLI as the agent (no repository password
in its environment): enroll (a replayed token refused); back up a tree with
hard links, symlinks, xattrs and a sparse file while one server is SIGKILLed
mid-backup (the agent finishes through the other); a second backup sends no
data; the machine's points listed, one restored exactly; no secret logged."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import CliRunner
from tests.helpers.cli import run_cli, strongroom_command
from tests.helpers.compare import walk_differences
from tests.server.test_server_process import _free_port, _self_signed, _stop


def _tree(root: Path) -> None:
    (root / "d").mkdir(parents=True)
    (root / "d" / "big.bin").write_bytes(os.urandom(3 << 20))
    (root / "small.txt").write_text("hello agent\n" * 50)
    os.link(root / "small.txt", root / "d" / "hard.txt")
    os.symlink("../small.txt", root / "d" / "link")
    os.setxattr(root / "small.txt", "user.note", b"kept")
    with open(root / "sparse.img", "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(os.urandom(4096))


def _agent(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = run_cli(list(args), env, timeout=300)
    return subprocess.CompletedProcess(list(args), done.rc, done.out, done.err)


def _start(env: dict[str, str], port: int, log: Path, tls: tuple[Path, Path]
           ) -> subprocess.Popen[bytes]:  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(
            [*strongroom_command(), "server", "--listen", f"127.0.0.1:{port}",
             "--tls-cert", str(tls[0]), "--tls-key", str(tls[1])],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _wait_up(proc: subprocess.Popen[bytes], base: str, log: Path, trust: ssl.SSLContext) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/api/v1/health", verify=trust, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _admin(base: str, log: Path, trust: ssl.SSLContext) -> httpx.Client:
    line = next(ln for ln in log.read_text().splitlines() if "shown only now" in ln)
    http = httpx.Client(base_url=base, verify=trust)
    signed = http.post("/api/v1/session", json={"name": "admin", "password": line.split()[-1]})
    http.headers["X-CSRF-Token"] = signed.json()["csrf_token"]
    return http


PAUSE = Path(__file__).parent / "agent_pause.py"


def _packs(repo: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(repo / "data"))


def test_an_agent_backs_up_through_a_server_killed_mid_backup_and_restores(
    cli: CliRunner, cli_env: dict[str, str], tmp_path: Path, repo_path: Path
) -> None:
    assert cli("init").rc == 0
    env = {**cli_env, "STRONGROOM_CATALOG": str(tmp_path / "catalog.sqlite")}
    tls = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(tls[0]))
    ports = [_free_port(), _free_port()]
    bases = [f"https://127.0.0.1:{p}" for p in ports]
    servers = f"{bases[0]},{bases[1]}"
    logs = [tmp_path / "s1.log", tmp_path / "s2.log"]
    procs = [_start(env, ports[0], logs[0], tls)]
    agent: subprocess.Popen[bytes] | None = None
    try:
        _wait_up(procs[0], bases[0], logs[0], trust)
        procs.append(_start(env, ports[1], logs[1], tls))
        _wait_up(procs[1], bases[1], logs[1], trust)
        http = _admin(bases[0], logs[0], trust)
        token = http.post("/api/v1/enrollments", json={"machine": "laptop"}).json()["token"]
        agent_env = {k: v for k, v in os.environ.items()
                     if k not in ("STRONGROOM_PASSWORD", "STRONGROOM_REPO")}  # fmt: skip
        untrusted = _agent(agent_env, "agent", "enroll", "--server", bases[0], "--token", token)
        assert untrusted.returncode == 1 and "not trusted" in untrusted.stderr  # token not sent
        enrolled = _agent(agent_env, "agent", "enroll", "--server", servers, "--token", token,
                          "--ca-cert", str(tls[0]))  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stderr
        assert "laptop" in enrolled.stdout
        config = Path(os.environ["XDG_CONFIG_HOME"]) / "strongroom" / "agent.json"
        assert config.stat().st_mode & 0o777 == 0o600
        assert config.parent.stat().st_mode & 0o777 == 0o700
        replay = _agent(agent_env, "agent", "enroll", "--server", bases[0], "--token", token,
                        "--ca-cert", str(tls[0]), "--config", str(tmp_path / "x.json"))  # fmt: skip
        assert replay.returncode != 0 and "401" in replay.stderr and token not in replay.stderr

        src = tmp_path / "src"
        _tree(src)
        for i in range(6):  # 3 of them fill the first 8 MiB batch
            (src / f"big{i}.bin").write_bytes(os.urandom(3 << 20))
        before = _packs(repo_path)
        ready, go = tmp_path / "ready", tmp_path / "go"
        agent = subprocess.Popen(
            [sys.executable, str(PAUSE), "big5", str(ready), str(go), "--json", "backup",
             str(src), "--server", servers],
            env=agent_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (ready.exists() and _packs(repo_path) > before):  # first batch stored
            assert time.monotonic() < deadline and agent.poll() is None, "agent never paused"
            time.sleep(0.05)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        go.touch()
        out, err = agent.communicate(timeout=120)
        assert agent.returncode == 0, err.decode()
        first = json.loads(out.decode().splitlines()[-1])
        assert first["chunks_new"] >= 20

        second = _agent(agent_env, "--json", "backup", str(src), "--server", servers)
        assert second.returncode == 0, second.stderr
        again = json.loads(second.stdout.splitlines()[-1])
        assert again["data_added"] < 64 << 10, again  # new trees (atimes) at most
        assert again["parent"] == first["point_id"]
        sent = re.search(r"(\d+) chunk ids asked, (\d+) missing", second.stderr)
        assert sent is not None, second.stderr
        assert int(sent[2]) == again["chunks_new"] == int(sent[1]) <= 10  # new trees, no data

        listed = _agent(agent_env, "--json", "snapshots", "--server", servers)
        assert listed.returncode == 0, listed.stderr
        ids = [p["id"] for p in json.loads(listed.stdout)]
        assert ids == [first["point_id"], again["point_id"]]  # no half point

        target = tmp_path / "restored"
        restored = _agent(agent_env, "restore", ids[0][:12], "--target", str(target),
                          "--server", servers)  # fmt: skip
        assert restored.returncode == 0, restored.stderr
        assert walk_differences(src, target / str(src).lstrip("/"), check_root=False,
                                check_atime=False) == []  # fmt: skip
        # the agent's secret and the token are in no log of the servers
        secret = json.loads(config.read_text())["secret"]
        for log in logs:
            text = log.read_text()
            assert secret not in text and token not in text
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        for proc in procs:
            if proc.poll() is None:
                _stop(proc)
