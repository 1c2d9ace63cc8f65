"""Run `strongroom ARGS...` as `nobody` (from root), for the VHD backup mode.

tests/helpers/as_nobody.py imports strongroom as root and drops privileges;
the VHD mode also needs codecs Python loads lazily (UTF-16 for VHD parent
names), which `nobody` cannot load from an installation below /root: they are
loaded here first, then the helper runs.
"""

from __future__ import annotations

import codecs
import sys

for _name in ("utf-16-be", "utf-16-le", "utf-16", "latin-1", "ascii"):
    codecs.lookup(_name)

from tests.helpers import as_nobody  # noqa: E402

if __name__ == "__main__":
    sys.exit(as_nobody.main())
