"""The arm64 kernel `Image` header, and whether Linux 7.3's `kexec_file_load` takes the file.

arm64 has one `kexec_file_load` loader (`kexec_file_loaders[] = { &kexec_image_ops }`,
arch/arm64/kernel/machine_kexec_file.c): the plain, uncompressed `Image`, recognised only by
the magic `ARM\\x64` at 0x38 of the 64-byte header (arch/arm64/include/asm/image.h,
Documentation/arch/arm64/booting.rst). An Image built with the EFI stub begins with `MZ`: it is
still a loadable Image, not a UKI. A gzip'd `Image.gz` or an EFI zboot `vmlinuz.efi` is not
accepted as is (`image_probe()` → EINVAL); this module recognises both, reads the Image inside
when it can, and says how to unpack it.

`parse_arm64_image()` is pure: bytes in, an `Arm64Image` (or None) out. The checks `image_load()`
makes against the running system (endianness, page-size granule) take an `Arm64Running`.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from dataclasses import dataclass, field, replace
from typing import Protocol

from khotui.types import JsonDict
from khotui.units import size

HEADER_SIZE = 64                      # sizeof(struct arm64_image_header)
MAGIC_OFFSET = 0x38
ARM64_IMAGE_MAGIC = b"ARM\x64"
LINUX_PE_MAGIC = 0x818223CD           # include/linux/pe.h: at 0x38 of an EFI zboot image
ZBOOT_TYPE = b"zimg"                  # drivers/firmware/efi/libstub/zboot-header.S

# arch/arm64/include/asm/image.h
FLAG_BE_SHIFT, FLAG_BE_MASK = 0, 0x1
FLAG_PAGE_SIZE_SHIFT, FLAG_PAGE_SIZE_MASK = 1, 0x3
FLAG_PHYS_BASE_SHIFT, FLAG_PHYS_BASE_MASK = 3, 0x1
PAGE_SIZE_FLAG = {0: None, 1: 4096, 2: 16384, 3: 65536}

# enough decompressed bytes to read the inner Image header
_PEEK = 4096


def _granule(size: int) -> str:
    """The kernel's name for a page size, as in CONFIG_ARM64_4K_PAGES and TGran4."""
    return f"{size // 1024}K"


@dataclass(frozen=True)
class Arm64Running:
    """What `image_load()` compares the Image with: the running kernel and its CPUs.

    `granules` are the translation granules every CPU implements (ID_AA64MMFR0_EL1.TGran4/16/64,
    `system_supports_*kb_granule()`); `mixed_endian` is `system_supports_mixed_endian()`
    (ID_AA64MMFR0_EL1.BigEnd). User space cannot read either (the fields are hidden from MRS
    emulation): None means unknown. The running kernel's own page size is always implemented.
    """

    page_size: int = 4096
    big_endian: bool = False
    granules: frozenset[int] | None = None
    mixed_endian: bool | None = None

    @classmethod
    def from_config(cls, config_text: str) -> Arm64Running:
        """From the running kernel's config (`/proc/config.gz` text): page size and endianness."""
        options = {line.split("=", 1)[0] for line in config_text.splitlines()
                   if line.startswith("CONFIG_") and line.endswith("=y")}
        page_size = 4096
        if "CONFIG_ARM64_16K_PAGES" in options:
            page_size = 16384
        elif "CONFIG_ARM64_64K_PAGES" in options:
            page_size = 65536
        return cls(page_size=page_size, big_endian="CONFIG_CPU_BIG_ENDIAN" in options)

    def supports_granule(self, page_size: int) -> bool | None:
        if page_size == self.page_size:
            return True
        if self.granules is None:
            return None
        return page_size in self.granules


