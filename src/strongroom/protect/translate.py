"""Turn a cycle's tree changes into debugfs commands on the metadata disk.

The order is what keeps every command valid: free the names of removed and
rewritten entries, make new directories (parents first), relink renamed
files, remove emptied directories (deepest first), write new content, and
only then set owners, modes and times, directories last, since every edit
inside a directory would otherwise move its times again.

debugfs reads one command per line and splits words at blanks; a word in
double quotes keeps its blanks and `""` stands for one quote. A name with a
newline cannot be said at all: it is skipped with a warning and left out of
the recorded state, so the next cycle tries again.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

from strongroom.model.tree import CHARDEV, DIR, FIFO, FILE, SOCKET, SYMLINK, TYPE_BITS
from strongroom.protect.tree_state import ROOT, Entry, Tree, TreeChanges, depth
from strongroom.sources.files import read_xattrs_of


def quote(word: bytes) -> bytes:
    return b'"' + word.replace(b'"', b'""') + b'"'


def _time_fields(name: str, ns: int) -> list[tuple[str, str]]:
    """`sif` values for one inode time: seconds, then the extra field (ns << 2 |
    epoch bits), so times keep their nanoseconds and survive 2038."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    epoch = (seconds - ((seconds + 2**31) % 2**32 - 2**31)) >> 32
    return [(name, f"@{seconds}"), (f"{name}_extra", str((nanos << 2) | (epoch & 3)))]


@dataclass
class Script:
    """The commands of one cycle, plus what they need and what they skipped."""

    lines: list[bytes] = field(default_factory=list)
    value_files: dict[str, bytes] = field(default_factory=dict)  # xattr values to write
    skipped: list[bytes] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    xattrs: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict)  # names now set

    def add(self, *words: bytes) -> None:
        self.lines.append(b" ".join(words))

    def text(self) -> bytes:
        return b"".join(line + b"\n" for line in self.lines)


def _unusable(changes: TreeChanges, new: Tree, root: bytes) -> dict[bytes, str]:
    """Entries this cycle cannot mirror, and why: a name debugfs cannot be
    given (a newline ends its command line), a socket, a file we cannot read.
    They are left as they were and tried again next cycle."""
    skip: dict[bytes, str] = {}
    named = changes.removed + changes.created + changes.rewritten + changes.metadata
    named += [p for pair in changes.renamed for p in pair]
    for path in named:
        if b"\n" in path or b"\r" in path:
            skip[path] = "its name holds a line break, which debugfs cannot be given"
    for path in changes.created + changes.rewritten:
        if path in skip:
            continue
        entry = new[path]
        if entry.type == SOCKET:
            skip[path] = "sockets are not mirrored"
        elif entry.type == FILE and not os.access(root + path, os.R_OK):
            skip[path] = "cannot be read"
    return skip


