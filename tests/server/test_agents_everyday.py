"""An agent's everyday commands through a real `strongroom server` process,
with the real CLI as two enrolled machines (no repository password in their
environment): backup's excludes, --files-from, --stdin and -v; restore's
--include/--overwrite/--delete/--dry-run and scoped `latest`; ls, dump, find
and diff on the machine's own points, printing what the same commands print
on the server's repository; another machine's point refused in one line.

One server for the module (its start and the enrollments cost seconds)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.cli import FAST_KDF, PASSWORD, CliResult, assert_one_line_error, run_cli
from tests.helpers.fuse_mount import Mount, mounted, needs_fuse
from tests.server.test_server_process import _free_port, _start, _stop, _wait_up, admin_client

_DROPPED = ("STRONGROOM_REPO", "STRONGROOM_PASSWORD", "STRONGROOM_PASSWORD_FILE",
            "STRONGROOM_CONFIG", "STRONGROOM_NO_CACHE", "STRONGROOM_CATALOG")  # fmt: skip


@dataclass
class Fleet:
    base: str
    admin_env: dict[str, str]  # the server's side: the repository and its password
    agent_env: dict[str, str]  # an agent's: neither
    configs: dict[str, str]  # machine -> its agent config
    root: Path

    def agent(self, machine: str, *args: str, stdin: bytes | None = None) -> CliResult:
        """`strongroom ARGS --agent-config CONFIG` as `machine`."""
        return run_cli([*args, "--agent-config", self.configs[machine]], self.agent_env,
                       input=stdin, timeout=120)  # fmt: skip

    def ok(self, machine: str, *args: str, stdin: bytes | None = None) -> dict[str, object]:
        done = self.agent(machine, "--json", *args, stdin=stdin)
        assert done.rc == 0, done.err
        doc: dict[str, object] = json.loads(done.out.splitlines()[-1])
        return doc

    def local(self, *args: str) -> CliResult:
        """The same command on the server's repository itself."""
        return run_cli(list(args), self.admin_env, timeout=120)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    home = root / "home"
    base_env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    base_env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                    XDG_CACHE_HOME=str(home / ".cache"), XDG_DATA_HOME=str(home / ".local"),
                    STRONGROOM_KDF=FAST_KDF, STRONGROOM_PRIORITY="normal")  # fmt: skip
    admin_env = {**base_env, "STRONGROOM_REPO": str(root / "repo"),
                 "STRONGROOM_PASSWORD": PASSWORD,
                 "STRONGROOM_CATALOG": str(root / "catalog.sqlite")}  # fmt: skip
    assert run_cli(["init"], admin_env).rc == 0
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    server = _start(admin_env, port, log)
    try:
        _wait_up(server, base, log)
        http = admin_client(base, log)
        configs = {}
        for machine in ("alpha", "beta"):
            token = http.post("/api/v1/enrollments", json={"machine": machine}).json()["token"]
            configs[machine] = str(root / f"{machine}.json")
            done = run_cli(["agent", "enroll", "--server", base, "--token", token,
                            "--config", configs[machine]], base_env)  # fmt: skip
            assert done.rc == 0, done.err
        http.close()
        yield Fleet(base, admin_env, base_env, configs, root)
    finally:
        _stop(server)


def _point_paths(fleet: Fleet, point_id: str) -> list[str]:
    """Every path in the point, from the server's repository (`ls --json`)."""
    done = fleet.local("--json", "ls", point_id)
    assert done.rc == 0, done.err
    return sorted(json.loads(line)["path"] for line in done.out.splitlines() if line.strip())


