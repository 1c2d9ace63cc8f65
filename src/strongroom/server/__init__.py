"""The backup server: an HTTP API (FastAPI on uvicorn) over the services.

Wiring only, like the CLI (docs/design.md): it parses requests, checks the
caller, calls services and answers JSON. `strongroom server` starts it.
"""

from strongroom.server.app import create_app
from strongroom.server.run import Listen, parse_listen, run

__all__ = ["Listen", "create_app", "parse_listen", "run"]
