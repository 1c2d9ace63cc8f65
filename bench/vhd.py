#!/usr/bin/env python3
"""VHD benchmark: strongroom's VHD export and VHD reader against qemu-img's vpc driver.

What is measured (issue #4, "VHD export and import", Performance)
------------------------------------------------------------------
"Export of a 4 GiB recovery point to a dynamic VHD against ``qemu-img convert -O vpc`` of the
same data, and reading a VHD back; targets: within 1.2x of qemu-img both ways."

The image is the cached generated qcow2 of ``harness/disk_image.py``, shared with
``bench/images.py`` (default 4 GiB virtual, 1.5 GiB
of data; ``--quick``: 1 GiB, 384 MiB), copied fresh into the run directory and backed up once
into a new repository (not timed). Then, one run, on the same disk:

1. ``ref_write``: ``qemu-img convert -O vpc -o subformat=dynamic disk.qcow2 ref.vhd``.
2. ``export``: ``strongroom export latest out.vhd --type dynamic --json``; then (not timed)
   ``qemu-img compare -f vpc -F qcow2 out.vhd disk.qcow2``: a difference is a failure.
3. ``ref_read``: ``qemu-img convert -f vpc -O raw ref.vhd ref.raw``.
4. ``vhd_check``: ``strongroom vhd check out.vhd`` (opens the chain with validation and reads
   every allocated block once): strongroom's VHD reader.
5. ``vhd_backup`` (informative): ``strongroom backup --image out.vhd`` into a second new
   repository: reads the VHD and stores it.

Targets: export time <= 1.2x ``ref_write``; ``vhd check`` time <= 1.2x ``ref_read``.

Everything else follows ``bench/images.py`` through the harness (``harness/phases.py``):
timing through the launcher (wall time, peak RSS, CPU of the tool), warm page cache (the
command's input, the repository and strongroom's cache read, then ``sync``), MB/s of *data
bytes* (qcow2 clusters allocated as data, per ``qemu-img map``), ``STRONGROOM_KDF=1,8192,1``,
logs of every command in ``WORKDIR/vhd/logs/``.

Usage::

    nice -n 5 python bench/vhd.py [--size 4] [--data 1.5] [--quick] [--seed N]
                                  [--workdir DIR] [--keep] [--json FILE] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from harness import cli
from harness.checks import CHECK_ALIGN, CHECK_HEADER, Check, Failures, check_rows, info, ratio_check
from harness.disk_image import (
    QUICK,
    ImageMeta,
    data_bytes,
    describe_image,
    ensure_image,
    image_cache,
    sizes,
)
from harness.environment import head_markdown, head_text, machine
from harness.phases import MBPS_NOTE, PHASE_ALIGN, PHASE_HEADER, PhaseResult, RunDir, phase_rows
from harness.report import finish
from harness.spawn import log, version
from harness.stats import mb
from harness.strongroom import FAST_KDF, strongroom_cmd, summary_json
from harness.tables import md_table, plain_table, sentences
from harness.workspace import GIB, copy_file, fresh_dir, fsync_seconds, prepare, require, tree_bytes

DEFAULT = (4.0, 1.5)  # GiB virtual, GiB of data
TARGET = 1.2

PHASES = ("ref_write", "export", "ref_read", "vhd_check", "vhd_backup")
LABELS = {
    "ref_write": "qemu-img convert -O vpc (ref)",
    "export": "strongroom export (dynamic)",
    "ref_read": "qemu-img convert -f vpc (ref)",
    "vhd_check": "strongroom vhd check",
    "vhd_backup": "strongroom backup --image .vhd",
}


def output_note(r: PhaseResult, path: Path, fsync: bool) -> None:
    """File size and allocation of an output; for qemu-img (which does not fsync), the time of
    an fsync after it, separately."""
    st = os.stat(path)
    r.details["file_bytes"] = st.st_size
    r.details["allocated"] = st.st_blocks * 512
    r.note = f"{path.name}: {st.st_size / 1e6:.0f} MB file, {st.st_blocks * 512 / 1e6:.0f} MB alloc"
    if fsync:
        r.details["fsync_seconds"] = fsync_seconds(path)
        r.note += f", not fsynced (fsync after: {r.details['fsync_seconds']:.2f} s)"


def run_all(ctx: RunDir, vhd: dict[str, int]) -> None:
    sr = strongroom_cmd()
    data = data_bytes(ctx.image)
    log(f"image: {ctx.size / GIB:g} GiB virtual, {data / 1e6:.0f} MB allocated as data")
    if not (ctx.untimed("init", [*sr, "init"])):
        return
    if not ctx.untimed("backup", [*sr, "backup", "--image", str(ctx.image), "--json"]):
        return

    ref_vhd, out_vhd, ref_raw = ctx.run / "ref.vhd", ctx.run / "out.vhd", ctx.run / "ref.raw"
    # 1. reference write
    cmd = ["qemu-img", "convert", "-O", "vpc", "-o", "subformat=dynamic"]
    r = ctx.measure("ref_write", [*cmd, str(ctx.image), str(ref_vhd)], [ctx.image])
    r.data_bytes = data
    if r.ok:
        output_note(r, ref_vhd, fsync=True)
    ctx.report(r)

    # 2. strongroom export, verified against the image
    cmd = [*sr, "export", "latest", str(out_vhd), "--type", "dynamic", "--json"]
    r = ctx.measure("export", cmd)
    r.data_bytes = data
    if r.ok:
        output_note(r, out_vhd, fsync=False)
        s = summary_json(ctx.logs / "export")
        r.details.update({k: s.get(k) for k in ("blocks_written", "bytes_written")})
        r.note += f", {s.get('blocks_written')} blocks written"
        r.ok = ctx.compare(out_vhd, "vpc", "exported out.vhd")
        r.note += "; verified equal" if r.ok else "; DIFFERS"
    ctx.report(r)
    if not r.ok:
        return

    # 3. reference read
    cmd = ["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(ref_vhd), str(ref_raw)]
    r = ctx.measure("ref_read", cmd, [ref_vhd])
    r.data_bytes = data
    if r.ok:
        output_note(r, ref_raw, fsync=True)
        r.note = "of ref.vhd; " + r.note
    ctx.report(r)
    ref_raw.unlink(missing_ok=True)

    # 4. strongroom's reader
    r = ctx.measure("vhd_check", [*sr, "vhd", "check", str(out_vhd), "--json"], [out_vhd])
    r.data_bytes = data
    if r.ok:
        try:
            doc = json.loads((ctx.logs / "vhd_check").with_suffix(".out").read_text())
        except ValueError:
            doc = {}
        r.details = {k: doc.get(k) for k in ("ok", "virtual_size", "bytes_read")}
        r.note = f"of out.vhd; read {mb(doc.get('bytes_read'))} MB, ok={doc.get('ok')}"
    ctx.report(r)

    # 5. backup of the VHD into a second repository (informative)
    ctx.repo_name = "repo2"
    if ctx.untimed("init2", [*sr, "init"]):
        cmd = [*sr, "backup", "--image", str(out_vhd), "--json"]
        r = ctx.measure("vhd_backup", cmd, [out_vhd])
        r.data_bytes = data
        r.repo_bytes = tree_bytes(ctx.repo)
        if r.ok:
            s = summary_json(ctx.logs / "vhd_backup")
            keys = ("tracker", "blocks", "holes", "blocks_read", "bytes_read", "data_added_stored")
            r.details = {k: s.get(k) for k in keys}
            r.note = (
                f"read {mb(s.get('bytes_read'))} MB, +{mb(s.get('data_added_stored'))}"
                f" MB stored; repo {r.repo_bytes / 1e6:.0f} MB"
            )
        ctx.report(r)
    ctx.repo_name = "repo"
    for path in (ref_vhd, out_vhd):
        if path.exists():
            vhd[path.name] = os.stat(path).st_size


# --------------------------------------------------------------------------- targets and output


def compute_checks(results: dict[str, PhaseResult]) -> list[Check]:
    def seconds(phase: str) -> float | None:
        r = results.get(phase)
        return r.seconds if r is not None and r.ok else None

    checks = [
        ratio_check(metric, seconds(a), seconds(b), TARGET, upper=True)
        for metric, a, b in (
            ("export time / qemu-img convert -O vpc time", "export", "ref_write"),
            ("vhd check time / qemu-img convert -f vpc time", "vhd_check", "ref_read"),
        )
    ]
    backup, ref = seconds("vhd_backup"), seconds("ref_read")
    if backup and ref:
        checks.append(info("  backup of the VHD / same (info)", backup / ref))
    r, base = results.get("export"), results.get("ref_write")
    flush = base.details.get("fsync_seconds") if base is not None else None
    if r is not None and r.ok and base is not None and base.ok and isinstance(flush, float):
        value = r.seconds / (base.seconds + flush)
        checks.append(info("  export / (reference + its fsync) (info)", value))
    return checks


def preamble(meta: ImageMeta, data: int) -> list[str]:
    return [
        describe_image(meta, data),
        "backed up once into a new repository (not timed); the export is of that point",
        "page cache: warm (the command's input, repository, cache read, then sync, before each "
        "command); one run",
        MBPS_NOTE,
    ]


def report(
    env: dict[str, object],
    meta: ImageMeta,
    data: int,
    results: dict[str, PhaseResult],
    checks: list[Check],
    failures: Failures,
    markdown: bool,
) -> str:
    rows = phase_rows(results, PHASES, LABELS)
    if markdown:
        out = [
            head_markdown(env, skip=("nbdcopy",)),
            "",
            sentences(preamble(meta, data)),
            "",
            md_table(PHASE_HEADER, rows, PHASE_ALIGN),
            "",
            md_table(CHECK_HEADER, check_rows(checks), CHECK_ALIGN),
        ]
        return "\n".join(out + failures.markdown_lines())
    out = [
        *head_text(env, skip=("nbdcopy",)),
        *preamble(meta, data),
        "",
        plain_table(PHASE_HEADER, rows, PHASE_ALIGN),
        "",
        plain_table(CHECK_HEADER, check_rows(checks), CHECK_ALIGN),
    ]
    return "\n".join(out + failures.text_lines())


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--size", type=float, default=DEFAULT[0], help="virtual GiB (default 4)")
    p.add_argument("--data", type=float, default=DEFAULT[1], help="data GiB (default 1.5)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"sanity preset: {QUICK[0]:g} GiB image, {QUICK[1] * 1024:.0f} MiB of data",
    )
    cli.add_common(p)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.data = QUICK
    if not 0 < args.data <= 0.9 * args.size:
        p.error("need 0 < --data <= 0.9 x --size")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size, data = sizes(args.size, args.data)
    base = prepare(args.workdir, "vhd", 7 * data)
    require(("qemu-img",), "apt-get install qemu-utils")

    cached, meta = ensure_image(image_cache(base.parent), size, data, args.seed)
    logs = fresh_dir(base / "logs")
    run = fresh_dir(base / "run")
    (run / "cache").mkdir()
    versions = {
        "strongroom": version([*strongroom_cmd(), "--version"]),
        "qemu-img": version(["qemu-img", "--version"]),
    }
    env = machine(base, versions)
    env["kdf"] = FAST_KDF
    env["strongroom_command"] = " ".join(strongroom_cmd())
    initial = data_bytes(cached)
    ctx = RunDir(run, logs, size, FAST_KDF, args.keep, LABELS)
    vhd: dict[str, int] = {}  # file -> size on disk
    copy_file(cached, ctx.image)
    try:
        run_all(ctx, vhd)
    except (RuntimeError, OSError) as exc:
        ctx.fail(f"benchmark error: {exc}")
    if args.keep:
        log(f"  kept {run}")
    else:
        shutil.rmtree(run, ignore_errors=True)

    checks = compute_checks(ctx.results)
    doc = {
        "environment": env,
        "image": {**asdict(meta), "data_bytes": initial},
        "vhd_file_bytes": vhd,
        "phases": {p: r.to_json() for p, r in ctx.results.items()},
        "checks": [asdict(c) for c in checks],
        "failures": ctx.failures.items,
    }
    text = report(env, meta, initial, ctx.results, checks, ctx.failures, args.markdown)
    return finish(text, doc, args.json, logs, ctx.failures)


if __name__ == "__main__":
    sys.exit(main())
