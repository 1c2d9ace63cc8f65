"""Scoped recovery in process: the scope parser, each scope's exact file list,
contents and metadata after a restore, the lacks list, and the agreement of
`ls --scope` (the scoped walk) with what `restore --scope` writes."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from strongroom.errors import IntegrityError, PathNotFound, UsageError
from strongroom.model.origin import FileClass, Origin, PointSeeds
from strongroom.model.point import RecoveryPoint
from strongroom.model.scope import Scope, ScopeKind, ScopeSpec, bind
from strongroom.model.tree import Node, encode_tree
from strongroom.pipeline.restore import FileRestore
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.browse import diff_scoped
from strongroom.services.restore import ScopedRestore, restore_files
from strongroom.services.scope import (
    escape_line,
    iter_scoped,
    lacking_paths,
    scoped_node,
    unescape_line,
)
from tests.helpers.compare import rsync_differences, walk
from tests.helpers.seeded import (
    NGINX,
    OS,
    Machine,
    i,
    m,
    seeded_point,
    used_seed,
    with_root_entry,
)

USER = [
    "etc",
    "etc/hostname",
    "etc/nginx",
    "etc/nginx/nginx.conf",
    "home",
    "home/ann",
    "home/ann/big.bin",
    "home/ann/empty",
    "home/ann/fifo",
    "home/ann/libc-hl",
    "home/ann/notes.txt",
    "home/ann/passwd-link",
    "srv",
    "srv/data",
    "srv/data/db.sqlite",
    "srv/data/db.sqlite.bak",
    "srv/hl-second",
    "srv/old.conf",
    "usr",
    "usr/bin",
    "usr/bin/sqlite3",
    "usr/local-tool",
    "usr/share",
    "usr/share/nginx",
    "usr/share/nginx/index.html",
]
NGINX_FILES = [
    "etc",
    "etc/nginx",
    "etc/nginx/mime.types",
    "etc/nginx/nginx.conf",
    "usr",
    "usr/bin",
    "usr/bin/nginx",
    "usr/share",
    "usr/share/nginx",
    "usr/share/nginx/index.html",
]
SQLITE_FILES = ["usr", "usr/bin", "usr/bin/sqlite3", "usr/lib", "usr/lib/libc.so"]
OS_FILES = [
    "etc",
    "etc/hl-first",
    "etc/hostname",
    "etc/passwd",
    "home",
    "usr",
    "usr/bin",
    "usr/bin/dir",
    "usr/bin/ls",
    "usr/lib",
    "usr/lib/libc.so",
    "usr/share",
    "usr/share/doc",
    "usr/share/doc/copyright",
    "var",
    "var/empty-seed-dir",
]
EXPECTED = {
    "user": USER,
    "app:nginx-light": NGINX_FILES,
    "app:sqlite3": SQLITE_FILES,
    "os": OS_FILES,
}


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path / "machine")


@pytest.fixture
def point(local_repo: Repository, machine: Machine) -> RecoveryPoint:
    return machine.point(local_repo)


def _restored(target: Path, machine: Machine) -> Path:
    return target / str(machine.root.resolve()).lstrip("/")


def _entries(root: Path) -> dict[str, dict[str, object]]:
    return {rel.decode(): info for rel, _, info in walk(root)}


# --- the parser and the predicate ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "app"),
    [
        ("full", ScopeKind.FULL, ""),
        ("user", ScopeKind.USER, ""),
        ("os", ScopeKind.OS, ""),
        ("app:nginx-light", ScopeKind.APP, "nginx-light"),
    ],
)
def test_parse(text: str, kind: ScopeKind, app: str) -> None:
    spec = ScopeSpec.parse(text)
    assert (spec.kind, spec.app, str(spec)) == (kind, app, text)


@pytest.mark.parametrize("text", ["", "User", "app:", "app:../x", "app:a b", "os:debian", "all"])
def test_parse_refuses_junk(text: str) -> None:
    with pytest.raises(UsageError):
        ScopeSpec.parse(text)


@given(st.text(max_size=80))
def test_parse_never_raises_anything_but_usage_error(text: str) -> None:
    try:
        spec = ScopeSpec.parse(text)
    except UsageError as err:
        assert "\n" not in str(err)
    else:
        assert ScopeSpec.parse(str(spec)) == spec


def test_bind_refuses_unknown_seed_listing_the_used_ones() -> None:
    seeds = PointSeeds([used_seed("debian", "os"), used_seed("nginx-light")], "/")
    with pytest.raises(
        UsageError, match=r"does not build on seed nope.*debian \(os\), nginx-light"
    ):
        bind(ScopeSpec.parse("app:nope"), seeds, "abcd")
    with pytest.raises(UsageError, match="does not build on OS seed"):
        bind(ScopeSpec.parse("os"), PointSeeds([used_seed("x")], "/"), "abcd")
    with pytest.raises(UsageError, match="not made against seeds"):
        bind(ScopeSpec.parse("app:x"), None, "abcd")
    assert bind(ScopeSpec.parse("app:nope"), seeds, "abcd", strict=False).seeds == frozenset()


def test_selects_refuses_a_seed_index_outside_used() -> None:
    scope = bind(ScopeSpec.parse("user"), PointSeeds([used_seed("a")], "/"), "p")
    node = Node(b"x", "f", origin=Origin(FileClass.IDENTICAL, (1,)))
    with pytest.raises(IntegrityError, match="does not build on"):
        scope.selects(node)
    assert Scope(ScopeSpec()).selects(node)  # full reads no origin


@given(st.binary(max_size=40))
def test_lacks_line_escape_round_trips_on_one_line(path: bytes) -> None:
    line = escape_line(path)
    assert b"\n" not in line and b"\r" not in line
    assert unescape_line(line) == path


# --- restores: exact lists, contents, metadata ---------------------------------


@pytest.mark.parametrize("scope", sorted(EXPECTED))
def test_scoped_restore_writes_exactly_the_scope(
    tmp_path: Path, local_repo: Repository, machine: Machine, point: RecoveryPoint, scope: str
) -> None:
    target = tmp_path / f"out-{scope.replace(':', '-')}"
    summary = restore_files(local_repo, point, str(target), scope=ScopeSpec.parse(scope))
    assert summary.warnings == [] and summary.damaged == []
    got = _entries(_restored(target, machine))
    assert sorted(got) == EXPECTED[scope]
    source = _entries(machine.root)
    for rel, info in got.items():  # contents, mode, owner, mtime, xattrs, link targets
        want = {k: x for k, x in source[rel].items() if k not in ("atime_ns", "nlink")}
        assert {k: x for k, x in info.items() if k not in ("atime_ns", "nlink")} == want, rel
    # above the machine: only the directories on the way (and the lacks list)
    parts = machine.root.resolve().parts[1:]
    above = {"/".join(parts[: n + 1]) for n in range(len(parts))}
    if scope == "user":
        above.add(".strongroom-lacks")
    rels = {rel.decode() for rel, _, _ in walk(target)}
    assert {r for r in rels if not r.startswith("/".join(parts) + "/")} == above


def test_user_scope_hard_links_and_lacks(
    tmp_path: Path, local_repo: Repository, machine: Machine, point: RecoveryPoint
) -> None:
    target = tmp_path / "out"
    scoped = ScopedRestore()
    summary = restore_files(
        local_repo, point, str(target), scope=ScopeSpec.parse("user"), scoped=scoped
    )
    out = _restored(target, machine)
    # first name out of scope (etc/hl-first): the second one is a whole file
    assert (out / "srv/hl-second").read_bytes() == b"linked across classes\n"
    assert (out / "srv/hl-second").stat().st_nlink == 1
    assert (out / "home/ann/libc-hl").read_bytes() == (
        machine.root / "usr/lib/libc.so"
    ).read_bytes()
    # both names in scope: still one inode
    a, b = (out / "srv/data/db.sqlite").stat(), (out / "srv/data/db.sqlite.bak").stat()
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)
    assert stat.S_ISFIFO((out / "home/ann/fifo").lstat().st_mode)
    assert summary.classes == {"own": 9, "modified": 4, "moved": 1}
    base = os.fsencode(machine.root.resolve())
    want = sorted(base + b"/" + p for _, p in machine.lacks)
    assert scoped.lacks == want
    assert scoped.lacks_file == str(target / ".strongroom-lacks")
    lines = (target / ".strongroom-lacks").read_bytes().split(b"\n")
    assert lines[-1] == b"" and [unescape_line(x) for x in lines[:-1]] == want
    assert lacking_paths(local_repo, point) == want


def test_full_scope_equals_the_machine(
    tmp_path: Path, local_repo: Repository, machine: Machine, point: RecoveryPoint
) -> None:
    summary = restore_files(local_repo, point, str(tmp_path / "out"), scope=ScopeSpec.parse("full"))
    assert rsync_differences(machine.root, _restored(tmp_path / "out", machine)) == []
    restore_files(local_repo, point, str(tmp_path / "plain"))  # no scope at all
    # The targets themselves are made by each restore (their times are the
    # restore's, not the point's): the same entries in both, and below them
    # the same trees.
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == sorted(
        p.name for p in (tmp_path / "out").iterdir()
    )
    for top in (tmp_path / "plain").iterdir():
        assert rsync_differences(top, tmp_path / "out" / top.name) == []
    assert not (tmp_path / "out/.strongroom-lacks").exists()
    assert summary.classes == {"identical": 8, "modified": 4, "moved": 1, "own": 9}


def test_include_intersects_the_scope(
    tmp_path: Path, local_repo: Repository, machine: Machine, point: RecoveryPoint
) -> None:
    usr = str(machine.root.resolve() / "usr")
    scoped = ScopedRestore()
    restore_files(
        local_repo,
        point,
        str(tmp_path / "out"),
        [usr],
        scope=ScopeSpec.parse("user"),
        scoped=scoped,
    )
    got = sorted(_entries(_restored(tmp_path / "out", machine)))
    assert got == [p for p in USER if p.startswith("usr")]
    assert scoped.lacks == [
        os.fsencode(usr) + p for p in (b"/bin/deleted", b"/share/nginx/removed.html")
    ]


# --- ls, diff and dump agree with restore ---------------------------------------


@pytest.mark.parametrize("scope", [*sorted(EXPECTED), "full"])
def test_scoped_walk_lists_what_restore_writes(
    tmp_path: Path, local_repo: Repository, machine: Machine, point: RecoveryPoint, scope: str
) -> None:
    spec = ScopeSpec.parse(scope)
    target = tmp_path / "out"
    restore_files(local_repo, point, str(target), scope=spec)
    written = [b"/" + rel for rel, _, _ in walk(target) if rel != b".strongroom-lacks"]
    bound = bind(spec, point.seeds, point.short_id)
    listed = [path for path, _ in iter_scoped(local_repo, bytes.fromhex(point.tree), bound)]
    assert listed == written


def test_scoped_node_for_dump(
    local_repo: Repository, machine: Machine, point: RecoveryPoint
) -> None:
    tree = bytes.fromhex(point.tree)
    user = bind(ScopeSpec.parse("user"), point.seeds, "p")
    base = str(machine.root.resolve())
    assert scoped_node(local_repo, tree, user, base + "/etc/hostname").name == b"hostname"
    with pytest.raises(PathNotFound, match=r"outside --scope user \(it is identical"):
        scoped_node(local_repo, tree, user, base + "/etc/passwd")
    nginx = bind(ScopeSpec.parse("app:nginx-light"), point.seeds, "p")
    with pytest.raises(PathNotFound, match="outside --scope app:nginx-light"):
        scoped_node(local_repo, tree, nginx, base + "/usr/lib/libc.so")


def test_diff_scoped_sees_a_class_change(
    local_repo: Repository, machine: Machine, point: RecoveryPoint
) -> None:
    origins = dict(machine.origins)
    del origins["etc/passwd"]  # now the machine's own, content unchanged
    (machine.root / "etc/hostname").write_bytes(b"renamed\n")
    (machine.root / "etc/nginx/mime.types").write_bytes(b"types { }\n")
    origins["etc/nginx/mime.types"] = m(NGINX)
    later = seeded_point(local_repo, machine.root, machine.used, origins, machine.lacks)
    base = os.fsencode(machine.root.resolve())
    for text, want in [
        ("user", {("+", b"/etc/passwd"), ("M", b"/etc/hostname"), ("+", b"/etc/nginx/mime.types")}),
        ("app:nginx-light", {("M", b"/etc/nginx/mime.types")}),
        ("os", {("-", b"/etc/passwd"), ("M", b"/etc/hostname")}),
    ]:
        scope = bind(ScopeSpec.parse(text), point.seeds, "p")
        changes = {  # below the machine (tmp_path's own times are not the test's)
            (c.kind, c.path[len(base) :])
            for c in diff_scoped(local_repo, point, scope, later, scope)
            if c.path.startswith(base + b"/")
        }
        assert changes == want, text


# --- points without seeds and hostile records -------------------------------------


def test_unseeded_point_user_is_everything(tmp_path: Path, local_repo: Repository) -> None:
    src = tmp_path / "plain"
    (src / "d").mkdir(parents=True)
    (src / "d/f").write_bytes(b"x")
    point = backup_files(local_repo, BackupRequest(paths=[str(src)])).point
    assert point is not None
    scoped = ScopedRestore()
    restore_files(
        local_repo, point, str(tmp_path / "out"), scope=ScopeSpec.parse("user"), scoped=scoped
    )
    assert scoped.notice is not None and "every entry is the machine's own" in scoped.notice
    assert rsync_differences(src, tmp_path / "out" / str(src).lstrip("/")) == []
    assert (tmp_path / "out/.strongroom-lacks").read_bytes() == b""
    with pytest.raises(UsageError, match="not made against seeds"):
        restore_files(local_repo, point, str(tmp_path / "o2"), scope=ScopeSpec.parse("os"))
    assert not (tmp_path / "o2").exists()


def test_origin_naming_an_unused_seed(
    tmp_path: Path, local_repo: Repository, machine: Machine
) -> None:
    machine.origins["usr/local-tool"] = i(7)
    point = machine.point(local_repo)
    with pytest.raises(IntegrityError, match="names a seed the point does not build on"):
        restore_files(local_repo, point, str(tmp_path / "out"), scope=ScopeSpec.parse("user"))
    assert {p.name for p in tmp_path.iterdir()} <= {"out", "machine", "repo", "home"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lacks_blob": b"\xc1 not msgpack"}, "does not decode"),
        ({"lacks_count": 2}, "holds 3 entries, the point counts 2"),
    ],
)
def test_hostile_lacks_writes_nothing(
    tmp_path: Path,
    local_repo: Repository,
    machine: Machine,
    kwargs: dict[str, object],
    message: str,
) -> None:
    point = machine.point(local_repo, **kwargs)
    with pytest.raises(IntegrityError, match=message):
        restore_files(local_repo, point, str(tmp_path / "out"), scope=ScopeSpec.parse("user"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "lacks", [[(OS, b"../../escape")], [(OS, b"etc/../../x")], [(OS, b"/etc/abs")], [(9, b"etc/x")]]
)
def test_hostile_lacks_paths(
    tmp_path: Path, local_repo: Repository, machine: Machine, lacks: list[tuple[int, bytes]]
) -> None:
    from strongroom.model.origin import encode_lacks

    point = seeded_point(
        local_repo,
        machine.root,
        machine.used,
        machine.origins,
        lacks_blob=encode_lacks(lacks),
        lacks_count=1,
    )
    with pytest.raises(IntegrityError, match="lacking seed files"):
        restore_files(local_repo, point, str(tmp_path / "out"), scope=ScopeSpec.parse("user"))
    assert not (tmp_path / "out").exists()


def test_lacks_file_replaces_a_planted_symlink(tmp_path: Path, local_repo: Repository) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "f").write_bytes(b"own")
    point = seeded_point(local_repo, root, [used_seed("debian", "os")], {}, [(0, b"gone")])
    restore_files(local_repo, point, str(tmp_path / "ok"), scope=ScopeSpec.parse("user"))
    want = os.fsencode(root.resolve()) + b"/gone\n"
    assert (tmp_path / "ok/.strongroom-lacks").read_bytes() == want
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "ok/.strongroom-lacks").unlink()
    (tmp_path / "ok/.strongroom-lacks").symlink_to(victim)
    restore_files(local_repo, point, str(tmp_path / "ok"), scope=ScopeSpec.parse("user"))
    assert victim.read_bytes() == b"keep"
    assert (tmp_path / "ok/.strongroom-lacks").read_bytes() == want
    assert NGINX == 1  # the helper's indexes are what the lists above assume


def test_default_lacks_file_clash_is_refused(tmp_path: Path, local_repo: Repository) -> None:
    """A point holding /.strongroom-lacks itself (a restored machine backed up
    again): the default name is refused before anything is written."""
    root = tmp_path / "m"
    root.mkdir()
    (root / "f").write_bytes(b"own")
    point = with_root_entry(
        local_repo,
        seeded_point(local_repo, root, [used_seed("debian", "os")], {}, [(0, b"gone")]),
        Node(b".strongroom-lacks", "f"),
    )
    with pytest.raises(UsageError, match=r"holds /\.strongroom-lacks itself.*--lacks-file"):
        restore_files(local_repo, point, str(tmp_path / "out"), scope=ScopeSpec.parse("user"))
    assert not (tmp_path / "out").exists()
    restore_files(
        local_repo,
        point,
        str(tmp_path / "out"),
        scope=ScopeSpec.parse("user"),
        lacks_file=str(tmp_path / "lacks.txt"),
    )
    assert (tmp_path / "out/.strongroom-lacks").read_bytes() == b""  # the point's own file
    assert (tmp_path / "lacks.txt").read_bytes() == os.fsencode(root.resolve()) + b"/gone\n"


def test_lacks_file_naming_a_restored_path_is_refused(
    tmp_path: Path, local_repo: Repository
) -> None:
    """--lacks-file inside the target at a path the point holds would clobber
    the restored file (or fail on a restored directory after the restore):
    refused before anything is written, as the default name is."""
    root = tmp_path / "m"
    (root / "sub").mkdir(parents=True)
    (root / "f").write_bytes(b"own data")
    point = seeded_point(local_repo, root, [used_seed("debian", "os")], {}, [(0, b"gone")])
    out = tmp_path / "out"
    base = out / str(root.resolve()).lstrip("/")
    base.mkdir(parents=True)
    for name in ("f", "sub"):
        with pytest.raises(UsageError, match=r"holds .*/m/" + name + " itself.*--lacks-file"):
            restore_files(
                local_repo,
                point,
                str(out),
                scope=ScopeSpec.parse("user"),
                lacks_file=str(base / name),
            )
        assert list(base.iterdir()) == []
    restore_files(
        local_repo, point, str(out), scope=ScopeSpec.parse("user"), lacks_file=str(base / "l")
    )
    assert (base / "f").read_bytes() == b"own data"
    assert (base / "l").read_bytes() == os.fsencode(root.resolve()) + b"/gone\n"


# --- agreement on arbitrary trees ----------------------------------------------------

_ORIGINS = st.sampled_from(
    [None, i(0), i(1), i(0, 1), m(0), m(1), Origin(FileClass.MOVED, (1,), b"x/y")]
)


@st.composite
def _trees(draw: st.DrawFn, depth: int = 0) -> list[tuple[bytes, str, Origin | None, object]]:
    names = draw(st.lists(st.sampled_from([b"a", b"b", b"c", b"d"]), unique=True, max_size=4))
    out = []
    for name in sorted(names):
        kind = draw(st.sampled_from(["f", "l", "d"] if depth < 3 else ["f", "l"]))
        children = draw(_trees(depth + 1)) if kind == "d" else None
        out.append((name, kind, draw(_ORIGINS), children))
    return out


def _store(repo: Repository, entries: list[tuple[bytes, str, Origin | None, object]]) -> bytes:
    nodes = []
    for name, kind, origin, children in entries:
        node = Node(name, kind, mode=0o755 if kind == "d" else 0o644, origin=origin)
        if kind == "l":
            node.link_target = b"target"
        if kind == "d":
            node.subtree = _store(repo, children)  # type: ignore[arg-type]
        nodes.append(node)
    return repo.put_chunk(BlobType.TREE, encode_tree(nodes))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # trees only add chunks
@given(
    tree=_trees(),
    scope=st.sampled_from(["full", "user", "os", "app:app"]),
    root=st.sampled_from(["/", "/a", "/a/b"]),
    include=st.sampled_from([None, "/a", "/b/c"]),
)
def test_scoped_walk_and_restore_agree_on_any_tree(
    memory_repo: Repository,
    tree: list[tuple[bytes, str, Origin | None, object]],
    scope: str,
    root: str,
    include: str | None,
) -> None:
    tree_id = _store(memory_repo, tree)
    memory_repo.flush()
    seeds = PointSeeds([used_seed("debian", "os"), used_seed("app")], root)
    bound = bind(ScopeSpec.parse(scope), seeds, "p")
    try:
        listed = [p for p, _ in iter_scoped(memory_repo, tree_id, bound, include or "/")]
    except PathNotFound:
        return
    with tempfile.TemporaryDirectory() as target:
        job = FileRestore(memory_repo, tree_id, target, [include] if include else [], scope=bound)
        job.run()
        written = [b"/" + rel for rel, _, _ in walk(target)]
    event(f"entries written: {min(len(written), 5)}+")
    assert listed == written