def test_backup_excludes_lists_and_verbose_lines_through_the_server(
    fleet: Fleet, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "cache").mkdir(parents=True)
    (src / "cache" / "CACHEDIR.TAG").write_bytes(b"Signature: 8a477f597d28d172789f06886806bc55\n")
    (src / "cache" / "junk.bin").write_bytes(b"j" * 1000)
    (src / "skipme").mkdir()
    (src / "skipme" / ".nobackup").write_text("")
    (src / "skipme" / "secret.txt").write_text("left out\n")
    (src / "big.bin").write_bytes(os.urandom(300_000))
    (src / "keep.txt").write_text("kept\n")
    (src / "other.txt").write_text("listed\n")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# the list\n{src}\n{tmp_path / 'gone'}\n")
    done = fleet.agent("alpha", "-v", "backup", "--jobs", "1", "--files-from", str(listing),
                       "--exclude-caches", "--exclude-if-present", ".nobackup",
                       "--exclude-larger-than", "100K")  # fmt: skip
    assert done.rc == 3, done.err  # as locally: the missing path warned about, the rest saved
    assert f"{tmp_path / 'gone'}: no such file or directory (not backed up)" in done.err
    assert f"new       {src / 'keep.txt'}" in done.out + done.err
    point = run_cli(["--json", "snapshots", "--agent-config", fleet.configs["alpha"]],
                    fleet.agent_env).out  # fmt: skip
    point_id = json.loads(point)[-1]["id"]
    paths = [p for p in _point_paths(fleet, point_id) if p.startswith(f"{src}/")]
    assert paths == sorted(str(src / n) for n in (
        "cache", "cache/CACHEDIR.TAG", "keep.txt", "other.txt", "skipme", "skipme/.nobackup"
    ))  # fmt: skip


def test_stdin_through_the_server_restores_equal(fleet: Fleet, tmp_path: Path) -> None:
    data = os.urandom(200_000) + b"dump\n" * 1000
    doc = fleet.ok("alpha", "backup", "--stdin", "--stdin-filename", "dumps/db.sql",
                   "--tag", "stdin", stdin=data)  # fmt: skip
    assert doc["total_bytes"] == len(data)
    dumped = run_cli(["dump", str(doc["point_id"]), "/dumps/db.sql"], fleet.admin_env,
                     binary=True)  # fmt: skip
    assert dumped.rc == 0 and dumped.out == data  # type: ignore[comparison-overlap]
    host = fleet.local("--json", "snapshots")
    assert {p["host"] for p in json.loads(host.out) if p["id"] == doc["point_id"]} == {"alpha"}
    refused = fleet.agent("alpha", "backup", "--stdin", "--host", "x", stdin=b"")
    assert refused.rc == 2 and "no --host" in refused.err


def _backup(fleet: Fleet, machine: str, src: Path, tag: str) -> str:
    return str(fleet.ok(machine, "backup", str(src), "--tag", tag)["point_id"])


def _restore(fleet: Fleet, *args: str, target: Path) -> tuple[list[str], list[str]]:
    """An agent's restore and the same one locally on the server's repository
    (into a copy of `target`): their output lines (sorted: -v lines come as
    the workers finish), the targets' names made equal."""
    local_target = target.with_name(target.name + "-local")
    shutil.rmtree(local_target, ignore_errors=True)
    if target.exists():
        shutil.copytree(target, local_target, symlinks=True)
    mine = fleet.agent("alpha", "restore", *args, "--target", str(target))
    theirs = fleet.local("restore", *args, "--target", str(local_target))
    assert mine.rc == 0 and theirs.rc == 0, mine.err + theirs.err
    theirs_text = (theirs.out + theirs.err).replace(str(local_target), str(target))
    return sorted((mine.out + mine.err).splitlines()), sorted(theirs_text.splitlines())


