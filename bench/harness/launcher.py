"""Run one command and report its wall time, CPU time and peak RSS: the benchmarks' launcher.

Why a separate process: Linux keeps a process's peak RSS (``ru_maxrss``) across ``exec``, and a
child created by ``fork``/``vfork`` starts from its parent's memory. A child spawned directly by
the benchmark (which has read or generated gigabytes of data and may be 100+ MiB) would inherit
that as a floor. This launcher is started fresh with ``python -I -S`` and imports only ``os``,
``sys``, ``json`` and ``time``, so the floor is its own size (about 10 MiB), below any real tool.
It is a script, not a module of the package: ``harness/spawn.py`` runs it by path.

What is counted: ``wait4`` reports the command's own usage plus that of every descendant it
waited for (CPU summed, ``ru_maxrss`` the largest single process), so a tool's helpers
(strongroom's ``mke2fs``, ``debugfs``) are included; a daemon it leaves behind is not.

Protocol: a JSON object on stdin ``{"cmd": [...], "env": {...}, "cwd": "...", "stdout": PATH,
"stderr": PATH}``; prints ``{"seconds", "maxrss_kib", "cpu_seconds", "exit_code"}`` as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def run(spec: dict[str, Any]) -> dict[str, Any]:
    out = os.open(spec["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(spec["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: redirect, then exec; never returns
        try:
            os.chdir(spec["cwd"])
            os.dup2(devnull, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.execvpe(spec["cmd"][0], spec["cmd"], spec["env"])
        except BaseException as exc:  # report anything, then exit
            os.write(2, f"spawn: cannot run {spec['cmd'][0]}: {exc}\n".encode())
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "maxrss_kib": usage.ru_maxrss,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "exit_code": os.waitstatus_to_exitcode(status),
    }


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin))))
