"""Application consistency for one instant: hooks, freeze, snapshot, thaw, hooks.

    with quiesce(hooks, freeze_target, timeout) as q:
        take_snapshot()          # the caller's atomic snapshot, q.instant set
    q.result                     # consistency, reason, hook reports, timings

The order (issue #13, "First instant"): every hook's `pre`, then the freeze,
then the caller's snapshot, then the thaw AT ONCE, then every hook's `post`
(in reverse order, and after every `pre` that ran, even a failed one — the
user's "resume" must run). Nothing here raises for an application's or a
file system's failure: the snapshot is taken anyway and the point is
crash-consistent, with the first reason recorded. An exception of the
snapshot step itself still thaws and runs the post hooks, then propagates
(`q.result` is set either way).

The point is application-consistent only when every hook (pre and post) and
the freeze succeeded, and nothing holding writers outlived `timeout`. With
`freeze_target=None` the caller's snapshot is atomic by itself (a block-layer
view, a btrfs snapshot) and the hooks alone decide; with neither hooks nor a
freeze the point is crash-consistent.

Writers are held for at most `timeout` seconds: the freeze by its watchdog
process (protect/freeze.py; survives our hang and our death), a hook's own
hold (SQLite's write lock) by a timer thread from the moment it was taken
(the kernel drops it if we die). A hold let go before the snapshot ended
makes the point crash-consistent.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from strongroom.protect.freeze import Freeze, FreezeTarget, Thawed
from strongroom.protect.hooks import Hook, HookReport

log = logging.getLogger("strongroom.protect.quiesce")

SUMMARY_OUTPUT = 2048  # characters of a command's output kept in a point's summary


class Consistency(StrEnum):
    APPLICATION = "application-consistent"
    CRASH = "crash-consistent"


@dataclass(frozen=True)
class QuiesceResult:
    """What a cycle records with its point.

    `instant`: wall-clock time the snapshot step began (the point's instant);
    `held_seconds`: how long the freeze held writers, freeze call to end of
    thaw (None when nothing was frozen); the other timings are the phases'."""

    consistency: Consistency
    reason: str | None
    hooks: tuple[HookReport, ...]
    frozen: bool
    freeze_note: str
    instant: float | None
    held_seconds: float | None
    pre_seconds: float
    snapshot_seconds: float
    post_seconds: float

    def summary(self) -> dict[str, Any]:
        """JSON-able, for the point's summary: PostgreSQL's backup_label is in
        `hooks[].details`; a command's output is cut to its last 2 KiB."""
        reports = []
        for report in self.hooks:
            doc = report.as_dict()
            if report.output:
                doc["output"] = report.output[-SUMMARY_OUTPUT:]
            reports.append(doc)
        return {
            "consistency": str(self.consistency),
            "reason": self.reason,
            "instant": self.instant,
            "frozen": self.frozen,
            "freeze": self.freeze_note,
            "writers_held_seconds": self.held_seconds,
            "seconds": {
                "pre": round(self.pre_seconds, 6),
                "snapshot": round(self.snapshot_seconds, 6),
                "post": round(self.post_seconds, 6),
            },
            "hooks": reports,
        }


class _Holds:
    """Lets a hook's hold go at its deadline, from a timer thread."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._done = False
        self.expired: list[str] = []

    def watch(self, hook: Hook) -> None:
        timer = threading.Timer(self.timeout, self._expire, args=(hook,))
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def _expire(self, hook: Hook) -> None:
        with self._lock:
            if not self._done:
                self.expired.append(hook.name)
        log.warning("%s held writers for %g s: letting them go", hook.name, self.timeout)
        hook.release()

    def snapshot_done(self) -> list[str]:
        """The holds that were let go before now (the snapshot is done)."""
        with self._lock:
            self._done = True
            return list(self.expired)

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()


class Quiescing:
    """One quiesced instant; `quiesce()` drives it. `result` after the block."""

    def __init__(
        self, hooks: Sequence[Hook], freeze_target: FreezeTarget | None, timeout: float
    ) -> None:
        self.hooks = list(hooks)
        self.freeze_target = freeze_target
        self.timeout = timeout
        self.instant: float | None = None
        self._result: QuiesceResult | None = None
        self._reports: list[HookReport] = []
        self._problems: list[str] = []
        self._ran: list[Hook] = []
        self._holds = _Holds(timeout)
        self._freeze: Freeze | None = None
        self._frozen = False
        self._freeze_note = "no freeze"
        self._times = {"pre": 0.0, "snapshot": 0.0, "post": 0.0}
        self._snapshot_started = 0.0

    @property
    def result(self) -> QuiesceResult:
        if self._result is None:
            raise RuntimeError("quiesce: the result exists once the block has ended")
        return self._result

    def _begin(self) -> None:
        started = time.monotonic()
        for hook in self.hooks:
            self._ran.append(hook)
            report = _guarded(hook, "pre", hook.pre)
            self._note(report)
            if report.ok and hook.holds_writers:
                self._holds.watch(hook)
        self._times["pre"] = time.monotonic() - started
        if self.freeze_target is not None:
            self._freeze = Freeze(self.freeze_target, self.timeout)
            self._frozen, self._freeze_note = self._freeze.freeze()
            if not self._frozen:
                self._problems.append(f"not frozen: {self._freeze_note}")
        self.instant = time.time()
        self._snapshot_started = time.monotonic()

    def _end(self, snapshot_error: BaseException | None) -> None:
        if self._snapshot_started:
            self._times["snapshot"] = time.monotonic() - self._snapshot_started
        expired = self._holds.snapshot_done()
        thawed: Thawed | None = None
        if self._freeze is not None:
            thawed = self._freeze.thaw()  # at once: before anything else
        if snapshot_error is not None:
            self._problems.append(f"the snapshot failed: {_line(snapshot_error)}")
        for name in expired:
            self._problems.append(
                f"{name} held writers past the freeze timeout ({self.timeout:g} s)"
                " and let them go before the snapshot ended"
            )
        if thawed is not None and self._frozen:
            if thawed.expired:
                self._problems.append(
                    f"the freeze outlived its timeout ({self.timeout:g} s):"
                    " thawed before the snapshot ended"
                )
            if thawed.warning:
                self._problems.append(f"thaw: {thawed.warning}")
        started = time.monotonic()
        snapshot_ok = snapshot_error is None
        for hook in reversed(self._ran):
            self._note(_guarded(hook, "post", functools.partial(hook.post, snapshot_ok)))
        self._holds.cancel()
        self._times["post"] = time.monotonic() - started
        self._result = self._conclude(thawed)
        log.info(
            "quiesce: %s%s",
            self._result.consistency,
            f" ({self._result.reason})" * bool(self._result.reason),
        )

    def _note(self, report: HookReport) -> None:
        self._reports.append(report)
        if not report.ok:
            self._problems.append(f"{report.hook}: {report.message}")

    def _conclude(self, thawed: Thawed | None) -> QuiesceResult:
        problems = list(self._problems)
        if not problems and not self.hooks and self.freeze_target is None:
            problems.append("no hooks and no freeze configured")
        consistency = Consistency.CRASH if problems else Consistency.APPLICATION
        return QuiesceResult(
            consistency=consistency,
            reason="; ".join(problems) or None,
            hooks=tuple(self._reports),
            frozen=self._frozen,
            freeze_note=self._freeze_note,
            instant=self.instant,
            held_seconds=thawed.held if thawed is not None and self._frozen else None,
            pre_seconds=self._times["pre"],
            snapshot_seconds=self._times["snapshot"],
            post_seconds=self._times["post"],
        )


@contextmanager
def quiesce(
    hooks: Sequence[Hook], freeze_target: FreezeTarget | None, timeout: float
) -> Iterator[Quiescing]:
    """Quiesce around the block (the module docstring says the contract)."""
    q = Quiescing(hooks, freeze_target, timeout)
    error: BaseException | None = None
    try:
        q._begin()
        yield q
    except BaseException as err:
        error = err
        raise
    finally:
        q._end(error)


def _guarded(hook: Hook, phase: str, step: Callable[[], HookReport]) -> HookReport:
    """A hook's step; a bug in it (it should not raise) becomes a failed report."""
    started = time.monotonic()
    try:
        report: HookReport = step()
    except Exception as err:
        seconds = time.monotonic() - started
        return HookReport(hook.name, phase, False, seconds, f"{phase}: {_line(err)}")
    return report


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return " ".join(text[0].split()) if text else type(err).__name__
