"""[protect.NAME] tables: defaults, durations, source names, and one clear
line naming the table and key for everything refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.config import load_settings
from strongroom.errors import ConfigError
from strongroom.protect.policy import (
    DEFAULT_RETENTION,
    HookType,
    Retention,
    SourceKind,
    format_duration,
    parse_duration,
    parse_policies,
    parse_policy,
)

VMS = {"web": ["drive0", "drive1"]}


def policy(tmp_path: Path, **table: Any) -> Any:
    table.setdefault("sources", [str(tmp_path)])
    return parse_policy("db", table, "F", VMS)


def test_defaults(tmp_path: Path) -> None:
    p = policy(tmp_path)
    assert p.cycle == 900 and p.freeze_timeout == 10 and p.destination is None
    assert p.retention == DEFAULT_RETENTION == Retention(keep_last=448)
    assert [(s.name, s.kind, s.path) for s in p.sources] == [("db", SourceKind.TREE, str(tmp_path))]


def test_every_setting(tmp_path: Path) -> None:
    disk = tmp_path / "vol.qcow2"
    disk.write_bytes(b"")
    p = policy(
        tmp_path,
        sources=[str(tmp_path), str(disk), "vm:web/drive1", {"path": "vm:web", "name": "whole"}],
        cycle="90s",
        freeze_timeout=2.5,
        hooks=[
            {"type": "command", "pre": "sync", "timeout": "2m"},
            {"type": "postgresql", "dsn": "host=/run/pg"},
            {"type": "sqlite", "path": "/srv/app.db"},
        ],
        retention={"keep_last": 96, "keep_within": "2d", "hourly": 24, "daily": 7, "weekly": 4},
    )
    assert [(s.name, s.kind) for s in p.sources] == [
        (f"db.{tmp_path.name.lower()}", SourceKind.TREE),
        ("db.vol.qcow2", SourceKind.VOLUME),
        ("db.web-drive1", SourceKind.VM),
        ("whole", SourceKind.VM),
    ]
    assert p.cycle == 90 and p.freeze_timeout == 2.5
    assert [h.type for h in p.hooks] == [HookType.COMMAND, HookType.POSTGRESQL, HookType.SQLITE]
    assert p.hooks[0].timeout == 120
    assert p.retention == Retention(96, 2 * 86400, 24, 7, 4)
    # the table it writes reads back as the same policy
    assert parse_policy("db", p.as_table(), "F", VMS) == p


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"cycel": "5m"}, r"\[protect.db\]: unknown setting\(s\) cycel"),
        ({"cycle": "30s"}, r"\[protect.db\]: cycle must be from 1 minute to 24 hours"),
        ({"cycle": "25h"}, r"\[protect.db\]: cycle must be from 1 minute"),
        ({"cycle": "soon"}, r"\[protect.db\]: cycle must be a duration"),
        ({"cycle": True}, r"cycle must be a duration"),
        ({"freeze_timeout": "1h"}, r"\[protect.db\]: freeze_timeout must be"),
        ({"sources": []}, r"\[protect.db\]: sources must be a non-empty list"),
        ({"sources": ["relative/dir"]}, r"source relative/dir must be an absolute path"),
        ({"sources": ["/no/such/dir"]}, r"source /no/such/dir: No such file"),
        ({"sources": ["vm:db"]}, r"source vm:db: no \[vm.db\] table defines that VM"),
        ({"sources": ["vm:web/sda"]}, r"source vm:web/sda: \[vm.web\] has no disk sda"),
        ({"sources": ["vm:web", "vm:web"]}, r"source vm:web is listed twice"),
        ({"destination": "relative"}, r"destination must be an absolute folder"),
        ({"sources": ["vm:web"], "destination": "/chain"}, r"VM sources go to the repository"),
        ({"destination": "/chain"}, r"destination: a VHD chain takes volumes; the tree /"),
        ({"hooks": [{"type": "shell"}]}, r"\[protect.db\] hooks\[0\]: a hook is a table"),
        ({"hooks": [{"type": "command"}]}, r"hooks\[0\]: a command hook needs pre, post"),
        ({"hooks": [{"type": "postgresql"}]}, r"hooks\[0\]: a postgresql hook needs dsn"),
        ({"hooks": [{"type": "sqlite", "path": "x.db"}]}, r"path must be the database file"),
        ({"hooks": [{"type": "sqlite", "path": "/x", "dsn": "d"}]}, r"unknown setting\(s\) dsn"),
        ({"retention": {"keep_last": 449}}, r"\[protect.db\] retention: keep_last must be .* 448"),
        ({"retention": {"keep_last": -1}}, r"retention: keep_last must be"),
        ({"retention": {"daily": 1.5}}, r"retention: daily must be a whole number"),
        ({"retention": {"monthly": 3}}, r"retention: unknown setting\(s\) monthly"),
        ({"retention": {"keep_last": 0}}, r"retention: keeps nothing"),
    ],
)
def test_refused_with_one_line_naming_table_and_key(
    tmp_path: Path, table: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        policy(tmp_path, **table)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("config file F, [protect.db]")


def test_a_chain_destination_takes_volumes_and_no_retention(tmp_path: Path) -> None:
    image = tmp_path / "vol.img"
    image.write_bytes(bytes(4096))
    p = policy(tmp_path, sources=[str(image)], destination="/chain")
    assert p.destination == "/chain" and p.sources[0].kind == SourceKind.VOLUME
    with pytest.raises(ConfigError, match=r"\[protect.db\]: retention applies to repository"):
        policy(tmp_path, sources=[str(image)], destination="/c", retention={"keep_last": 3})


def test_source_names_are_unique_across_policies(tmp_path: Path) -> None:
    tables = {
        "db": {"sources": [str(tmp_path)]},
        "x": {"sources": [{"path": "vm:web", "name": "db"}]},
    }
    with pytest.raises(ConfigError, match=r"\[protect.x\]: source name db is also a source of"):
        parse_policies(tables, "F", VMS)


def test_two_sources_with_one_derived_name_must_be_named(tmp_path: Path) -> None:
    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "b" / "data").mkdir(parents=True)
    sources = [str(tmp_path / "a" / "data"), str(tmp_path / "b" / "data")]
    with pytest.raises(ConfigError, match=r"both get the name db\.data"):
        policy(tmp_path, sources=sources)
    sources[1] = {"path": sources[1], "name": "other"}  # type: ignore[call-overload]
    assert [s.name for s in policy(tmp_path, sources=sources).sources] == ["db.data", "other"]


def test_config_file_keeps_tables_and_checks_their_shape(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[protect.db]\nsources = ["/nowhere"]\ncycle = "1s"\n')
    settings = load_settings(env={}, path=path)  # other commands are not stopped by a policy
    assert settings.protect == {"db": {"sources": ["/nowhere"], "cycle": "1s"}}
    assert settings.config_file == str(path)
    path.write_text('protect = "everything"\n')
    with pytest.raises(ConfigError, match="protect must be a table of"):
        load_settings(env={}, path=path)


@given(st.integers(min_value=0, max_value=10**7))
def test_durations_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds), "at", "k") == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("2w", 1209600), (45, 45)],
)
def test_duration_forms(text: str | int, seconds: float) -> None:
    assert parse_duration(text, "at", "k") == seconds
