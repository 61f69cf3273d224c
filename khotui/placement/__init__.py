"""The placement simulator: where `kexec_file_load(2)` will put each segment, before the call.

`core` mirrors the kernel's generic placement (`kexec_add_buffer()` and the hole walkers in
kernel/kexec_file.c, `kho_locate_mem_hole()` in kernel/liveupdate/kexec_handover.c); the
per-architecture modules mirror the image loaders that call it in a fixed order.
"""

from khotui.placement.core import (
    PAGE_SIZE,
    ULONG_MAX,
    KexecBuf,
    Placer,
    Region,
    Segment,
)

__all__ = ["PAGE_SIZE", "ULONG_MAX", "KexecBuf", "Placer", "Region", "Segment"]
