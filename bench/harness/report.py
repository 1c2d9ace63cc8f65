"""The end of every benchmark: the report on stdout, the JSON document, the exit status."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from harness.checks import Failures
from harness.spawn import log


def finish(
    report: str, doc: Mapping[str, object], json_path: Path | None, logs: Path, failures: Failures
) -> int:
    """Print ``report``, write ``doc`` to ``json_path`` (if given), say where the logs are;
    exit status 1 if anything failed."""
    print(report)
    if json_path is not None:
        json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
        log(f"results written to {json_path}")
    log(f"logs in {logs}")
    if failures:
        log(failures.summary())
    return 1 if failures else 0
