"""What this installation is: the program's version, the repository format it
writes and reads, the interpreter, and the versions of the libraries that do
the work (for bug reports and for checking two machines match).

Versions come from the installed packages' metadata, so asking loads none of
the libraries themselves.
"""

from __future__ import annotations

import platform
from importlib import metadata

from strongroom import __version__
from strongroom.repository.format import FORMAT_VERSION

# The distributions whose versions matter to what strongroom writes and how fast:
# hashing, chunking, compression, encryption, key derivation, encoding, the
# index, object storage, the catalog and the server.
LIBRARIES = (
    "blake3",
    "pyfastcdc",
    "zstandard",
    "cryptography",
    "argon2-cffi",
    "msgpack",
    "numpy",
    "click",
    "rich",
    "boto3",
    "sqlalchemy",
    "psycopg",
    "fastapi",
    "uvicorn",
    "httpx",
)


def about() -> dict[str, object]:
    """{"version", "format_version", "python", "platform", "libraries": {name: version}}
    (a library that is not installed has the version None)."""
    libraries: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libraries[name] = None
    return {
        "version": __version__,
        "format_version": FORMAT_VERSION,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": f"{platform.system().lower()} {platform.machine()}",
        "libraries": libraries,
    }
