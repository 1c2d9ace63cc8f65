"""The checks of an agent's image job specs, shared by the server (which
queues them: services/agent_jobs.py) and the agent (which runs them:
services/agent_runner.py, checking again what the server sent). Lean on
purpose: the agent's job loop imports it.

Contract (docs/server.md, "Schedules and jobs on agents", its trust model):
an image job names nothing the agent's own `backup --image ... --server` or
`restore --format` would not accept, and narrower:
- `source`: an absolute path without `..` or NUL, or an NBD URI
  (`nbd://HOST[:PORT]/EXPORT`, `nbd+unix:///EXPORT?socket=/ABS/PATH`);
- `changed_since`: `auto`, `compare`, `none`, `overlay` (of an image file
  only), `bitmap` or `bitmap:NAME` (NAME: 1-128 of letters, digits,
  `. _ -`, the first a letter or digit);
- `allow_backing` (true/false, `backup --image --allow-backing`): of an
  image file only (the CLI refuses it for an NBD export);
- `qmp` (the block layer's QMP socket, for a live disk: the source is then
  the block layer's NBD URI): `/ABS/PATH`, `unix:/ABS/PATH` or
  `tcp:HOST:PORT`; `node` (its block node, QEMU's node-name rules: a
  letter, then up to 31 of letters, digits, `. _ -`) and `scratch` (the
  folder of the snapshot overlay, `--scratch`: an absolute path without
  `..`) only with `qmp`;
- no `nbds://` (NBD over TLS): `backup --image` itself takes none;
- a restore's `format`: `raw` or `qcow2`, of an image or VM point only.
Every refusal is one UsageError line that never echoes the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from strongroom.errors import UsageError

MAX_PATH = 4096
MAX_TAGS = 32
MAX_TAG = 128
# The modes a VM job names; an image job also takes `bitmap[:NAME]`.
JOB_CHANGED_SINCE = ("auto", "compare", "none")
RESTORE_FORMATS = ("raw", "qcow2")
_BITMAP = re.compile(r"bitmap(:[A-Za-z0-9][A-Za-z0-9._-]{0,127})?")
IMAGE_FIELDS = {"kind", "source", "changed_since", "tags", "qmp", "node", "scratch",
                "allow_backing"}  # fmt: skip
_NODE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,31}")
_HOST = r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])"
_TCP = re.compile(rf"tcp:{_HOST}:[0-9]{{1,5}}")
_NBD_HOST = re.compile(rf"{_HOST}(?::[0-9]{{1,5}})?")


def texts(spec: Mapping[str, Any], name: str, limit: int, most: int, what: str) -> list[str]:
    items = spec.get(name, [])
    if not isinstance(items, list) or len(items) > limit:
        raise UsageError(f"{what}: {name} must be a list of at most {limit} texts")
    for item in items:
        if not isinstance(item, str) or not 0 < len(item) <= most or "\0" in item:
            raise UsageError(f"{what}: each of {name} must be 1-{most} characters without NUL")
    return list(items)


def absolute(items: list[str], what: str, name: str) -> list[str]:
    for item in items:
        if not item.startswith("/") or ".." in item.split("/"):
            raise UsageError(f"{what}: each of {name} must be an absolute path without '..'")
    return items


def unknown(spec: Mapping[str, Any], known: set[str], what: str) -> None:
    extra = set(spec) - known
    if extra:
        # names only, cut and printable (a NUL or a newline is not echoed)
        names = ", ".join(sorted("".join(c for c in str(u)[:32] if c.isprintable())
                                 for u in extra))  # fmt: skip
        raise UsageError(f"{what}: unknown field(s) {names[:200]}")


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not 1 < len(value) <= MAX_PATH or "\0" in value:
        raise UsageError(f"backup: {what} must be 2-4096 characters without NUL")
    return value


def _nbd_uri(source: str) -> bool:
    """Whether `source` is a well-formed NBD URI (UsageError when it looks
    like one but is not)."""
    if not source.startswith(("nbd://", "nbd+unix://")):
        return False
    bad = UsageError("backup: source must be nbd://HOST[:PORT]/EXPORT or "
                     "nbd+unix:///EXPORT?socket=/PATH")  # fmt: skip
    try:
        parts = urlsplit(source)
        query = parse_qs(parts.query, strict_parsing=bool(parts.query))
    except ValueError:
        raise bad from None
    if parts.fragment or any(c.isspace() for c in source) or ".." in parts.path.split("/"):
        raise bad
    if parts.scheme == "nbd":
        if not _NBD_HOST.fullmatch(parts.netloc) or query:
            raise bad
    else:
        sockets = query.get("socket", [])
        if parts.netloc or set(query) != {"socket"} or len(sockets) != 1:
            raise bad
        absolute(sockets, "backup", "the NBD URI's socket")
    return True


def changed_since(spec: Mapping[str, Any], *, bitmaps: bool) -> str:
    """The job's tracker: JOB_CHANGED_SINCE, and with `bitmaps` also
    `bitmap[:NAME]` (an image job's: the image's or block layer's dirty
    bitmap by name, as `backup --image --changed-since` takes it)."""
    changed = spec.get("changed_since", "auto")
    if changed in JOB_CHANGED_SINCE:
        return str(changed)
    if bitmaps and changed == "overlay":
        return "overlay"
    if bitmaps and isinstance(changed, str) and _BITMAP.fullmatch(changed):
        return changed
    if bitmaps:
        raise UsageError(
            "backup: changed_since is 'auto', 'compare', 'none', 'overlay' or 'bitmap[:NAME]' "
            "(NAME: 1-128 of letters, digits, '. _ -')"
        )
    raise UsageError("backup: changed_since is 'auto', 'compare' or 'none'")


def check_image_backup(spec: Mapping[str, Any]) -> dict[str, Any]:
    """An image backup job's spec with its defaults (the module's contract):
    source, changed_since, tags, and `allow_backing`, `qmp`, `node`,
    `scratch` when given. No seeds: they are the server's."""
    unknown(spec, IMAGE_FIELDS, "backup")
    source = _text(spec.get("source"), "source")
    nbd = _nbd_uri(source)
    if not nbd:
        absolute([source], "backup", "source")
    checked: dict[str, Any] = {
        "kind": "image",
        "source": source,
        "changed_since": changed_since(spec, bitmaps=True),
        "tags": texts(spec, "tags", MAX_TAGS, MAX_TAG, "backup"),
    }
    if nbd and checked["changed_since"] == "overlay":  # as `backup --image` says it
        raise UsageError("backup: changed_since overlay needs an image file, not an NBD export")
    allow = spec.get("allow_backing")
    if allow is not None:
        if not isinstance(allow, bool):
            raise UsageError("backup: allow_backing is true or false")
        if nbd and allow:
            raise UsageError("backup: allow_backing is of image files, not NBD exports")
        checked["allow_backing"] = allow
    qmp, node, scratch = spec.get("qmp"), spec.get("node"), spec.get("scratch")
    if qmp is not None:
        qmp = _text(qmp, "qmp")
        if not _TCP.fullmatch(qmp):
            absolute([qmp.removeprefix("unix:")], "backup", "qmp")
        if not nbd:
            raise UsageError("backup: with qmp, source is the block layer's NBD URI")
        checked["qmp"] = qmp
    if node is not None:
        if qmp is None:
            raise UsageError("backup: node is given with qmp only")
        if not isinstance(node, str) or not _NODE.fullmatch(node):
            raise UsageError("backup: node must be a block node name (a letter, then 0-31 of "
                             "letters, digits, '. _ -')")  # fmt: skip
        checked["node"] = node
    if scratch is not None:
        if qmp is None:
            raise UsageError("backup: scratch is given with qmp only")
        checked["scratch"] = absolute([_text(scratch, "scratch")], "backup", "scratch")[0]
    return checked


def restore_format(spec: Mapping[str, Any]) -> str | None:
    """A restore job's `format` (None: not given, raw)."""
    fmt = spec.get("format")
    if fmt is not None and fmt not in RESTORE_FORMATS:
        raise UsageError("restore: format is 'raw' or 'qcow2'")
    return None if fmt is None else str(fmt)


__all__ = ["IMAGE_FIELDS", "JOB_CHANGED_SINCE", "RESTORE_FORMATS", "absolute", "changed_since",
           "check_image_backup", "restore_format", "texts", "unknown"]  # fmt: skip
