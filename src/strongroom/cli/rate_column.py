"""The progress bars' transfer rate in binary units (`12.50 MiB/s`).

rich's TransferSpeedColumn prints decimal units (MB/s) beside
DownloadColumn(binary_units=True)'s MiB: one bar, two unit systems. This
column uses `human_bytes`, the unit system of every other size the CLI
prints. Imported only when a bar is drawn (rich loads lazily).
"""

from __future__ import annotations

from rich.progress import ProgressColumn, Task
from rich.text import Text

from strongroom.cli.output import human_bytes


class BinaryRateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("?", style="progress.data.speed")
        return Text(f"{human_bytes(speed)}/s", style="progress.data.speed")
