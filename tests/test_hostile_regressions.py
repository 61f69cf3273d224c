"""Inputs the hostile-input tests and the fuzzers found: each once crashed or blew up a parser.

Every test here is the smallest input that did it, kept so the fix stays fixed.
"""

from __future__ import annotations

import pytest

from khotui.errors import KhotuiError
from khotui.host.boot import parse_meminfo
from khotui.host.memory import _mem_total_kb, _memory_ids


def test_meminfo_non_ascii_digit_is_skipped_not_a_crash():
    # '²'.isdigit() is True but int('²') raises ValueError
    assert parse_meminfo("MemTotal: ² kB\nMemFree: 12 kB\n") == {"MemFree": 12}
    assert _mem_total_kb("Node 0 MemTotal: ² kB\n") is None
    assert _memory_ids(["memory²", "memory3"]) == [3]
