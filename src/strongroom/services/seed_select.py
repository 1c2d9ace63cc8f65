"""Which seeds a file backup builds on, and the root their paths map to.

Rules (docs/seeds.md, "Backups against seeds"):

* `--seed NAME...` pins seeds: they are used whether or not they fit;
* by default every file seed is a candidate, kept only if it fits the
  source (`pipeline.seed_match.fits`: a deterministic sample of its files in
  the backed-up scope, at least half of which exist), so a hundred
  application seeds the machine does not have neither slow the backup down
  nor flood the list of lacking files;
* `--no-seeds` turns matching off.

Seed paths are relative; `root` is the machine path they are relative to:
`--seed-root DIR`, else `choose_root` (one backed-up directory P: P when it
holds a machine's root file system, i.e. half a seed's top-level directories;
else "/"; several paths: "/").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from strongroom.errors import IntegrityError, StrongroomError, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.origin import MAX_SEEDS_PER_POINT, UsedSeed
from strongroom.model.seed import Seed
from strongroom.pipeline.seed_match import (
    SeedFiles,
    SeedMatcher,
    choose_root,
    fits,
    load_seed_files,
)
from strongroom.repository.repo import Repository
from strongroom.repository.store import ChunkReader
from strongroom.services.seeds import find_seeds, list_seeds


@dataclass
class SeedChoice:
    refs: list[str] = field(default_factory=list)  # --seed: pinned
    no_seeds: bool = False
    trust_metadata: bool = False
    root: str | None = None  # --seed-root


@dataclass
class Selection:
    matcher: SeedMatcher | None
    skipped: list[str] = field(default_factory=list)  # auto candidates that did not fit
    warnings: list[str] = field(default_factory=list)  # auto candidates that cannot be read


def check_choice(choice: SeedChoice) -> None:
    """Refuse combinations that mean nothing (before the repository opens)."""
    if choice.no_seeds and (choice.refs or choice.trust_metadata or choice.root):
        raise UsageError(
            "--no-seeds goes with neither --seed, --seed-root nor --trust-seed-metadata"
        )
    if choice.root is not None and not os.path.isabs(choice.root):
        raise UsageError("--seed-root takes an absolute path")


def select_seeds(repo: Repository, choice: SeedChoice, paths: list[str]) -> Selection:
    """The matcher for a backup of `paths` (absolute, sorted), or None when no
    seed applies. Pinned seeds must be file seeds."""
    check_choice(choice)
    if choice.no_seeds:
        return Selection(None)
    seeds = find_seeds(repo, choice.refs) if choice.refs else list_seeds(repo)
    return select_among(repo, seeds, choice, paths)


def select_among(
    reader: ChunkReader, seeds: list[Seed], choice: SeedChoice, paths: list[str]
) -> Selection:
    """`select_seeds` with the seeds at hand: the pinned ones (`choice.refs`)
    or every seed (the candidates), their trees read through `reader` (a
    repository, or an agent's store over its backup server)."""
    check_choice(choice)
    if choice.no_seeds:
        return Selection(None)
    pinned = bool(choice.refs)
    if pinned:
        candidates = seeds
        for seed in candidates:
            if seed.content != PointKind.FILES:
                raise UsageError(
                    f"seed {printable(seed.name)} is a disk image seed; "
                    "file backups build on file seeds"
                )
    else:
        candidates = [s for s in seeds if s.content == PointKind.FILES]
    if not candidates:
        return Selection(None)
    if len(candidates) > MAX_SEEDS_PER_POINT:
        raise UsageError(f"a point builds on at most {MAX_SEEDS_PER_POINT} seeds; pin some")
    loaded = []
    warnings = []
    for seed in candidates:
        try:
            loaded.append((seed, load_seed_files(reader, seed.name, seed.tree)))
        except StrongroomError as err:
            if pinned:
                raise IntegrityError(f"seed {printable(seed.name)} cannot be read: {err}") from None
            # One damaged candidate must not stop every backup; `check` reports it.
            warnings.append(f"seed {printable(seed.name)} cannot be read, not used: {err}")
    if not loaded:
        return Selection(None, warnings=warnings)
    scope = [os.fsencode(p) for p in paths]
    if choice.root is not None:
        root = os.fsencode(os.path.normpath(choice.root))
    else:
        root = choose_root([files for _, files in loaded], scope)
    kept: list[tuple[Seed, SeedFiles]] = []
    skipped = []
    for seed, files in loaded:
        if pinned or fits(files, root, scope):
            kept.append((seed, files))
        else:
            skipped.append(seed.name)
    if not kept:
        return Selection(None, skipped, warnings)
    matcher = SeedMatcher(
        [files for _, files in kept],
        [UsedSeed(s.id, s.name, str(s.kind), s.version) for s, _ in kept],
        root,
        scope,
        trust_metadata=choice.trust_metadata,
    )
    return Selection(matcher, skipped, warnings)
