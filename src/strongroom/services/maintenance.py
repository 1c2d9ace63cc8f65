"""Prune, check, stats and unlock: whole-repository use cases."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from strongroom.cpu import resolve_jobs
from strongroom.errors import IntegrityError, UsageError
from strongroom.model.kinds import IMAGE_KINDS, PointKind
from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import FILE
from strongroom.pipeline.blockmaps import load_block_map, load_vm_manifest
from strongroom.repository import format as fmt
from strongroom.repository.check import (
    CheckReport,
    check_data,
    check_structure,
    report_damage,
    select_packs,
)
from strongroom.repository.locks import LockInfo, list_locks, remove_locks
from strongroom.repository.prune import PrunePlan, execute_prune, plan_prune
from strongroom.repository.repo import Repository
from strongroom.services.points import find_point, list_points
from strongroom.services.seeds import list_seeds, seed_roots
from strongroom.services.tree_check import ManifestChecker
from strongroom.services.walk import iter_tree, referenced_by_points
from strongroom.types import Progress, no_progress


def prune(
    repo: Repository,
    *,
    max_unused: float = 0.0,
    dry_run: bool = False,
    report: Callable[[str], None] = lambda _: None,
) -> PrunePlan:
    """Remove unreferenced data. Caller holds the exclusive lock."""
    # strict: a point or seed that cannot be read may use any chunk, so nothing can be removed.
    points = list_points(repo, strict=True)
    seeds = seed_roots(repo, strict=True)
    report(f"finding what {len(points)} points and {len(seeds)} seeds reference")
    used, errors = referenced_by_points(repo, points + seeds)
    if errors:
        raise IntegrityError(
            f"cannot read every point's trees ({errors[0]}); run 'strongroom check'"
        )
    plan = plan_prune(repo, used, max_unused)
    if not dry_run:
        execute_prune(repo, plan, report)
        # Temporary files of killed writers: safe to remove under the exclusive lock.
        clean = getattr(repo.backend, "clean_temporary", None)  # optional ability
        if clean is not None:
            clean()
    return plan


def check_subset(subset: str | None) -> None:
    """A malformed `--read-data-subset` (n/m or P%) is a usage error, found
    before the repository is opened."""
    try:
        select_packs([], subset)
    except ValueError as err:
        if "n/m" in str(err) or "percentage" in str(err):
            raise UsageError(f"--read-data-subset: {err}") from None
        raise UsageError(
            f"--read-data-subset takes n/m (the nth of m parts, e.g. 1/5) or a percentage "
            f"(e.g. 10%), not {subset!r}"
        ) from None


@dataclass
class CheckResult:
    report: CheckReport
    damaged_files: dict[str, list[str]] = field(default_factory=dict)  # point id -> paths

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.report.ok,
            "errors": self.report.errors,
            "warnings": self.report.warnings,
            "packs_read": self.report.packs_read,
            "chunks_read": self.report.chunks_read,
            "damaged_files": self.damaged_files,
        }


def check(
    repo: Repository,
    *,
    read_data: bool = False,
    subset: str | None = None,
    progress: Callable[[Progress], None] = no_progress,
    jobs: int | None = None,
) -> CheckResult:
    """Structure, every manifest (each distinct one once: services/tree_check.py),
    and with `read_data`/`subset` the packs' bytes, on `jobs` threads (None: the
    CPUs, `cpu.default_jobs`; the findings do not depend on it). Damaged or
    foreign objects met anywhere are errors."""
    check_subset(subset)  # a malformed subset is a usage error before any work
    report = CheckReport()
    # Points first, index second: a backup running meanwhile writes its index
    # files before its point, so every point listed here has its chunks in the
    # index read next (the other order races: a point whose index came later).
    points = list_points(repo)  # damaged points go to repo.damage
    seeds = list_seeds(repo)  # checked like points: their chunks are roots too
    labels = {seed.id: f"seed {seed.name}" for seed in seeds}
    check_structure(repo, report)
    findings = ManifestChecker(repo, report.chunk_info()).check_points(
        points + [seed.as_point() for seed in seeds], labels
    )
    report.errors += findings.errors
    report.trees_read = findings.trees_read
    for c in findings.missing:
        report.damaged_chunks.setdefault(c, "?")
    if read_data or subset:
        check_data(repo, report, subset, progress, resolve_jobs(jobs))
    report_damage(repo, report)
    result = CheckResult(report)
    if report.damaged_chunks:
        damaged = set(report.damaged_chunks)
        for point in points:
            try:
                paths = damaged_paths(repo, point, damaged)
            except Exception as err:
                paths = [f"(tree unreadable: {err})"]
            if paths:
                result.damaged_files[point.id] = paths
                report.errors.append(
                    f"point {point.short_id}: {len(paths)} of its entries hold lost or damaged "
                    "data ('strongroom repair points' writes it without them)"
                )
    return result


def damaged_paths(repo: Repository, point: RecoveryPoint, damaged: set[bytes]) -> list[str]:
    """Files (or, for an image, block offsets) of a point that hold damaged chunks."""
    if point.kind == PointKind.BLOCK:
        block_map = load_block_map(repo, bytes.fromhex(point.tree))
        return [
            f"block at offset {block_map.extent(i)[0]}"
            for i in range(block_map.blocks)
            if block_map.get(i) in damaged
        ]
    if point.kind == PointKind.VM:
        found = []
        for disk in load_vm_manifest(repo, bytes.fromhex(point.tree)).disks:
            disk_map = load_block_map(repo, bytes.fromhex(disk.map_root))
            found += [
                f"disk {disk.name}, block at offset {disk_map.extent(i)[0]}"
                for i in range(disk_map.blocks)
                if disk_map.get(i) in damaged
            ]
        return found
    if point.kind != PointKind.FILES:
        return []  # a kind this version does not know: never walked as files
    return [
        path.decode("utf-8", "surrogateescape")
        for path, node in iter_tree(repo, bytes.fromhex(point.tree))
        if node.type == FILE and damaged.intersection(node.chunks)
    ]


def stats(repo: Repository) -> dict[str, object]:
    """Sizes of the repository and of what its points hold."""
    points = list_points(repo)
    pack_sizes = repo.list_packs()
    stored = sum(pack_sizes.values())
    packs = len(pack_sizes)
    index_bytes = sum(o.size for o in repo.backend.list(fmt.INDEX_PREFIX))
    logical = sum(
        int(p.summary.get("size" if p.kind in IMAGE_KINDS else "total_bytes", 0)) for p in points
    )
    raw = 0
    chunks = 0
    for idx in repo.read_index_files().values():
        chunks += len(idx.entries)
        raw += int(idx.entries["raw"].sum()) if len(idx.entries) else 0
    return {
        "points": len(points),
        "packs": packs,
        "chunks": chunks,
        "stored_bytes": stored,
        "index_bytes": index_bytes,
        "unique_raw_bytes": raw,
        "logical_bytes": logical,
        "dedup_ratio": round(logical / raw, 3) if raw else None,
        "compression_ratio": round(raw / stored, 3) if stored else None,
        "index_memory_bytes": repo.index.memory_bytes(),
        "index_memory_per_chunk": round(repo.index.memory_bytes() / max(1, len(repo.index)), 1),
    }


def point_stats(repo: Repository, ref: str | RecoveryPoint) -> dict[str, object]:
    """One point's sizes: what it holds, what was new to the repository when
    it was made, and for a point made against seeds (docs/seeds.md) files and
    bytes per class, bytes per seed, its own bytes and the seed files it lacks.
    Image points report whatever their `seeds` record holds."""
    point = ref if isinstance(ref, RecoveryPoint) else find_point(repo, ref)
    summary = point.summary
    image = point.kind in IMAGE_KINDS
    doc: dict[str, object] = {
        "point": point.id,
        "kind": str(point.kind),
        "time": point.time.isoformat(),
        "paths": point.paths,
        "size" if image else "total_bytes": summary.get("size" if image else "total_bytes"),
        "files": None if image else summary.get("total_files"),
        "new_bytes": summary.get("data_added"),  # actually new to the repository
        "new_stored_bytes": summary.get("data_added_stored"),
        "seeds": None,
    }
    seeds = point.seeds
    if seeds is not None:
        own = seeds.classes.get("own", {})
        doc["seeds"] = {
            "used": [u.to_doc() for u in seeds.used],
            "root": seeds.root,
            "classes": seeds.classes,
            "seed_bytes": seeds.seed_bytes,
            "own_bytes": own.get("bytes", 0),
            "lacks_count": seeds.lacks_count,
        }
    return doc


@dataclass
class UnlockResult:
    removed: list[LockInfo]
    kept_live: list[LockInfo]  # live locks left alone (without `remove_all`)
    live: set[str]  # names of the locks that were live before: removing one is a risk

    def as_dict(self) -> dict[str, object]:
        return {
            "removed": [r.describe() for r in self.removed],
            "kept_live": [k.describe() for k in self.kept_live],
        }


def unlock(repo: Repository, *, remove_all: bool = False) -> UnlockResult:
    """Remove stale locks (their process is gone, or they were not refreshed in
    time); with `remove_all` live ones too, whose holders then notice before
    they write or delete anything (docs/design.md, section 4). Needs no lock."""
    present = list_locks(repo.backend, repo.sealer)
    live = {i.name for i in present if not i.is_stale()}
    removed = remove_locks(repo.backend, repo.sealer, all_locks=remove_all)
    gone = {r.name for r in removed}
    kept = [i for i in present if i.name in live and i.name not in gone]
    return UnlockResult(removed, kept, live)
