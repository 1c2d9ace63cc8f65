"""strongroom policy add/list/show/remove edit the config file (comments and
layout kept, atomically); snapshots --source and restore --at walk a
protected source's timeline."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import CliRunner, open_local_repository
from tests.helpers.protected import START, every, store_points

HEAD = '# my settings\nrepo = "/r"  # where\n\n[vm.web]  # the web VM\nqmp = "unix:/q"\nnbd = "nbd://h"\ndisks = ["drive0"]\n'  # noqa: E501


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(HEAD)
    return path


def test_add_show_list_remove(cli: CliRunner, config: Path, tmp_path: Path) -> None:
    env = {"STRONGROOM_CONFIG": str(config)}
    tree = tmp_path / "data"
    tree.mkdir()
    added = cli(
        "policy",
        "add",
        "db",
        "--source",
        str(tree),
        "--source",
        "vm:web",
        "--cycle",
        "5m",
        "--keep-last",
        "96",
        "--daily",
        "7",
        "--keep-within",
        "2d",
        "--hook",
        "pre=sync",
        "--hook",
        "post=echo done",
        "--hook",
        "sqlite=/srv/a.db",
        "--freeze-timeout",
        "3s",
        env=env,
    )
    assert added.rc == 0, added.err
    text = config.read_text()
    assert text.startswith(HEAD)  # the user's comments and layout stay
    assert "[protect.db]" in text and 'cycle = "5m"' in text
    shown = cli("policy", "show", "db", "--json", env=env)
    assert shown.rc == 0, shown.err
    doc = shown.json()
    assert [(s["name"], s["kind"]) for s in doc["sources"]] == [
        ("db.data", "tree"),
        ("db.web", "vm"),
    ]
    assert doc["cycle_seconds"] == 300 and doc["freeze_timeout_seconds"] == 3
    assert doc["retention"] == {
        "keep_last": 96,
        "keep_within_seconds": 172800,
        "hourly": 0,
        "daily": 7,
        "weekly": 0,
    }
    assert doc["hooks"][0]["pre"] == "sync" and doc["hooks"][0]["post"] == "echo done"
    assert doc["hooks"][1]["type"] == "sqlite"
    listed = cli("policy", "list", "--json", env=env)
    assert [p["name"] for p in listed.json()] == ["db"]

    again = cli("policy", "add", "db", "--source", str(tree), env=env)
    assert again.rc == 2 and "policy db exists" in again.err
    assert cli("policy", "remove", "db", env=env).rc == 0
    assert config.read_text() == HEAD + "\n"
    gone = cli("policy", "remove", "db", env=env)
    assert gone.rc == 2 and "no policy db" in gone.err
    empty = cli("policy", "list", env=env)
    assert empty.rc == 0 and "no protection policy is defined" in empty.err + empty.out


def test_a_dsn_password_is_never_printed(cli: CliRunner, config: Path, tmp_path: Path) -> None:
    """docs/protect.md: the password in a DSN is never logged or recorded; the
    config file keeps it (the hook needs it), add/show/list print `***`."""
    env = {"STRONGROOM_CONFIG": str(config)}
    dsns = ["host=/run/pg user=b password=s3cret dbname=a", "postgresql://b:s3cret@h/a"]
    args = [a for d in dsns for a in ("--hook", f"postgresql={d}")]
    added = cli("policy", "add", "db", "--source", str(tmp_path), *args, env=env)
    assert added.rc == 0, added.err
    assert "s3cret" in config.read_text()
    outputs = [added.out + added.err]
    for command in (["show", "db"], ["show", "db", "--json"], ["list"], ["list", "--json"]):
        shown = cli("policy", *command, env=env)
        assert shown.rc == 0, shown.err
        outputs.append(shown.out + shown.err)
    assert all("s3cret" not in output for output in outputs)
    assert all("***" in outputs[i] for i in (0, 1, 2, 4))  # text `list` shows no hooks


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "/no/such"], "[protect.x]: source /no/such: No such file or directory"),
        (["--source", "vm:db"], "[protect.x]: source vm:db: no [vm.db] table defines that VM"),
        (["--source", "/", "--cycle", "30s"], "[protect.x]: cycle must be from 1 minute"),
        (["--source", "/", "--keep-last", "500"], "retention: keep_last must be a whole number"),
        (["--source", "/", "--hook", "shell=x"], "--hook 'shell=x': use pre=CMD"),
    ],
)
def test_add_refuses_and_leaves_the_file(
    cli: CliRunner, config: Path, args: list[str], message: str
) -> None:
    result = cli("policy", "add", "x", *args, env={"STRONGROOM_CONFIG": str(config)})
    assert result.rc == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert config.read_text() == HEAD


def test_timeline_and_restore_at(cli: CliRunner, initialized_repo: Path, tmp_path: Path) -> None:
    repo = open_local_repository(initialized_repo)
    try:
        ours = store_points(
            repo,
            "db",
            every(timedelta(minutes=15), 4),
            consistency="crash-consistent",
            reason="pre hook failed: exit 3",
        )
        store_points(repo, "other", every(timedelta(minutes=1), 2))
    finally:
        repo.close()
    listed = cli("snapshots", "--source", "db", "--json")
    assert listed.rc == 0, listed.err
    assert [p["id"] for p in listed.json()] == [p.id for p in ours]
    assert listed.json()[0]["reason"] == "pre hook failed: exit 3"

    # 00:29 UTC is 01:29 at +01:00: the point of 00:15 is the latest at or before it
    picked = cli(
        "restore", "db", "--at", "2026-11-02T01:29+01:00", "--target", str(tmp_path / "t"), "--json"
    )
    assert picked.rc == 0, picked.err
    assert picked.summary()["point_id"] == ours[1].id
    local = cli(
        "restore",
        "db",
        "--at",
        "2026-11-02 00:30",
        "--target",
        str(tmp_path / "u"),
        "--json",
        env={"TZ": "UTC"},
    )
    assert local.summary()["point_id"] == ours[2].id  # a point exactly at the instant counts

    early = cli(
        "restore",
        "db",
        "--at",
        "2026-11-01 23:59",
        "--target",
        str(tmp_path / "v"),
        env={"TZ": "UTC"},
    )
    assert early.rc != 0 and len(early.err.strip().splitlines()) == 1
    assert "db has no point at or before 2026-11-01 23:59:00" in early.err
    assert f"its first is at {START:%Y-%m-%d %H:%M:%S}" in early.err
    assert not (tmp_path / "v").exists()
    bad = cli("restore", "db", "--at", "yesterday", "--target", str(tmp_path / "w"))
    assert bad.rc == 2 and "--at yesterday: not a time" in bad.err
    none = cli("restore", "nosuch", "--at", "2026-11-02 00:30", "--target", str(tmp_path / "x"))
    assert none.rc != 0 and "no recovery point of protected source nosuch" in none.err
