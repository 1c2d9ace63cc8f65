"""Seed documents, node origins and the lacks list come from storage: every
decoder refuses what a later step would trust (names, ids, indexes, paths),
with ValueError/TypeError (documents) or IntegrityError (chunks), never
anything else."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import IntegrityError, UnsupportedVersion, UsageError
from strongroom.model.kinds import PointKind
from strongroom.model.origin import (
    FileClass,
    Origin,
    PointSeeds,
    UsedSeed,
    decode_lacks,
    encode_lacks,
)
from strongroom.model.point import RecoveryPoint, now
from strongroom.model.seed import Seed, SeedKind, check_name
from strongroom.model.tree import FILE, Node, decode_tree, encode_tree


def seed_doc(**fields: Any) -> dict[str, Any]:
    base = Seed("debian-12", SeedKind.OS, PointKind.FILES, "ab" * 32, now(), "12").to_doc()
    base.update(fields)
    return base


def test_a_seed_document_round_trips() -> None:
    seed = Seed(
        "nginx",
        SeedKind.APP,
        PointKind.FILES,
        "cd" * 32,
        now(),
        version="1.22",
        description="web server",
        source="nginx-light.deb",
        packages=[{"name": "nginx-light", "version": "1.22.1-9", "architecture": "amd64"}],
        summary={"files": 3, "bytes": 10},
    )
    again = Seed.from_doc(seed.to_doc())
    assert again == seed
    point = again.as_point()
    assert point.kind == PointKind.FILES and point.tree == seed.tree


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "../etc"),
        ("name", ""),
        ("name", "a" * 65),
        ("name", 7),
        ("content", "vm"),
        ("content", "tape"),
        ("tree", "zz" * 32),
        ("tree", "ab"),
        ("time", "2020-01-01T00:00:00"),
        ("kind", "driver"),
        ("version", "1"),
        ("packages", {"a": 1}),
        ("summary", [1]),
        ("label", 5),
    ],
)
def test_malformed_seed_documents_are_refused(field: str, value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        Seed.from_doc(seed_doc(**{field: value}))


def test_a_newer_seed_format_is_named() -> None:
    with pytest.raises(UnsupportedVersion):
        Seed.from_doc(seed_doc(version=99))


def test_hostile_summary_values_are_dropped() -> None:
    seed = Seed.from_doc(seed_doc(summary={"files": "many", "bytes": -1, "chunks": 3}))
    assert seed.summary == {"chunks": 3}


@pytest.mark.parametrize("name", ["os", "debian-12.8", "nginx_light+x"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["-x", ".hidden", "a/b", "a b", "é", "x\n"])
def test_bad_names(name: str) -> None:
    with pytest.raises(UsageError):
        check_name(name)


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.integers() | st.text(),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
            max_leaves=8,
        ),
        max_size=12,
    )
)
def test_any_seed_document_decodes_or_is_refused_cleanly(doc: dict[str, Any]) -> None:
    try:
        Seed.from_doc(doc)
    except (ValueError, TypeError, KeyError, UnsupportedVersion):
        pass


def test_origins_round_trip_through_tree_nodes() -> None:
    nodes = [
        Node(b"a", FILE, origin=Origin(FileClass.IDENTICAL, (0, 1))),
        Node(b"b", FILE, origin=Origin(FileClass.MOVED, (1,), b"usr/bin/b")),
        Node(b"c", FILE),
        Node(b"d", FILE, origin=Origin(FileClass.MODIFIED, (0,))),
    ]
    again = decode_tree(encode_tree(nodes))
    assert [n.origin for n in again] == [n.origin for n in nodes]


@pytest.mark.parametrize(
    "wire",
    [
        ["x", [0]],
        ["i", []],
        ["i", [-1]],
        ["i", [10_000]],
        ["i", ["0"]],
        ["i", [0], b"extra"],
        ["v", [0]],
        ["v", [0], b"../etc/passwd"],
        ["v", [0], b"/abs"],
        ["v", [0], b"a//b"],
        ["v", [0], "text"],
        "i",
        {"c": "i"},
    ],
)
def test_malformed_origins_are_damage(wire: Any) -> None:
    with pytest.raises(IntegrityError):
        Origin.from_wire(wire)


def test_an_origin_naming_an_unused_seed_is_damage() -> None:
    seeds = PointSeeds([UsedSeed("ab" * 32, "os", "os")], "/")
    assert seeds.origin_seeds(Origin(FileClass.IDENTICAL, (0,)))[0].name == "os"
    with pytest.raises(IntegrityError):
        seeds.origin_seeds(Origin(FileClass.IDENTICAL, (1,)))


def test_point_seeds_round_trip_in_a_point() -> None:
    seeds = PointSeeds(
        [UsedSeed("ab" * 32, "os", "os", "12"), UsedSeed("cd" * 32, "nginx", "app")],
        "/srv/machine",
        lacks="ef" * 32,
        lacks_count=2,
        classes={"own": {"files": 3, "bytes": 5}},
        seed_bytes={"os": 10},
    )
    point = RecoveryPoint("files", now(), "h", "u", ["/srv/machine"], "ab" * 32, seeds=seeds)
    again = RecoveryPoint.from_doc(point.to_doc())
    assert again.seeds == seeds
    assert again.seeds.index_of("nginx") == 1
    plain = RecoveryPoint("files", now(), "h", "u", ["/x"], "ab" * 32)
    assert "seeds" not in plain.to_doc()  # other points keep format 1's bytes


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"used": "x"},
        {"used": [{"id": 1}]},
        {"used": [], "root": "relative"},
        {"used": [], "lacks": "short"},
        {"used": [], "lacks": "zz" * 32},  # prune and check would crash in bytes.fromhex
        {"used": [], "lacks": "EF" * 32},
        {"used": [], "lacks_count": -1},
        {"used": [{"id": "a", "name": "b", "kind": "os"}] * 2000},
    ],
)
def test_malformed_point_seed_records_are_refused(doc: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        PointSeeds.from_doc(doc)


def test_lacks_round_trip_sorted() -> None:
    lacks = [(1, b"usr/share/doc/x"), (0, b"etc/motd")]
    assert decode_lacks(encode_lacks(lacks)) == sorted(lacks)


@pytest.mark.parametrize(
    "doc",
    [
        {"v": 1, "lacks": [[0, b"../x"]]},
        {"v": 1, "lacks": [[0, "text"]]},
        {"v": 1, "lacks": [[-1, b"x"]]},
        {"v": 1, "lacks": [[0]]},
        {"v": 9, "lacks": []},
        {"lacks": []},
        [1, 2],
    ],
)
def test_malformed_lacks_lists_are_damage(doc: Any) -> None:
    with pytest.raises(IntegrityError):
        decode_lacks(msgpack.packb(doc, use_bin_type=True))


@given(st.binary(max_size=200))
def test_any_bytes_as_lacks_decode_or_are_damage(blob: bytes) -> None:
    try:
        decode_lacks(blob)
    except IntegrityError:
        pass
