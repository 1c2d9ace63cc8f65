"""`seed add`: chunk a golden image's content into the repository and record it.

A seed's content goes through the same chunkers with the same settings as a
backup (content-defined for files, fixed blocks for images), so a machine's
files and blocks deduplicate against it exactly. Its source is a directory
tree, a tar archive, one or more Debian packages, or a disk image; which one
is decided from the source itself (`detect_source`), never from a name alone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from strongroom.errors import IntegrityError, SourceError, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.point import now
from strongroom.model.seed import Seed, SeedKind
from strongroom.model.tree import DIR
from strongroom.pipeline.archive_tree import ArchiveResult, ArchiveTree
from strongroom.pipeline.backup import BackupOptions, FileBackup
from strongroom.repository.repo import Repository
from strongroom.services.seeds import check_new_name, record_seed
from strongroom.services.walk import load_tree
from strongroom.sources.deb import DebPackage, data_members, read_deb
from strongroom.sources.tar_stream import opened, read_tar
from strongroom.types import ProgressCallback, no_progress


class SourceKind:
    TREE = "tree"
    TAR = "tar"
    DEB = "deb"
    IMAGE = "image"


@dataclass
class SeedRequest:
    name: str
    sources: list[str]
    kind: SeedKind = SeedKind.OS
    version: str = ""
    description: str = ""
    image_format: str | None = None  # images: as `backup --image --format`
    allow_backing: bool = False


@dataclass
class SeedContent:
    """What an ingester stored: the root and the seed's summary."""

    content: PointKind
    tree: str
    summary: dict[str, int] = field(default_factory=dict)
    packages: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # shown, not recorded

    @classmethod
    def of_archive(
        cls, result: ArchiveResult, packages: list[dict[str, str]] | None = None
    ) -> SeedContent:
        return cls(PointKind.FILES, result.tree, result.summary, packages or [], result.warnings)


def detect_source(path: str) -> str:
    """The kind of a seed source, from what it is (a directory) or its first bytes."""
    if "://" in path:
        return SourceKind.IMAGE  # an NBD export or another URI `backup --image` reads
    try:
        if os.path.isdir(path):
            return SourceKind.TREE
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as err:
        raise SourceError(f"{path}: {err.strerror}") from None
    if head.startswith(b"!<arch>\n"):
        return SourceKind.DEB
    if _looks_like_tar(head):
        return SourceKind.TAR
    if path.endswith(".deb"):
        # Not an ar archive, so not a package: the package reader says so in
        # one line (a name never makes bytes acceptable, it only picks the error).
        return SourceKind.DEB
    return SourceKind.IMAGE


_COMPRESSED = (b"\x1f\x8b", b"\xfd7zXZ\x00", b"BZh", b"\x28\xb5\x2f\xfd")


def _looks_like_tar(head: bytes) -> bool:
    """A ustar/gnu header, or a compressed stream (gzip, xz, bzip2, zstd): disk
    images are never compressed that way, so a compressed source is an archive."""
    return head[257:262] == b"ustar" or head.startswith(_COMPRESSED)


