"""How numbers are written for the operator, everywhere: addresses in hex, sizes in binary units.

One formatter per idea, so the CLI, the JSON notes, the errno explanations and the TUI print the
same size the same way ("3 GiB", "8.5 MiB", "512 B"). Imports nothing from khotui.
"""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_UNITS = ((TiB, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB"))


def size(value: int | None, *, unknown: str = "?") -> str:
    """`3 GiB`, `8.5 MiB`, `4 KiB`, `512 B`: the largest unit the value reaches, whole when it
    is a whole number of that unit, else one decimal."""
    if value is None:
        return unknown
    for unit, name in _UNITS:
        if value >= unit:
            if value % unit == 0:
                return f"{value // unit} {name}"
            return f"{value / unit:.1f} {name}"
    return f"{value} B"


def addr(value: int | None, *, unknown: str = "?") -> str:
    """`0x7ebf0000`: a physical address or an offset, lower-case hex."""
    return unknown if value is None else f"0x{value:x}"
