"""Seeds (golden images) through the backup server (docs/seeds.md, "Through
a backup server"; docs/server.md, "Agents").

Seeds are shared repository content, not another machine's points: an
enrolled agent may list them and read one seed's document, and read their
trees and block maps through the chunk reads every agent has. It may still
list or read no other machine's point. So an agent's files backup chooses
and matches seeds as a local backup does (services/seed_select.py), its
image backup builds on an image seed as a local one does
(services/image_backup.py, reading the seeds through `ServerSeeds`), and
the point it commits records the seeds and each entry's provenance as a
local seeded point does.

Contract:
- server side: `seed_docs` and `seed_doc` answer from the repository's
  seeds only (a point's id names no seed: not found);
- agent side: what the server sends is verified as any of its answers:
  a list of at most `MAX_LISTED` objects (or one object, `server_seed`),
  each with a 64-hex id (each id once) and decoded by the model's codec
  (`Seed.from_doc`: field types, the name's shape, a 64-hex root); a
  malformed listed seed is left out, as a damaged one is locally (a pinned
  one is an error). The trees and maps then come through
  `RemoteStore.load_chunk`, which checks each against its keyed id;
- at the commit (`check_point_seeds`): every seed a point names exists in
  the repository under that id, name and content, the point is of a kind
  that builds on seeds, and its list of lacking seed files is stored. The
  rest of the point is the intake's (services/agent_intake.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from strongroom.errors import ObjectNotFound, RemoteError, UnsupportedVersion, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.names import printable
from strongroom.model.point import RecoveryPoint
from strongroom.model.seed import Seed
from strongroom.repository.damage import DamageLog
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository, is_object_hex
from strongroom.services.seeds import list_seeds, pick_seed

if TYPE_CHECKING:  # an agent's backup only
    from strongroom.remote.store import RemoteStore
    from strongroom.services.seed_select import SeedChoice, Selection

MAX_LISTED = 100_000  # seeds one answer may list (a repository holds tens)
_HEX_ID = re.compile(r"[0-9a-f]{64}")

# --- the server's side -------------------------------------------------------------


def seed_docs(repo: Repository) -> list[dict[str, Any]]:
    """Every readable seed of the repository as a document with its id, by name."""
    return [{"id": s.id, **s.to_doc()} for s in list_seeds(repo)]


def seed_doc(repo: Repository, ref: str) -> dict[str, Any] | None:
    """The seed named `ref` (or of id `ref`, 8+ hex digits), None when no
    seed is (a point's id included)."""
    if len(ref) > 64 or not ref.isprintable():
        return None
    try:
        seed = pick_seed(list_seeds(repo), ref)
    except UsageError:
        return None
    return {"id": seed.id, **seed.to_doc()}


def check_point_seeds(
    repo: Repository, point: RecoveryPoint, holds: Callable[[bytes], bool]
) -> None:
    """At an agent's commit: refuse (UsageError, one line) a point that names
    a seed the repository does not hold (by id, with that name and content),
    a VM point naming seeds, or a list of lacking seed files that is not
    stored (`holds`: the intake's question, which refreshes its index once)."""
    seeds = point.seeds
    if seeds is None:
        return
    if point.kind not in (PointKind.FILES, PointKind.BLOCK):
        raise UsageError("an agent's VM point names no seeds")
    if not seeds.used:
        raise UsageError("the point's seeds record names no seed")
    content = PointKind.FILES if point.kind == PointKind.FILES else PointKind.BLOCK
    held = {s.id: s for s in list_seeds(repo)}
    for used in seeds.used:
        seed = held.get(used.id)
        if seed is None or seed.name != used.name or seed.content != content:
            raise UsageError(
                f"the point builds on seed {printable(used.name)}, "
                "which the repository does not hold"
            )
    if seeds.lacks is not None and not (
        is_object_hex(seeds.lacks) and holds(bytes.fromhex(seeds.lacks))
    ):
        raise UsageError("the point's list of lacking seed files is not stored: upload it first")


# --- the agent's side ----------------------------------------------------------------


class ServerSeeds:
    """The server's seeds as a `SeedRepository` (services/seeds.py), so that
    what reads a repository's seeds (an image backup's choice of its golden
    image, an overlay restore's check of it) reads them through the server:
    the list is asked for once; `load_seed` hands back a listed document,
    which `seeds.load_seed` decodes (and `list_seeds` skips, as damaged, when
    it does not); chunks come through the store, verified."""

    def __init__(self, store: RemoteStore) -> None:
        self.store = store
        self.damage = DamageLog()
        self._docs: dict[str, dict[str, Any]] | None = None

    def _listed(self) -> dict[str, dict[str, Any]]:
        if self._docs is None:
            docs = self.store.seeds()
            if len(docs) > MAX_LISTED:
                raise RemoteError("the server's list of seeds is longer than any repository's")
            self._docs = {}
            for doc in docs:
                seed_id = doc.get("id")
                if isinstance(seed_id, str) and _HEX_ID.fullmatch(seed_id):
                    self._docs.setdefault(seed_id, doc)
        return self._docs

    def list_seed_ids(self) -> list[str]:
        return list(self._listed())

    def load_seed(self, seed_hex: str) -> dict[str, Any]:
        doc = self._listed().get(seed_hex)
        if doc is None:
            raise ObjectNotFound(f"seed {seed_hex[:16]} is not on the server")
        return doc

    def load_chunk(
        self, chunk_id: bytes, blob_type: BlobType = BlobType.DATA, raw_length: int | None = None
    ) -> bytes:
        return self.store.load_chunk(chunk_id, blob_type, raw_length)

    def chunk_id(self, data: bytes | bytearray | memoryview, /) -> bytes:
        return self.store.chunk_id(data)


def server_seeds(store: RemoteStore) -> list[Seed]:
    """The repository's seeds as the server lists them, verified (see the
    module's contract), by name."""
    return list_seeds(ServerSeeds(store))


def server_seed(store: RemoteStore, ref: str) -> Seed:
    """The seed `ref` names (a name, or an id prefix of 8+ hex digits),
    verified; RemoteError when the server has none or sends a malformed one
    or another (neither of that name nor of that id prefix)."""
    seed = _decoded(store.seed(ref))
    if seed is None:
        raise RemoteError(f"the server's seed {printable(ref)} is malformed")
    if seed.name != ref and not (len(ref) >= 8 and seed.id.startswith(ref)):
        raise RemoteError(f"the server answered another seed than {printable(ref)}")
    return seed


def _decoded(doc: dict[str, Any]) -> Seed | None:
    seed_id = doc.get("id")
    if not isinstance(seed_id, str) or not _HEX_ID.fullmatch(seed_id):
        return None
    try:
        seed = Seed.from_doc(doc)
    except (UnsupportedVersion, ValueError, TypeError, KeyError, AttributeError):
        return None
    seed.id = seed_id
    return seed


def select_through_server(store: RemoteStore, choice: SeedChoice, paths: list[str]) -> Selection:
    """The seeds a files backup of `paths` through the server builds on, as a
    local backup chooses them (`seed_select.select_among`): the pinned ones
    (`--seed`, each asked for by name), else every seed the server lists.
    With --trust-seed-metadata the kept seeds' chunks count as stored (the
    seed holds them, and the commit checks that the seed still exists), so a
    file taken from a seed unread is not read for want of them."""
    from strongroom.model.tree import ID_SIZE
    from strongroom.services.seed_select import Selection, check_choice, select_among

    check_choice(choice)
    if choice.no_seeds:
        return Selection(None)
    if choice.refs:
        pinned: dict[str, Seed] = {}
        for ref in choice.refs:
            seed = server_seed(store, ref)
            pinned.setdefault(seed.id, seed)
        chosen = list(pinned.values())
    else:
        chosen = server_seeds(store)
    selection = select_among(store, chosen, choice, paths)
    if selection.matcher is not None and choice.trust_metadata:
        store.assume_stored(
            entry.content[i : i + ID_SIZE]
            for files in selection.matcher.seeds
            for entry in files.entries.values()
            for i in range(0, len(entry.content), ID_SIZE)
        )
    return selection
