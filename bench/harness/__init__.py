"""What every benchmark under ``bench/`` shares, so that each benchmark file is its scenario.

* ``spawn``: run a command through a fresh launcher: wall time, CPU time, peak RSS (``wait4``,
  the command and the children it waited for); ``Spawned`` for one that runs in the background.
* ``workspace``: the scratch folder (never tmpfs), warm page cache, sizes on disk.
* ``stats``: rounds (warm-up, median, spread min-max), ratios and their formatting.
* ``checks``: targets printed PASS/FAIL, and ``Failures``, the result checks that make a run
  fail whatever its timings.
* ``tables``, ``environment``, ``report``, ``cli``: the report (text or markdown), the machine
  it ran on, the JSON document and exit status, the shared options.
* ``peers`` (restic, borg, strongroom driven alike), ``strongroom`` (which program, its
  environment and ``--json`` summaries).
* ``dataset`` (the generated file tree), ``disk_image`` (the generated qcow2), ``verify``
  (restored trees and images compared with their source).

Benchmarks are run as scripts (``python bench/NAME.py``), so ``bench/`` is on ``sys.path`` and
this package imports as ``harness``. No benchmark imports another.
"""
