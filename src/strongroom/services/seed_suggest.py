"""`seed suggest PATH`: how much of a directory each seed covers.

Coverage is measured by bytes. Every regular file below PATH counts as
covered by a seed when the seed has a file at the same relative path with
the same size and mtime (what a package manager leaves alone); that costs
one lstat per file and no reading. The content is then confirmed on a
sample: up to N of the covered files, evenly spread over their sorted
paths, are cut with the repository's chunker and their chunk ids compared
with the seed's, so a user sees whether matching metadata means matching
content here. Two roots are tried per seed, "/" and PATH itself (the rules
of `backup`, docs/seeds.md), and the better one is reported as the guess
for `--seed-root`.

A PATH that is not a directory is an image: `services.image_seeds.
suggest_image` answers for it (written by the image work; until it exists
the answer says so).
"""

from __future__ import annotations

import importlib
import os
import stat
from dataclasses import asdict, dataclass, field

from strongroom.chunking import CdcChunker
from strongroom.errors import SourceError, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.tree import FILE
from strongroom.pipeline.seed_match import SeedFiles, content_of, load_seed_files, seed_path
from strongroom.repository.repo import Repository
from strongroom.services.seeds import list_seeds

DEFAULT_SAMPLE = 32
MAX_SAMPLE = 100_000


@dataclass
class Coverage:
    seed: str
    kind: str
    root: str  # the better root guess for this seed
    files: int  # files matched by path, size and mtime
    bytes: int
    percent: float  # of PATH's bytes
    sampled: int  # files whose content was checked
    confirmed: int  # ... and had the seed's content


@dataclass
class ImageCoverage:
    """How much of an image PATH one image seed holds, on a sample of blocks."""

    seed: str
    kind: str
    percent: float  # of the sampled data blocks: found anywhere in the seed's map
    sampled: int  # data blocks sampled


@dataclass
class Suggestion:
    path: str
    files: int
    bytes: int
    seeds: list[Coverage] = field(default_factory=list)  # best first
    image: list[ImageCoverage] | None = None  # an image PATH: per image seed, best first
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def suggest(repo: Repository, path: str, sample: int = DEFAULT_SAMPLE) -> Suggestion:
    if not 0 <= sample <= MAX_SAMPLE:
        raise UsageError(f"--sample takes 0 to {MAX_SAMPLE} files")
    absolute = os.path.abspath(path)
    try:
        st = os.stat(absolute)
    except OSError as err:
        raise SourceError(f"{path}: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        return _suggest_image(repo, absolute)
    files = _walk(os.fsencode(absolute))
    total = sum(size for _, size, _ in files)
    result = Suggestion(absolute, len(files), total)
    cfg = repo.config
    chunker = CdcChunker(cfg.cdc_min, cfg.cdc_avg, cfg.cdc_max, repo.master.chunker_seed)
    base = os.fsencode(absolute)
    for seed in list_seeds(repo):
        if seed.content != PointKind.FILES:
            continue
        seed_files = load_seed_files(repo, seed.name, seed.tree)
        roots = [b"/"] if base == b"/" else [b"/", base]
        best = max((_covered(seed_files, root, files) for root in roots), key=lambda c: c[1])
        root, covered, matched = best
        picked = _spread(sorted(matched), sample)
        confirmed = sum(
            1
            for p in picked
            if _confirm(repo, chunker, p, seed_files.entries[_rel(root, p)].content)
        )
        result.seeds.append(
            Coverage(
                seed=seed.name,
                kind=str(seed.kind),
                root=os.fsdecode(root),
                files=len(matched),
                bytes=covered,
                percent=round(100 * covered / total, 1) if total else 0.0,
                sampled=len(picked),
                confirmed=confirmed,
            )
        )
    result.seeds.sort(key=lambda c: (-c.bytes, c.seed))
    return result


def _rel(root: bytes, path: bytes) -> bytes:
    rel = seed_path(root, path)
    assert rel is not None
    return rel


def _walk(top: bytes) -> list[tuple[bytes, int, int]]:
    """(path, size, mtime_ns) of every regular file below `top` (symlinks not
    followed; unreadable directories skipped)."""
    found = []
    stack = [top]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                found.append((entry.path, st.st_size, st.st_mtime_ns))
    return found


def _covered(
    seed: SeedFiles, root: bytes, files: list[tuple[bytes, int, int]]
) -> tuple[bytes, int, list[bytes]]:
    covered = 0
    matched = []
    for path, size, mtime in files:
        rel = seed_path(root, path)
        entry = None if rel is None else seed.entries.get(rel)
        if entry is not None and entry.type == FILE:
            e_size, _, e_mtime = entry.stat
            if (e_size, e_mtime) == (size, mtime):
                covered += size
                matched.append(path)
    return root, covered, matched


def _spread(items: list[bytes], count: int) -> list[bytes]:
    """Up to `count` items evenly spread over `items` (deterministic)."""
    n = min(count, len(items))
    return [items[i * len(items) // n] for i in range(n)]


def _confirm(repo: Repository, chunker: CdcChunker, path: bytes, content: bytes) -> bool:
    try:
        return content_of(repo, chunker, path) == content
    except OSError:
        return False


def _suggest_image(repo: Repository, path: str) -> Suggestion:
    """An image PATH: the image helper's `suggest_image`, when it is there."""
    try:
        module = importlib.import_module("strongroom.services.image_seeds")
    except ImportError:
        return Suggestion(path, 0, 0, note="image sources: not yet")
    found = module.suggest_image(repo, list_seeds(repo), path)
    image = [
        ImageCoverage(seed.name, str(seed.kind), round(100 * share, 1), sampled)
        for seed, share, sampled in found
    ]
    return Suggestion(path, 0, 0, image=image)
