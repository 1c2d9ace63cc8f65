"""The server's start-up check of its repository. (`GET /api/v1/points`
answers from the point list the server's parts share: services/dashboard.py's
RepositoryView, wired in server/assembly.py.)"""

from __future__ import annotations

from strongroom.services.session import LockMode, open_repository


def check_repository(location: str, password: bytes) -> None:
    """Open the repository at `location` and close it: a wrong password or
    location stops the server before it listens. Cheap: it reads the config
    and the key, not the points (on S3 thousands of GETs)."""
    with open_repository(location, password, lock=LockMode.NONE):
        pass
