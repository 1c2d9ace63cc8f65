"""Media libraries (#14): the fast inventory, the detailed read, copying to media.

1. Fast inventory of a library with known cartridges (96 % of the slots): the status read
   (the stand-in ``mtx`` of the tests, ``tests/media/fake_mtx.py``, run as a program exactly
   as mtx is; and the virtual library) and the catalog update (``Catalog.set_locations`` on
   SQLite). 100 and 500 slots, and 500 slots whose cartridges hold data (1 MiB each on the
   virtual cartridges, 40 pack entries each in the catalog) against empty ones: the cost must
   grow with slots, not with data.
2. Detailed read: a cartridge loaded, its label and session catalogs read and verified
   (``media/label.read_label`` + ``media/format.read_cartridge``), unloaded; 5 against 20
   unknown cartridges (``services/inventory.py`` is not on this branch: this is the work a
   detailed inventory does per cartridge).
3. Copy to media: ``media/writer.write_session`` of a repository's packs onto a virtual
   cartridge against ``dd`` of the same byte count to a file on the same disk with
   ``conv=fsync`` (the virtual drive fsyncs at its file marks and at close).

Medians of ``--runs`` rounds (3). In process (strongroom importable: ``pip install -e .`` or
``PYTHONPATH=src``) except
the stand-in mtx, ``dd`` and the one backup that makes the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.environment import machine
from harness.spawn import log
from harness.strongroom import strongroom_cmd, strongroom_env
from harness.tables import table_for
from harness.workspace import GIB, MIB, fresh_dir, prepare
from strongroom.catalog import (
    Catalog,
    ContentEntry,
    Library,
    LibraryKind,
    Medium,
    MediumState,
    SessionRecord,
    Sighting,
)
from strongroom.media.format import read_cartridge
from strongroom.media.label import read_label, write_label
from strongroom.media.mtx import MtxChanger
from strongroom.media.virtual import Layout, VirtualLibrary
from strongroom.media.virtual_drive import VirtualDrive
from strongroom.media.writer import write_session
from strongroom.repository.keys import KdfParams
from strongroom.repository.repo import Repository
from strongroom.services.walk import referenced_by_points
from strongroom.storage.local import LocalBackend

ROOT = Path(__file__).resolve().parent.parent
FAKE_MTX = ROOT / "tests" / "media" / "fake_mtx.py"
PASSWORD = "bench media password"
RECORD = 256 << 10


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def median(rounds: list[float]) -> float:
    return statistics.median(rounds)


# --- 1. fast inventory ---------------------------------------------------------------


def catalog_with(path: Path, library: str, barcodes: list[str], data: bool) -> Catalog:
    catalog = Catalog.open(str(path))
    catalog.add_library(Library(library, LibraryKind.VIRTUAL))
    now = datetime.now(UTC)
    with catalog.transaction():
        for n, barcode in enumerate(barcodes, 1):
            media_id = uuid.uuid4()
            catalog.add_medium(Medium(media_id, barcode, MediumState.FULL, library=library, slot=n))
            if data:
                entries = [
                    ContentEntry(1, 1, i * 100, 100, 25 << 20, pack_id=os.urandom(32).hex())
                    for i in range(40)
                ]
                catalog.record_session(media_id, SessionRecord(1, now, (), 2, 1 << 30), entries)
    return catalog


def mtx_changer(base: Path, slots: int, barcodes: list[str]) -> MtxChanger:
    state = base / "sg.json"
    tags: list[Any] = [{"tag": b} for b in barcodes] + [None] * (slots - len(barcodes))
    state.write_text(
        json.dumps({"drives": [None] * 4, "slots": tags, "import_export": 0, "moves": 0})
    )
    wrapper = base / "mtx"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_MTX}" "$@"\n')
    wrapper.chmod(0o755)
    return MtxChanger("bench", str(state), mtx=str(wrapper), timeout=60)


def virtual_changer(base: Path, slots: int, barcodes: list[str], data: bool) -> VirtualLibrary:
    library = VirtualLibrary.create(
        "bench",
        Layout(slots=slots, drives=4, import_export=0, capacity=64 << 20, record_size=RECORD),
        root=base / "vlib",
        cartridges=barcodes,
    )
    if data:
        chunk = random.Random(1).randbytes(RECORD)
        for tape in (base / "vlib" / "cartridges").glob("*.tape"):
            drive = VirtualDrive(tape, capacity=64 << 20, record_size=RECORD)
            for _ in range(4):
                drive.write_record(chunk)
            drive.write_filemark()
            drive.close()
    return library


def fast_inventory(work: Path, kind: str, slots: int, data: bool, runs: int) -> dict[str, Any]:
    base = fresh_dir(work / f"inv-{kind}-{slots}-{'data' if data else 'empty'}")
    known = slots * 96 // 100
    barcodes = [f"K{n:05d}L8" for n in range(1, known + 1)]
    changer: Any = (
        mtx_changer(base, slots, barcodes)
        if kind == "mtx"
        else virtual_changer(base, slots, barcodes, data)
    )
    catalog = catalog_with(base / "catalog.sqlite", "bench", barcodes, data)
    status_s, catalog_s = [], []
    try:
        for _ in range(runs):
            found: list[Any] = []
            status_s.append(timed(lambda f=found: f.append(changer.status())))
            seen = [
                Sighting(e.barcode, slot=e.address)
                for e in found[0].slots
                if e.full and e.barcode is not None
            ]
            catalog_s.append(timed(lambda s=seen: catalog.set_locations("bench", s)))
            assert len(seen) == known
    finally:
        catalog.close()
    status, update = median(status_s), median(catalog_s)
    log(
        f"inventory {kind} {slots} slots {'data' if data else 'empty'}: "
        f"{status:.3f} + {update:.3f} s"
    )
    return {
        "kind": kind,
        "slots": slots,
        "known": known,
        "data": data,
        "status_s": status,
        "catalog_s": update,
        "total_s": status + update,
        "rounds": {"status": status_s, "catalog": catalog_s},
    }


# --- 2 and 3: a repository, cartridges ----------------------------------------------------


def make_repository(work: Path, size: int) -> tuple[Path, str]:
    """A repository with one point of `size` random bytes (made with the CLI)."""
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


def detailed_read(
    work: Path, repo_path: Path, point: str, unknown: int, runs: int
) -> dict[str, Any]:
    base = fresh_dir(work / f"detailed-{unknown}")
    barcodes = [f"U{n:05d}L8" for n in range(1, unknown + 1)]
    library = VirtualLibrary.create(
        "bench",
        Layout(
            slots=unknown + 480, drives=1, import_export=0, capacity=256 << 20, record_size=RECORD
        ),
        root=base / "vlib",
        cartridges=barcodes,
    )
    repo = Repository.open(LocalBackend(repo_path), PASSWORD.encode())
    try:
        for n in range(1, unknown + 1):  # each: a label and one session of the point
            library.load(n, 0)
            drive = library.drive(0)
            write_label(drive, repo.master, repo.config.id, barcodes[n - 1], "bench", n)
            write_session(drive, repo, [point], reach=referenced_by_points)
            drive.close()
            library.unload(0)

        def one() -> None:
            for n in range(1, unknown + 1):
                library.load(n, 0)
                drive = library.drive(0)
                reading = read_label(drive)
                assert reading.label is not None
                cartridge = read_cartridge(drive, master=repo.master)
                assert point in cartridge.points()
                drive.close()
                library.unload(0)

        rounds = [timed(one) for _ in range(runs)]
    finally:
        repo.close()
    total = median(rounds)
    log(f"detailed read of {unknown} cartridges: {total:.3f} s")
    return {
        "unknown": unknown,
        "total_s": total,
        "per_cartridge_s": total / unknown,
        "rounds": rounds,
    }


def copy_throughput(work: Path, repo_path: Path, point: str, runs: int) -> dict[str, Any]:
    base = fresh_dir(work / "copy")
    repo = Repository.open(LocalBackend(repo_path), PASSWORD.encode())
    copy_s, dd_s, sizes = [], [], []
    try:
        for r in range(runs):
            root = fresh_dir(base / f"lib{r}")
            library = VirtualLibrary.create(
                "bench",
                Layout(slots=2, drives=1, import_export=0, capacity=64 << 30, record_size=RECORD),
                root=root,
                cartridges=["C00001L8"],
            )
            library.load(1, 0)
            drive = library.drive(0)
            write_label(drive, repo.master, repo.config.id, "C00001L8", "bench", 1)
            written: list[Any] = []

            def copy(d: Any = drive, w: list[Any] = written) -> None:
                w.append(write_session(d, repo, [point], reach=referenced_by_points))
                d.close()

            copy_s.append(timed(copy))
            size = written[0].bytes_written
            sizes.append(size)
            count = -(-size // RECORD)
            target = base / f"dd{r}.bin"
            dd = [
                "dd",
                "if=/dev/zero",
                f"of={target}",
                f"bs={RECORD}",
                f"count={count}",
                "conv=fsync",
            ]
            dd_s.append(timed(lambda c=dd: subprocess.run(c, check=True, capture_output=True)))
            target.unlink()
            shutil.rmtree(root)
    finally:
        repo.close()
    size = sizes[0]
    copy, dd_time = median(copy_s), median(dd_s)
    log(f"copy {size >> 20} MiB: write_session {copy:.2f} s, dd {dd_time:.2f} s")
    return {
        "bytes": size,
        "copy_s": copy,
        "dd_s": dd_time,
        "copy_mib_s": size / MIB / copy,
        "dd_mib_s": size / MIB / dd_time,
        "ratio": copy / dd_time,
        "rounds": {"copy": copy_s, "dd": dd_s},
    }


# --- the report ----------------------------------------------------------------------------


def report(results: dict[str, Any], markdown: bool) -> None:
    table = table_for(markdown)
    env = results["environment"]
    print(
        f"{env['date']}, {env['cpu_count']} CPUs ({env['cpu_model']}), load {env['load_average']}, "
        f"{env['filesystem']}, Python {env['python']}, medians of {results['runs']} rounds"
    )
    print()
    rows = [
        [
            r["kind"],
            str(r["slots"]),
            str(r["known"]),
            "1 MiB each + 40 packs" if r["data"] else "empty",
            f"{r['status_s'] * 1000:.0f}",
            f"{r['catalog_s'] * 1000:.0f}",
            f"{r['total_s'] * 1000:.0f}",
        ]
        for r in results["inventory"]
    ]
    print(
        table(
            [
                "changer",
                "slots",
                "known",
                "data on the media",
                "status ms",
                "catalog ms",
                "total ms",
            ],
            rows,
            "lrrlrrr",
        )
    )
    print()
    rows = [
        [str(r["unknown"]), f"{r['total_s']:.2f}", f"{r['per_cartridge_s'] * 1000:.0f}"]
        for r in results["detailed"]
    ]
    print(table(["unknown cartridges", "detailed read s", "per cartridge ms"], rows, "rrr"))
    print()
    c = results["copy"]
    print(
        table(
            [
                "bytes",
                "write_session s",
                "MiB/s",
                "dd conv=fsync s",
                "MiB/s",
                "ratio (target <= 1.2)",
            ],
            [
                [
                    f"{c['bytes'] >> 20} MiB",
                    f"{c['copy_s']:.2f}",
                    f"{c['copy_mib_s']:.0f}",
                    f"{c['dd_s']:.2f}",
                    f"{c['dd_mib_s']:.0f}",
                    f"{c['ratio']:.2f}",
                ]
            ],
            "rrrrrr",
        )
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 MiB copied instead of 512 MiB")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = prepare(args.workdir, "media", need=(2.5 if not args.quick else 0.5) * GIB)
    size = (64 if args.quick else 512) * MIB
    results: dict[str, Any] = {"runs": args.runs, "environment": machine(work, {})}
    results["inventory"] = [
        fast_inventory(work, kind, slots, data, args.runs)
        for kind in ("mtx", "virtual")
        for slots, data in ((100, False), (500, False), (500, True))
    ]
    repo, point = make_repository(work, size)
    small_repo, small_point = make_repository(work, 4 * MIB)
    results["detailed"] = [
        detailed_read(work, small_repo, small_point, n, args.runs) for n in (5, 20)
    ]
    results["copy"] = copy_throughput(work, repo, point, args.runs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    report(results, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
