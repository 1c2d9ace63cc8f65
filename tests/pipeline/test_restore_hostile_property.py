"""Property: whatever trees a hostile repository holds, and whatever already sits
in the target, restore changes nothing outside the target, ends with a
StrongroomError at worst (never another exception) and never hangs.

Trees are drawn from a hostile alphabet (`.`, `..`, `/`, NUL, escape
characters, duplicates, unsorted entries), with hard links across directories
whose partners are symlinks, directories or FIFOs, setuid modes, foreign owners
and sizes that do not add up; the target holds symlinks and hard links to the
outside under the names the tree uses. Each example runs twice: with the
decoder's name rules, and without them (restore's own handling alone).
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.errors import StrongroomError
from strongroom.model.tree import Node, _decode_doc
from strongroom.pipeline import restore as restore_module
from strongroom.repository.repo import Repository
from strongroom.services.restore import restore_files
from strongroom.storage.memory import MemoryBackend
from tests.helpers.cli import PASSWORD
from tests.helpers.hostile import file_wire, put_tree, save_files_point, snapshot, wire

CLEAN_NAMES = [b"a", b"b", b"evl", b"victim", b"outside", b"target", b"world",
               b"\x1b]0;pwned\x07", b"\x1b[2J", b"line\nbreak", b"\xff\xfe"]  # fmt: skip
BAD_NAMES = [b".", b"..", b"", b"../x", b"a/b", b"/etc/cron.d/x", b"x\0y", b"\0"]
names = st.one_of(
    st.sampled_from(CLEAN_NAMES),
    st.sampled_from(CLEAN_NAMES),
    st.sampled_from(BAD_NAMES),
    st.lists(st.sampled_from(list(b"ab./\0\x1b\n")), max_size=4).map(bytes),
)
LINK_TARGETS = ["{outside}", "{outside}/victim", "../outside", "../../outside/victim",
                "../../../outside/victim", "/", "..", ".", "{world}", "a", "evl/x"]  # fmt: skip


@st.composite
def entries(draw: st.DrawFn, depth: int) -> dict[str, Any]:
    kinds = ["f", "f", "l", "p", "s", "c"] + (["d", "d"] if depth < 3 else [])
    kind = draw(st.sampled_from(kinds))
    entry: dict[str, Any] = {
        "name": draw(names),
        "kind": kind,
        "mode": draw(st.sampled_from([0o644, 0o4755, 0o6777, 0o1777, 0o000, 0o777])),
        "owner": draw(st.sampled_from([0, 1234, 65534])),
    }
    if draw(st.booleans()):  # a hard-link group shared across directories and types
        entry["link"] = draw(st.integers(1, 3))
    if kind == "f":
        entry["content"] = draw(st.sampled_from([b"", b"attacker\n", b"\0" * 5000, b"x" * 70000]))
        entry["size_error"] = draw(st.sampled_from([0, 0, 0, 0, 1, -1, 1 << 30]))
    elif kind == "l":
        entry["target"] = draw(st.sampled_from(LINK_TARGETS))
    elif kind == "d":
        entry["children"] = draw(st.lists(entries(depth + 1), max_size=4))
        entry["order"] = draw(st.sampled_from(["sorted", "sorted", "as-drawn"]))
    return entry


PRE_NAMES = ["a", "b", "evl", "victim", "a/a", "a/b", "evl/x", "a/evl"]
PRE_KINDS = ["abs-link", "rel-link", "dir-link", "hard-link", "dir", "file"]
pre_existing = st.lists(
    st.tuples(st.sampled_from(PRE_NAMES), st.sampled_from(PRE_KINDS)), max_size=5
)


def _materialize(
    repo: Repository, children: list[dict[str, Any]], order: str, world: Path
) -> bytes:
    wires = []
    for e in children:
        fields: dict[str, Any] = {"m": e["mode"], "u": e["owner"], "g": e["owner"]}
        if "link" in e:
            fields.update(ino=e["link"], dev=7, nl=2)
        if e["kind"] == "f":
            w = file_wire(repo, e["name"], e["content"], **fields)
            w["sz"] = max(0, w["sz"] + e["size_error"])
        elif e["kind"] == "d":
            sub = _materialize(repo, e["children"], e["order"], world)
            w = wire(e["name"], "d", st=sub, **fields)
        elif e["kind"] == "l":
            target = e["target"].format(outside=world / "outside", world=world)
            w = wire(e["name"], "l", lt=target.encode(), **fields)
        else:
            w = wire(e["name"], e["kind"], rd=os.makedev(1, 3) if e["kind"] == "c" else 0, **fields)
        wires.append(w)
    if order == "sorted":  # what a well-behaved writer would produce, but names unchecked
        unique = {w["n"]: w for w in wires}
        wires = [unique[n] for n in sorted(unique)]
    return put_tree(repo, wires)


def _lay_out(base: Path, pre: list[tuple[str, str]]) -> tuple[Path, Path]:
    world = base / "world"
    target = world / "target"
    outside = world / "outside"
    target.mkdir(parents=True)
    (outside / "sub").mkdir(parents=True)
    (outside / "victim").write_bytes(b"victim\n")
    (outside / "hl-victim").write_bytes(b"hard-linked into the target\n")
    (world / "bystander").write_bytes(b"bystander\n")
    os.symlink("victim", outside / "vlink")
    for rel, kind in pre:
        path = target / rel
        if not path.parent.is_dir() or path.is_symlink() or path.exists():
            continue
        if kind == "abs-link":
            os.symlink(outside / "victim", path)
        elif kind == "rel-link":
            os.symlink("../" * (rel.count("/") + 1) + "outside/victim", path)
        elif kind == "dir-link":
            os.symlink(outside, path)
        elif kind == "hard-link":
            os.link(outside / "hl-victim", path)
        elif kind == "dir":
            path.mkdir()
        else:
            path.write_bytes(b"stale\n")
    os.utime(world, ns=(1, 1))
    return world, target


class _Hang(Exception):
    pass


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise _Hang(f"restore did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _lenient_decode(blob: bytes) -> list[Node]:
    return [Node.from_wire(w) for w in _decode_doc(blob)]


def _check(
    root_entries: list[dict[str, Any]], order: str, pre: list[tuple[str, str]], lenient: bool
) -> None:
    repo = Repository.init(MemoryBackend(), PASSWORD.encode())
    original = restore_module.decode_tree
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            world, target = _lay_out(base, pre)
            root = _materialize(repo, root_entries, order, world)
            point = save_files_point(repo, root)
            before = snapshot(base, target, loose=("hl-",))
            if lenient:
                restore_module.decode_tree = _lenient_decode  # type: ignore[assignment]
            try:
                with _deadline(60):
                    restore_files(repo, point, str(target))
            except StrongroomError:
                pass  # refused or damaged: a one-line error, which is allowed
            finally:
                restore_module.decode_tree = original
            after = snapshot(base, target, loose=("hl-",))
            changed = sorted(
                k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
            )
            assert not changed, f"restore changed things outside its target: {changed}"
    finally:
        restore_module.decode_tree = original
        repo.close()


@settings(max_examples=120)
@given(
    st.lists(entries(0), max_size=6),
    st.sampled_from(["sorted", "as-drawn"]),
    pre_existing,
    st.booleans(),
)
def test_restore_of_a_hostile_tree_changes_nothing_outside_its_target(
    root_entries: list[dict[str, Any]], order: str, pre: list[tuple[str, str]], lenient: bool
) -> None:
    _check(root_entries, order, pre, lenient)
