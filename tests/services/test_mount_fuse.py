"""The FUSE adapter's answers without mounting: errnos, xattrs, refusing writes."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from typing import Any

import pytest

from strongroom.errors import IntegrityError
from strongroom.model import tree as tree_model
from strongroom.model.point import RecoveryPoint
from strongroom.model.tree import Node
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services.mount_view import RepositoryView
from tests.helpers.fuse_mount import needs_fuse

pytestmark = [needs_fuse]


class _Damaged:
    """A repository whose data chunks all fail authentication."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def load_chunk(
        self, cid: bytes, blob_type: BlobType = BlobType.DATA, raw: int | None = None
    ) -> bytes:
        if blob_type == BlobType.DATA:
            raise IntegrityError(f"chunk {cid.hex()[:16]} in pack 0123 is damaged")
        return self.repo.load_chunk(cid, blob_type, raw)


def _ops(memory_repo: Repository) -> Any:
    from strongroom.services.mount_fuse import _Ops

    data = memory_repo.put_chunk(BlobType.DATA, b"content")
    nodes = [
        Node(b"f", "f", size=7, chunks=[data], chunk_sizes=[7], xattrs={b"user.a": b"1"}),
        Node(b"l", "l", link_target=b"\xfftarget"),
    ]
    root = memory_repo.put_chunk(BlobType.TREE, tree_model.encode_tree(nodes))
    memory_repo.flush()
    point = RecoveryPoint(
        "files", datetime(2026, 12, 7, tzinfo=UTC), "h", "u", ["/"], root.hex(), id="a" * 64
    )
    view = RepositoryView(_Damaged(memory_repo), [point], uid=0, gid=0, now_ns=0)  # type: ignore[arg-type]
    return _Ops(view, lambda: None)


def test_answers_and_errnos(memory_repo: Repository, capsys: pytest.CaptureFixture[str]) -> None:
    import mfusepy

    ops = _ops(memory_repo)
    base = "/ids/" + "a" * 64
    assert ops.getattr(base + "/f")["st_size"] == 7
    assert ops.listxattr(base + "/f") == ["user.a"]
    assert ops.getxattr(base + "/f", "user.a") == b"1"
    assert ops.readlink(base + "/l") == b"\xfftarget".decode("utf-8", "surrogateescape")
    names = [e if isinstance(e, str) else e[0] for e in ops.readdir(base, 0)]
    assert names == [".", "..", "f", "l"]
    cases = [
        (lambda: ops.getattr(base + "/none"), errno.ENOENT),
        (lambda: ops.getattr(base + "/f/x"), errno.ENOTDIR),
        (lambda: ops.getxattr(base + "/f", "user.b"), mfusepy.ENOATTR),
        (lambda: ops.open(base + "/f", os.O_RDWR), errno.EROFS),
        (lambda: ops.open(base, os.O_RDONLY), errno.EISDIR),
        (lambda: ops.read(base + "/f", 7, 0, 99), errno.EBADF),
    ]
    for call, number in cases:
        with pytest.raises(mfusepy.FuseOSError) as caught:
            call()
        assert caught.value.errno == number
    fh = ops.open(base + "/f", os.O_RDONLY)
    for _ in range(2):
        with pytest.raises(mfusepy.FuseOSError) as damaged:
            ops.read(base + "/f", 7, 0, fh)
        assert damaged.value.errno == errno.EIO
    assert ops.release(base + "/f", fh) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == ["warning: chunk " + warnings[0].split("chunk ")[1]]  # once, one line
    assert "is damaged" in warnings[0]