def add_seed(
    repo: Repository,
    req: SeedRequest,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
    warn: Callable[[str], None] | None = None,
) -> Seed:
    """Store the sources' content and record the seed (the name is checked first:
    an existing name costs no work). `warn` hears what was skipped or replaced
    (a path two packages give); a damaged source raises SourceError and records
    nothing."""
    check_new_name(repo, req.name)
    if not req.sources:
        raise UsageError("give SOURCE: a directory, a tar archive, .deb files or an image")
    kinds = {detect_source(s) for s in req.sources}
    if len(req.sources) > 1 and kinds != {SourceKind.DEB}:
        raise UsageError("several sources are accepted only as Debian packages (.deb)")
    kind = kinds.pop()
    if req.image_format and len(req.sources) == 1 and kind in (SourceKind.TAR, SourceKind.DEB):
        kind = SourceKind.IMAGE  # the user says what the file is (a raw disk may start like one)
    if (req.image_format or req.allow_backing) and kind != SourceKind.IMAGE:
        raise UsageError("--format and --allow-backing apply to a disk image source")
    started = now()
    if kind == SourceKind.TREE:
        content = tree_from_directory(repo, req.sources[0], progress, cancel)
    elif kind == SourceKind.TAR:
        content = tree_from_tar(repo, req.sources[0], progress, cancel)
    elif kind == SourceKind.DEB:
        content = tree_from_debs(repo, req.sources, progress, cancel)
    elif kind == SourceKind.IMAGE:
        from strongroom.services.image_seeds import add_image_seed  # numpy, qemu: when asked

        content = add_image_seed(
            repo, req.sources[0], req.image_format, req.allow_backing, progress, cancel
        )
    else:
        raise UsageError(f"{req.sources[0]}: not a seed source")
    for message in content.warnings:
        if warn is not None:
            warn(message)
    seed = Seed(
        name=req.name,
        kind=req.kind,
        content=content.content,
        tree=content.tree,
        time=started,
        version=req.version,
        description=req.description,
        source=" ".join(req.sources),
        packages=content.packages,
        summary=content.summary,
    )
    return record_seed(repo, seed)


def tree_from_directory(
    repo: Repository,
    path: str,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> SeedContent:
    """Back up `path` with the file pipeline and keep the tree of `path` itself
    (the trees of the directories above it are stored too, and pruned later):
    a seed's paths are relative to its root. A symlink to the directory, or a
    path through a symlinked parent, names the directory it leads to (the
    walk never follows symlinks, so it starts from the real path)."""
    absolute = os.path.realpath(path)
    skip = [repo.backend.location] if os.path.isdir(repo.backend.location) else []
    pipeline = FileBackup(
        repo, BackupOptions(paths=[absolute], skip_dirs=skip), progress=progress, cancel=cancel
    )
    summary = pipeline.run()
    tree = bytes.fromhex(summary.tree_id)
    for part in [p for p in os.fsencode(absolute).split(b"/") if p]:
        node = next((n for n in load_tree(repo, tree) if n.name == part), None)
        if node is None or node.type != DIR or node.subtree is None:
            raise IntegrityError(f"{path}: the stored tree lost its own directory")
        tree = node.subtree
    return SeedContent(
        PointKind.FILES,
        tree.hex(),
        {
            "files": summary.total_files,
            "bytes": summary.total_bytes,
            "dirs": summary.dirs,
            "chunks_new": summary.chunks_new,
            "data_added": summary.data_added,
            "data_added_stored": summary.data_added_stored,
        },
    )


def tree_from_tar(
    repo: Repository,
    path: str,
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> SeedContent:
    """A tar archive (plain or compressed), streamed into a file tree."""
    with opened(path) as f, ArchiveTree(repo, progress, cancel) as tree:
        tree.add(read_tar(f, path, tree.note), path)
        return SeedContent.of_archive(tree.finish())


def tree_from_debs(
    repo: Repository,
    paths: list[str],
    progress: ProgressCallback = no_progress,
    cancel: threading.Event | None = None,
) -> SeedContent:
    """Debian packages' data archives merged into one tree, in the order given
    (a path two packages give is the later one's, with a warning). Every
    package's container and control file are checked before any is read."""
    notes: list[str] = []

    def note(message: str) -> None:
        if len(notes) < 100:
            notes.append(message)

    packages: list[DebPackage] = []
    for path in paths:
        with opened(path) as f:
            packages.append(read_deb(f, path, note))
    with ArchiveTree(repo, progress, cancel) as tree:
        for message in notes:
            tree.note(message)
        for package in packages:
            with opened(package.path) as f:
                tree.add(data_members(f, package, tree.note), package.name)
        result = tree.finish()
    return SeedContent.of_archive(result, [p.as_dict() for p in packages])
