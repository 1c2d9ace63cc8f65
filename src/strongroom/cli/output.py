r"""Everything the CLI prints: human text, tables, `--json`, progress bars.

Human output goes to stdout, diagnostics to stderr. With `--json`, results are
one JSON document (lists, stats) or JSON lines (progress `status` lines, then
one `summary` line) on stdout. Progress bars appear only on a terminal.

Names come from backed-up file systems, guests' disks and the repository, so
every human line and table cell passes `safe_text`: control characters (an
escape sequence that would retitle or rewrite the terminal) are printed as
`\xNN`, and rich's markup and emoji codes are off. Commands escape each name
with `printable` as well, so a newline in a name cannot forge a line. JSON is
escaped by the encoder (non-ASCII as \uNNNN), so it is valid whatever a name holds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from strongroom.model.names import safe_text
from strongroom.types import Progress as JobProgress
from strongroom.types import ProgressCallback

if TYPE_CHECKING:  # rich loads only when something is drawn (start-up time)
    from rich.console import Console


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 point`, `2 points`, `0 points` (`many`: an irregular plural)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} PiB"


class Output:
    def __init__(self, json_mode: bool = False, quiet: bool = False, verbose: int = 0) -> None:
        self.json = json_mode
        self.quiet = quiet
        self.verbose = verbose

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False, markup=False)

    @cached_property
    def out(self) -> Console:
        from rich.console import Console

        # Piped output must not wrap at 80 columns: scripts grep whole lines.
        return Console(
            highlight=False,
            soft_wrap=True,
            emoji=False,
            markup=False,
            width=None if sys.stdout.isatty() else 250,
        )

    @property
    def interactive(self) -> bool:
        """Progress bars make sense: a terminal on stderr, and not --json/--quiet."""
        return not self.json and not self.quiet and sys.stderr.isatty()

    # --- plain ---------------------------------------------------------------

    def info(self, text: str) -> None:
        """A human line on stdout (suppressed by --json and --quiet)."""
        if not self.json and not self.quiet:
            self.out.print(safe_text(text), markup=False)

    def notice(self, text: str) -> None:
        """Something the user must see even when quiet (on stderr)."""
        self.err.print(safe_text(text), markup=False)

    def warn(self, text: str) -> None:
        if self.json:
            self.emit({"message_type": "warning", "message": text})
        else:
            self.err.print(f"warning: {safe_text(text)}", markup=False)

    def error(self, text: str) -> None:
        self.err.print(f"strongroom: error: {safe_text(text)}", markup=False)

    # --- machine -------------------------------------------------------------

    def emit(self, doc: Any) -> None:
        """One JSON value on one line of stdout."""
        sys.stdout.write(json.dumps(doc, default=str) + "\n")
        sys.stdout.flush()

    def summary(self, doc: Mapping[str, object], lines: Iterable[str] = ()) -> None:
        """A command's closing summary: with --json one `summary` line holding `doc`
        (after any progress `status` lines), otherwise `lines` for a person
        (nothing with --quiet). Warnings and failures are not part of it: they go
        to stderr whatever the mode."""
        if self.json:
            self.emit({"message_type": "summary", **doc})
            return
        for line in lines:
            self.info(line)

    def document(self, doc: Any) -> None:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def table(
        self, headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = ""
    ) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(
            title=safe_text(title) or None, show_lines=False, box=None, header_style="bold"
        )
        for h in headers:
            table.add_column(h, overflow="fold")
        for row in rows:
            table.add_row(*(Text(safe_text(str(c))) for c in row))
        self.out.print(table)

    # --- progress ------------------------------------------------------------

    @contextmanager
    def progress(self, title: str) -> Iterator[ProgressCallback]:
        """A callback for pipeline progress: a bar on a terminal, JSON status lines
        with --json (at most one a second), nothing otherwise."""
        if self.json:
            last = [0.0]

            def json_cb(p: JobProgress) -> None:
                now = time.monotonic()
                if now - last[0] >= 1.0:
                    last[0] = now
                    self.emit(p.as_dict())

            yield json_cb
            return
        if not self.interactive:
            yield lambda _: None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeRemainingColumn,
        )

        from strongroom.cli.rate_column import BinaryRateColumn

        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[percent]}"),
            TextColumn("{task.fields[files]}"),
            DownloadColumn(binary_units=True),
            BinaryRateColumn(),  # MiB/s beside DownloadColumn's MiB
            TimeRemainingColumn(),
            TextColumn("{task.fields[current]}"),
            console=self.err,
            transient=True,
        )
        task: TaskID = bar.add_task(title, total=None, files="", percent="", current="")

        def bar_cb(p: JobProgress) -> None:
            bar.update(
                task,
                completed=p.bytes_done,
                total=p.bytes_total,
                percent=progress_percent(p),
                files=progress_files(p),
                current=progress_current(p, self.err.width),
            )

        with bar:
            yield bar_cb


def progress_percent(p: JobProgress) -> str:
    """`42%` of the bytes once the total is known (the walk ahead has counted them)."""
    if not p.bytes_total:
        return ""
    return f"{min(100, 100 * p.bytes_done // p.bytes_total):>3}%"


def progress_files(p: JobProgress) -> str:
    """`120/5,000 files`, or `120 files` while the total is not known yet (packs
    for check --read-data: the `unit` of the progress)."""
    if p.files_total:
        return f"{p.files_done:,}/{p.files_total:,} {p.unit}s"
    return plural(p.files_done, p.unit)


def progress_current(p: JobProgress, width: int) -> str:
    """The file being read, shortened from the left to fit a quarter of the line."""
    room = max(12, width // 4)
    current = safe_text(p.current)
    return current if len(current) <= room else "…" + current[-(room - 1) :]
