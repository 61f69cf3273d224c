"""The x86_64 purgatory a kernel embeds, and the segment `kexec_file_load` makes of it.

x86_64 builds link arch/x86/purgatory/purgatory.ro (`ld -r`: an ET_REL object) into .rodata as
`kexec_purgatory[]`, followed at the next 8-byte boundary by the u64 `kexec_purgatory_size`
(arch/x86/purgatory/kexec-purgatory.S). Every `kexec_file_load` adds it as a segment sized from
its section headers: kexec_load_purgatory() → kexec_purgatory_setup_kbuf() (bufsz, memsz,
buf_align) and kexec_purgatory_setup_sechdrs() (where each section lands), kernel/kexec_file.c.
A different compiler, flags or version changes those sizes, so the running kernel's own ELF is
the only exact source.

Pure: `find_purgatory(body)` searches a decompressed kernel body (bounded), `purgatory_layout(elf)`
computes what the kernel computes, `linux_banners(body)` gives the `linux_banner` strings so a
caller can tell the image is the running kernel. `read_image_purgatory()` does all three on an
image's bytes, cached by the file's identity.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from khotui.errors import ReasonError
from khotui.image.decompress import MAX_DECOMPRESSED, DecompressError, kernel_body

ELF_MAGIC64_LE = b"\x7fELF\x02\x01\x01"
ET_REL = 1
EM_X86_64 = 62
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
SHT_NOBITS = 8
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
# A purgatory is tens of KB and about 20 sections; anything past these is not one.
MAX_PURGATORY_BYTES = 1 << 20
MAX_SECTIONS = 512
# The ELF magic occurs a handful of times in a vmlinux; a body with more is not a kernel.
MAX_CANDIDATES = 4096
_MASK = (1 << 64) - 1


class PurgatoryError(ReasonError):
    """Why no purgatory could be had from an image or a blob: one line."""


@dataclass(frozen=True)
class PurgatorySection:
    """One SHF_ALLOC section as kexec_purgatory_setup_sechdrs() places it: `offset` within the
    segment (bss sections: after bufsz)."""

    index: int
    name: str
    type: int
    flags: int
    size: int
    align: int
    offset: int

    @property
    def nobits(self) -> bool:
        return self.type == SHT_NOBITS


@dataclass(frozen=True)
class PurgatoryLayout:
    """What kexec_purgatory_setup_kbuf() computes from the ELF, and the sections it loads."""

    bufsz: int
    memsz: int
    buf_align: int
    sections: list[PurgatorySection] = field(default_factory=list)


def _align(value: int, align: int) -> int:
    # ALIGN(x, a) = (x + a - 1) & ~(a - 1) on unsigned long; a == 0 gives 0 there, kept here
    mask = (align - 1) & _MASK
    return ((value + mask) & _MASK) & (~mask & _MASK)


def _section_name(elf: bytes, shstr: tuple[int, int] | None, name_off: int) -> str:
    if shstr is None:
        return ""
    off, size = shstr
    if name_off >= size:
        return ""
    raw = elf[off + name_off:off + min(size, name_off + 64)]
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def _check_header(elf: bytes, machine: int) -> tuple[int, int]:
    """(e_shoff, e_shnum) of a sane ET_REL header for `machine`; PurgatoryError otherwise."""
    if len(elf) < _EHDR.size or not elf.startswith(ELF_MAGIC64_LE):
        raise PurgatoryError("not a 64-bit little-endian ELF")
    (_, e_type, e_machine, _ver, _entry, _phoff, e_shoff, _flags, e_ehsize, _phentsize,
     _phnum, e_shentsize, e_shnum, _shstrndx) = _EHDR.unpack_from(elf, 0)
    if e_type != ET_REL or e_machine != machine:
        raise PurgatoryError(f"ELF type {e_type} machine {e_machine}, not ET_REL for machine "
                             f"{machine}")
    if e_ehsize != _EHDR.size or e_shentsize != _SHDR.size:
        raise PurgatoryError("ELF header or section header size is not the ELF64 one")
    if not 0 < e_shnum <= MAX_SECTIONS:
        raise PurgatoryError(f"{e_shnum} sections")
    if e_shoff < _EHDR.size or e_shoff + e_shnum * _SHDR.size > len(elf):
        raise PurgatoryError("the section table lies outside the object")
    return e_shoff, e_shnum


def purgatory_layout(elf: bytes, *, machine: int = EM_X86_64) -> PurgatoryLayout:
    """bufsz, memsz, buf_align and the loaded sections, as the kernel computes them.
    PurgatoryError when `elf` is not a sane ET_REL object."""
    e_shoff, e_shnum = _check_header(elf, machine)
    shstrndx = _EHDR.unpack_from(elf, 0)[13]
    headers = [_SHDR.unpack_from(elf, e_shoff + i * _SHDR.size) for i in range(e_shnum)]
    shstr = None
    if 0 < shstrndx < e_shnum:
        s = headers[shstrndx]
        if s[4] + s[5] <= len(elf):
            shstr = (s[4], s[5])
    # mirrors kexec_purgatory_setup_kbuf(), kernel/kexec_file.c (unsigned long arithmetic)
    buf_align = bss_align = 1
    bufsz = bss_sz = 0
    for (_name, sh_type, sh_flags, _addr, _off, sh_size, _link, _info, align, _ent) in headers:
        if not sh_flags & SHF_ALLOC:
            continue
        if sh_type != SHT_NOBITS:
            buf_align = max(buf_align, align)
            bufsz = (_align(bufsz, align) + sh_size) & _MASK
        else:
            bss_align = max(bss_align, align)
            bss_sz = (_align(bss_sz, align) + sh_size) & _MASK
    bufsz = _align(bufsz, bss_align)
    memsz = (bufsz + bss_sz) & _MASK
    buf_align = max(buf_align, bss_align)
    # where kexec_purgatory_setup_sechdrs() puts each section (offsets within the segment)
    sections: list[PurgatorySection] = []
    offset, bss_at = 0, bufsz
    for i, (name, sh_type, sh_flags, _addr, sh_offset, sh_size, _l, _i, align, _e) \
            in enumerate(headers):
        if not sh_flags & SHF_ALLOC:
            continue
        if sh_type == SHT_NOBITS:
            bss_at = _align(bss_at, align)
            at = bss_at
            bss_at += sh_size
        else:
            if sh_offset + sh_size > len(elf):
                raise PurgatoryError(f"section {i} runs past the end of the object")
            offset = _align(offset, align)
            at = offset
            offset += sh_size
        sections.append(PurgatorySection(i, _section_name(elf, shstr, name), sh_type, sh_flags,
                                         sh_size, align, at))
    if bufsz > MAX_PURGATORY_BYTES or memsz > MAX_PURGATORY_BYTES:
        raise PurgatoryError(f"sections add up to {memsz} bytes, not a purgatory")
    return PurgatoryLayout(bufsz=bufsz, memsz=memsz, buf_align=buf_align, sections=sections)


def elf_extent(elf: bytes, *, machine: int = EM_X86_64) -> int:
    """The bytes an ET_REL object spans from its header: its section table and section data."""
    e_shoff, e_shnum = _check_header(elf, machine)
    end = e_shoff + e_shnum * _SHDR.size
    for i in range(e_shnum):
        _n, sh_type, _f, _a, off, size, *_ = _SHDR.unpack_from(elf, e_shoff + i * _SHDR.size)
        if sh_type != SHT_NOBITS and size:
            if off + size > MAX_PURGATORY_BYTES:
                raise PurgatoryError(f"section {i} lies past {MAX_PURGATORY_BYTES} bytes")
            end = max(end, off + size)
    return end


@dataclass(frozen=True)
class FoundPurgatory:
    """The embedded `kexec_purgatory[]` found in a kernel body."""

    elf: bytes
    offset: int               # in the decompressed body
    size_confirmed: bool      # the `kexec_purgatory_size` u64 after it equals its length


def find_purgatory(body: bytes, *, machine: int = EM_X86_64) -> FoundPurgatory | None:
    """The embedded purgatory: the first ET_REL object for `machine` with a sane section table
    whose length the following `kexec_purgatory_size` confirms, else the first sane one."""
    first: FoundPurgatory | None = None
    pos, seen = 0, 0
    while seen < MAX_CANDIDATES:
        at = body.find(ELF_MAGIC64_LE, pos)
        if at < 0:
            break
        seen += 1
        pos = at + 1
        window = body[at:at + MAX_PURGATORY_BYTES + 64]
        try:
            extent = elf_extent(window, machine=machine)
            purgatory_layout(window[:extent], machine=machine)
        except PurgatoryError:
            continue
        # kexec-purgatory.S: `.align 8; kexec_purgatory_size: .quad end - kexec_purgatory`.
        # The blob may end with padding past the section table, so look a few quads on.
        slot = (at + extent + 7) & ~7
        for q in range(slot, slot + 64, 8):
            if q + 8 > len(body):
                break
            size = struct.unpack_from("<Q", body, q)[0]
            if extent <= size <= MAX_PURGATORY_BYTES and (at + size + 7) & ~7 == q:
                return FoundPurgatory(bytes(body[at:at + size]), at, True)
        if first is None:
            first = FoundPurgatory(bytes(window[:extent]), at, False)
    return first


_BANNER = re.compile(rb"Linux version (\d[^\n\0]{0,400})")


def linux_banners(body: bytes) -> list[str]:
    """Each `linux_banner` in a body (init/version-timestamp.c: "Linux version " UTS_RELEASE
    " (" BY "@" HOST ") (" COMPILER ") " UTS_VERSION), without "Linux version " and the
    newline. A build holds two: the __weak one of init/version.c, with an empty build number
    ("# SMP"), and the final one; either may be compared with /proc/version."""
    return [m.group(1).decode("ascii", "replace").strip()
            for m in _BANNER.finditer(body)][:16]


@dataclass(frozen=True)
class ImagePurgatory:
    """What one kernel image says about itself: its banners and its purgatory."""

    how: str                             # how the body was had ('bzImage payload (gzip)')
    banners: list[str]
    found: FoundPurgatory | None
    layout: PurgatoryLayout | None
    extra: tuple[str, ...] = ()          # what the caller keeps with it (the file's sha256)


_CACHE: dict[tuple[object, ...], ImagePurgatory] = {}
_CACHE_MAX = 8


def cached_image_purgatory(key: tuple[object, ...]) -> ImagePurgatory | None:
    """The answer read_image_purgatory() gave for the file of this identity, if kept."""
    return _CACHE.get(key)


def read_image_purgatory(data: bytes, *, key: tuple[object, ...] | None = None,
                         cap: int = MAX_DECOMPRESSED,
                         extra: list[str] | tuple[str, ...] = ()) -> ImagePurgatory:
    """The body's banners and purgatory. DecompressError when the body cannot be had. With
    `key` (the file's device, inode, size, mtime), the answer is cached: a plan reads it each
    time, and decompressing a bzImage costs about a quarter of a second."""
    body = kernel_body(data, cap=cap)
    found = find_purgatory(body.data)
    layout = None if found is None else purgatory_layout(found.elf)
    result = ImagePurgatory(how=body.how, banners=linux_banners(body.data), found=found,
                            layout=layout, extra=tuple(extra))
    if key is not None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = result
    return result


__all__ = [
    "DecompressError",
    "FoundPurgatory",
    "ImagePurgatory",
    "PurgatoryError",
    "PurgatoryLayout",
    "PurgatorySection",
    "cached_image_purgatory",
    "find_purgatory",
    "linux_banners",
    "purgatory_layout",
    "read_image_purgatory",
]
