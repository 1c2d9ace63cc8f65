"""Objects found damaged or foreign while a command runs: each reported once, by name.

A repository's storage is hostile until authenticated: one flipped byte in an
index file, five bytes of junk named `index/junk`, or a point sealed by
someone else must not stop every command. The repository facade skips such
an object wherever it can go on without it and records it here; whoever runs
the command (the CLI, the server) listens and shows each finding once.
`check` reads the log to report the findings as errors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from strongroom.model.names import printable

Listener = Callable[[str], None]


class DamageLog:
    """Thread-safe record of {object name: one-line message}; first report wins."""

    def __init__(self) -> None:
        self.found: dict[str, str] = {}
        self._listener: Listener | None = None
        self._lock = threading.Lock()

    def report(self, name: str, message: str) -> None:
        """Record `name` as damaged (or foreign); the listener hears it once.

        `message` usually holds the object's name as storage gave it: it is
        escaped here, once, so that a name holding a line break or a control
        character cannot fake a line of output (one finding, one line)."""
        message = printable(message)
        with self._lock:
            if name in self.found:
                return
            self.found[name] = message
            listener = self._listener
        if listener is not None:
            listener(message)

    def listen(self, listener: Listener) -> None:
        """Send every finding to `listener`, those recorded so far first."""
        with self._lock:
            self._listener = listener
            earlier = list(self.found.values())
        for message in earlier:
            listener(message)

    def __contains__(self, name: object) -> bool:
        return name in self.found

    def __len__(self) -> int:
        return len(self.found)
