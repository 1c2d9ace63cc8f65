"""A real S3 server for the tests: a throwaway Ceph RADOS Gateway on 127.0.0.1.

`.ci/ceph-rgw-up.sh DIR` starts one monitor, one in-memory OSD and the gateway
(about 3 s) and prints shell assignments (endpoint, keys); `ceph-rgw-down.sh DIR`
stops it and deletes DIR. Without the ceph binaries the tests skip, except where
a gateway is required (CI=1/true or STRONGROOM_REQUIRE_S3=1): there they fail, so a
broken install cannot pass as a green run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

CI_DIR = Path(__file__).resolve().parents[2] / ".ci"
TOOLS = ("ceph", "ceph-mon", "ceph-osd", "ceph-authtool", "monmaptool", "radosgw", "radosgw-admin")
PACKAGES = "ceph-mon ceph-osd radosgw ceph-common curl"
_ASSIGNMENT = re.compile(r"^export ([A-Z0-9_]+)=(.*)$")


@dataclass(frozen=True)
class Gateway:
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, …

    def location(self, bucket: str | None = None, prefix: str = "repo") -> str:
        """A fresh `s3:` location: a new bucket unless one is given."""
        bucket = bucket or new_bucket_name()
        return f"s3:{self.endpoint}/{bucket}/{prefix}" if prefix else f"s3:{self.endpoint}/{bucket}"


def new_bucket_name() -> str:
    return f"t-{uuid.uuid4().hex[:20]}"


def gateway_required() -> bool:
    return os.environ.get("STRONGROOM_REQUIRE_S3") == "1" or os.environ.get("CI", "").lower() in (
        "1",
        "true",
        "yes",
    )


def cluster_dir() -> Path:
    """One folder per checkout and xdist worker: parallel workers and other
    checkouts get their own cluster, and a rerun after a killed session finds
    (and reuses or wipes) the one it left behind."""
    checkout = hashlib.sha256(str(CI_DIR).encode()).hexdigest()[:8]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return Path(tempfile.gettempdir()) / f"strongroom-rgw-{os.getuid()}-{checkout}-{worker}"


def parse_assignments(text: str) -> dict[str, str]:
    """The `export NAME=VALUE` lines ceph-rgw-up.sh prints (values are unquoted)."""
    found = {}
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2).strip("'\"")
    return found


def start_gateway(directory: Path) -> Gateway:
    """Start the gateway (or skip/fail, see the module docstring)."""
    missing = [tool for tool in (*TOOLS, "curl") if shutil.which(tool) is None]
    if missing:
        reason = (
            f"needs a Ceph RADOS gateway: {', '.join(missing)} missing (apt-get install {PACKAGES})"
        )
        if gateway_required():
            pytest.fail(reason + "; required here (CI / STRONGROOM_REQUIRE_S3=1)", pytrace=False)
        pytest.skip(reason)
    proc = subprocess.run(
        ["bash", str(CI_DIR / "ceph-rgw-up.sh"), str(directory)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    env = parse_assignments(proc.stdout)
    if proc.returncode != 0 or "AWS_ENDPOINT_URL" not in env:
        pytest.fail(f"ceph-rgw-up.sh failed (rc {proc.returncode}):\n{proc.stderr}", pytrace=False)
    return Gateway(env["AWS_ENDPOINT_URL"], env)


def stop_gateway(directory: Path) -> None:
    subprocess.run(
        ["bash", str(CI_DIR / "ceph-rgw-down.sh"), str(directory)],
        capture_output=True,
        timeout=120,
        check=False,
    )