@dataclass(frozen=True)
class Arm64Image:
    """An arm64 kernel file as `kexec_file_load` sees it.

    `kind`: 'image' (a plain Image, maybe with the EFI stub), 'image.gz' (or .bz2/.xz: a
    compressed Image), 'zboot' (EFI zboot), 'not-image' (what `probe_arm64_image()` returns for
    anything else). Header fields are those of the Image itself; for a compressed file they are
    None and `inner` holds the header of the Image inside, when it could be read.
    `loadable` is True, False, or None when it depends on a CPU feature user space cannot read;
    `why_not` and `fix` say what and what to do.
    """

    kind: str
    file_size: int | None          # None for the Image inside a compressed file
    efi_stub: bool = False
    code0: int | None = None
    code1: int | None = None
    text_offset: int | None = None
    image_size: int | None = None
    flags: int | None = None
    big_endian: bool | None = None
    page_size: int | None = None          # 4096/16384/65536; None: unspecified in the flags
    phys_base_anywhere: bool | None = None  # flags bit 3: may be placed anywhere in memory
    pe_offset: int | None = None          # res5: the PE header offset when efi_stub
    compression: str | None = None        # 'gzip', 'bzip2', 'xz', or the zboot payload's type
    payload_offset: int | None = None     # zboot only
    payload_size: int | None = None       # zboot only
    inner: Arm64Image | None = None
    loadable: bool | None = False
    why_not: str | None = None
    fix: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def endianness(self) -> str | None:
        if self.big_endian is None:
            return None
        return "big" if self.big_endian else "little"

    @property
    def page_size_text(self) -> str | None:
        if self.kind != "image" or self.flags is None:
            return None
        return "unspecified" if self.page_size is None else size(self.page_size)

    def as_dict(self) -> JsonDict:
        return {
            "arch": "arm64",
            "kind": self.kind,
            "file_size": self.file_size,
            "efi_stub": self.efi_stub,
            "text_offset": self.text_offset,
            "image_size": self.image_size,
            "flags": self.flags,
            "endianness": self.endianness,
            "page_size": self.page_size_text,
            "phys_base_anywhere": self.phys_base_anywhere,
            "pe_offset": self.pe_offset,
            "compression": self.compression,
            "payload_offset": self.payload_offset,
            "payload_size": self.payload_size,
            "inner": None if self.inner is None else self.inner.as_dict(),
            "loadable": self.loadable,
            "why_not": self.why_not,
            "fix": self.fix,
            "notes": list(self.notes),
        }


def parse_arm64_image(data: bytes, *, running: Arm64Running | None = None) -> Arm64Image | None:
    """The arm64 Image (or Image.gz / EFI zboot) in `data`; None when it is none of these."""
    image = probe_arm64_image(data, running=running)
    return None if image.kind == "not-image" else image


def probe_arm64_image(data: bytes, *, running: Arm64Running | None = None) -> Arm64Image:
    """Like `parse_arm64_image()`, but always answers: kind 'not-image' says why it is not one."""
    running = running or Arm64Running()
    if _is_zboot(data):
        return _zboot(data, running)
    compressed = _decompressor(data)
    if compressed is not None:
        name, peek = compressed
        inner = _inner_image(peek, running) if peek else None
        if inner is not None:
            return _compressed(data, name, inner)
    return _image(data, running)


