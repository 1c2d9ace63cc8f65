"""Where bytes live: named, immutable objects behind a small interface."""

from strongroom.storage.base import Backend, Capabilities, ObjectInfo, check_name
from strongroom.storage.registry import open_backend

__all__ = ["Backend", "Capabilities", "ObjectInfo", "check_name", "open_backend"]
