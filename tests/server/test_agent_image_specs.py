"""The agents' image and VM job specs against hostile JSON (hypothesis): an
image backup spec is either refused with one UsageError line or accepted
bounded (one absolute source without NUL or '..', a known changed-since
mode, at most 32 short tags, nothing else); a VM backup spec likewise (one
VM name by the machine name rules); a restore spec's `kind` is files, image
or vm only. The real runs are in test_agent_image_jobs.py and
test_agent_vm_jobs.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.errors import UsageError
from strongroom.services.agent_job_specs import IMAGE_FIELDS
from strongroom.services.agent_jobs import (
    JOB_CHANGED_SINCE,
    MAX_PATH,
    MAX_TAG,
    MAX_TAGS,
    check_backup,
    check_restore,
    check_vm_backup,
)

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_PATHS = (
    st.from_regex(r"/[a-z./\x00]{0,20}", fullmatch=True)
    | st.just("/dev/vdb")
    | st.from_regex(r"(nbd\+unix:///d0\?socket=|unix:|tcp:h:)[a-z./\x00]{0,12}", fullmatch=True)
)
_FIELDS = st.sampled_from(
    ["source", "vm", "changed_since", "tags", "paths", "excludes", "qmp", "node", "scratch",
     "allow_backing"]
)  # fmt: skip
_NAMES = st.from_regex(r"[a-z0-9./@_\x00-]{0,70}", fullmatch=True) | st.just("vm1")
_VALUES = (
    _JSON
    | _PATHS
    | st.sampled_from(["auto", "compare", "none", "bitmap", "overlay", "bitmap:b-1", "bitmap:"])
    | _NAMES
    | st.lists(st.text(max_size=140), max_size=40)
)
_SPECS = st.dictionaries(_FIELDS | st.text(max_size=8), _VALUES, max_size=5).map(
    lambda d: {**d, "kind": "image"}
)


@settings(max_examples=150, deadline=None)
@given(spec=_SPECS)
def test_an_image_backup_spec_is_refused_in_one_line_or_bounded(spec: dict[str, Any]) -> None:
    try:
        checked = check_backup(spec)
    except UsageError as err:
        assert "\n" not in str(err) and "\0" not in str(err) and len(str(err)) < 300
        return
    assert {"kind", "source", "changed_since", "tags"} <= set(checked)
    assert set(checked) <= IMAGE_FIELDS
    source = checked["source"]
    assert "\0" not in source and len(source) <= MAX_PATH
    assert source.startswith(("/", "nbd://", "nbd+unix://")) and ".." not in source.split("/")
    tracker = checked["changed_since"]
    assert tracker in JOB_CHANGED_SINCE or re.fullmatch(r"bitmap(:[\w.-]{1,128})?|overlay", tracker)
    if tracker == "overlay":
        assert source.startswith("/")
    if "node" in checked:
        assert "qmp" in checked and re.fullmatch(r"[A-Za-z][\w.-]{0,31}", checked["node"])
    if "scratch" in checked:
        scratch = checked["scratch"]
        assert "qmp" in checked and scratch.startswith("/") and ".." not in scratch.split("/")
        assert "\0" not in scratch and len(scratch) <= MAX_PATH
    if checked.get("allow_backing"):
        assert source.startswith("/")
    assert len(checked["tags"]) <= MAX_TAGS
    assert all(0 < len(t) <= MAX_TAG and "\0" not in t for t in checked["tags"])


@settings(max_examples=150, deadline=None)
@given(spec=st.dictionaries(_FIELDS | st.text(max_size=8), _VALUES, max_size=5))
def test_a_vm_backup_spec_is_refused_in_one_line_or_bounded(spec: dict[str, Any]) -> None:
    spec = {**spec, "kind": "vm"}
    try:
        checked = check_backup(spec)
    except UsageError as err:
        assert "\n" not in str(err) and "\0" not in str(err) and len(str(err)) < 300
        return
    assert checked == check_vm_backup(spec)
    assert set(checked) == {"kind", "vm", "changed_since", "tags"}
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", checked["vm"]), checked
    assert checked["changed_since"] in JOB_CHANGED_SINCE
    assert len(checked["tags"]) <= MAX_TAGS
    assert all(0 < len(t) <= MAX_TAG and "\0" not in t for t in checked["tags"])


def test_an_image_backup_spec_has_its_defaults_and_files_stay_files() -> None:
    assert check_backup({"kind": "image", "source": "/dev/vdb"}) == {
        "kind": "image", "source": "/dev/vdb", "changed_since": "auto", "tags": []}  # fmt: skip
    assert check_backup({"kind": "vm", "vm": "vm1"}) == {
        "kind": "vm", "vm": "vm1", "changed_since": "auto", "tags": []}  # fmt: skip
    assert check_backup({"paths": ["/srv"]})["kind"] == "files"
    with pytest.raises(UsageError, match="unknown field"):
        check_backup({"kind": "vm", "vm": "vm1", "paths": ["/srv"]})
    with pytest.raises(UsageError, match="'files', 'image' or 'vm'"):
        check_backup({"kind": "vmdk", "paths": ["/srv"]})


def test_a_restore_spec_names_files_image_or_vm_only() -> None:
    base = {"point": "ab" * 32, "target": "/restore/disk.img"}
    assert "kind" not in check_restore(base)  # the server sets it from the point
    assert check_restore({**base, "kind": "image"})["kind"] == "image"
    assert check_restore({**base, "kind": "vm"})["kind"] == "vm"
    for kind in ("vhd", 1, ["image"]):
        with pytest.raises(UsageError, match="kind is 'files', 'image' or 'vm'"):
            check_restore({**base, "kind": kind})


_LIVE = {"kind": "image", "source": "nbd+unix:///disk0?socket=/run/vm/nbd.sock"}


@pytest.mark.parametrize(
    "spec",
    [
        {**_LIVE, "qmp": "/run/vm/qmp.sock", "node": "disk0", "changed_since": "bitmap:nightly"},
        {**_LIVE, "qmp": "unix:/run/vm/qmp.sock"},
        {**_LIVE, "source": "nbd://10.0.0.5:10809/disk0", "qmp": "tcp:10.0.0.5:4444"},
        {"kind": "image", "source": "/var/lib/vm/db.qcow2", "changed_since": "bitmap"},
        {**_LIVE, "qmp": "/run/vm/qmp.sock", "scratch": "/var/tmp/overlays"},
        {"kind": "image", "source": "/vm/top.qcow2", "allow_backing": True},
        {"kind": "image", "source": "/vm/top.qcow2", "allow_backing": False},
    ],
)
def test_a_live_disk_and_a_named_bitmap_are_taken(spec: dict[str, Any]) -> None:
    assert check_backup(spec) == {"changed_since": "auto", "tags": [], **spec}


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        ({**_LIVE, "qmp": "run/qmp.sock"}, "qmp must be an absolute path"),
        ({**_LIVE, "qmp": "unix:/run/../etc/x"}, "qmp must be an absolute path"),
        ({**_LIVE, "qmp": "tcp:host:port:x y"}, "qmp must be an absolute path"),
        ({**_LIVE, "node": "disk0"}, "node is given with qmp only"),
        ({**_LIVE, "qmp": "/q.sock", "node": "0disk"}, "node must be a block node name"),
        ({**_LIVE, "qmp": "/q.sock", "node": "d" * 40}, "node must be a block node name"),
        ({"kind": "image", "source": "/d.img", "qmp": "/q.sock"}, "with qmp, source is"),
        ({**_LIVE, "source": "nbd+unix:///d?socket=../s"}, "the NBD URI's socket"),
        ({**_LIVE, "source": "nbd+unix:///d?socket=/s&tls=1"}, "source must be nbd://"),
        ({**_LIVE, "source": "nbd://h/x#y"}, "source must be nbd://"),
        ({**_LIVE, "source": "nbd://h/../x"}, "source must be nbd://"),
        ({**_LIVE, "changed_since": "bitmap:a/b"}, "'bitmap[:NAME]'"),
        ({**_LIVE, "changed_since": "overlay"}, "overlay needs an image file"),
        ({**_LIVE, "allow_backing": True}, "allow_backing is of image files"),
        ({"kind": "image", "source": "/t.qcow2", "allow_backing": "yes"}, "true or false"),
        ({**_LIVE, "scratch": "/tmp"}, "scratch is given with qmp only"),
        ({**_LIVE, "qmp": "/q.sock", "scratch": "tmp/x"}, "scratch must be an absolute path"),
        ({**_LIVE, "qmp": "/q.sock", "scratch": "/etc/../x"}, "scratch must be an absolute path"),
        ({**_LIVE, "qmp": "/q.sock", "scratch": "/x\0y"}, "scratch must be 2-4096"),
        ({**_LIVE, "source": "nbds://h:10809/d0"}, "absolute path"),
        ({"kind": "vm", "vm": "vm1", "changed_since": "bitmap:x"}, "'auto', 'compare' or 'none'"),
    ],
)
def test_a_hostile_live_disk_or_bitmap_is_refused(spec: dict[str, Any], line: str) -> None:
    with pytest.raises(UsageError, match=re.escape(line)) as refused:
        check_backup(spec)
    assert "etc" not in str(refused.value) and "\n" not in str(refused.value)


def test_a_restore_takes_raw_or_qcow2() -> None:
    base = {"point": "ab" * 32, "target": "/restore/disk.img", "kind": "image"}
    assert check_restore({**base, "format": "qcow2"})["format"] == "qcow2"
    assert "format" not in check_restore(base)
    for fmt in ("vhd", 1, ""):
        with pytest.raises(UsageError, match="format is 'raw' or 'qcow2'"):
            check_restore({**base, "format": fmt})