def test_restore_options_through_the_server_as_locally(fleet: Fleet, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("first a\n")
    (src / "b.txt").write_text("only in the first\n")
    (src / "sub" / "c.txt").write_text("c\n")
    first = _backup(fleet, "alpha", src, "r1")
    (src / "a.txt").write_text("second a, longer\n")
    (src / "b.txt").unlink()
    second = _backup(fleet, "alpha", src, "r2")
    rel = str(src).lstrip("/")

    # `latest` scoped by --tag among the machine's own points, said as locally
    out = tmp_path / "t"
    mine, theirs = _restore(fleet, "latest", "--tag", "r1", "--path", str(src), target=out)
    assert f"using point {first[:8]}" in "\n".join(mine) and mine == theirs
    assert (out / rel / "b.txt").read_text() == "only in the first\n"

    # --include: only that path
    inc = tmp_path / "inc"
    mine, theirs = _restore(fleet, second, "--include", f"{src}/sub", target=inc)
    assert mine == theirs
    assert sorted(p.name for p in (inc / rel).iterdir()) == ["sub"]

    # the second point over the first's files, plus one of the target's own
    (out / rel / "extra").write_text("mine\n")
    mine, theirs = _restore(fleet, second, "--delete", "--dry-run", "-v", target=out)
    assert mine == theirs
    assert f"deleted   {src}/extra" in mine
    assert any(line.startswith("would restore") for line in mine)
    assert (out / rel / "b.txt").exists() and (out / rel / "a.txt").read_text() == "first a\n"
    mine, theirs = _restore(fleet, second, "--overwrite", "never", "--jobs", "1", target=out)
    assert mine == theirs and (out / rel / "a.txt").read_text() == "first a\n"
    mine, theirs = _restore(fleet, second, "--delete", "-v", target=out)
    assert mine == theirs and f"deleted   {src}/b.txt" in mine
    assert (out / rel / "a.txt").read_text() == "second a, longer\n"
    assert not (out / rel / "b.txt").exists() and not (out / rel / "extra").exists()


def test_another_machines_point_is_refused_in_one_line(fleet: Fleet, tmp_path: Path) -> None:
    src = tmp_path / "beta-src"
    src.mkdir()
    (src / "secret.txt").write_text("beta's\n")
    foreign = _backup(fleet, "beta", src, "beta")
    refused = fleet.agent("alpha", "restore", foreign[:12], "--target", str(tmp_path / "x"))
    assert refused.rc == 1 and not (tmp_path / "x").exists()
    assert_one_line_error(refused, "0 points of this machine match")
    host = fleet.agent("alpha", "restore", "latest", "--host", "beta", "--target", "/tmp/x")
    assert host.rc == 2 and "no --host" in host.err


def test_ls_dump_find_diff_through_the_server_print_what_they_print_locally(
    fleet: Fleet, tmp_path: Path
) -> None:
    src = tmp_path / "browse"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "app.conf").write_text("port = 1\n")
    (src / "notes.txt").write_text("first\n")
    (src / "data.bin").write_bytes(os.urandom(100_000))
    os.symlink("etc/app.conf", src / "link")
    first = _backup(fleet, "alpha", src, "b1")
    (src / "etc" / "app.conf").write_text("port = 2\n")
    (src / "notes.txt").unlink()
    (src / "new.txt").write_text("new\n")
    second = _backup(fleet, "alpha", src, "b1")

    def same(*args: str) -> CliResult:
        mine, theirs = fleet.agent("alpha", *args), fleet.local(*args)
        assert mine.rc == theirs.rc == 0, mine.err + theirs.err
        assert (mine.out, mine.err) == (theirs.out, theirs.err)
        return mine

    listed = same("ls", "latest", "--tag", "b1", "-l")
    assert f"using point {second[:8]}" in listed.err and f"{src}/new.txt" in listed.out
    same("--json", "ls", first[:12], str(src / "etc"))
    assert same("dump", first, str(src / "notes.txt")).out == "first\n"
    binary = run_cli(["cat", second, str(src / "data.bin"), "--agent-config",
                      fleet.configs["alpha"]], fleet.agent_env, binary=True)  # fmt: skip
    assert binary.rc == 0 and binary.out == (src / "data.bin").read_bytes()
    found = same("find", "*.conf", "--tag", "b1", "-l")
    assert found.out.count("found in point") == 2
    same("--json", "find", "/**/new.txt", "--point", second[:10])
    diffed = same("diff", first, second)
    assert f"-    {src}/notes.txt" in diffed.out and f"M    {src}/etc/app.conf" in diffed.out


