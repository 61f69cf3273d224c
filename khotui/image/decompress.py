"""Bounded decompression of a kernel image's payload, with the standard library only.

A kernel image is decompressed here to read what only its body holds: the running kernel's
embedded purgatory (khotui.image.purgatory) and the next kernel's KHO compatible strings
(khotui.image.kho_abi). The image is the operator's file, or one found on a host: every
decompression is capped (`MAX_DECOMPRESSED`, a decompression bomb stops there with a reason),
and a format Python 3.11's standard library cannot read (lz4, zstd, lzo) is a clear reason,
never a crash.

Where the body is, per format:

* x86 bzImage: the compressed `vmlinux.bin` at `(setup_sects + 1) * 512 + payload_offset`,
  `payload_length` bytes (Documentation/arch/x86/boot.rst, boot protocol 2.08+); its format is
  told by its magic (arch/x86/boot/compressed/Makefile suffix-y: gzip, bzip2, lzma, xz, lzo,
  lz4, zstd; the kernel appends the 4-byte decompressed size, which is left over here).
* arm64: a raw `Image` is its own body; `Image.gz` (and other whole-file compression) is
  decompressed whole; an EFI zboot image (`MZ`, `zimg` at 4) carries its payload at the u32
  offset and size at 8 and 12 (drivers/firmware/efi/libstub/zboot-header.S).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from dataclasses import dataclass

from khotui.errors import ReasonError

# A distro vmlinux.bin is 30-70 MB; a debug build with everything built in is under 200 MB.
MAX_DECOMPRESSED = 256 << 20
# liblzma allocates its dictionary up front: a hostile header must not make it allocate GBs.
LZMA_MEMLIMIT = 256 << 20
_STEP = 4 << 20

# lib/decompress.c compressed_formats[] plus the longer forms
MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x89LZO\x00\r\n\x1a\n", "lzo"),
    (b"\x02\x21\x4c\x18", "lz4"),   # legacy lz4, what the kernel's unlz4 reads
    (b"\x04\x22\x4d\x18", "lz4"),   # lz4 frame format
    (b"\x5d\x00\x00", "lzma"),
)
STDLIB_FORMATS = ("gzip", "xz", "lzma", "bzip2")


class DecompressError(ReasonError):
    """Why a body could not be had: one line, for an assumption or a check's message."""


@dataclass(frozen=True)
class Body:
    """The decompressed (or raw) body of a kernel image and how it was had."""

    data: bytes
    how: str                 # 'bzImage payload (gzip)', 'raw Image', 'zboot payload (gzip)', ...


def compression_of(data: bytes) -> str | None:
    for magic, name in MAGICS:
        if data.startswith(magic):
            return name
    return None


def decompress(data: bytes, kind: str, *, cap: int = MAX_DECOMPRESSED) -> bytes:
    """The whole stream, at most `cap` bytes; DecompressError saying why not (a format the
    standard library lacks, a corrupt or truncated stream, more than `cap` bytes)."""
    if kind not in STDLIB_FORMATS:
        raise DecompressError(
            f"{kind}-compressed: Python's standard library has no {kind} decompressor, so "
            f"khotui cannot read inside it")
    out = bytearray()
    try:
        if kind == "gzip":
            z = zlib.decompressobj(wbits=31)
            pending = data
            while not z.eof:
                chunk = z.decompress(pending, _STEP)
                out += chunk
                _check_cap(out, cap, kind)
                pending = z.unconsumed_tail
                if not pending and not chunk:
                    break
            if not z.eof:
                raise DecompressError("the gzip stream is truncated (it ends before its end "
                                      "marker)")
            return bytes(out)
        dec: lzma.LZMADecompressor | bz2.BZ2Decompressor
        if kind == "xz":
            dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=LZMA_MEMLIMIT)
        elif kind == "lzma":
            dec = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=LZMA_MEMLIMIT)
        else:
            dec = bz2.BZ2Decompressor()
        chunk = dec.decompress(data, _STEP)
        while True:
            out += chunk
            _check_cap(out, cap, kind)
            if dec.eof or dec.needs_input:
                break
            chunk = dec.decompress(b"", _STEP)
        if not dec.eof:
            # FORMAT_ALONE with an unknown size ends at its end marker; the kernel's lzma has
            # one, and a stream cut short has none
            raise DecompressError(f"the {kind} stream is truncated (it ends before its end "
                                  f"marker)")
        return bytes(out)
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
        raise DecompressError(f"the {kind} stream is corrupt ({exc})") from None
    except MemoryError:
        raise DecompressError(f"the {kind} stream needs more memory than khotui allows") \
            from None


def _check_cap(out: bytearray, cap: int, kind: str) -> None:
    if len(out) > cap:
        raise DecompressError(
            f"the {kind} stream decompresses to more than {cap >> 20} MiB, more than any "
            f"kernel; khotui stopped there (a decompression bomb, or not a kernel)")


def kernel_body(data: bytes, *, cap: int = MAX_DECOMPRESSED) -> Body:
    """The body of a kernel image file's bytes: bzImage payload, raw arm64 Image or ELF,
    whole-file compressed Image, EFI zboot payload. DecompressError when it cannot be had."""
    if len(data) >= 0x206 and data[0x202:0x206] == b"HdrS":
        return _bzimage_payload(data, cap)
    if len(data) >= 0x40 and data[:2] == b"MZ" and data[4:8] == b"zimg":
        off, size = struct.unpack_from("<II", data, 8)
        named = data[0x18:0x38].split(b"\0", 1)[0].decode("ascii", "replace") or "unknown"
        if off + size > len(data) or size == 0:
            raise DecompressError(f"truncated EFI zboot image: its payload ({size} bytes at "
                                  f"0x{off:x}) runs past the end of the file ({len(data)} bytes)")
        payload = data[off:off + size]
        found: str = compression_of(payload) or named
        return Body(decompress(payload, found, cap=cap), f"zboot payload ({found})")
    if len(data) >= 0x3C and data[0x38:0x3C] == b"ARM\x64":
        return Body(data, "raw Image")
    if data[:4] == b"\x7fELF":
        return Body(data, "ELF")
    kind = compression_of(data)
    if kind is not None:
        return Body(decompress(data, kind, cap=cap), f"{kind}-compressed file")
    raise DecompressError("not a kernel image khotui can read inside (no bzImage header, arm64 "
                          "Image header, EFI zboot header, ELF header or compression magic)")


def _bzimage_payload(data: bytes, cap: int) -> Body:
    if len(data) < 0x250:
        raise DecompressError(f"truncated bzImage: {len(data)} bytes, shorter than its setup "
                              f"header")
    setup_sects = data[0x1F1] or 4
    version = struct.unpack_from("<H", data, 0x206)[0]
    if version < 0x0208:
        raise DecompressError(f"boot protocol {version >> 8}.{version & 0xff} has no "
                              f"payload_offset (2.08+)")
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    if payload_length == 0 or start + payload_length > len(data):
        raise DecompressError(
            f"truncated bzImage: its payload ({payload_length} bytes at 0x{start:x}) runs past "
            f"the end of the file ({len(data)} bytes)")
    payload = data[start:start + payload_length]
    kind = compression_of(payload)
    if kind is None:
        raise DecompressError(f"the bzImage payload at 0x{start:x} has no known compression "
                              f"magic ({payload[:4].hex()})")
    return Body(decompress(payload, kind, cap=cap), f"bzImage payload ({kind})")
