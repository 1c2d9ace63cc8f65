"""Timed phases of the block benchmarks (``images.py``, ``vhd.py``): one folder per run with
the image, the repository and the outputs; one result per phase, reported as it ends.

MB/s is 10^6 *data bytes* per second (the clusters the image holds as data), in every phase so
that phases compare; the virtual size is shown beside it but flatters every reader that skips
holes through block status.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness.checks import Failures
from harness.spawn import Measurement, log, run_measured, tail
from harness.strongroom import strongroom_env
from harness.verify import qemu_img_compare
from harness.workspace import warm

PHASE_HEADER = ["phase", "s", "data MB/s", "virt MB/s", "peak RSS MiB", "CPU s", "notes"]
PHASE_ALIGN = "lrrrrrl"
MBPS_NOTE = (
    "MB/s = 10^6 data bytes (allocated in the image, per qemu-img map) per second; virt MB/s "
    "counts the virtual size, holes included, which every reader here skips through block "
    "status: the targets are judged on data bytes."
)


@dataclass
class PhaseResult:
    phase: str
    seconds: float = 0.0
    peak_rss_kib: int = 0
    cpu_seconds: float = 0.0
    exit_code: int = 0
    ok: bool = False
    data_bytes: int = 0  # the image's data at this phase: the MB/s basis
    virtual_bytes: int = 0
    repo_bytes: int = 0
    note: str = ""
    details: dict[str, object] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.data_bytes / 1e6 / self.seconds if self.seconds else 0.0

    @property
    def virtual_mb_per_s(self) -> float:
        return self.virtual_bytes / 1e6 / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "mb_per_s": self.mb_per_s,
            "virtual_mb_per_s": self.virtual_mb_per_s,
        }


@dataclass
class RunDir:
    """One run's folder (``run``: image, repository, outputs), its logs, and its results.

    ``labels`` names the phases in the progress lines and failures."""

    run: Path
    logs: Path
    size: int  # the image's virtual size
    kdf: str | None
    keep: bool
    labels: dict[str, str]
    repo_name: str = "repo"
    results: dict[str, PhaseResult] = field(default_factory=dict)
    failures: Failures = field(default_factory=Failures)

    @property
    def image(self) -> Path:
        return self.run / "disk.qcow2"

    @property
    def repo(self) -> Path:
        return self.run / self.repo_name

    @property
    def cache(self) -> Path:
        return self.run / "cache"

    def env(self) -> dict[str, str]:
        return strongroom_env(self.repo, self.cache, self.kdf)

    def fail(self, what: str) -> None:
        self.failures.fail(what)

    def warm(self, inputs: Iterable[Path]) -> None:
        """Warm page cache for the command's inputs, the repository and the cache; sync."""
        warm([*inputs, self.repo, self.cache])

    def measure(self, phase: str, cmd: list[str], inputs: Iterable[Path] = ()) -> PhaseResult:
        """Time ``cmd`` on a warm page cache; the result is recorded (not yet reported)."""
        self.warm(inputs)
        m = run_measured(cmd, self.env(), self.run, self.logs / phase)
        return self.record(phase, m, cmd)

    def record(self, phase: str, m: Measurement, cmd: list[str]) -> PhaseResult:
        r = PhaseResult(
            phase,
            m.seconds,
            m.peak_rss_kib,
            m.cpu_seconds,
            m.exit_code,
            ok=m.exit_code == 0,
            virtual_bytes=self.size,
        )
        self.results[phase] = r
        if not r.ok:
            self.fail(f"{self.labels[phase]}: exit code {m.exit_code}")
            log(f"  $ {' '.join(cmd)}\n{tail((self.logs / phase).with_suffix('.err'))}")
        return r

    def untimed(self, name: str, cmd: list[str]) -> bool:
        """Run a set-up command (not a phase); False (and a failure) if it failed."""
        m = run_measured(cmd, self.env(), self.run, self.logs / name)
        if m.exit_code != 0:
            err = tail((self.logs / name).with_suffix(".err"))
            self.fail(f"{name}: exit code {m.exit_code}\n{err}")
            return False
        log(f"  {name}: {m.seconds:.2f} s (not timed)")
        return True

    def report(self, r: PhaseResult) -> None:
        log(
            f"  {self.labels[r.phase]:<30} {r.seconds:8.2f} s {r.mb_per_s:8.1f} MB/s "
            f"{r.peak_rss_kib / 1024:7.1f} MiB RSS {r.cpu_seconds:7.2f} s CPU"
            + (f"  {r.note}" if r.note else "")
            + ("" if r.ok else "  FAILED")
        )

    def compare(self, a: Path, a_fmt: str, what: str) -> bool:
        """Result check: ``a`` holds the same disk as the image (``qemu-img compare``)."""
        t0 = time.perf_counter()
        differs = qemu_img_compare(a, a_fmt, self.image, "qcow2")
        if differs is not None:
            self.fail(f"{what}: differs from the image: {differs}")
            return False
        log(f"  {what}: identical to the image ({time.perf_counter() - t0:.0f} s to check)")
        return True


def phase_rows(
    results: dict[str, PhaseResult], phases: Sequence[str], labels: dict[str, str]
) -> list[list[str]]:
    """Table rows of the phases, in order; a phase that did not run says so."""
    rows = []
    for phase in phases:
        r = results.get(phase)
        if r is None:
            rows.append([labels[phase], "-", "-", "-", "-", "-", "not run"])
            continue
        rows.append(
            [
                labels[phase],
                f"{r.seconds:.2f}",
                f"{r.mb_per_s:.1f}",
                f"{r.virtual_mb_per_s:.0f}",
                f"{r.peak_rss_kib / 1024:.1f}",
                f"{r.cpu_seconds:.1f}",
                ("" if r.ok else "FAILED; ") + r.note,
            ]
        )
    return rows


def median_results(
    runs: list[dict[str, PhaseResult]], phases: Sequence[str]
) -> dict[str, PhaseResult]:
    """Per phase: the run with the median time (its notes), with median RSS and CPU, and the
    wall times' range in ``details["seconds_range"]`` when there were several; ok only if the
    phase succeeded in every run."""
    out: dict[str, PhaseResult] = {}
    for phase in phases:
        done = [r[phase] for r in runs if phase in r]
        if not done:
            continue
        ordered = sorted(done, key=lambda r: r.seconds)
        mid = replace(ordered[(len(ordered) - 1) // 2])
        mid.details = dict(mid.details)
        mid.peak_rss_kib = int(statistics.median(r.peak_rss_kib for r in done))
        mid.cpu_seconds = statistics.median(r.cpu_seconds for r in done)
        mid.ok = len(done) == len(runs) and all(r.ok for r in done)
        if len(done) > 1:
            low, high = ordered[0].seconds, ordered[-1].seconds
            mid.details["seconds_range"] = [low, high]
            mid.note = f"{low:.2f}-{high:.2f} s over {len(done)} runs; " + mid.note
        out[phase] = mid
    return out
