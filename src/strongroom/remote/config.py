"""The agent's configuration file: the server's addresses, the machine's
credentials and the repository's chunking parameters it was enrolled with.

Contract: written with mode 0600 in a folder of mode 0700 (atomically: a
temporary file renamed); a file that the group or others can read is
refused (its secret may have leaked: enroll again), as is one that is
malformed or too large.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, field
from typing import Any

from strongroom.errors import ConfigError
from strongroom.repository.format import DEFAULT_BLOCK_SIZE

MAX_CONFIG = 64 << 10


@dataclass(frozen=True)
class RepositoryInfo:
    """What a server hands an agent to cut and name chunks (no encryption key)."""

    id: str
    id_key: str  # hex
    chunker_seed: int
    cdc_min: int
    cdc_avg: int
    cdc_max: int
    compression_level: int = 3
    compression_mode: str = "auto"  # servers before modes send none: the writers' default
    block_size: int = DEFAULT_BLOCK_SIZE  # a first image backup's (servers before it: the default)

    @classmethod
    def from_doc(cls, doc: Any) -> RepositoryInfo:
        try:
            info = cls(
                id=str(doc["id"]),
                id_key=str(doc["id_key"]),
                chunker_seed=int(doc["chunker_seed"]),
                cdc_min=int(doc["cdc_min"]),
                cdc_avg=int(doc["cdc_avg"]),
                cdc_max=int(doc["cdc_max"]),
                compression_level=int(doc.get("compression_level", 3)),
                compression_mode=str(doc.get("compression_mode", "auto")),
                block_size=int(doc.get("block_size", DEFAULT_BLOCK_SIZE)),
            )
            if info.block_size <= 0 or info.block_size & (info.block_size - 1):
                raise ValueError("block_size is not a power of two")
            if len(bytes.fromhex(info.id_key)) != 32:
                raise ValueError("id_key is not 32 bytes")
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"the server's repository parameters are malformed: {err}") from None
        return info


@dataclass(frozen=True)
class AgentConfig:
    servers: list[str]
    machine: str
    agent_id: str
    secret: str
    repository: RepositoryInfo
    ca_cert: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bearer(self) -> str:
        return f"{self.agent_id}.{self.secret}"

    def save(self, path: str) -> None:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        doc = asdict(self)
        doc.pop("extra")
        tmp = f"{path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, json.dumps(doc, indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> AgentConfig:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as err:
            raise ConfigError(
                f"agent config {path}: {err.strerror} (run 'strongroom agent enroll')"
            ) from None
        try:
            st = os.fstat(fd)
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"agent config {path} is readable by others (mode "
                    f"{stat.S_IMODE(st.st_mode):o}): its secret may have leaked; enroll again"
                )
            blob = os.read(fd, MAX_CONFIG + 1)
        finally:
            os.close(fd)
        if len(blob) > MAX_CONFIG:
            raise ConfigError(f"agent config {path} is too large")
        try:
            doc = json.loads(blob)
            servers = doc["servers"]
            if not isinstance(servers, list) or not servers:
                raise ValueError("no servers")
            return cls(
                servers=[str(s) for s in servers],
                machine=str(doc["machine"]),
                agent_id=str(doc["agent_id"]),
                secret=str(doc["secret"]),
                repository=RepositoryInfo.from_doc(doc["repository"]),
                ca_cert=None if doc.get("ca_cert") is None else str(doc["ca_cert"]),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise ConfigError(f"agent config {path} is malformed: {str(err)[:80]}") from None


def default_config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "strongroom", "agent.json")
