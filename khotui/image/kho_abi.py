"""The KHO root compatible strings a next kernel image carries (`kho-v`N).

The new kernel revives a handover only when the root `compatible` of the FDT it is handed equals
its own KHO_FDT_COMPATIBLE: kho_populate() → fdt_node_check_compatible(fdt, 0,
KHO_FDT_COMPATIBLE), kernel/liveupdate/kexec_handover.c; 7.3 defines it as "kho-v4" in
include/linux/kho/abi/kexec_handover.h and writes the same string (kho_init()'s
fdt_property_string(root, "compatible", KHO_FDT_COMPATIBLE)). The string sits NUL-terminated in
the image's read-only data, so it is read here from the decompressed body
(khotui.image.decompress): a kernel built without CONFIG_KEXEC_HANDOVER has none.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import BinaryIO

from khotui.image.decompress import MAX_DECOMPRESSED, DecompressError, kernel_body

# kexec_file_load refuses files above 4 GiB; a kernel image is tens of MB
MAX_IMAGE_BYTES = 256 << 20
_COMPATIBLE = re.compile(rb"(?<=\0)(kho-v[0-9]{1,4})\0")


@dataclass(frozen=True)
class NextAbi:
    """What the next kernel's image says: its KHO compatibles (empty: built without KHO), or
    why it could not be read (`error`; then `compatibles` is None)."""

    compatibles: tuple[str, ...] | None
    how: str | None = None              # 'bzImage payload (gzip)', 'raw Image', ...
    error: str | None = None


def kho_compatibles(body: bytes) -> tuple[str, ...]:
    """The distinct `kho-v`N strings of a body, in order of first appearance."""
    found = dict.fromkeys(m.group(1).decode("ascii") for m in _COMPATIBLE.finditer(body))
    return tuple(found)


_CACHE: dict[tuple[int, int, int, int], NextAbi] = {}


def _read_all(source: str | os.PathLike[str] | BinaryIO | int) -> tuple[bytes, tuple[int, int,
                                                                                      int, int] | None]:
    if isinstance(source, (str, os.PathLike)):
        fd = os.open(os.fspath(source), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            return _read_fd(fd)
        finally:
            os.close(fd)
    if isinstance(source, int):
        return _read_fd(source)
    try:
        fd = source.fileno()
    except (AttributeError, OSError, ValueError):
        pos = source.tell()
        try:
            source.seek(0)
            return source.read(MAX_IMAGE_BYTES + 1), None
        finally:
            source.seek(pos)
    return _read_fd(fd)


def _read_fd(fd: int) -> tuple[bytes, tuple[int, int, int, int] | None]:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise OSError("not a regular file")
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _CACHE:
        return b"", key
    if st.st_size > MAX_IMAGE_BYTES:
        return b"", None
    chunks, offset = [], 0
    while offset < st.st_size:
        chunk = os.pread(fd, min(1 << 22, st.st_size - offset), offset)   # keeps the offset
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks), key


def read_next_abi(source: str | os.PathLike[str] | BinaryIO | int, *,
                  cap: int = MAX_DECOMPRESSED) -> NextAbi:
    """The next kernel's KHO compatibles; never raises (a reason in `error` instead)."""
    try:
        data, key = _read_all(source)
    except OSError as exc:
        return NextAbi(None, error=f"the image could not be read ({exc.strerror or exc})")
    if key is not None and key in _CACHE:
        return _CACHE[key]
    if len(data) > MAX_IMAGE_BYTES or (not data and key is None):
        return NextAbi(None, error=f"the image is larger than {MAX_IMAGE_BYTES >> 20} MiB; "
                                   "not decompressed")
    try:
        body = kernel_body(data, cap=cap)
        result = NextAbi(kho_compatibles(body.data), how=body.how)
    except DecompressError as exc:
        result = NextAbi(None, error=exc.reason)
    if key is not None:
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = result
    return result
