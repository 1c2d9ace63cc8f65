"""`check` inspects trees (issue #10): it once said "no errors were found" on a
repository whose points held hostile trees."""

from __future__ import annotations

from typing import Any

import pytest

from strongroom.model.tree import FILE, Node, encode_tree, encode_wires
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services.maintenance import check


def _file(name: bytes, repo: Repository, data: bytes = b"data") -> Node:
    cid = repo.put_chunk(BlobType.DATA, data)
    return Node(name, FILE, size=len(data), chunks=[cid], chunk_sizes=[len(data)])


def _save(repo: Repository, wires: list[dict[str, Any]]) -> str:
    tree = repo.put_chunk(BlobType.TREE, encode_wires(wires))
    repo.flush()
    return repo.save_point(
        {
            "version": 1,
            "kind": "files",
            "time": "2026-01-01T00:00:00+00:00",
            "host": "h",
            "paths": ["/src"],
            "tree": tree.hex(),
        }
    )


def test_a_healthy_tree_passes(memory_repo: Repository) -> None:
    _save(memory_repo, [_file(b"a", memory_repo).to_wire()])
    result = check(memory_repo)
    assert result.report.ok, result.report.errors
    assert result.report.trees_read == 1


@pytest.mark.parametrize(
    ("mutate", "finding"),
    [
        # Names: model/tree.py may refuse them itself (its message then differs).
        (lambda w: w.update(n=b".."), ""),
        (lambda w: w.update(n=b""), ""),
        (lambda w: w.update(n=b"a/b"), ""),
        (lambda w: w.update(n=b"a\0"), ""),
        (lambda w: w.update(zz=1), "unknown fields zz"),
        (lambda w: w.update(sz=999), "add up to"),  # model/tree.py refuses it first
        (lambda w: w.update(cs=[5]), "add up to"),  # sizes no longer add up: the decoder's
        (lambda w: w.update(cs=[5], sz=5), "the tree says 5"),  # they do, the index disagrees
        (lambda w: w.update(st=b"\1" * 32), "not a directory but names a subtree"),
    ],
)
def test_hostile_nodes_are_found(memory_repo: Repository, mutate: Any, finding: str) -> None:
    wire = _file(b"a", memory_repo).to_wire()
    mutate(wire)
    point = _save(memory_repo, [wire])
    result = check(memory_repo)
    assert not result.report.ok
    assert any(finding in e and point[:8] in e for e in result.report.errors), result.report.errors


def test_duplicate_names_are_found(memory_repo: Repository) -> None:
    wire = _file(b"a", memory_repo).to_wire()
    _save(memory_repo, [wire, dict(wire)])
    errors = check(memory_repo).report.errors
    assert any("duplicate" in e or "appears twice" in e for e in errors), errors


def test_a_data_chunk_named_as_a_subtree_is_found(memory_repo: Repository) -> None:
    data = memory_repo.put_chunk(BlobType.DATA, b"not a tree")
    wire = Node(b"d", "d", subtree=data).to_wire()
    _save(memory_repo, [wire])
    assert any("indexed as data" in e for e in check(memory_repo).report.errors)


def test_each_distinct_tree_is_read_once(memory_repo: Repository) -> None:
    sub = memory_repo.put_chunk(BlobType.TREE, encode_tree([_file(b"f", memory_repo)]))
    wires = [Node(name, "d", subtree=sub).to_wire() for name in (b"a", b"b", b"c")]
    for _ in range(3):
        _save(memory_repo, wires)
    result = check(memory_repo)
    assert result.report.ok, result.report.errors
    assert result.report.trees_read == 2


def test_a_path_with_a_line_break_stays_on_its_finding_line(memory_repo: Repository) -> None:
    missing = b"\1" * 32  # a subtree the index does not hold
    _save(memory_repo, [Node(b"d\nFAKE: all good", "d", subtree=missing).to_wire()])
    errors = check(memory_repo).report.errors
    assert any("at /d\\x0aFAKE: all good" in e for e in errors), errors
    assert not any("\n" in e for e in errors), errors


def test_an_unknown_field_name_is_escaped(memory_repo: Repository) -> None:
    wire = _file(b"a", memory_repo).to_wire()
    wire["zz\nFAKE"] = 1
    _save(memory_repo, [wire])
    errors = check(memory_repo).report.errors
    assert any("unknown fields zz\\x0aFAKE" in e for e in errors), errors
    assert not any("\n" in e for e in errors), errors
