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
_PATHS = st.from_regex(r"/[a-z./\x00]{0,20}", fullmatch=True) | st.just("/dev/vdb")
_FIELDS = st.sampled_from(["source", "vm", "changed_since", "tags", "paths", "excludes"])
_NAMES = st.from_regex(r"[a-z0-9./@_\x00-]{0,70}", fullmatch=True) | st.just("vm1")
_VALUES = (
    _JSON
    | _PATHS
    | st.sampled_from(["auto", "compare", "none", "bitmap", "overlay"])
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
    assert set(checked) == {"kind", "source", "changed_since", "tags"}
    source = checked["source"]
    assert source.startswith("/") and "\0" not in source and len(source) <= MAX_PATH
    assert ".." not in source.split("/")
    assert checked["changed_since"] in JOB_CHANGED_SINCE
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
