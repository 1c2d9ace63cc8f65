"""How the benchmarks run strongroom: which program, which environment, what it printed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PASSWORD = "bench-password-not-secret"
FAST_KDF = "1,8192,1"  # key derivation made cheap: the benchmarks measure data paths


def strongroom_cmd() -> list[str]:
    """This interpreter's console script, else the one on PATH, else ``python -m strongroom``.

    Not a pyenv shim first: the shim is a bash script that runs ``pyenv exec``, adding about
    0.5 s to every command (as much as a whole 1 % incremental backup)."""
    local = Path(sys.executable).with_name("strongroom")
    if local.is_file() and os.access(local, os.X_OK):
        return [str(local)]
    exe = shutil.which("strongroom")
    return [exe] if exe else [sys.executable, "-m", "strongroom"]


def installed() -> bool:
    """Whether strongroom can run here (console script, or the package importable)."""
    cmd = strongroom_cmd()
    if cmd[0] != sys.executable:
        return True
    probe = subprocess.run([*cmd[:1], "-c", "import strongroom"], capture_output=True, check=False)
    return probe.returncode == 0


def strongroom_env(repo: Path, cache: Path, kdf: str | None = FAST_KDF) -> dict[str, str]:
    """The environment of a strongroom command: this one's, plus the repository, the password,
    private XDG cache and config folders under ``cache``, and the KDF (None: the default)."""
    env = dict(os.environ)
    env.update(
        {
            "STRONGROOM_REPO": str(repo),
            "STRONGROOM_PASSWORD": PASSWORD,
            "XDG_CACHE_HOME": str(cache / "xdg-cache"),
            "XDG_CONFIG_HOME": str(cache / "xdg-config"),
        }
    )
    if kdf:
        env["STRONGROOM_KDF"] = kdf
    else:
        env.pop("STRONGROOM_KDF", None)
    return env


def summary_json(stem: Path) -> dict[str, Any]:
    """The last JSON object with message_type "summary" a ``--json`` command printed to
    ``STEM.out`` ({} if none)."""
    found: dict[str, Any] = {}
    try:
        lines = stem.with_suffix(".out").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("message_type") == "summary":
            found = doc
    return found
