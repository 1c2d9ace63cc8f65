"""strongroom status: per source, from the repository's points and the status
records the cycle writes (written here by the test)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom.protect.status_record import (
    CycleStatus,
    StatusRecordError,
    read_status,
    record_cycle,
    status_path,
)
from tests.conftest import CliRunner, open_local_repository
from tests.helpers.protected import store_points


def state_folder(home: Path, source: str) -> Path:
    folder = home / ".local" / "share" / "strongroom" / "protect" / source
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_status_without_policies(cli: CliRunner, tmp_path: Path) -> None:
    result = cli("status")
    assert result.rc == 0 and "no protection policy is defined" in result.err + result.out
    assert cli("status", "--json").json()["sources"] == []


def test_status_per_source(cli: CliRunner, initialized_repo: Path, tmp_path: Path) -> None:
    tree, chain = tmp_path / "db", tmp_path / "files.img"  # a VHD chain takes volumes only
    tree.mkdir()
    chain.write_bytes(bytes(4096))
    config = tmp_path / "config.toml"
    config.write_text(
        f'[protect.db]\nsources = ["{tree}"]\ncycle = "1m"\n'
        f'[protect.files]\nsources = ["{chain}"]\ndestination = "{tmp_path / "vhd"}"\n'
    )
    now = datetime.now(UTC).replace(microsecond=0)
    # db: points 10 and 4 minutes ago (a 6-minute gap), the newest application-consistent
    repo = open_local_repository(initialized_repo)
    try:
        store_points(repo, "db", [now - timedelta(minutes=10)])
        (newest,) = store_points(
            repo, "db", [now - timedelta(minutes=4)], consistency="application-consistent"
        )
    finally:
        repo.close()
    home = Path(os.environ["HOME"])
    db_state = str(state_folder(home, "db"))
    for i, shipped in enumerate((1000, 2000)):
        started = now - timedelta(minutes=10 - 6 * i)
        record_cycle(
            db_state,
            "db",
            CycleStatus(started, started + timedelta(seconds=5), bytes_shipped=shipped),
        )
    record_cycle(
        db_state,
        "db",
        CycleStatus(now, now, ok=False, error="freeze timed out"),
        in_sync=False,
        sync_reason="journal overflow",
    )
    files_state = str(state_folder(home, "files"))
    record_cycle(
        files_state,
        "files",
        CycleStatus(
            now - timedelta(minutes=1),
            now,
            bytes_shipped=77,
            consistency="crash-consistent",
            reason="no hooks",
        ),
    )

    env = {"STRONGROOM_CONFIG": str(config)}
    result = cli("status", "--json", env=env)
    assert result.rc == 0, result.err
    db, files = result.json()["sources"]
    assert db["last_point"]["id"] == newest.id
    assert db["last_point"]["consistency"] == "application-consistent"
    assert db["points"] == 2
    assert 240 <= db["lag_seconds"] < 300 and db["late"] is True  # more than two 1m cycles
    assert db["worst_gap_seconds"] == 360
    assert db["bytes_shipped"] == [1000, 2000]
    assert db["tracker_in_sync"] is False and db["tracker_reason"] == "journal overflow"
    assert db["last_error"]["message"] == "freeze timed out"
    assert files["destination"] == str(tmp_path / "vhd")
    assert files["last_point"]["reason"] == "no hooks" and files["bytes_shipped"] == [77]
    assert files["late"] is False and files["tracker_in_sync"] is True

    text = cli("status", env=env)
    assert text.rc == 0, text.err
    assert f"last point: {newest.id[:8]}" in text.out and "LATE" in text.out
    assert "OUT OF SYNC (journal overflow)" in text.out
    assert "last error:" in text.out and "freeze timed out" in text.out


def test_a_bad_status_record_is_a_problem_not_a_failure(
    cli: CliRunner, initialized_repo: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[protect.db]\nsources = ["{tmp_path}"]\n')
    folder = state_folder(Path(os.environ["HOME"]), "db")
    Path(status_path(str(folder))).write_text('{"version": 1, "source": 5}')
    with pytest.raises(StatusRecordError, match="malformed"):
        read_status(str(folder))
    result = cli("status", "--json", env={"STRONGROOM_CONFIG": str(config)})
    assert result.rc == 0, result.err
    (db,) = result.json()["sources"]
    assert db["last_point"] is None and db["late"] is True
    assert "malformed" in db["problems"][0]


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 2},
        {
            "version": 1,
            "source": "db",
            "updated": "2026-01-01T00:00:00",
            "tracker": {"in_sync": True},
            "cycles": [],
        },
        {
            "version": 1,
            "source": "db",
            "updated": "2026-01-01T00:00:00+00:00",
            "tracker": {"in_sync": "yes"},
            "cycles": [],
        },
        {
            "version": 1,
            "source": "db",
            "updated": "2026-01-01T00:00:00+00:00",
            "tracker": {"in_sync": True},
            "cycles": [{"started": "x"}],
        },
        [1, 2],
    ],
)
def test_status_records_are_checked_on_read(tmp_path: Path, doc: object) -> None:
    Path(status_path(str(tmp_path))).write_text(json.dumps(doc))
    with pytest.raises(StatusRecordError):
        read_status(str(tmp_path))


def test_status_record_keeps_the_last_cycles(tmp_path: Path) -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(40):
        record_cycle(str(tmp_path), "db", CycleStatus(t, t, bytes_shipped=i))
    record = read_status(str(tmp_path))
    assert record is not None and [c.bytes_shipped for c in record.cycles] == list(range(8, 40))
