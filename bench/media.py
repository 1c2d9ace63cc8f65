"""Media libraries (#14): the fast inventory, the detailed inventory, copy-to-media against dd.

The use cases as a user runs them, each in its own process (this script run again with
``--child``: the launcher measures its wall time, CPU and peak RSS; the process times the
service call itself, so the report shows both the command and the use case without the
interpreter's start):

1. Fast inventory (``services.inventory.inventory_library``, what ``strongroom library
   inventory NAME`` runs) of a library whose catalog knows 96 % of the slots' cartridges:
   the stand-in mtx (``tests/media/fake_mtx.py``, run as a program exactly as mtx is) and
   the virtual library; 100 and 500 slots, and 500 slots whose cartridges hold data (1 MiB
   each on the virtual cartridges, 40 pack entries each in the catalog): the cost must grow
   with slots, not with data. No cartridge is new, so nothing is read.
2. Detailed inventory (the same call; the virtual library, 480 known cartridges plus 5 or
   20 unknown ones, each labelled for the repository with one session of a 4 MiB point):
   every unknown cartridge is loaded, its label and session catalogs read and verified with
   the key, imported, unloaded. The cost per unknown cartridge must not depend on how many.
3. Copy to media (``services.copy_to_media.copy_to_media``, what ``strongroom copy-to-media
   POINT --pool P`` runs) of a 512 MiB point (``--quick``: 64 MiB; incompressible data, the
   repository uncompressed) onto a labelled virtual cartridge, against ``cat PACKS | dd
   of=FILE bs=256K iflag=fullblock conv=fsync``: the same pack files, read from the page
   cache (warmed for both), written to a file on the same disk, fsynced once at the end (the
   virtual drive fsyncs at its file marks and at close: the same durability).

Medians of ``--runs`` rounds (3), fresh catalog (and cartridge) every round. Targets (issue
#14): fast inventory of 500 slots under 1 s (the use case; the whole process, with the
interpreter's start and imports, is printed beside it); growth with data under 2x (tens of
milliseconds: the allowance is for noise); the detailed cost per unknown cartridge at 20
within 1.5x of that at 5; copy-to-media's time within 1.2x of dd's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import cli
from harness.checks import CHECK_ALIGN, CHECK_HEADER, Check, Failures, check_rows, info, ratio_check
from harness.environment import head_markdown, head_text, machine
from harness.report import finish
from harness.spawn import log, run_measured
from harness.stats import Spread
from harness.strongroom import strongroom_cmd, strongroom_env
from harness.tables import table_for
from harness.workspace import GIB, MIB, fresh_dir, prepare, warm

ROOT = Path(__file__).resolve().parent.parent
FAKE_MTX = ROOT / "tests" / "media" / "fake_mtx.py"
PASSWORD = "bench media password"
RECORD = 256 << 10
LIBRARY = "bench"
POOL = "bench"
KNOWN_SHARE = 96  # % of the slots holding known cartridges
FAST_TARGET = 1.0  # s, 500 slots, the whole command
GROWTH_TARGET = 2.0  # x, 500 slots with data against empty (tens of ms: noise allowance)
DETAILED_TARGET = 1.5  # x, per-cartridge cost at 20 unknown against 5
COPY_TARGET = 1.2  # x dd


# --- the child: one use case in its own process -------------------------------------


def child(spec_path: Path) -> int:
    """Run one use case as described in ``spec_path`` and write its figures next to it."""
    started = time.perf_counter()
    from strongroom.config import LibrarySpec, Settings
    from strongroom.repository.repo import Repository
    from strongroom.services.media_pools import open_catalog
    from strongroom.storage.local import LocalBackend

    spec = json.loads(spec_path.read_text())
    settings = Settings(
        libraries={LIBRARY: LibrarySpec(LIBRARY, **spec["library"])}, catalog=spec["catalog"]
    )
    out: dict[str, Any] = {"imports_s": time.perf_counter() - started}
    repo = None
    if spec.get("repo"):
        t0 = time.perf_counter()
        repo = Repository.open(LocalBackend(spec["repo"]), PASSWORD.encode())
        out["open_repo_s"] = time.perf_counter() - t0
    try:
        with open_catalog(settings) as catalog:
            if spec["mode"] == "inventory":
                from strongroom.services.inventory import Detailed, Keys, inventory_library

                keys = None if repo is None else Keys(repo.config.id, repo.master)
                t0 = time.perf_counter()
                report = inventory_library(
                    LIBRARY, settings, catalog, detailed=Detailed(spec["detailed"]), keys=keys
                )
                out["seconds"] = time.perf_counter() - t0
                doc = report.as_dict()
                out["known"] = len(doc["known"])
                out["detailed"] = [d["class"] for d in doc["detailed"]]
            else:
                from strongroom.media.libraries import open_library
                from strongroom.services.copy_to_media import copy_to_media

                assert repo is not None
                changer = open_library(LIBRARY, settings)
                t0 = time.perf_counter()
                result = copy_to_media(catalog, changer, repo, [spec["point"]], POOL)
                out["seconds"] = time.perf_counter() - t0
                out["written"] = result.written
                out["bytes"] = result.bytes_written
    finally:
        if repo is not None:
            repo.close()
    spec_path.with_suffix(".result.json").write_text(json.dumps(out))
    return 0


def run_child(base: Path, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the child on ``spec``: its figures plus the launcher's wall, CPU and RSS."""
    path = base / f"{name}.json"
    path.write_text(json.dumps(spec))
    result = path.with_suffix(".result.json")
    result.unlink(missing_ok=True)
    os.sync()
    m = run_measured(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(path)],
        dict(os.environ),
        base,
        base / "logs" / name,
    )
    if m.exit_code != 0 or not result.exists():
        raise RuntimeError(f"{name}: exit {m.exit_code} (see {base / 'logs' / name}.err)")
    doc: dict[str, Any] = json.loads(result.read_text())
    doc.update(wall_s=m.seconds, cpu_s=m.cpu_seconds, rss_mib=m.peak_rss_kib / 1024)
    return doc


