"""The agent's config file: 0600 in a 0700 folder, refused when others can
read it, bounded and strictly parsed; server lists split and checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.errors import ConfigError, RemoteError
from strongroom.remote.client import split_servers
from strongroom.remote.config import AgentConfig, RepositoryInfo, default_config_path

INFO = RepositoryInfo("r", "ab" * 32, 7, 256, 1024, 4096)


def test_the_config_is_private_and_refused_when_it_is_not(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "agent.json"
    config = AgentConfig(["https://b:8420"], "web-1", "a" * 32, "s" * 43, INFO)
    config.save(str(path))
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert AgentConfig.load(str(path)) == config
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="readable by others"):
        AgentConfig.load(str(path))
    os.chmod(path, 0o600)
    path.write_text('{"servers": []}')
    with pytest.raises(ConfigError, match="malformed"):
        AgentConfig.load(str(path))
    with pytest.raises(ConfigError, match="agent enroll"):
        AgentConfig.load(str(tmp_path / "none.json"))
    assert default_config_path() == os.path.join(
        os.environ["XDG_CONFIG_HOME"], "strongroom", "agent.json"
    )


def test_server_lists_split_on_commas_and_need_http() -> None:
    assert split_servers(["http://a:1/,http://b:2", " https://c "]) == [
        "http://a:1", "http://b:2", "https://c"
    ]  # fmt: skip
    for bad in (["ftp://x"], [""], ["a.example:8420"]):
        with pytest.raises(RemoteError):
            split_servers(bad)


def test_the_compression_mode_comes_from_the_server_and_defaults_to_auto() -> None:
    """A server from before compression modes sends none: the agent writes as
    every writer now does by default (`auto`)."""
    doc = {"id": "r", "id_key": "ab" * 32, "chunker_seed": 7, "cdc_min": 256,
           "cdc_avg": 1024, "cdc_max": 4096, "compression_level": 1}  # fmt: skip
    assert RepositoryInfo.from_doc(doc).compression_mode == "auto"
    assert RepositoryInfo.from_doc({**doc, "compression_mode": "always"}).compression_mode == (
        "always"
    )
