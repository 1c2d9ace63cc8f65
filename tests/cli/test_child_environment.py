"""Child processes get no secrets (issue #10).

A freeze/thaw hook is a user's script, perhaps run over ssh; qemu-img,
qemu-nbd and e2fsprogs need none of strongroom's settings. Every spawn in
src/ passes `env=child_environment()`: the AST guard below fails on a new
`subprocess` call that forgets it, and the real runs check what a child sees.
"""

from __future__ import annotations

import ast
import os
import pathlib
import sys

import pytest

from strongroom.config import child_environment, is_secret_name
from strongroom.sources.guest import Quiesce
from strongroom.sources.qemu_img import run_tool

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "strongroom"
SPAWNERS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}
FORBIDDEN_OS = {"system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execlp",
                "execle", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl",
                "spawnle", "spawnlp", "spawnlpe", "posix_spawn", "posix_spawnp", "fork",
                "forkpty"}  # fmt: skip

SECRETS = {
    "STRONGROOM_PASSWORD": "hunter2-pw",
    "STRONGROOM_PASSWORD_FILE": "/root/pw",
    "STRONGROOM_PASSWORD_COMMAND": "pass show repo",
    "STRONGROOM_KEY_FILE": "/root/key",
    "STRONGROOM_REPO": "s3:https://user:pw@host/bucket",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-xyz",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "AWS_SESSION_TOKEN": "aws-token-xyz",
    "GITHUB_TOKEN": "ghp-token",
    "MY_DB_PASSWORD": "db-pw",
    "SOME_CLIENT_SECRET": "client-secret",
}


def _spawns(tree: ast.AST) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        if isinstance(owner, ast.Name) and owner.id in ("subprocess", "os", "pty", "asyncio"):
            out.append(node)
    return out


def test_every_spawn_in_src_passes_a_child_environment() -> None:
    unguarded = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _spawns(tree):
            owner = call.func.value.id  # type: ignore[attr-defined]
            name = call.func.attr  # type: ignore[attr-defined]
            where = f"{path.relative_to(SRC)}:{call.lineno}"
            if owner == "os" and name == "fork" and where.startswith("pipeline/workers.py"):
                continue  # a worker runs strongroom's own code, never another program
            if owner == "os" and name in FORBIDDEN_OS:
                unguarded.append(f"{where}: os.{name} (use subprocess with env=)")
            elif owner == "pty" or (owner == "asyncio" and name.startswith("create_subprocess")):
                unguarded.append(f"{where}: {owner}.{name}")
            elif owner == "subprocess" and name in SPAWNERS:
                env = [k for k in call.keywords if k.arg == "env"]
                if not env or "child_environment" not in ast.unparse(env[0].value):
                    unguarded.append(f"{where}: subprocess.{name} without env=child_environment")
    # and an env built elsewhere must come from child_environment too
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        copies = "os.environ.items()" in text or "**os.environ" in text
        if copies and path.name != "config.py":
            unguarded.append(f"{path.relative_to(SRC)}: copies os.environ")
    assert unguarded == []


def test_the_secret_names() -> None:
    for name in SECRETS:
        assert is_secret_name(name), name
    for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "TERM", "SSH_AUTH_SOCK"):
        assert not is_secret_name(name), name


def test_child_environment_keeps_path_and_drops_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = child_environment({"STRONGROOM_VM": "web"})
    assert env["PATH"] == os.environ["PATH"]
    assert env["LANG"] == "C.UTF-8"
    assert env["STRONGROOM_VM"] == "web"  # what the caller adds on purpose
    assert not set(SECRETS) & set(env)


def test_a_freeze_hook_sees_no_secret(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    dump = tmp_path / "env.txt"
    q = Quiesce("web", freeze_command=f"env > {dump}", thaw_command=f"env >> {dump}")
    frozen, _ = q.freeze()
    assert frozen
    assert q.thaw() is None
    seen = dump.read_text()
    assert "STRONGROOM_VM=web" in seen and "STRONGROOM_HOOK=freeze" in seen
    assert "PATH=" in seen
    for k, v in SECRETS.items():
        assert k not in seen and v not in seen


def test_a_qemu_tool_sees_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_tool (every qemu-img call) hands its child the filtered environment;
    `env` itself stands in for qemu-img, it prints what it got."""
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    seen = run_tool(["env"], "env")
    assert "PATH=" in seen
    for k, v in SECRETS.items():
        assert k not in seen and v not in seen


def test_e2fsprogs_see_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from strongroom.protect import e2fs

    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    done = e2fs._run([sys.executable, "-c", "import os; print(dict(os.environ))"], "env")
    seen = done.stdout.decode()
    assert "E2FSPROGS_UNDO_DIR" in seen
    for k, v in SECRETS.items():
        assert k not in seen and v not in seen
