"""Changing the tags of points (`strongroom tag`, as restic's `tag`).

A point object is named by the hash of its sealed bytes, so new tags make a new
object: it is written first (with `original`, the id the point had before its
first retagging, as restic records), then the old object is removed. A crash
between the two leaves both, identical but for their tags, which `forget` of
either resolves; nothing is lost. Everything else in the document is kept as
stored, fields this version does not know included.
"""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.errors import UsageError
from strongroom.repository.repo import Repository
from strongroom.services.points import PointFilter, find_point, list_points

MAX_TAG_LENGTH = 256


@dataclass
class Retagged:
    old_id: str
    new_id: str | None  # None: the tags were already so, nothing written
    tags: list[str]


def check_tags(tags: list[str]) -> list[str]:
    """Tags as given, refused if empty, too long, or holding a comma or a control
    character (restic splits tag lists at commas)."""
    for tag in tags:
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise UsageError(f"a tag is 1 to {MAX_TAG_LENGTH} characters: {tag[:40]!r}")
        if "," in tag or any(ord(c) < 32 or ord(c) == 127 for c in tag):
            raise UsageError(f"a tag may not hold a comma or a control character: {tag!r}")
    return tags


def new_tags(
    current: list[str], add: list[str], remove: list[str], replace: list[str] | None
) -> list[str]:
    """`replace` (--set) if given, else `current` with `add` and without `remove`;
    sorted and unique, as a point stores its tags (docs/format.md §9)."""
    found = replace if replace is not None else [*current, *add]
    return sorted({t for t in found if replace is not None or t not in remove})


def retag_points(
    repo: Repository,
    refs: list[str],
    flt: PointFilter,
    add: list[str],
    remove: list[str],
    replace: list[str] | None,
    dry_run: bool = False,
) -> list[Retagged]:
    """Retag the points named by `refs` (ids or `latest` within `flt`), or, with
    no refs, every point matching `flt`."""
    check_tags([*add, *remove, *(replace or [])])
    if replace is None and not add and not remove:
        raise UsageError("give --add, --remove or --set")
    if replace is not None and (add or remove):
        raise UsageError("--set replaces the tags: it goes without --add and --remove")
    if refs:
        points = list({p.id: p for p in (find_point(repo, r, flt) for r in refs)}.values())
    else:
        points = list_points(repo, flt)
    done = []
    for point in points:
        tags = new_tags(point.tags, add, remove, replace)
        if tags == point.tags:
            done.append(Retagged(point.id, None, tags))
            continue
        if dry_run:
            done.append(Retagged(point.id, "", tags))
            continue
        doc = repo.load_point(point.id)
        doc.pop("id", None)
        doc["tags"] = tags
        doc.setdefault("original", point.id)
        new_id = repo.save_point(doc)
        if new_id != point.id:
            repo.delete_point(point.id)
        done.append(Retagged(point.id, new_id, tags))
    return done