def _image(data: bytes, running: Arm64Running) -> Arm64Image:
    size = len(data)
    efi_stub = data[:2] == b"MZ"
    magic = data[MAGIC_OFFSET:MAGIC_OFFSET + 4]
    # mirrors image_probe(), arch/arm64/kernel/kexec_image.c: the magic decides, then the length
    if magic != ARM64_IMAGE_MAGIC:
        if size < MAGIC_OFFSET + 4:
            why = (f"the file is {size} bytes, shorter than the {HEADER_SIZE}-byte arm64 Image "
                   f"header: it ends before the magic at 0x{MAGIC_OFFSET:x}")
        else:
            why = (f"no arm64 Image magic 'ARM\\x64' at 0x{MAGIC_OFFSET:x} (found {magic.hex()}): "
                   f"image_probe() rejects it, kexec_file_load fails with EINVAL")
        return Arm64Image(kind="not-image", file_size=size, efi_stub=efi_stub, loadable=False,
                          why_not=why,
                          fix="give the uncompressed arm64 Image (arch/arm64/boot/Image)")
    if size < HEADER_SIZE:
        return Arm64Image(kind="image", file_size=size, efi_stub=efi_stub, loadable=False,
                          why_not=(f"truncated: the file is {size} bytes, shorter than the "
                                   f"{HEADER_SIZE}-byte arm64 Image header; image_probe() "
                                   "rejects it (EINVAL)"),
                          fix="copy the complete Image again (arch/arm64/boot/Image)")
    (code0, code1, text_offset, image_size, flags, _res2, _res3, _res4, _magic,
     res5) = struct.unpack_from("<IIQQQQQQII", data, 0)
    big_endian = bool((flags >> FLAG_BE_SHIFT) & FLAG_BE_MASK)
    page_size = PAGE_SIZE_FLAG[(flags >> FLAG_PAGE_SIZE_SHIFT) & FLAG_PAGE_SIZE_MASK]
    phys_base = bool((flags >> FLAG_PHYS_BASE_SHIFT) & FLAG_PHYS_BASE_MASK)
    loadable, why_not, fix = _image_load_checks(image_size, big_endian, page_size, running)
    notes = []
    if efi_stub:
        notes.append("begins with 'MZ' (EFI stub): still a plain Image, loadable as such")
    return Arm64Image(kind="image", file_size=size, efi_stub=efi_stub, code0=code0, code1=code1,
                      text_offset=text_offset, image_size=image_size, flags=flags,
                      big_endian=big_endian, page_size=page_size, phys_base_anywhere=phys_base,
                      pe_offset=res5 if efi_stub else None, loadable=loadable, why_not=why_not,
                      fix=fix, notes=tuple(notes))


def check_against(image: Arm64Image, running: Arm64Running) -> Arm64Image:
    """`image` with image_load()'s checks redone against `running` (the plan layer knows the
    running kernel's page size; the file inspection alone assumes 4K). A plain Image only."""
    if image.kind != "image" or image.image_size is None or image.big_endian is None:
        return image
    loadable, why_not, fix = _image_load_checks(image.image_size, image.big_endian,
                                                image.page_size, running)
    return replace(image, loadable=loadable, why_not=why_not, fix=fix)


def _image_load_checks(image_size: int, big_endian: bool, page_size: int | None,
                       running: Arm64Running) -> tuple[bool | None, str | None, str | None]:
    # mirrors the checks at the top of image_load(), arch/arm64/kernel/kexec_image.c
    if image_size == 0:
        return (False,
                "image_size is 0: an Image from before Linux 3.17, without an unambiguous "
                "header; image_load() rejects it (EINVAL)",
                "use an Image built by Linux 3.17 or later")
    if big_endian != running.big_endian:
        image_end = "big" if big_endian else "little"
        kernel_end = "big" if running.big_endian else "little"
        why = (f"{image_end}-endian Image, {kernel_end}-endian running kernel: image_load() "
               "accepts it only when the CPUs support mixed endianness "
               "(ID_AA64MMFR0_EL1.BigEnd, system_supports_mixed_endian())")
        fix = f"use a {kernel_end}-endian Image (CONFIG_CPU_BIG_ENDIAN as the running kernel)"
        if running.mixed_endian is None:
            return None, why + ", which user space cannot read", fix
        if not running.mixed_endian:
            return False, why + "; these CPUs do not (EINVAL)", fix
    if page_size is not None:
        supported = running.supports_granule(page_size)
        if supported is not True:
            flag = _granule(page_size)
            why = (f"the Image uses {size(page_size)} pages, the running kernel "
                   f"{size(running.page_size)}: image_load() accepts it only when the CPUs "
                   f"implement the {flag} granule (ID_AA64MMFR0_EL1.TGran{flag[:-1]})")
            fix = (f"use an Image built with CONFIG_ARM64_{_granule(running.page_size)}_PAGES, "
                   "the running kernel's page size")
            if supported is None:
                return None, why + ", which user space cannot read", fix
            return False, why + "; these CPUs do not (EINVAL)", fix
    return True, None, None


def _is_zboot(data: bytes) -> bool:
    # drivers/firmware/efi/libstub/zboot-header.S: 'MZ', "zimg", payload offset and size
    return len(data) >= 0x1C and data[:2] == b"MZ" and data[4:8] == ZBOOT_TYPE


