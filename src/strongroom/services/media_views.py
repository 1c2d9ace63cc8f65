"""Media libraries as the server shows them, from the catalog: libraries,
each with its drives, its slots (the media the last inventory saw there)
and its media with barcodes and states; all media; and an inventory run
from the API (services/inventory.py).

A library name from a request is only ever looked up, never made into a
path: it must be one the catalog or the configuration knows (a virtual
library's folder is found by `open_library` from that known name).
A detailed inventory reads labels with the repository's keys, opened here
for the run; a fast one moves no cartridge and needs none.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from strongroom.catalog import Catalog
from strongroom.config import Settings
from strongroom.services.inventory import Detailed, Keys, inventory_library
from strongroom.services.media_info import medium_doc
from strongroom.services.session import LockMode, open_repository

MAX_NAME = 128
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class MediaViews:
    catalog: Catalog
    settings: Settings
    location: str | None = None  # the repository, for a detailed inventory's keys
    password: bytes | None = None

    def known(self, name: str) -> bool:
        """A name the catalog or the configuration has, or a plain one
        (letters, digits, . _ -; no path) that may be a virtual library's."""
        if name in self.settings.libraries:
            return True
        if _PLAIN.fullmatch(name) and ".." not in name:
            return True
        return 0 < len(name) <= MAX_NAME and any(
            lib.name == name for lib in self.catalog.list_libraries()
        )

    def libraries(self) -> list[dict[str, Any]]:
        media = self.catalog.list_media()
        out = []
        for lib in self.catalog.list_libraries():
            mine = [m for m in media if m.library == lib.name]
            out.append(
                {
                    "name": lib.name,
                    "kind": str(lib.kind),
                    "media": len(mine),
                    "online": sum(1 for m in mine if m.online),
                    "drives": len(self.catalog.list_drives(lib.name)),
                }
            )
        return out

    def library(self, name: str) -> dict[str, Any] | None:
        """None when the catalog has no such library (yet: an inventory
        records it)."""
        if not self.known(name):
            return None
        found = [lib for lib in self.catalog.list_libraries() if lib.name == name]
        if not found:
            return None
        media = self.catalog.list_media(library=name)
        slots = [
            {"slot": m.slot, "barcode": m.barcode, "state": m.state.value}
            for m in sorted(media, key=lambda m: m.slot or 0)
            if m.online and m.slot is not None
        ]
        return {
            "name": name,
            "kind": str(found[0].kind),
            "drives": [
                {"address": d.address, "device": d.device, "loaded": d.loaded_barcode}
                for d in self.catalog.list_drives(name)
            ],
            "slots": slots,
            "media": [medium_doc(m) for m in media],
        }

    def media(self) -> list[dict[str, Any]]:
        return [medium_doc(m) for m in self.catalog.list_media()]

    def inventory(self, name: str, *, detailed: bool) -> dict[str, Any]:
        """Fast inventory (barcodes only), or with `detailed` the new and
        unlabelled cartridges read too. Raises MediaError when the library
        is busy or cannot be reached."""
        with self._keys(detailed) as keys:
            report = inventory_library(
                name,
                self.settings,
                self.catalog,
                detailed=Detailed.AUTO if detailed else Detailed.NONE,
                keys=keys,
            )
        return report.as_dict()

    @contextmanager
    def _keys(self, wanted: bool) -> Iterator[Keys | None]:
        if not wanted or self.location is None or self.password is None:
            yield None
            return
        with open_repository(self.location, self.password, lock=LockMode.NONE) as repo:
            yield Keys(repo.config.id, repo.master)
