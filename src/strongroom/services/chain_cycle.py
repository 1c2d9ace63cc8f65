"""One cycle of a protected volume into a VHD chain: a policy's `destination`
(a folder or s3:... location) run by the protection service (issue #13).

The chain is exactly today's `strongroom protect VOLUME --to DEST`
(protect/block_mode.py): the same state folder, the same pending-cycle
protocol (a killed cycle is committed or rolled back by the next one), the
same files at the destination. What the service adds is the instant:

- the volume is attached and its daemon runs: the #5 transaction
  (sources/live.py: a copy-before-write view, no bitmap) inside the quiesce
  engine (hooks, fsfreeze of its mount), writers held for that instant only;
  the cycle then reads the frozen view over NBD while writers continue;
- its daemon is gone: the image file as it stands (nobody writes it any
  more), crash-consistent, as `volume_cycle` does for a repository.

The changed set is the block mode's: every piece of the view is read and
hashed, and the pieces whose hash changed are shipped. The volume's dirty
bitmaps are not used for a chain (their lineage lives in repository points).

A volume that is not attached is refused (as for a repository destination):
nothing would give its cycles an instant.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

from strongroom.errors import UsageError
from strongroom.protect.block_mode import BlockProtection
from strongroom.protect.cycles import CycleResult, ProtectOptions, StateFolder
from strongroom.protect.destinations import Destination
from strongroom.protect.quiesce import Consistency, Quiescing
from strongroom.sources.block import BlockSource
from strongroom.sources.live import LiveDisk, ViewPlan, freeze_together
from strongroom.sources.qmp import QmpClient
from strongroom.sources.volume import daemon_alive
from strongroom.sources.volume_state import NODE, load_state, volume_lock

# The quiesce engine for a mount folder ("" : nothing to freeze, hooks only).
Quiesce = Callable[[str], AbstractContextManager[Quiescing]]


@dataclass
class ChainCycle:
    result: CycleResult
    consistency: str
    reason: str
    instant: float | None  # wall clock of the view's transaction (None: read as it stands)
    quiesce: dict[str, Any] | None = None


class _ViewProtection(BlockProtection):
    """The block mode reading a frozen view of the image instead of opening it.
    The state records the image's own format, so a later cycle that reads the
    image file itself (its daemon died) opens it the same way."""

    def __init__(self, view: BlockSource, image_format: str, *args: Any) -> None:
        self._view = view
        super().__init__(*args)
        self.image_format = image_format

    def _open(self, pinned: str | None = None) -> BlockSource:
        return self._view


def chain_cycle(
    image: str,
    destination: Destination,
    options: ProtectOptions,
    state_folder: str,
    quiesce: Quiesce,
    freeze_timeout: float,
) -> ChainCycle:
    """Ship the volume `image`'s changes since the chain's last cycle."""
    image = os.path.realpath(image)
    with volume_lock(image):
        vol = load_state(image)
        if vol is None:
            raise UsageError(
                f"{image}: the volume is not attached ('strongroom volume attach'): "
                "its cycles fail until it is"
            )
        options.image_format = vol.format
        state = StateFolder(state_folder)
        try:
            if not daemon_alive(vol):
                why = f"the volume's daemon (pid {vol.pid}) is not running: read as it stands"
                result = BlockProtection(image, destination, state, options).run_cycle()
                return ChainCycle(result, str(Consistency.CRASH), why, None)
            with ExitStack() as stack:
                qmp = stack.enter_context(QmpClient(vol.qmp, timeout=max(freeze_timeout, 5.0)))
                disk = LiveDisk(qmp, NODE, vol.nbd_uri, vol.scratch)
                stack.callback(disk.close_view)  # also undoes a view half opened
                disk.prepare_view()
                with quiesce(vol.mount if vol.mounted else "") as q:
                    freeze_together(qmp, [(disk, ViewPlan(None, 65536))])
                view = disk.export_view([])
                mode = _ViewProtection(view, vol.format, image, destination, state, options)
                result = mode.run_cycle()
            quiesced = q.result
            return ChainCycle(
                result,
                str(quiesced.consistency),
                quiesced.reason or "",
                quiesced.instant,
                quiesced.summary(),
            )
        finally:
            state.close()