def test_browsing_another_machines_point_is_refused_in_one_line(
    fleet: Fleet, tmp_path: Path
) -> None:
    src = tmp_path / "beta-browse"
    src.mkdir()
    (src / "secret.txt").write_text("beta's\n")
    foreign = _backup(fleet, "beta", src, "beta-b")[:12]
    mine = _backup(fleet, "alpha", src, "alpha-b")[:12]
    for args in (("ls", foreign), ("dump", foreign, str(src / "secret.txt")),
                 ("find", "*", "--point", foreign), ("diff", mine, foreign)):  # fmt: skip
        refused = fleet.agent("alpha", *args)
        assert refused.rc == 1 and "beta's" not in refused.out, args
        assert_one_line_error(refused, "0 points of this machine match")
    host = fleet.agent("alpha", "ls", "latest", "--host", "beta")
    assert host.rc == 2 and "no --host" in host.err
    assert fleet.agent("alpha", "find", "secret.txt", "--tag", "beta-b").out == ""


@needs_fuse
def test_mount_through_the_server_shows_the_machines_own_points(
    fleet: Fleet, tmp_path: Path
) -> None:
    """`mount --agent-config`: the machine's own points (not another machine's), files
    read through the server byte-equal; SIGTERM unmounts (exit 0)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    data = os.urandom(700_000)
    (src / "sub" / "data.bin").write_bytes(data)
    (src / "note.txt").write_text("mine\n")
    mine = fleet.ok("alpha", "backup", str(src))["point_id"]
    theirs = fleet.ok("beta", "backup", str(src))["point_id"]
    where = tmp_path / "mnt"
    where.mkdir()
    mount = Mount(where, fleet.agent_env, "--agent-config", fleet.configs["alpha"])
    try:
        ids = set(os.listdir(where / "ids"))
        assert str(mine) in ids and str(theirs) not in ids
        inside = where / "ids" / str(mine) / str(src).lstrip("/")
        assert (inside / "sub" / "data.bin").read_bytes() == data
        assert (inside / "note.txt").read_text() == "mine\n"
        assert os.listdir(where / "hosts") == ["alpha"]
    finally:
        assert mount.stop() == 0
    assert not mounted(where)


def test_backup_dry_run_through_the_server_asks_and_sends_nothing(
    fleet: Fleet, tmp_path: Path
) -> None:
    """--dry-run through a server: the files are read and cut and the server asked which
    chunks it lacks, so "added" is what a real run would upload; nothing is sent and no
    point made. Shared content another machine already stored counts as present."""
    src = tmp_path / "src"
    src.mkdir()
    shared = os.urandom(400_000)
    (src / "shared.bin").write_bytes(shared)
    other = tmp_path / "other"
    other.mkdir()
    (other / "shared.bin").write_bytes(shared)
    fleet.ok("beta", "backup", str(other))  # the server holds the shared file's chunks
    (src / "own.bin").write_bytes(os.urandom(300_000))
    before = json.loads(fleet.agent("alpha", "--json", "snapshots").out)
    dry = fleet.ok("alpha", "backup", str(src), "--dry-run")
    assert dry["dry_run"] is True and dry["point_id"] is None
    assert 300_000 <= dry["data_added"] < 400_000, dry  # only alpha's own file is new
    traffic = dry["traffic"]
    assert isinstance(traffic, dict) and traffic["bundles"] == 0 and traffic["asked"] >= 2
    assert json.loads(fleet.agent("alpha", "--json", "snapshots").out) == before
    real = fleet.ok("alpha", "backup", str(src))
    assert 0 <= real["data_added"] - dry["data_added"] < 8192  # the folders' trees, as locally