def build_script(
    changes: TreeChanges, old: Tree, new: Tree, source_root: str, value_dir: str
) -> Script:
    """The debugfs commands that turn the mirror of `old` into the mirror of `new`."""
    script = Script()
    root = os.fsencode(os.path.abspath(source_root))
    skip = _unusable(changes, new, root)
    for path, why in skip.items():
        script.skipped.append(path)
        script.warnings.append(f"{os.fsdecode(path)}: {why}; not mirrored this cycle")
    rewritten = set(changes.rewritten)
    renamed = [(a, b) for a, b in changes.renamed if a not in skip and b not in skip]
    # A file renamed from a name that cannot be said is written anew.
    created = changes.created + [b for a, b in changes.renamed if a in skip and b not in skip]
    # 1. free the names of removed non-directories and of rewritten files; a
    #    rename that cannot be said becomes the removal of its source
    for path in changes.removed + [a for a, b in changes.renamed if a not in skip and b in skip]:
        if path not in skip and old[path].type != DIR:
            script.add(b"rm", quote(path))
    for path in changes.rewritten:
        if path not in skip:
            script.add(b"rm", quote(path))
    # 2. new directories, parents first
    for path in created:
        if path not in skip and new[path].type == DIR:
            script.add(b"mkdir", quote(path))
    # 3. renamed files keep their inode: a new name, then the old one goes
    for src, dst in renamed:
        script.add(b"ln", quote(src), quote(dst))
        script.add(b"unlink", quote(src))
    # 4. removed directories, deepest first (their contents went in 1 and 3)
    for path in changes.removed:
        if path not in skip and old[path].type == DIR:
            script.add(b"rmdir", quote(path))
    # 5. new content: files (hard links share one inode), links, devices
    groups: dict[int, list[bytes]] = defaultdict(list)
    for path in sorted(new):
        entry = new[path]
        if entry.type == FILE and entry.nlink > 1:
            groups[entry.ino].append(path)
    written: dict[int, bytes] = {}
    relinked: set[int] = set()
    for path in created + changes.rewritten:
        entry = new[path]
        if entry.type == DIR or path in skip:
            continue
        if entry.type == FILE:
            anchor = written.get(entry.ino) if entry.nlink > 1 else None
            if anchor is None and entry.nlink > 1:
                anchor = next(
                    (
                        p
                        for p in groups[entry.ino]
                        if p in old and p not in rewritten and old[p].ino == entry.ino
                    ),
                    None,
                )
            if anchor is not None and anchor != path:
                script.add(b"ln", quote(anchor), quote(path))
                relinked.add(entry.ino)
            else:
                script.add(b"write", quote(root + path), quote(path))
                written[entry.ino] = path
        elif entry.type == SYMLINK:
            script.add(b"symlink", quote(path), quote(entry.target))
        else:
            # debugfs's mknod takes a name in the current directory, not a path.
            parent, _, name = path.rpartition(b"/")
            script.add(b"cd", quote(parent or b"/"))
            if entry.type == FIFO:
                script.add(b"mknod", quote(name), b"p")
            else:
                kind = b"c" if entry.type == CHARDEV else b"b"
                major, minor = os.major(entry.rdev), os.minor(entry.rdev)
                script.add(b"mknod", quote(name), kind, b"%d" % major, b"%d" % minor)
            script.add(b"cd", b"/")
    for ino in relinked:
        anchor = written.get(ino) or groups[ino][0]
        script.add(b"sif", quote(anchor), b"links_count", b"%d" % len(groups[ino]))
    # 6. owners, modes, times and xattrs; directories after what they contain
    touched = [dst for _, dst in renamed] + created + changes.rewritten
    touched += changes.metadata
    ordered = sorted(
        (p for p in set(touched) if p not in skip),
        key=lambda p: (new[p].type == DIR, -depth(p), p),
    )
    # Entries that kept their inode still carry their old xattrs; fresh ones have none.
    kept = {path: old[path] for path in changes.metadata if path in old}
    kept.update({dst: old[src] for src, dst in renamed})
    for path in ordered:
        _set_metadata(script, path, new[path], kept.get(path))
        if new[path].type in (FILE, DIR):
            local = root if path == ROOT else root + path
            _set_xattrs(script, local, path, kept.get(path), value_dir)
    return script


def nanoseconds_script(tree: Tree) -> Script:
    """The sub-second part of every entry's times, which `mke2fs -d` drops."""
    script = Script()
    for path, entry in tree.items():
        if b"\n" in path or b"\r" in path or entry.type == SOCKET:
            continue
        for name, ns in (
            ("atime", entry.atime_ns),
            ("mtime", entry.mtime_ns),
            ("ctime", entry.ctime_ns),
        ):
            if ns % 1_000_000_000:
                extra = _time_fields(name, ns)[1]
                script.add(b"sif", quote(path), extra[0].encode(), extra[1].encode())
    return script


def metadata_script(path: bytes, entry: Entry) -> Script:
    """Commands that give `path` the owner, mode and times of `entry`."""
    script = Script()
    _set_metadata(script, path, entry)
    return script


def _fields(entry: Entry) -> list[tuple[str, str]]:
    fields = [
        ("mode", "0%o" % (TYPE_BITS[entry.type] | entry.mode)),
        ("uid", str(entry.uid)),
        ("gid", str(entry.gid)),
    ]
    fields += _time_fields("atime", entry.atime_ns)
    fields += _time_fields("mtime", entry.mtime_ns)
    fields += _time_fields("ctime", entry.ctime_ns)
    return fields


def _set_metadata(script: Script, path: bytes, entry: Entry, before: Entry | None = None) -> None:
    """`sif` the fields of `entry`; with `before` (the inode kept its record),
    only those that differ: a `chmod -R` costs a mode and a ctime per entry,
    not nine commands."""
    unchanged = set(_fields(before)) if before is not None else set()
    for name, value in _fields(entry):
        if (name, value) not in unchanged:
            script.add(b"sif", quote(path), name.encode(), value.encode())


def _set_xattrs(
    script: Script, local: bytes, path: bytes, before: Entry | None, value_dir: str
) -> None:
    try:
        attrs = read_xattrs_of(local)
    except OSError as err:
        script.warnings.append(f"{os.fsdecode(local)}: xattrs not read ({err.strerror})")
        return
    previous = set(before.xattrs) if before else set()
    for name in sorted(previous - set(attrs)):
        script.add(b"ea_rm", quote(path), quote(name))
    for name, value in sorted(attrs.items()):
        holder = os.path.join(value_dir, f"v{len(script.value_files)}")
        script.value_files[holder] = value
        script.add(b"ea_set", b"-f", quote(os.fsencode(holder)), quote(path), quote(name))
    if attrs or previous:
        script.xattrs[path] = tuple(sorted(attrs))
