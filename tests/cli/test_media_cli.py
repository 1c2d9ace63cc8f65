"""`library inventory`, `library rebuild-catalog`, `media list`, `media show`
end to end on a virtual library, with a point written to a cartridge."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from strongroom.config import data_home
from strongroom.media.label import write_label
from strongroom.media.virtual import VirtualLibrary
from strongroom.media.writer import write_session
from strongroom.services.walk import referenced_by_points
from tests.cli.conftest import BackedUp
from tests.conftest import CliRunner, open_local_repository


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_inventory_media_list_show_and_rebuild(
    cli: CliRunner, backed_up: BackedUp, repo_path: Path
) -> None:
    args = ["--slots", "4", "--drives", "1", "--import-export", "2", "--capacity", "8M"]
    assert cli("library", "create", "lab", *args, "--cartridges", "2").rc == 0
    library = VirtualLibrary("lab")
    repo = open_local_repository(repo_path)
    try:
        library.load(1, 0)
        with library.drive(0) as drive:  # type: ignore[attr-defined]
            write_label(drive, repo.master, repo.config.id, "VT0001L8", "offsite", 1)
            write_session(drive, repo, [backed_up.point_id], reach=referenced_by_points)
        library.unload(0)
    finally:
        repo.close()
    assert cli("library", "import", "lab", "CLN001L1", "--unlabelled", "1").rc == 0
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "strongroom" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[notify]\nwebhook = "http://127.0.0.1:{_dead_port()}/hook"\ntimeout = 2\n')

    result = cli("--json", "library", "inventory", "lab")
    assert result.rc == 0, result.err
    doc = json.loads(result.out)
    assert doc["new"] == ["VT0001L8", "VT0002L8"]
    assert doc["cleaning"] == ["CLN001L1"] and doc["no_barcode"] == [6]
    classes = {(d["barcode"], d["class"], d["sessions"]) for d in doc["detailed"]}
    assert classes == {("VT0001L8", "ours", 1), ("VT0002L8", "blank", 0), (None, "blank", 0)}
    assert [n["ok"] for n in doc["notifications"]] == [False]
    assert "notifier webhook failed" in result.err

    listed = json.loads(cli("--json", "media", "list").out)["media"]
    assert [(m["barcode"], m["state"], m["slot"]) for m in listed] == [
        ("CLN001L1", "cleaning", 5),
        ("VT0001L8", "appending", 1),
        ("VT0002L8", "blank", 2),
    ]
    assert (
        json.loads(cli("--json", "media", "list", "--pool", "offsite").out)["media"][0]["barcode"]
        == "VT0001L8"
    )
    assert json.loads(cli("--json", "media", "list", "--offline").out)["media"] == []
    shown = json.loads(cli("--json", "media", "show", "VT0001L8").out)
    assert shown["pool"] == "offsite" and shown["online"] is True
    assert [s["points"] for s in shown["session_list"]] == [[backed_up.point_id]]
    assert "ours, 1 sessions imported" in shown["events"][0]["message"]
    human = cli("media", "show", "VT0001L8")
    assert "library lab, slot 1" in human.out and backed_up.point_id[:8] in human.out

    again = cli("library", "inventory", "lab", "--no-detailed")
    assert again.rc == 0, again.err
    assert "VT0001L8      known" in again.out
    assert "library lab: 2 known, 0 back online, 0 went offline, 0 new" in again.out

    (data_home() / "strongroom" / "catalog.sqlite").unlink()
    rebuilt = cli("--json", "library", "rebuild-catalog", "lab")
    assert rebuilt.rc == 0, rebuilt.err
    relisted = json.loads(cli("--json", "media", "list").out)["media"]
    assert [(m["barcode"], m["state"], m["slot"], m["sessions"]) for m in relisted] == [
        (m["barcode"], m["state"], m["slot"], m["sessions"]) for m in listed
    ]

    missing = cli("media", "show", "NOPE01")
    assert missing.rc != 0 and missing.err.strip().count("\n") == 0
    assert "no medium NOPE01" in missing.err
    busy = cli("library", "inventory", "nowhere")
    assert busy.rc != 0 and "no library nowhere" in busy.err
