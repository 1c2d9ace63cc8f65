#!/usr/bin/env python3
"""VHD benchmark: strongroom's VHD export and VHD reader against qemu-img's vpc driver.

What is measured (issue #4, "VHD export and import", Performance)
------------------------------------------------------------------
"Export of a 4 GiB recovery point to a dynamic VHD against ``qemu-img convert -O vpc`` of the
same data, and reading a VHD back; targets: within 1.2x of qemu-img both ways."

The image is the cached generated qcow2 of ``bench/images.py`` (default 4 GiB virtual, 1.5 GiB
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

Everything else follows ``bench/images.py`` (and is imported from it): timing through
``spawn.py`` (wall time, peak RSS, CPU of the tool), warm page cache (the command's input, the
repository and strongroom's cache read, then ``sync``), MB/s of *data bytes* (qcow2 clusters
allocated as data, per ``qemu-img map``), ``STRONGROOM_KDF=1,8192,1``, logs of every command in
``WORKDIR/vhd/logs/``.

Usage::

    nice -n 5 python bench/vhd.py [--size 4] [--data 1.5] [--quick] [--seed N]
                                  [--workdir DIR] [--keep] [--json FILE] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import images as img
from dataset import DEFAULT_SEED, GIB
from files import (
    default_workdir,
    filesystem_type,
    log,
    run_measured,
    tail,
    tree_bytes,
    warm_page_cache,
)

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
img.LABELS.update(LABELS)  # images.record() and report_phase() name phases through it


@dataclass
class VhdContext(img.Context):
    """images.Context with a choice of repository (the second one takes the VHD backup)."""

    repo_name: str = "repo"
    vhd: dict[str, int] = field(default_factory=dict)  # file -> size on disk

    @property
    def repo(self) -> Path:  # type: ignore[override]
        return self.run / self.repo_name


def measure(ctx: VhdContext, phase: str, cmd: list[str], source: Path | None) -> img.PhaseResult:
    """Warm ``source`` (the command's input file), the repository and the cache, sync, then
    time the command."""
    if source is not None:
        img.warm_file(source)
    warm_page_cache(ctx.repo)
    warm_page_cache(ctx.cache)
    os.sync()
    m = run_measured(cmd, ctx.env(), ctx.run, ctx.logs / phase)
    return img.record(ctx, phase, m, cmd)


def untimed(ctx: VhdContext, name: str, cmd: list[str]) -> bool:
    m = run_measured(cmd, ctx.env(), ctx.run, ctx.logs / name)
    if m.exit_code != 0:
        ctx.fail(f"{name}: exit code {m.exit_code}\n{tail((ctx.logs / name).with_suffix('.err'))}")
        return False
    log(f"  {name}: {m.seconds:.2f} s (not timed)")
    return True


def fsync_seconds(path: Path) -> float:
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def output_note(r: img.PhaseResult, path: Path, fsync: bool) -> None:
    """File size and allocation of an output; for qemu-img (which does not fsync), the time of
    an fsync after it, separately."""
    st = os.stat(path)
    r.details["file_bytes"] = st.st_size
    r.details["allocated"] = st.st_blocks * 512
    r.note = f"{path.name}: {st.st_size / 1e6:.0f} MB file, {st.st_blocks * 512 / 1e6:.0f} MB alloc"
    if fsync:
        r.details["fsync_seconds"] = fsync_seconds(path)
        r.note += f", not fsynced (fsync after: {r.details['fsync_seconds']:.2f} s)"


def run_all(ctx: VhdContext) -> None:
    sr = img.strongroom_cmd()
    data = img.data_bytes(ctx.image)
    log(f"image: {ctx.size / GIB:g} GiB virtual, {data / 1e6:.0f} MB allocated as data")
    if not (untimed(ctx, "init", [*sr, "init"])):
        return
    if not untimed(ctx, "backup", [*sr, "backup", "--image", str(ctx.image), "--json"]):
        return

    ref_vhd, out_vhd, ref_raw = ctx.run / "ref.vhd", ctx.run / "out.vhd", ctx.run / "ref.raw"
    # 1. reference write
    cmd = ["qemu-img", "convert", "-O", "vpc", "-o", "subformat=dynamic"]
    r = measure(ctx, "ref_write", [*cmd, str(ctx.image), str(ref_vhd)], ctx.image)
    r.data_bytes, r.virtual_bytes = data, ctx.size
    if r.ok:
        output_note(r, ref_vhd, fsync=True)
    img.report_phase(r)

    # 2. strongroom export, verified against the image
    cmd = [*sr, "export", "latest", str(out_vhd), "--type", "dynamic", "--json"]
    r = measure(ctx, "export", cmd, None)
    r.data_bytes, r.virtual_bytes = data, ctx.size
    if r.ok:
        output_note(r, out_vhd, fsync=False)
        s = img.summary_json(ctx, "export")
        r.details.update({k: s.get(k) for k in ("blocks_written", "bytes_written")})
        r.note += f", {s.get('blocks_written')} blocks written"
        r.ok = img.compare_images(ctx, out_vhd, "vpc", "exported out.vhd")
        r.note += "; verified equal" if r.ok else "; DIFFERS"
    img.report_phase(r)
    if not r.ok:
        return

    # 3. reference read
    cmd = ["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(ref_vhd), str(ref_raw)]
    r = measure(ctx, "ref_read", cmd, ref_vhd)
    r.data_bytes, r.virtual_bytes = data, ctx.size
    if r.ok:
        output_note(r, ref_raw, fsync=True)
        r.note = "of ref.vhd; " + r.note
    img.report_phase(r)
    ref_raw.unlink(missing_ok=True)

    # 4. strongroom's reader
    r = measure(ctx, "vhd_check", [*sr, "vhd", "check", str(out_vhd), "--json"], out_vhd)
    r.data_bytes, r.virtual_bytes = data, ctx.size
    if r.ok:
        try:
            doc = json.loads((ctx.logs / "vhd_check").with_suffix(".out").read_text())
        except ValueError:
            doc = {}
        r.details = {k: doc.get(k) for k in ("ok", "virtual_size", "bytes_read")}
        r.note = f"of out.vhd; read {img._mb(doc.get('bytes_read'))} MB, ok={doc.get('ok')}"
    img.report_phase(r)

    # 5. backup of the VHD into a second repository (informative)
    ctx.repo_name = "repo2"
    if untimed(ctx, "init2", [*sr, "init"]):
        cmd = [*sr, "backup", "--image", str(out_vhd), "--json"]
        r = measure(ctx, "vhd_backup", cmd, out_vhd)
        r.data_bytes, r.virtual_bytes = data, ctx.size
        r.repo_bytes = tree_bytes(ctx.repo)
        if r.ok:
            s = img.summary_json(ctx, "vhd_backup")
            keys = ("tracker", "blocks", "holes", "blocks_read", "bytes_read", "data_added_stored")
            r.details = {k: s.get(k) for k in keys}
            r.note = (
                f"read {img._mb(s.get('bytes_read'))} MB, +{img._mb(s.get('data_added_stored'))}"
                f" MB stored; repo {r.repo_bytes / 1e6:.0f} MB"
            )
        img.report_phase(r)
    ctx.repo_name = "repo"
    for path in (ref_vhd, out_vhd):
        if path.exists():
            ctx.vhd[path.name] = os.stat(path).st_size


# --------------------------------------------------------------------------- targets and output


def compute_checks(results: dict[str, img.PhaseResult]) -> list[img.Check]:
    def seconds(phase: str) -> float | None:
        r = results.get(phase)
        return r.seconds if r is not None and r.ok else None

    checks = []
    for metric, a, b in (
        ("export time / qemu-img convert -O vpc time", "export", "ref_write"),
        ("vhd check time / qemu-img convert -f vpc time", "vhd_check", "ref_read"),
    ):
        ta, tb = seconds(a), seconds(b)
        value = ta / tb if ta and tb else None
        passed = None if value is None else value <= TARGET
        checks.append(img.Check(metric, value, "x", f"<= {TARGET:g}x", passed))
    backup, ref = seconds("vhd_backup"), seconds("ref_read")
    if backup and ref:
        checks.append(img.Check("  backup of the VHD / same (info)", backup / ref, "x", "-", None))
    r, base = results.get("export"), results.get("ref_write")
    flush = base.details.get("fsync_seconds") if base is not None else None
    if r is not None and r.ok and base is not None and base.ok and isinstance(flush, float):
        value = r.seconds / (base.seconds + flush)
        checks.append(img.Check("  export / (reference + its fsync) (info)", value, "x", "-", None))
    return checks


def phase_rows(results: dict[str, img.PhaseResult]) -> list[list[str]]:
    return img.phase_rows(results, PHASES, LABELS)


def preamble(meta: img.ImageMeta, data: int) -> list[str]:
    return [
        img.describe_image(meta, data),
        "backed up once into a new repository (not timed); the export is of that point",
        "page cache: warm (the command's input, repository, cache read, then sync, before each "
        "command); one run",
        img.MBPS_NOTE,
    ]


def report(
    env: dict[str, object],
    meta: img.ImageMeta,
    data: int,
    results: dict[str, img.PhaseResult],
    checks: list[img.Check],
    failures: list[str],
    markdown: bool,
) -> str:
    versions = env["versions"]
    assert isinstance(versions, dict)
    if markdown:
        out = [
            f"Measured {env['date']} on {env['cpu_count']} x {env['cpu_model']}, "
            f"{env['memory_gib']} GiB RAM, Python {env['python']}, {env['filesystem']}, load "
            f"average {env['load_average']}; "
            + ", ".join(str(v) for k, v in versions.items() if k != "nbdcopy")
            + ".",
            "",
            " ".join(line[0].upper() + line[1:].rstrip(".") + "." for line in preamble(meta, data)),
            "",
            img.md_table(img.PHASE_HEADER, phase_rows(results), img.PHASE_ALIGN),
            "",
            img.md_table(img.CHECK_HEADER, img.check_rows(checks), img.CHECK_ALIGN),
        ]
        if failures:
            out += ["", "Failures: " + "; ".join(f.splitlines()[0] for f in failures)]
        return "\n".join(out)
    out = [
        f"date {env['date']}  python {env['python']}  kernel {env['kernel']}",
        f"cpu: {env['cpu_count']} x {env['cpu_model']}, {env['memory_gib']} GiB RAM, load "
        f"average at start {env['load_average']}; workdir {env['workdir']} "
        f"({env['filesystem']}); KDF {env['kdf']}",
        *(f"{name}: {v}" for name, v in versions.items() if name != "nbdcopy"),
        f"strongroom command: {env['strongroom_command']}",
        *preamble(meta, data),
        "",
        img.plain_table(img.PHASE_HEADER, phase_rows(results), img.PHASE_ALIGN),
        "",
        img.plain_table(img.CHECK_HEADER, img.check_rows(checks), img.CHECK_ALIGN),
    ]
    if failures:
        out += ["", "failures:", *(f"  {f}" for f in failures)]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=float, default=DEFAULT[0], help="virtual GiB (default 4)")
    p.add_argument("--data", type=float, default=DEFAULT[1], help="data GiB (default 1.5)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"sanity preset: {img.QUICK[0]:g} GiB image, {img.QUICK[1] * 1024:.0f} MiB of data",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="data seed")
    p.add_argument("--workdir", type=Path, default=None, help="scratch dir (not on tmpfs)")
    p.add_argument("--keep", action="store_true", help="keep the run directory and outputs")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write results")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.data = img.QUICK
    if not 0 < args.data <= 0.9 * args.size:
        p.error("need 0 < --data <= 0.9 x --size")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size = int(args.size * GIB) // img.BLOCK * img.BLOCK
    data = int(args.data * GIB) // img.UNIT * img.UNIT
    workdir = (args.workdir or default_workdir()).resolve()
    base = workdir / "vhd"
    base.mkdir(parents=True, exist_ok=True)
    fstype = filesystem_type(base)
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{workdir} is on {fstype}: use --workdir on a real disk")
    if shutil.which("qemu-img") is None:
        raise SystemExit("qemu-img is not installed (apt-get install qemu-utils)")
    if shutil.disk_usage(base).free < 7 * data:
        log(f"warning: less than {7 * data / GIB:.1f} GiB free in {base}")

    # The image cache is shared with bench/images.py.
    cached, meta = img.ensure_image(workdir / "images" / "cache", size, data, args.seed)
    logs = base / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    run = base / "run"
    if run.exists():
        shutil.rmtree(run)
    (run / "cache").mkdir(parents=True)
    env = img.environment(base, img.FAST_KDF)
    initial = img.data_bytes(cached)
    ctx = VhdContext(run, logs, size, args.seed, img.FAST_KDF, args.keep)
    subprocess.run(["cp", "--reflink=auto", str(cached), str(ctx.image)], check=True)
    try:
        run_all(ctx)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        ctx.fail(f"benchmark error: {exc}")
    if args.keep:
        log(f"  kept {run}")
    else:
        shutil.rmtree(run, ignore_errors=True)

    checks = compute_checks(ctx.results)
    print(report(env, meta, initial, ctx.results, checks, ctx.failures, args.markdown))
    if args.json:
        doc = {
            "environment": env,
            "image": {**asdict(meta), "data_bytes": initial},
            "vhd_file_bytes": ctx.vhd,
            "phases": {
                p: {**asdict(r), "mb_per_s": r.mb_per_s, "virtual_mb_per_s": r.virtual_mb_per_s}
                for p, r in ctx.results.items()
            },
            "checks": [asdict(c) for c in checks],
            "failures": ctx.failures,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"results written to {args.json}")
    log(f"logs in {logs}")
    if ctx.failures:
        log("FAILED: " + "; ".join(f.splitlines()[0] for f in ctx.failures))
    return 1 if ctx.failures else 0


if __name__ == "__main__":
    sys.exit(main())
