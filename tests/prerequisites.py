"""What to do when a test's prerequisite (a system package, the real data, a local server's
binaries) is missing: fail, naming it, unless the run opted out of such tests explicitly.

``make test`` installs the Debian packages itself when it can (tools/system-packages.sh) and
stops at once, naming them, when it cannot; a test that still finds one missing is an error,
never a silent skip. ``GEODELTA_ALLOW_SKIPS=1`` is the opt-out: those tests skip instead, and
pytest's summary lists them.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

#: Set to 1 to let tests whose prerequisites are missing skip instead of failing.
ALLOW_SKIPS_ENV = "GEODELTA_ALLOW_SKIPS"


def skips_allowed() -> bool:
    return os.environ.get(ALLOW_SKIPS_ENV, "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    """Fail with ``reason`` (what is missing and how to get it), or skip when skips are allowed."""
    if skips_allowed():
        pytest.skip(reason)
    pytest.fail(f"{reason} (or set {ALLOW_SKIPS_ENV}=1 to skip the tests that need it)")
