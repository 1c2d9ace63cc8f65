"""The change journal: its file format (hostile input), the inotify tracker under
a writer, and every way it can lose track (overflow, kill, no tracker)."""

from __future__ import annotations

import os
import random
import signal
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.trackers.journal import (
    OUT_OF_SYNC,
    Journal,
    Kind,
    Record,
    encode,
    header,
    parse,
    path_ok,
)
from tests.trackers.journal_fixtures import BACKENDS, make_tree, tracker, write_some

# Trackers size their kernel queues from sysctls that the overflow tests lower for
# a moment, and a fanotify mark sees the whole file system: every test that runs
# a tracker runs in one xdist worker, one after the other (CI: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("journal-trackers")

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sysctl)")


def _journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "j")
    j.create()
    return j


def test_append_changes_commit_and_torn_tail(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    assert j.append([(Kind.CREATED, b"a"), (Kind.MODIFIED, b"d/b")]) == 2
    assert j.append([(Kind.RENAMED_FROM, b"x"), (Kind.RENAMED_TO, b"y")]) == 4
    assert j.changes_up_to(2) == {"a", "d/b"}
    assert j.changes_up_to(4) == {"a", "d/b", "x", "y"}
    j.commit(2)
    assert j.changes_up_to(4) == {"x", "y"} and j.read().base == 2
    with open(j.path, "ab") as f:  # a crash in the middle of an append
        f.write(encode(Record(5, 0, Kind.DELETED, b"zzz"))[:-2])
    assert j.read().damage is None and j.read().last == 4
    assert Journal(j.folder).append([(Kind.ATTRIB, b"q")]) == 5  # torn tail cut, not lost
    assert j.changes_up_to(5) == {"x", "y", "q"}


def test_out_of_sync_mark_until_committed(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append([(Kind.CREATED, b"a")])
    mark = j.mark_out_of_sync("inotify queue overflowed")
    j.append([(Kind.CREATED, b"b")])
    assert j.changes_up_to(1) == {"a"}  # the mark is after 1: changes up to 1 are whole
    assert j.changes_up_to(3) is OUT_OF_SYNC
    assert j.status()["in_sync"] is False and j.flag() == (mark, "inotify queue overflowed")
    j.commit(3)
    assert j.flag() is None and j.status()["in_sync"] is True
    assert j.changes_up_to(3) == set()


def test_damage_in_the_middle_is_out_of_sync_and_commit_recovers(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append([(Kind.CREATED, b"a"), (Kind.CREATED, b"b"), (Kind.CREATED, b"c")])
    data = bytearray(j.path.read_bytes())
    data[len(header(0)) + 20] ^= 0xFF  # inside the first record's body
    j.path.write_bytes(bytes(data))
    assert j.changes_up_to(3) is OUT_OF_SYNC
    j.commit(3)
    assert j.changes_up_to(3) == set() and j.flag() is None
    assert j.append([(Kind.CREATED, b"d")]) == 4


def test_no_tracker_answers_so_the_cycle_is_out_of_sync(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    seq = j.take_sequence(timeout=0.2)
    assert j.changes_up_to(seq) is OUT_OF_SYNC
    assert "tracker not running" in str(j.status()["reason"])


_kinds = st.sampled_from(list(Kind))
_paths = st.binary(min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_kinds, _paths), max_size=8),
    st.integers(0, 400),
    st.binary(max_size=8),
    st.integers(0, 1),
)
def test_parser_on_hostile_bytes(
    records: list[tuple[Kind, bytes]], cut: int, garbage: bytes, how: int
) -> None:
    good = header(7) + b"".join(encode(Record(8 + i, 1, k, p)) for i, (k, p) in enumerate(records))
    data = good[:cut] + garbage if how else good[:cut] + garbage + good[cut + len(garbage) :]
    parsed = parse(data)  # never raises
    assert parsed.end <= len(data)
    for i, record in enumerate(parsed.records):
        assert record.seq == parsed.base + 1 + i
        assert record.kind == Kind.OUT_OF_SYNC or not record.path.startswith(b"/")
        assert b".." not in record.path.split(b"/") or record.kind == Kind.OUT_OF_SYNC


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_parser_on_random_bytes_and_consumer_never_fails(data: bytes) -> None:
    parse(data)
    parse(header(0) + data)


def assert_journal_matches(journal: object, log: set[str], tree: Path) -> None:
    """The journal lists exactly the writer's paths, but for one race it may lose
    without harm: a file made in a new directory and gone again (deleted or
    renamed away) before the tracker's batch listed that directory. It is absent
    at the cycle's instant, and the directory itself is in the journal."""
    assert isinstance(journal, set)
    assert journal <= log
    for path in log - journal:
        assert not (tree / path).exists(), path
        parents = [str(p) for p in Path(path).parents if str(p) != "."]
        assert any(p in journal for p in parents), path


@pytest.mark.parametrize("backend", BACKENDS)
def test_tracker_lists_exactly_what_the_writer_changed(tmp_path: Path, backend: str) -> None:
    tree, rng = tmp_path / "tree", random.Random(1)
    make_tree(tree, rng)
    with tracker(tree, tmp_path / "state", backend) as t:
        t.sync()
        for _ in range(3):
            log = write_some(tree, rng, 30)
            seq = t.journal.take_sequence()
            assert_journal_matches(t.journal.changes_up_to(seq), log, tree)
            t.journal.commit(seq)
        info = t.journal.status()
        assert info["backend"] == backend and info["tracker_running"] is True
        # a directory tree renamed inside the tree keeps being watched under its new name
        (tree / "a").rename(tree / "c" / "a2")
        t.sync()
        (tree / "c" / "a2" / "b" / "late.txt").write_text("x")
        seq = t.journal.take_sequence()
        assert t.journal.changes_up_to(seq) == {"c/a2/b/late.txt"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_directory_filled_at_once_loses_nothing(tmp_path: Path, backend: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    with tracker(tree, tmp_path / "state", backend) as t:
        t.sync()
        t.signal(signal.SIGSTOP)  # the watch on new/ comes after its files exist
        (tree / "new" / "deep").mkdir(parents=True)
        for i in range(20):
            (tree / "new" / "deep" / f"{i}").write_text(str(i))
        t.signal(signal.SIGCONT)
        seq = t.journal.take_sequence()
        t.journal.commit(seq)
        (tree / "new" / "deep" / "after").write_text("late")
        seq = t.journal.take_sequence()
        assert t.journal.changes_up_to(seq) == {"new/deep/after"}


@root_only
@pytest.mark.parametrize("backend", BACKENDS)
def test_queue_overflow_marks_out_of_sync_until_commit(tmp_path: Path, backend: str) -> None:
    """fanotify's queue length is fs.fanotify.max_queued_events (Linux 5.13+), read
    when the group is made, like inotify's: a tracker started under it keeps it.
    fanotify's queue also takes the events of the rest of the file system (other
    processes): 1,024 rather than 16, flooded with 3,000 files, and the check that
    the journal is in sync again is retried when the others overflowed it again."""
    queue, flood = (16, 100) if backend == "inotify" else (1024, 3000)
    knob = Path(f"/proc/sys/fs/{backend}/max_queued_events")
    saved = knob.read_text()
    tree = tmp_path / "tree"
    tree.mkdir()
    knob.write_text(str(queue))
    try:
        with tracker(tree, tmp_path / "state", backend) as t:
            knob.write_text(saved)
            t.sync()
            t.signal(signal.SIGSTOP)
            for i in range(flood):
                (tree / f"{i}").write_text("x")
            t.signal(signal.SIGCONT)
            seq = t.journal.take_sequence()
            assert t.journal.changes_up_to(seq) is OUT_OF_SYNC
            assert "overflow" in str(t.journal.status()["reason"])
            for _ in range(1 if backend == "inotify" else 5):
                t.journal.commit(seq)
                (tree / "0").write_text("again")
                seq = t.journal.take_sequence()
                if t.journal.changes_up_to(seq) is not OUT_OF_SYNC:
                    break
            assert t.journal.changes_up_to(seq) == {"0"}
    finally:
        knob.write_text(saved)


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_tracker_restart_is_out_of_sync(tmp_path: Path, backend: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    with tracker(tree, tmp_path / "state", backend) as t:
        t.sync()
        t.kill()
        (tree / "while-down").write_text("x")  # nobody saw this
        t.start()
        seq = t.journal.take_sequence()
        assert t.journal.changes_up_to(seq) is OUT_OF_SYNC
        assert "did not end cleanly" in str(t.journal.status()["reason"])
        t.journal.commit(seq)
        assert t.journal.status()["in_sync"] is True
        t.stop()
        assert not (t.journal.folder / "running").exists()
        t.start()  # even a clean restart missed what happened in between
        assert "tracker started" in str(t.journal.status()["reason"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_changes_outside_the_tree_are_not_journaled_and_a_moved_root_is_noticed(
    tmp_path: Path, backend: str
) -> None:
    """fanotify marks the whole file system: a sibling of the tree, a directory
    moved out of the tree and a name sharing the tree's prefix give no record."""
    tree, outside = tmp_path / "tree", tmp_path / "tree-sibling"
    (tree / "d").mkdir(parents=True)
    outside.mkdir()
    with tracker(tree, tmp_path / "state", backend) as t:
        t.sync()
        (tree / "d").rename(outside / "d")
        (outside / "d" / "f").write_text("out")
        (outside / "g").write_text("out")
        (tree / "in").write_text("in")
        seq = t.journal.take_sequence()
        assert t.journal.changes_up_to(seq) == {"d", "in"}
        t.journal.commit(seq)
        tree.rename(tmp_path / "moved")
        seq = t.journal.take_sequence()
        assert t.journal.changes_up_to(seq) is OUT_OF_SYNC
        assert "root was moved" in str(t.journal.status()["reason"])


def test_a_second_tracker_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    import threading

    from strongroom.errors import SourceError
    from strongroom.trackers.journal_tracker import run_tracker

    tree = tmp_path / "tree"
    tree.mkdir()
    with tracker(tree, tmp_path / "state"), pytest.raises(SourceError, match="another tracker"):
        run_tracker(tree, tmp_path / "state" / "journal", threading.Event())


@root_only
@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_a_mount_below_the_tree_rules_fanotify_out(tmp_path: Path, backend: str) -> None:
    """One mark covers one file system: with a mount below the tree, auto takes
    inotify (saying why) and a running fanotify watch reports it at the barrier."""
    import subprocess

    from strongroom.errors import SourceError
    from strongroom.trackers.journal_tracker import open_watch

    (tmp_path / "m").mkdir()
    watch, why = open_watch(tmp_path, "auto")
    assert (watch.backend, why, watch.problem()) == ("fanotify", None, None)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(tmp_path / "m")], check=True)
    try:
        assert "mounted below the tree" in str(watch.problem())
        watch.close()
        watch, why = open_watch(tmp_path, "auto")
        watch.close()
        assert watch.backend == "inotify" and "mounted below the tree" in str(why)
        with pytest.raises(SourceError, match="mounted below the tree"):
            open_watch(tmp_path, "fanotify")
    finally:
        subprocess.run(["umount", str(tmp_path / "m")], check=True)


_info_record = st.builds(
    lambda kind, size, handle, name, length: (
        struct.pack("=BBH", kind, 0, length if length is not None else 20 + len(handle + name))
        + struct.pack("=iiIi", 0, 0, size if size is not None else len(handle), 1)
        + handle
        + name
    ),
    st.sampled_from([1, 2, 3, 4, 200]),
    st.none() | st.integers(0, 300),
    st.binary(min_size=1, max_size=12),
    st.binary(max_size=12),
    st.none() | st.integers(0, 300),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(_info_record, max_size=3), st.binary(max_size=20))
def test_fanotify_event_decoder_on_hostile_bytes(
    mask: int, records: list[bytes], garbage: bytes
) -> None:
    """Info records of any shape: bounded, never raises, paths only below the root."""
    from strongroom.trackers.fanotify import FsWatch

    watch = FsWatch.__new__(FsWatch)
    watch.root, watch.prefix, watch.lost = b"/r", b"/r/", None
    watch._resolve = lambda handle: b"/r/d" if handle[0] % 2 else b"/x"  # type: ignore[method-assign]
    out: list[tuple[Kind, bytes]] = []
    watch._event(mask, b"".join(records) + garbage, {}, out)
    for kind, path in out:
        assert kind == Kind.OUT_OF_SYNC or (path.startswith(b"d") and path_ok(path))
