"""The machine a benchmark ran on, recorded with every result (the numbers mean little
without it): date, versions, CPU, memory, load average, file system."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from harness.workspace import GIB, filesystem_type


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo says (empty if it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def memory_gib() -> float:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1)


def machine(workdir: Path, versions: dict[str, str], memory: bool = True) -> dict[str, object]:
    """The environment record: ``versions`` maps each tool to its version line."""
    env: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
    }
    if memory:
        env["memory_gib"] = memory_gib()
    env["load_average"] = [round(x, 2) for x in os.getloadavg()]
    env["filesystem"] = filesystem_type(workdir)
    env["workdir"] = str(workdir)
    return env


def versions_of(env: dict[str, object], skip: tuple[str, ...] = ()) -> dict[str, str]:
    versions = env["versions"]
    assert isinstance(versions, dict)
    return {k: str(v) for k, v in versions.items() if k not in skip}


def head_text(env: dict[str, object], skip: tuple[str, ...] = (), kdf: bool = True) -> list[str]:
    """The report's first lines: date, machine, load, workdir, versions."""
    extra = f"; KDF {env['kdf']}" if kdf and "kdf" in env else ""
    lines = [
        f"date {env['date']}  python {env['python']}  kernel {env['kernel']}",
        f"cpu: {env['cpu_count']} x {env['cpu_model']}, {env['memory_gib']} GiB RAM, load "
        f"average at start {env['load_average']}; workdir {env['workdir']} "
        f"({env['filesystem']}){extra}",
        *(f"{name}: {v}" for name, v in versions_of(env, skip).items()),
    ]
    if "strongroom_command" in env:
        lines.append(f"strongroom command: {env['strongroom_command']}")
    return lines


def head_markdown(env: dict[str, object], skip: tuple[str, ...] = (), load: bool = True) -> str:
    """The markdown report's first sentence: when, on what, which versions."""
    where = f", load average {env['load_average']}" if load else ""
    return (
        f"Measured {env['date']} on {env['cpu_count']} x {env['cpu_model']}, "
        f"{env['memory_gib']} GiB RAM, Python {env['python']}, {env['filesystem']}{where}; "
        + ", ".join(versions_of(env, skip).values())
        + "."
    )
