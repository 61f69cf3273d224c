"""Kernel image and initrd inspection: bzImage, arm64 Image, PE/UKI, zboot, ELF, compressed.

Works on bytes or a file descriptor it is handed (size-capped, bounded decompression peeks)
and raises only `KhotuiError`. Imports only the shared base modules.
"""
