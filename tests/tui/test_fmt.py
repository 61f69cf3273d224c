"""The screens write sizes and addresses with khotui.units, the one formatter the CLI uses too;
only the unknown value reads differently on screen ("—", a blank cell, not "?")."""

from __future__ import annotations

from khotui import units
from khotui.tui import fmt


def test_sizes_and_addresses_on_screen_are_the_cli_s():
    values = [0, 1, 512, 1023, 1024, 1536, 4096, 8 * units.MiB + units.MiB // 2, 3 * units.GiB,
              units.GiB - 1, 24 * units.TiB, 0x7ca00000]
    for value in values:
        assert fmt.size(value) == units.size(value)
        assert fmt.addr(value) == units.addr(value)
    assert [fmt.size(v) for v in (512, 8 * units.MiB + units.MiB // 2, 3 * units.GiB)] == \
        ["512 B", "8.5 MiB", "3 GiB"]
    assert fmt.size(None) == "—" and fmt.addr(None) == "—"
