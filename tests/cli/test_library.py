"""strongroom library: create, status, moves, import/export, refusals."""

from __future__ import annotations

import json

from tests.conftest import CliRunner


def elements(cli: CliRunner) -> list[tuple[str, int, str | None]]:
    result = cli("--json", "library", "status", "lab")
    assert result.rc == 0, result.err
    doc = json.loads(result.out)
    return [(e["kind"], e["address"], e["barcode"] if e["full"] else "-") for e in doc["elements"]]


def test_library_workflow(cli: CliRunner) -> None:
    args = ["--slots", "3", "--drives", "1", "--import-export", "1", "--capacity", "64M"]
    result = cli("library", "create", "lab", *args, "--cartridges", "1")
    assert result.rc == 0, result.err
    assert "created library lab: 3 slots, 1 import/export, 1 drives" in result.out
    assert cli("library", "import", "lab", "NEW001L8").rc == 0
    assert cli("library", "transfer", "lab", "4", "2").rc == 0
    assert cli("library", "load", "lab", "2", "0").rc == 0
    assert elements(cli) == [
        ("drive", 0, "NEW001L8"),
        ("slot", 1, "VT0001L8"),
        ("slot", 2, "-"),
        ("slot", 3, "-"),
        ("import/export", 4, "-"),
    ]
    refused = cli("library", "load", "lab", "1", "0")
    assert refused.rc == 1
    assert refused.err.strip().endswith("Drive 0 Full (Storage Element 2 loaded)")
    assert cli("library", "unload", "lab", "0").rc == 0
    assert cli("library", "export", "lab", "VT0001L8").rc == 0
    assert elements(cli)[1] == ("slot", 1, "-")
    status = cli("library", "status", "lab")
    assert "NEW001L8" in status.out and "VT0001L8" not in status.out
    missing = cli("library", "status", "nowhere")
    assert missing.rc == 1 and "no library nowhere" in missing.err
    again = cli("library", "create", "lab", *args)
    assert again.rc == 1 and "already exists" in again.err
