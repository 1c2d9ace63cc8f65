"""Name rules of every manifest (trees, VM manifests) and escaping for terminals."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.errors import IntegrityError
from strongroom.model.names import name_problem, names_problem, printable, safe_text
from strongroom.model.tree import FILE, Node, decode_tree, decode_wires, encode_tree
from strongroom.model.vm import VmDisk, VmManifest

GOOD = {"n": b"a", "t": "f", "m": 0, "u": 0, "g": 0, "mt": 0, "at": 0, "ct": 0}
BAD_NAMES = [b"", b".", b"..", b"a/b", b"/", b"../x", b"x\0", b"\0"]


def _packed(nodes: list[dict]) -> bytes:  # type: ignore[type-arg]
    return msgpack.packb({"v": 1, "nodes": nodes}, use_bin_type=True)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_by_both_decoders(name: bytes) -> None:
    blob = _packed([{**GOOD, "n": name}])
    for decode in (decode_tree, decode_wires):
        with pytest.raises(IntegrityError, match="tree is damaged"):
            decode(blob)


@pytest.mark.parametrize(
    "names", [[b"a", b"a"], [b"b", b"a"], [b"a", b"c", b"b"]], ids=["dup", "unsorted", "late"]
)
def test_duplicate_and_unsorted_names_are_refused(names: list[bytes]) -> None:
    blob = _packed([{**GOOD, "n": n} for n in names])
    for decode in (decode_tree, decode_wires):
        with pytest.raises(IntegrityError, match=r"duplicate|unsorted"):
            decode(blob)


@given(st.lists(st.binary(min_size=1, max_size=8), max_size=8))
def test_names_problem_accepts_exactly_sorted_unique_components(names: list[bytes]) -> None:
    valid = all(
        n not in (b".", b"..") and b"/" not in n and b"\0" not in n for n in names
    ) and names == sorted(set(names))
    assert (names_problem(names) is None) == valid


def test_encode_tree_writes_what_decode_accepts() -> None:
    nodes = [Node(name=n, type=FILE) for n in (b"b", b"a", b"\xff", b"A")]
    assert [n.name for n in decode_tree(encode_tree(nodes))] == [b"A", b"a", b"b", b"\xff"]


@pytest.mark.parametrize(
    "fields",
    [
        {"sz": 10, "c": b"x" * 32, "cs": [9]},
        {"sz": 0, "c": b"x" * 64, "cs": [5, -5]},
        {"sz": 1},
        {"m": 0o10000},
        {"m": -1},
        {"u": 2**32},
        {"mt": 2**63},
        {"rd": -1},
        {"t": "l", "lt": b"a\0b"},
        {"x": {b"": b"v"}},
        {"x": {b"user.a\0": b"v"}},
    ],
    ids=[
        "short",
        "negative",
        "no-chunks",
        "mode",
        "neg-mode",
        "uid",
        "time",
        "rdev",
        "lt-nul",
        "xattr-empty",
        "xattr-nul",
    ],
)
def test_impossible_node_values_are_refused(fields: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(IntegrityError, match=r"malformed|add up"):
        decode_tree(_packed([{**GOOD, **fields}]))


def test_a_file_whose_sizes_add_up_is_accepted() -> None:
    node = decode_tree(_packed([{**GOOD, "sz": 12, "c": b"x" * 64, "cs": [5, 7]}]))[0]
    assert node.size == 12 and node.chunk_sizes == [5, 7]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        (b"a\nb\rc\td", "a\\x0ab\\x0dc\\x09d"),
        (b"caf\xe9", "caf\\xe9"),
        ("\u202egnp.exe".encode(), "\\u202egnp.exe"),
        ("\x9b31m".encode(), "\\x9b31m"),
        (b"plain name", "plain name"),
        ("caf\u00e9 \u65e5\u672c".encode(), "caf\u00e9 \u65e5\u672c"),
    ],
)
def test_printable_escapes_what_a_terminal_would_obey(raw: bytes, shown: str) -> None:
    assert printable(raw) == shown
    assert printable(raw.decode("utf-8", "surrogateescape")) in (
        shown,
        shown.replace("\\x", "\\udc"),
    )


def test_safe_text_keeps_newlines_and_survives_surrogates() -> None:
    assert safe_text("a\nb\x1b[2J") == "a\nb\\x1b[2J"
    assert safe_text("bad\udcff") == "bad\\udcff"


@given(st.text())
def test_printable_output_has_no_control_characters(text: str) -> None:
    shown = printable(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown)
    shown.encode("utf-8")  # never a lone surrogate


def _disk(name: str) -> VmDisk:
    return VmDisk(name=name, size=1 << 20, block_size=65536, map_root="ab" * 32)


def test_vm_manifest_keeps_the_configured_disk_order() -> None:
    """Format 1 wrote disks in the VM's configured order: points made so stay readable."""
    manifest = VmManifest("vm1", [_disk("vdb"), _disk("vda")])
    decoded = VmManifest.decode(manifest.encode())
    assert [d.name for d in decoded.disks] == ["vdb", "vda"]


@pytest.mark.parametrize(
    "names",
    [["../../etc/x"], ["a/b"], [".."], [""], ["x\0"], ["a\x1b[2J"], ["a", "a"], ["b", "a", "b"]],
)
def test_vm_manifest_refuses_disk_names_that_are_no_file_name(names: list[str]) -> None:
    doc = {
        "version": 1,
        "vm": "vm1",
        "disks": [
            {"name": n, "size": 1, "block_size": 1, "map": b"\x01" * 32, "summary": {}}
            for n in names
        ],
    }
    with pytest.raises(ValueError, match="malformed VM manifest"):
        VmManifest.decode(msgpack.packb(doc, use_bin_type=True))


@pytest.mark.parametrize(
    "bad", [{"map": 2**40}, {"map": b"short"}, {"name": b"vda"}, {"size": float("inf")}]
)
def test_vm_manifest_refuses_malformed_disks_cheaply(bad: dict) -> None:  # type: ignore[type-arg]
    disk = {"name": "vda", "size": 1, "block_size": 1, "map": b"\x01" * 32, **bad}
    with pytest.raises(ValueError, match="malformed VM manifest"):
        VmManifest.decode(msgpack.packb({"version": 1, "vm": "v", "disks": [disk]}))


def test_name_problem_on_str() -> None:
    assert name_problem("ok") is None
    assert name_problem("..") is not None and name_problem("a/b") is not None
