"""The media jobs' spec checker against hostile JSON (hypothesis): every
document is either refused with one UsageError line that does not echo it,
or accepted as a spec whose every value is bounded."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.errors import UsageError
from strongroom.services.server_media_jobs import MAX_POINTS, check_media_spec

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_FIELDS = st.sampled_from(["pool", "library", "points", "latest", "hosts", "paths", "point"])
_VALUES = _JSON | st.from_regex(r"[0-9a-f]{8,64}", fullmatch=True) | st.just(["ab" * 32])
_SPECS = st.dictionaries(_FIELDS | st.text(max_size=8), _VALUES, max_size=6)
_HEX = re.compile(r"[0-9a-f]{8,64}")
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@pytest.mark.parametrize("kind", ["copy-to-media", "restore-from-media"])
@settings(max_examples=100, deadline=None)
@given(spec=_SPECS)
def test_a_spec_is_refused_in_one_line_or_bounded(kind: str, spec: dict[str, Any]) -> None:
    try:
        checked = check_media_spec(kind, spec)
    except UsageError as err:
        assert "\n" not in str(err) and len(str(err)) < 300
        return
    for name in ("pool", "library"):
        value = checked.get(name)
        assert value is None or (_PLAIN.fullmatch(value) and ".." not in value)
    if kind == "restore-from-media":
        assert set(checked) == {"point", "library"} and _HEX.fullmatch(checked["point"])
        return
    assert checked["pool"] is not None
    assert checked["latest"] != bool(checked["points"])
    assert len(checked["points"]) <= MAX_POINTS
    assert all(_HEX.fullmatch(p) for p in checked["points"])
    assert all(isinstance(t, str) and "\0" not in t for t in checked["hosts"] + checked["paths"])