# --- fixtures --------------------------------------------------------------------------


def catalog_with(path: Path, barcodes: list[str], data: bool) -> None:
    """A catalog knowing `barcodes` in slots 1, 2, ... of the library."""
    from strongroom.catalog import (
        Catalog,
        ContentEntry,
        Library,
        LibraryKind,
        Medium,
        MediumState,
        SessionRecord,
    )

    catalog = Catalog.open(str(path))
    try:
        catalog.add_library(Library(LIBRARY, LibraryKind.VIRTUAL))
        now = datetime.now(UTC)
        with catalog.transaction():
            for n, barcode in enumerate(barcodes, 1):
                media_id = uuid.uuid4()
                catalog.add_medium(
                    Medium(media_id, barcode, MediumState.FULL, library=LIBRARY, slot=n)
                )
                if data:
                    entries = [
                        ContentEntry(1, 1, i * 100, 100, 25 << 20, pack_id=os.urandom(32).hex())
                        for i in range(40)
                    ]
                    catalog.record_session(media_id, SessionRecord(1, now, (), 2, 1 << 30), entries)
    finally:
        catalog.close()


def mtx_library(base: Path, slots: int, barcodes: list[str]) -> dict[str, Any]:
    state = base / "sg.json"
    tags: list[Any] = [{"tag": b} for b in barcodes] + [None] * (slots - len(barcodes))
    state.write_text(
        json.dumps({"drives": [None] * 4, "slots": tags, "import_export": 0, "moves": 0})
    )
    wrapper = base / "mtx"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_MTX}" "$@"\n')
    wrapper.chmod(0o755)
    return {"kind": "mtx", "device": str(state), "mtx": str(wrapper), "timeout": 60.0}


def virtual_library(
    root: Path, slots: int, barcodes: list[str], data: bool, drives: int = 4, capacity: int = 64
) -> dict[str, Any]:
    from strongroom.media.virtual import Layout, VirtualLibrary
    from strongroom.media.virtual_drive import VirtualDrive

    layout = Layout(slots, drives, 0, capacity << 20, RECORD)
    VirtualLibrary.create(LIBRARY, layout, root=root, cartridges=barcodes)
    if data:
        chunk = random.Random(1).randbytes(RECORD)
        for tape in (root / "cartridges").glob("*.tape"):
            with VirtualDrive(tape, capacity=capacity << 20, record_size=RECORD) as drive:
                for _ in range(4):
                    drive.write_record(chunk)
                drive.write_filemark()
    return {"kind": "virtual", "path": str(root)}