def _zboot(data: bytes, running: Arm64Running) -> Arm64Image:
    payload_offset, payload_size = struct.unpack_from("<II", data, 8)
    comp_type = data[0x18:0x38].split(b"\0", 1)[0].decode("ascii", "replace") or "unknown"
    inner = None
    payload = data[payload_offset:payload_offset + payload_size]
    if comp_type == "gzip" and len(payload) == payload_size:
        peek = _peek(payload, zlib.decompressobj(16 + zlib.MAX_WBITS))
        if peek is not None:
            inner = _inner_image(peek, running)
    unpack = {"gzip": "gunzip", "xzkern": "unxz", "lzma": "unlzma", "lzo": "lzop -d",
              "lz4": "lz4 -d", "zstd22": "unzstd", "zstd": "unzstd", "bzip2": "bunzip2"}
    tool = unpack.get(comp_type, f"the {comp_type} decompressor")
    return Arm64Image(
        kind="zboot", file_size=len(data), efi_stub=True, compression=comp_type,
        payload_offset=payload_offset, payload_size=payload_size, inner=inner, loadable=False,
        why_not=("EFI zboot image (a compressed Image inside an EFI application, "
                 f"{comp_type} payload): Linux 7.3 arm64 kexec_file_load has only the Image "
                 "loader (kexec_image_ops) and image_probe() finds no 'ARM\\x64' magic at 0x38 "
                 "(EINVAL)"),
        fix=(f"extract the Image: dd if=FILE bs=1 skip={payload_offset} count={payload_size} "
             f"| {tool} > Image, and load that (kexec-tools 2.0.26+ does the same itself)"))


def _decompressor(data: bytes) -> tuple[str, bytes] | None:
    """The first bytes of a gzip/bzip2/xz stream, decompressed; None when not one."""
    if data[:2] == b"\x1f\x8b":
        return "gzip", _peek(data, zlib.decompressobj(16 + zlib.MAX_WBITS)) or b""
    if data[:3] == b"BZh":
        return "bzip2", _peek(data, bz2.BZ2Decompressor()) or b""
    if data[:6] == b"\xfd7zXZ\x00":
        return "xz", _peek(data, lzma.LZMADecompressor(memlimit=64 << 20)) or b""  # no 4 GiB dict
    return None


class _Decompressor(Protocol):
    """zlib's decompressobj(), bz2.BZ2Decompressor and lzma.LZMADecompressor alike."""

    def decompress(self, data: bytes, /, max_length: int = ...) -> bytes: ...


def _peek(data: bytes, decompressor: _Decompressor) -> bytes | None:
    """Up to `_PEEK` decompressed bytes, without inflating the whole file."""
    try:
        if isinstance(decompressor, bz2.BZ2Decompressor | lzma.LZMADecompressor):
            return decompressor.decompress(data[:1 << 20], max_length=_PEEK)
        return decompressor.decompress(data[:1 << 20], _PEEK)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        return None


def _inner_image(peek: bytes, running: Arm64Running) -> Arm64Image | None:
    inner = _image(peek, running)
    if inner.kind != "image":
        return None
    # only the first bytes were inflated: the inner size is unknown
    return Arm64Image(**{**inner.__dict__, "file_size": None})


def _compressed(data: bytes, name: str, inner: Arm64Image) -> Arm64Image:
    tool = {"gzip": "gunzip -c", "bzip2": "bunzip2 -c", "xz": "unxz -c"}[name]
    kind = {"gzip": "image.gz", "bzip2": "image.bz2", "xz": "image.xz"}[name]
    return Arm64Image(
        kind=kind,
        file_size=len(data), compression=name, inner=inner, loadable=False,
        why_not=(f"{name}-compressed arm64 Image: kexec_file_load on arm64 takes only the "
                 "uncompressed Image (image_probe(), arch/arm64/kernel/kexec_image.c, finds "
                 "no 'ARM\\x64' magic at 0x38: EINVAL)"),
        fix=f"decompress it first: {tool} FILE > Image, and load the Image")
