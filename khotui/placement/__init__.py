"""The placement simulator: where `kexec_file_load(2)` will put each segment, before the call.

`core` mirrors the kernel's generic placement (`kexec_add_buffer()` and the hole walkers in
kernel/kexec_file.c, `kho_locate_mem_hole()` in kernel/liveupdate/kexec_handover.c); the
per-architecture modules mirror the image loaders that call it in a fixed order. Every
planner returns the one `Plan`. Imports only the base modules (types, units, cmdline): the
plan layer turns the host, the images and the FDT into the plain inputs.
"""

from khotui.placement.core import (
    PAGE_SIZE,
    ULONG_MAX,
    KexecBuf,
    Placer,
    Plan,
    Region,
    RegionTried,
    Retry,
    Segment,
)

__all__ = ["PAGE_SIZE", "ULONG_MAX", "KexecBuf", "Placer", "Plan", "Region", "RegionTried",
           "Retry", "Segment"]