def make_repository(work: Path, size: int) -> tuple[Path, str]:
    """A repository with one point of `size` random bytes (made with the CLI), reused."""
    from strongroom.repository.keys import KdfParams
    from strongroom.repository.repo import Repository
    from strongroom.storage.local import LocalBackend

    base = work / f"repo-{size >> 20}M"
    marker = base / "point"
    if marker.exists():
        return base / "repo", marker.read_text()
    fresh_dir(base)
    env = strongroom_env(base / "repo", base / "cache")
    env["STRONGROOM_PASSWORD"] = PASSWORD
    env["STRONGROOM_COMPRESSION"] = "0"
    Repository.init(
        LocalBackend(base / "repo"), PASSWORD.encode(), kdf=KdfParams(1, 8192, 1)
    ).close()
    tree = base / "tree"
    tree.mkdir()
    rng = random.Random(14)
    with (tree / "data.bin").open("wb") as f:
        for _ in range(size // (4 * MIB)):
            f.write(rng.randbytes(4 * MIB))
    done = subprocess.run(
        [*strongroom_cmd(), "backup", str(tree), "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    point = json.loads(done.stdout.strip().splitlines()[-1])["point_id"]
    shutil.rmtree(tree)
    marker.write_text(point)
    return base / "repo", point


def pack_files(repo_path: Path, point: str) -> list[Path]:
    """The stored pack files copy-to-media writes for `point`, in its order."""
    from strongroom.media.writer import point_packs
    from strongroom.repository import format as fmt
    from strongroom.repository.repo import Repository
    from strongroom.services.walk import referenced_by_points
    from strongroom.storage.local import LocalBackend

    repo = Repository.open(LocalBackend(repo_path), PASSWORD.encode())
    try:
        packs = sorted(
            {p for ps in point_packs(repo, [point], referenced_by_points).values() for p in ps}
        )
    finally:
        repo.close()
    return [repo_path / fmt.pack_name(p.hex()) for p in packs]


# --- 1. fast inventory -----------------------------------------------------------------


def fast_inventory(work: Path, kind: str, slots: int, data: bool, runs: int) -> dict[str, Any]:
    base = fresh_dir(work / f"inv-{kind}-{slots}-{'data' if data else 'empty'}")
    known = slots * KNOWN_SHARE // 100
    barcodes = [f"K{n:05d}L8" for n in range(1, known + 1)]
    library = (
        mtx_library(base, slots, barcodes)
        if kind == "mtx"
        else virtual_library(base / "vlib", slots, barcodes, data)
    )
    template = base / "template.sqlite"
    catalog_with(template, barcodes, data)
    rounds = []
    for r in range(runs):
        catalog = base / f"catalog{r}.sqlite"
        shutil.copyfile(template, catalog)
        spec = {
            "mode": "inventory",
            "library": library,
            "catalog": str(catalog),
            "detailed": "auto",
        }
        doc = run_child(base, f"round{r}", spec)
        if doc["known"] != known or doc["detailed"]:
            raise RuntimeError(f"inventory {kind} {slots}: {doc['known']} known, not {known}")
        rounds.append(doc)
    row = summarize(rounds)
    row.update(kind=kind, slots=slots, known=known, data=data)
    log(f"fast inventory {kind} {slots} {'data' if data else 'empty'}: {row['seconds'].text(3)} s")
    return row


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("seconds", "wall_s", "cpu_s", "rss_mib", "imports_s")
    return {k: Spread.of(r[k] for r in rounds) for k in keys} | {"rounds": rounds}


# --- 2. detailed inventory -------------------------------------------------------------


def detailed_inventory(
    work: Path, repo_path: Path, point: str, unknown: int, runs: int
) -> dict[str, Any]:
    from strongroom.media.label import write_label
    from strongroom.media.virtual import VirtualLibrary
    from strongroom.media.writer import write_session
    from strongroom.repository.repo import Repository
    from strongroom.services.walk import referenced_by_points
    from strongroom.storage.local import LocalBackend

    base = fresh_dir(work / f"detailed-{unknown}")
    known = [f"K{n:05d}L8" for n in range(1, 481)]
    new = [f"U{n:05d}L8" for n in range(1, unknown + 1)]
    library = virtual_library(base / "vlib", 480 + unknown, known + new, False, 1, 256)
    changer = VirtualLibrary(LIBRARY, base / "vlib")
    repo = Repository.open(LocalBackend(repo_path), PASSWORD.encode())
    try:
        for n, barcode in enumerate(new, 481):  # each: a label and one session of the point
            changer.load(n, 0)
            with changer.drive(0) as drive:
                write_label(drive, repo.master, repo.config.id, barcode, POOL, n)
                write_session(drive, repo, [point], reach=referenced_by_points)
            changer.unload(0)
    finally:
        repo.close()
    template = base / "template.sqlite"
    catalog_with(template, known, False)
    rounds = []
    for r in range(runs):
        catalog = base / f"catalog{r}.sqlite"
        shutil.copyfile(template, catalog)
        spec = {
            "mode": "inventory",
            "library": library,
            "catalog": str(catalog),
            "detailed": "auto",
            "repo": str(repo_path),
        }
        doc = run_child(base, f"round{r}", spec)
        if doc["detailed"] != ["ours"] * unknown or doc["known"] != 480:
            raise RuntimeError(f"detailed inventory of {unknown}: {doc['detailed']}")
        rounds.append(doc)
    row = summarize(rounds)
    row.update(unknown=unknown, per_cartridge_s=row["seconds"].median / unknown)
    log(f"detailed inventory, {unknown} unknown: {row['seconds'].text(3)} s")
    return row


# --- 3. copy to media against dd --------------------------------------------------------


def copy_throughput(work: Path, repo_path: Path, point: str, runs: int) -> dict[str, Any]:
    from strongroom.catalog import Catalog, Pool
    from strongroom.media.virtual import VirtualLibrary
    from strongroom.repository.repo import Repository
    from strongroom.services.media_pools import label_media
    from strongroom.storage.local import LocalBackend

    base = fresh_dir(work / "copy")
    packs = pack_files(repo_path, point)
    pack_bytes = sum(p.stat().st_size for p in packs)
    copies, dds = [], []
    for r in range(runs):
        root = base / f"lib{r}"
        library = virtual_library(root, 2, ["C00001L8"], False, 1, 64 << 10)
        catalog_path = base / f"catalog{r}.sqlite"
        catalog = Catalog.open(str(catalog_path))
        repo = Repository.open(LocalBackend(repo_path), PASSWORD.encode())
        try:
            catalog.add_pool(Pool(POOL))
            label_media(catalog, VirtualLibrary(LIBRARY, root), repo, POOL, ["C00001L8"])
        finally:
            repo.close()
            catalog.close()
        warm([repo_path])
        spec = {
            "mode": "copy",
            "library": library,
            "catalog": str(catalog_path),
            "repo": str(repo_path),
            "point": point,
        }
        doc = run_child(base, f"copy{r}", spec)
        if doc["written"] != [point] or doc["bytes"] < pack_bytes:
            raise RuntimeError(f"copy-to-media wrote {doc['written']}, {doc['bytes']} bytes")
        copies.append(doc)
        shutil.rmtree(root)
        target = base / f"dd{r}.bin"
        warm([repo_path])
        os.sync()
        shell = (
            "cat " + " ".join(f"'{p}'" for p in packs) + f" | dd of='{target}' bs={RECORD} "
            "iflag=fullblock conv=fsync status=none"
        )
        m = run_measured(["sh", "-c", shell], dict(os.environ), base, base / "logs" / f"dd{r}")
        if m.exit_code != 0 or target.stat().st_size != pack_bytes:
            raise RuntimeError(f"dd failed (exit {m.exit_code}, see {base / 'logs'})")
        dds.append({"wall_s": m.seconds, "cpu_s": m.cpu_seconds, "rss_mib": m.peak_rss_kib / 1024})
        target.unlink()
    row = summarize(copies)
    row["dd"] = {k: Spread.of(d[k] for d in dds) for k in ("wall_s", "cpu_s", "rss_mib")}
    row["dd_rounds"] = dds
    row.update(bytes=copies[0]["bytes"], pack_bytes=pack_bytes, packs=len(packs))
    log(
        f"copy {pack_bytes >> 20} MiB: copy_to_media {row['seconds'].text()} s, "
        f"dd {row['dd']['wall_s'].text()} s"
    )
    return row


# --- the report ------------------------------------------------------------------------


def checks_for(results: dict[str, Any]) -> list[Check]:
    inv = {(r["kind"], r["slots"], r["data"]): r for r in results["inventory"]}
    out: list[Check] = []
    for kind in ("mtx", "virtual"):
        full = inv[(kind, 500, False)]
        took = full["seconds"].median
        out.append(
            Check(
                f"fast inventory, 500 slots, {kind} (use case)",
                took * 1000,
                "ms",
                f"< {FAST_TARGET * 1000:.0f} ms",
                took < FAST_TARGET,
            )
        )
        out.append(info(f"  the whole process ({kind})", full["wall_s"].median * 1000, "ms"))
        out.append(
            ratio_check(
                f"  with data / empty ({kind}, use case)",
                inv[(kind, 500, True)]["seconds"].median,
                full["seconds"].median,
                GROWTH_TARGET,
                upper=True,
            )
        )
        out.append(
            info(
                f"  500 / 100 slots ({kind}, use case)",
                full["seconds"].median / inv[(kind, 100, False)]["seconds"].median,
            )
        )
    det = {r["unknown"]: r for r in results["detailed"]}
    out.append(
        ratio_check(
            "detailed: per unknown cartridge, 20 / 5",
            det[20]["per_cartridge_s"],
            det[5]["per_cartridge_s"],
            DETAILED_TARGET,
            upper=True,
        )
    )
    c = results["copy"]
    out.append(
        ratio_check(
            "copy-to-media / dd conv=fsync (use case)",
            c["seconds"].median,
            c["dd"]["wall_s"].median,
            COPY_TARGET,
            upper=True,
        )
    )
    out.append(
        info("copy-to-media / dd (whole command)", c["wall_s"].median / c["dd"]["wall_s"].median)
    )
    return out


def report(results: dict[str, Any], markdown: bool) -> str:
    table = table_for(markdown)
    env = results["environment"]
    lines = [head_markdown(env)] if markdown else head_text(env, kdf=False)
    lines.append(f"medians of {results['runs']} rounds (range in brackets)")
    lines.append("")
    rows = [
        [
            r["kind"],
            str(r["slots"]),
            str(r["known"]),
            "1 MiB each + 40 packs" if r["data"] else "empty",
            f"{r['seconds'].median * 1000:.0f}",
            f"{r['wall_s'].median * 1000:.0f}",
            f"{r['cpu_s'].median * 1000:.0f}",
            f"{r['rss_mib'].median:.0f}",
        ]
        for r in results["inventory"]
    ]
    header = [
        "changer",
        "slots",
        "known",
        "data on the media",
        "inventory ms",
        "command ms",
        "CPU ms",
        "peak RSS MiB",
    ]
    lines += [table(header, rows, "lrrlrrrr"), ""]
    rows = [
        [
            str(r["unknown"]),
            r["seconds"].text(2),
            f"{r['per_cartridge_s'] * 1000:.0f}",
            f"{r['wall_s'].median:.2f}",
            f"{r['rss_mib'].median:.0f}",
        ]
        for r in results["detailed"]
    ]
    header = ["unknown (+480 known)", "inventory s", "per unknown ms", "command s", "peak RSS MiB"]
    lines += [table(header, rows, "rrrrr"), ""]
    c = results["copy"]
    mib = c["pack_bytes"] / MIB
    rows = [
        [
            "copy_to_media",
            f"{c['bytes'] / MIB:.0f}",
            c["seconds"].text(2),
            f"{mib / c['seconds'].median:.0f}",
            f"{c['wall_s'].median:.2f}",
            f"{c['cpu_s'].median:.2f}",
            f"{c['rss_mib'].median:.0f}",
        ],
        [
            "dd conv=fsync (cat PACKS piped in)",
            f"{mib:.0f}",
            c["dd"]["wall_s"].text(2),
            f"{mib / c['dd']['wall_s'].median:.0f}",
            f"{c['dd']['wall_s'].median:.2f}",
            f"{c['dd']['cpu_s'].median:.2f}",
            f"{c['dd']['rss_mib'].median:.0f}",
        ],
    ]
    header = ["copy", "MiB written", "s", "pack MiB/s", "command s", "CPU s", "peak RSS MiB"]
    lines += [table(header, rows, "lrrrrrr"), ""]
    lines.append(table(CHECK_HEADER, check_rows(results["checks"]), CHECK_ALIGN))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    cli.add_common(p)
    p.add_argument("--runs", type=int, default=3, help="rounds; the median is reported")
    p.add_argument("--quick", action="store_true", help="64 MiB copied instead of 512 MiB")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child(args.child)
    work = prepare(args.workdir, "media", need=(2.5 if not args.quick else 0.5) * GIB)
    size = (64 if args.quick else 512) * MIB
    results: dict[str, Any] = {"runs": args.runs, "environment": machine(work, {})}
    failures = Failures()
    try:
        results["inventory"] = [
            fast_inventory(work, kind, slots, data, args.runs)
            for kind in ("mtx", "virtual")
            for slots, data in ((100, False), (500, False), (500, True))
        ]
        small_repo, small_point = make_repository(work, 4 * MIB)
        results["detailed"] = [
            detailed_inventory(work, small_repo, small_point, n, args.runs) for n in (5, 20)
        ]
        repo, point = make_repository(work, size)
        results["copy"] = copy_throughput(work, repo, point, args.runs)
    except (RuntimeError, subprocess.CalledProcessError) as err:
        failures.fail(str(err))
        return finish("", results, args.json, work / "logs", failures)
    results["checks"] = checks_for(results)
    text = report(results, args.markdown)
    return finish(text, plain(results), args.json, work / "logs", failures)


def plain(doc: Any) -> Any:
    """`doc` with its spreads and checks as JSON objects."""
    return json.loads(json.dumps(doc, default=lambda o: asdict(o) if is_dataclass(o) else str(o)))


if __name__ == "__main__":
    sys.exit(main())
