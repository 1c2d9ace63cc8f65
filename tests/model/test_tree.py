"""The tree codec: every node round-trips, and damaged input raises IntegrityError only."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from strongroom.errors import IntegrityError
from strongroom.model.tree import DIR, FILE, NODE_TYPES, SYMLINK, Node, decode_tree, encode_tree

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
IDS = st.binary(min_size=32, max_size=32)
# One path component: anything but "", ".", "..", "/" and NUL.
NAMES = st.binary(min_size=1, max_size=255).filter(
    lambda n: n not in (b".", b"..") and b"/" not in n and b"\0" not in n
)


@st.composite
def nodes(draw: st.DrawFn, name: bytes | None = None) -> Node:
    kind = draw(st.sampled_from(NODE_TYPES))
    node = Node(
        name=name if name is not None else draw(NAMES),
        type=kind,
        mode=draw(st.integers(0, 0o7777)),
        uid=draw(U32),
        gid=draw(U32),
        user=draw(st.text(max_size=20)),
        group=draw(st.text(max_size=20)),
        mtime_ns=draw(I64),
        atime_ns=draw(I64),
        ctime_ns=draw(I64),
        rdev=draw(U64),
        xattrs=draw(
            st.dictionaries(
                st.binary(min_size=1, max_size=40).filter(lambda k: b"\0" not in k),
                st.binary(max_size=200),
            )
        ),
    )
    inode = draw(U64)
    if inode:  # absent inode means: no hard-link information recorded
        node.inode, node.device, node.nlink = inode, draw(U64), draw(st.integers(1, 2**32))
    if kind == FILE:
        node.chunks = draw(st.lists(IDS, max_size=8))
        node.chunk_sizes = [draw(st.integers(0, 2**32)) for _ in node.chunks]
        node.size = sum(node.chunk_sizes)
    elif kind == SYMLINK:
        node.link_target = draw(st.binary(max_size=300).filter(lambda t: b"\0" not in t))
    elif kind == DIR:
        node.subtree = draw(st.one_of(st.none(), IDS))
    return node


node_lists = st.lists(NAMES.filter(lambda n: len(n) <= 64), unique=True, max_size=10).flatmap(
    lambda names: st.tuples(*(nodes(name) for name in names)).map(list)
)


@given(node_lists)
def test_tree_round_trip(tree: list[Node]) -> None:
    decoded = decode_tree(encode_tree(tree))
    assert decoded == sorted(tree, key=lambda n: n.name)


@given(node_lists, st.randoms())
def test_encoding_is_canonical(tree: list[Node], rnd) -> None:  # type: ignore[no-untyped-def]
    """Equal directories give equal bytes, whatever the order of the nodes (dedup of trees)."""
    shuffled = list(tree)
    rnd.shuffle(shuffled)
    assert encode_tree(shuffled) == encode_tree(tree)


def test_names_that_are_not_utf8_survive() -> None:
    tree = [
        Node(name=b"\xff\xfe", type=FILE),
        Node(name=b"caf\xe9", type=SYMLINK, link_target=b"\x80"),
    ]
    decoded = decode_tree(encode_tree(tree))
    assert [n.name for n in decoded] == [b"caf\xe9", b"\xff\xfe"]
    assert decoded[0].link_target == b"\x80"


def _raises_only_integrity_error(blob: bytes) -> None:
    try:
        decode_tree(blob)
    except IntegrityError:
        pass


# Regression examples: msgpack raises TypeError for a map whose key is an array,
# which decode_tree once let escape (a random search finds it only sometimes).
_ONE_FILE = [Node(name=b"a", type=FILE)]
# In encode_tree(_ONE_FILE), byte 12 is the first key's header (fixstr "n", 0xa1);
# xor 0x30 makes it a one-element array (0x91): the key becomes [110].
_KEY_HEADER = 12 / len(encode_tree(_ONE_FILE))


@given(st.binary(max_size=500))
@example(b"\x81\x91\x01\x02")
def test_decoding_random_bytes_raises_only_integrity_error(blob: bytes) -> None:
    _raises_only_integrity_error(blob)


@given(node_lists, st.floats(0, 1, exclude_max=True), st.integers(1, 255))
@example(_ONE_FILE, _KEY_HEADER, 0x30)
def test_decoding_a_damaged_tree_raises_only_integrity_error(
    tree: list[Node], position: float, flip: int
) -> None:
    blob = bytearray(encode_tree(tree))
    blob[int(position * len(blob))] ^= flip
    _raises_only_integrity_error(bytes(blob))


@given(node_lists, st.floats(0, 1, exclude_max=True))
def test_decoding_a_truncated_tree_raises_only_integrity_error(
    tree: list[Node], keep: float
) -> None:
    blob = encode_tree(tree)
    _raises_only_integrity_error(blob[: int(keep * len(blob))])


# Structurally valid msgpack with values of the wrong types. Integers are kept
# small: the codec turns some into bytes(n), and a huge n would allocate it.
values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-1000, 1000),
        st.floats(allow_nan=False),
        st.text(max_size=10),
        st.binary(max_size=40),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=10,
)
_WIRE_KEYS = ["n", "t", "m", "u", "g", "mt", "at", "ct", "un", "gn", "sz", "c", "cs"]
_WIRE_KEYS += ["ino", "dev", "nl", "rd", "lt", "x", "st"]
wire_nodes = st.dictionaries(st.sampled_from(_WIRE_KEYS), values, max_size=len(_WIRE_KEYS))
GOOD = {"n": b"a", "t": "f", "m": 0, "u": 0, "g": 0, "mt": 0, "at": 0, "ct": 0}


def _packed(doc: object) -> bytes:
    return msgpack.packb(doc, use_bin_type=True)


@given(
    doc=st.fixed_dictionaries(
        {"v": st.one_of(st.just(1), values), "nodes": st.lists(wire_nodes, max_size=3)}
    )
)
@example(doc={"v": "x", "nodes": []})
@example(doc={"v": [1], "nodes": []})
@example(doc={"v": 1, "nodes": [{**GOOD, "n": 2**64 - 1}]})
def test_decoding_wrongly_typed_fields_raises_only_integrity_error(doc: dict) -> None:  # type: ignore[type-arg]
    _raises_only_integrity_error(_packed(doc))


@given(nodes=st.lists(wire_nodes, max_size=3))
def test_decoding_wrongly_typed_node_fields_raises_only_integrity_error(nodes: list) -> None:  # type: ignore[type-arg]
    _raises_only_integrity_error(_packed({"v": 1, "nodes": nodes}))


def test_newer_tree_version_is_refused() -> None:
    with pytest.raises(IntegrityError, match="newer"):
        decode_tree(_packed({"v": 2, "nodes": []}))


@pytest.mark.parametrize(
    "node",
    [
        {**GOOD, "t": "?"},
        {**GOOD, "c": b"x" * 33, "cs": [1]},
        {**GOOD, "c": b"x" * 32, "cs": []},
        {**GOOD, "t": "d", "st": b"short"},
        {k: v for k, v in GOOD.items() if k != "n"},
    ],
    ids=["unknown-type", "partial-id", "sizes-mismatch", "bad-subtree", "no-name"],
)
def test_inconsistent_nodes_are_refused(node: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(IntegrityError):
        decode_tree(_packed({"v": 1, "nodes": [node]}))
