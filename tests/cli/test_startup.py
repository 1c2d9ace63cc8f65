"""Start-up guard (issue #16): what a short command imports, not how long it takes.

Each case runs the real program in a FRESH interpreter (not the tests' preloaded
fork server, which has imported everything already) and reads `sys.modules` as
the command ends. A module listed here loading again means a heavy import crept
back onto a path that does not use it: numpy (block maps, and the chunk index of
a repository past 50,000 chunks),
httpx (and the rich/pygments its package import drags in: the agent's client),
rich (progress bars and tables only), the repository code (not for --version or
--help), the media catalog's SQLAlchemy. bench/startup.py measures the time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Runs the command as the console script does, then writes the modules it loaded.
PROBE = """
import json, sys
from strongroom.cli.main import main
rc = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump({"rc": rc, "modules": sorted(sys.modules)}, f)
"""

# Never on a local command's way: the agent's client, the web server, the catalog.
NEVER_LOCAL = {
    "httpx",
    "pygments",
    "strongroom.remote",
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "strongroom.catalog",
    "boto3",
    "mfusepy",  # only `mount` loads libfuse
}
VERSION_FREE = NEVER_LOCAL | {
    "numpy",
    "rich",
    "zstandard",
    "cryptography",
    "argon2",
    "msgpack",
    "blake3",
    "pyfastcdc",
    "strongroom.config",
    "strongroom.repository",
    "strongroom.services",
}
HELP_FREE = NEVER_LOCAL | {
    "numpy",
    "rich",
    "zstandard",
    "cryptography",
    "argon2",
    "blake3",
    "pyfastcdc",
    "strongroom.repository",
    "strongroom.pipeline",
    "strongroom.services.session",
    "strongroom.services.seeds",
}
# A files backup to a pipe: no progress bar (rich), no block-map or image code,
# and no numpy while the repository's index is small enough for dicts.
FILES_BACKUP_FREE = NEVER_LOCAL | {
    "rich",
    "numpy",
    "strongroom.pipeline.blockmaps",
    "strongroom.pipeline.image_backup",
    "strongroom.services.image_backup",
    "strongroom.nbd",
    "strongroom.trackers",
}
# An image backup: no file pipeline (seed_add and its tar/.deb readers, the chunker).
IMAGE_BACKUP_FREE = NEVER_LOCAL | {
    "rich",
    "pyfastcdc",
    "strongroom.pipeline.backup",
    "strongroom.services.seed_add",
}


def loaded(tmp_path: Path, env: dict[str, str], *args: str) -> set[str]:
    """The modules `strongroom ARGS` had loaded when it returned (it must succeed)."""
    return run_probe(tmp_path, env, *args)[0]


def run_probe(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[set[str], str]:
    """(the modules `strongroom ARGS` had loaded when it returned, its stdout)."""
    report = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *args],
        env=env,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    doc = json.loads(report.read_text())
    assert doc["rc"] == 0, done.stderr.decode(errors="replace")
    return set(doc["modules"]), done.stdout.decode(errors="replace")


def unwanted(modules: set[str], free: set[str]) -> list[str]:
    """The modules of `free` (or their submodules) that were loaded."""
    return sorted(m for m in modules if m in free or m.split(".")[0] in free or _under(m, free))


def _under(module: str, free: set[str]) -> bool:
    return any(module.startswith(f"{name}.") for name in free)


def test_version_loads_no_engine(tmp_path: Path, cli_env: dict[str, str]) -> None:
    modules = loaded(tmp_path, cli_env, "--version")
    assert "click" in modules  # the probe ran the real entry point
    assert unwanted(modules, VERSION_FREE) == []


def test_backup_help_loads_no_repository_code(tmp_path: Path, cli_env: dict[str, str]) -> None:
    modules = loaded(tmp_path, cli_env, "backup", "--help")
    assert "strongroom.cli.commands.backup" in modules
    assert unwanted(modules, HELP_FREE) == []


@pytest.fixture
def small_image(tmp_path: Path) -> Path:
    image = tmp_path / "disk.raw"
    with image.open("wb") as f:
        f.truncate(4 << 20)
        f.write(b"startup" * 20_000)
    return image


def test_no_change_backups_load_only_their_path(
    tmp_path: Path,
    cli_env: dict[str, str],
    initialized_repo: Path,
    small_src: tuple[Path, dict[str, bytes]],
    small_image: Path,
) -> None:
    src, _ = small_src
    for first in (["backup", str(src)], ["backup", "--image", str(small_image)]):
        run_probe(tmp_path, cli_env, *first)  # fresh processes: no fork server to start

    files, out = run_probe(tmp_path, cli_env, "backup", "--json", str(src))
    # The backup really was a no-change one against its parent, through the engine.
    summary = _summary(out)
    assert summary["files_unmodified"] == summary["total_files"] > 0
    assert summary["files_new"] == summary["files_changed"] == summary["bytes_read"] == 0
    assert {"strongroom.pipeline.backup", "strongroom.repository.index"} <= files
    assert unwanted(files, FILES_BACKUP_FREE) == []

    image, out = run_probe(tmp_path, cli_env, "backup", "--json", "--image", str(small_image))
    assert _summary(out)["blocks_changed"] == 0
    assert "strongroom.pipeline.image_backup" in image
    assert unwanted(image, IMAGE_BACKUP_FREE) == []


def _summary(out: str) -> dict[str, object]:
    docs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    found = [d for d in docs if d.get("message_type") == "summary"]
    assert found, out
    return found[-1]  # type: ignore[no-any-return]


def test_a_restore_from_the_repository_loads_no_catalog(
    tmp_path: Path,
    cli_env: dict[str, str],
    initialized_repo: Path,
    small_src: tuple[Path, dict[str, bytes]],
) -> None:
    """The media catalog (SQLAlchemy, alembic) loads only when a point must come
    from media: a restore from the repository never pays for it."""
    src, _ = small_src
    run_probe(tmp_path, cli_env, "backup", str(src))
    files, _ = run_probe(tmp_path, cli_env, "restore", "latest", "--target", str(tmp_path / "t"))
    assert "strongroom.services.restore" in files
    assert unwanted(files, NEVER_LOCAL) == []
