"""Markers shared by tests: `root` tests need root (owners, devices, mounts, setpriv)."""

from __future__ import annotations

import os

import pytest

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")
ROOT = [pytest.mark.root, needs_root]  # pytestmark = ROOT, or both as decorators
