"""Kernel image and initrd inspection: what `kexec_file_load(2)` would make of a file.

Only headers are read (with `os.pread`, so an already-open descriptor keeps its offset): the load
path opens each file once, hashes and inspects it, and hands the same descriptor to the syscall,
so what was previewed is what gets loaded. Nothing here reads a FIFO or a device node: the file
type is checked with `stat`/`fstat` before any read.

Kernel formats recognised, and what Linux 7.3 does with them:

* x86 `bzImage` (`HdrS` at 0x202, also when it starts with `MZ` for its EFI stub): probed by
  `bzImage64_probe()`, arch/x86/kernel/kexec-bzimage64.c; its failures are ENOEXEC.
* arm64 `Image` (`ARM\\x64` at 0x38, usually after an `MZ` EFI stub): `image_probe()`,
  arch/arm64/kernel/kexec_image.c (failures are EINVAL there); parsed by khotui.image.arm64.
* PE/UKI (systemd-stub image with a `.linux` section), EFI zboot (`MZ` + `zimg`), ELF vmlinux,
  whole-file gzip/zstd/xz/...: no 7.3 loader accepts them (x86 has only `kexec_bzImage64_ops`,
  arm64 only `kexec_image_ops`); we say what they are and how to get the loadable image out.
"""

from __future__ import annotations

import bz2
import lzma
import os
import stat
import struct
import zlib
from dataclasses import asdict, dataclass, field
from typing import BinaryIO, Union

from khotui.errors import KhotuiError, explain_os_error, file_kind
from khotui.image.arm64 import Arm64Image, parse_arm64_image
from khotui.types import JsonDict

Source = Union[str, "os.PathLike[str]", BinaryIO, int]

# kexec_file.c: KEXEC_FILE_SIZE_MAX = min(4 GiB, SSIZE_MAX); kernel_read_file() returns EFBIG above.
KEXEC_FILE_SIZE_MAX = 4 << 30

# How much of the start of a kernel we read: every header we decode lies within it except the
# kernel_version string (at 0x200 + a u16) and the PE section table, read separately.
HEAD_BYTES = 0x1000

# arch/x86/include/uapi/asm/bootparam.h
SETUP_HDR_OFFSET = 0x1F1
LOADED_HIGH = 1 << 0
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1
XLF_EFI_HANDOVER_32 = 1 << 2
XLF_EFI_HANDOVER_64 = 1 << 3
XLF_EFI_KEXEC = 1 << 4
XLF_5LEVEL = 1 << 5
XLF_5LEVEL_ENABLED = 1 << 6
XLF_MEM_ENCRYPTION = 1 << 7
XLF_NAMES = {
    XLF_KERNEL_64: "XLF_KERNEL_64",
    XLF_CAN_BE_LOADED_ABOVE_4G: "XLF_CAN_BE_LOADED_ABOVE_4G",
    XLF_EFI_HANDOVER_32: "XLF_EFI_HANDOVER_32",
    XLF_EFI_HANDOVER_64: "XLF_EFI_HANDOVER_64",
    XLF_EFI_KEXEC: "XLF_EFI_KEXEC",
    XLF_5LEVEL: "XLF_5LEVEL",
    XLF_5LEVEL_ENABLED: "XLF_5LEVEL_ENABLED",
    XLF_MEM_ENCRYPTION: "XLF_MEM_ENCRYPTION",
}

# struct setup_header, packed, from 0x1f1 up to and including kernel_info_offset (0x268).
_SETUP_HEADER = struct.Struct("<BHIHHHHHIHIHHBBHIIIIHBBIIIBBHIIQIIQQIII")
_SETUP_FIELDS = (
    "setup_sects", "root_flags", "syssize", "ram_size", "vid_mode", "root_dev", "boot_flag",
    "jump", "header", "version", "realmode_swtch", "start_sys_seg", "kernel_version_offset",
    "type_of_loader", "loadflags", "setup_move_size", "code32_start", "ramdisk_image",
    "ramdisk_size", "bootsect_kludge", "heap_end_ptr", "ext_loader_ver", "ext_loader_type",
    "cmd_line_ptr", "initrd_addr_max", "kernel_alignment", "relocatable_kernel",
    "min_alignment", "xloadflags", "cmdline_size", "hardware_subarch",
    "hardware_subarch_data", "payload_offset", "payload_length", "setup_data", "pref_address",
    "init_size", "handover_offset", "kernel_info_offset",
)
assert len(_SETUP_FIELDS) == len(_SETUP_HEADER.unpack(bytes(_SETUP_HEADER.size)))

# Whole-file compression magics (lib/decompress.c compressed_formats[] plus the longer forms).
_COMPRESSION_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x1f\x9e", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x89LZO\x00\r\n\x1a\n", "lzo"),
    (b"\x02\x21\x4c\x18", "lz4"),   # legacy lz4 (what the kernel's unlz4 reads)
    (b"\x04\x22\x4d\x18", "lz4"),   # lz4 frame format
    (b"\x5d\x00\x00", "lzma"),
)
_DECOMPRESS_CMD = {
    "gzip": "gunzip -c FILE > Image", "zstd": "zstd -dc FILE > Image", "xz": "xz -dc FILE > Image",
    "bzip2": "bunzip2 -c FILE > Image", "lzo": "lzop -dc FILE > Image",
    "lz4": "lz4 -dc FILE > Image", "lzma": "unlzma -c FILE > Image",
}

PE_MACHINES = {0x8664: "x86_64", 0xAA64: "arm64", 0x14C: "i386", 0x5064: "riscv64",
               0x6264: "loongarch64"}
ELF_MACHINES = {62: "x86_64", 183: "arm64", 3: "i386", 243: "riscv64", 258: "loongarch64"}


@dataclass(frozen=True)
class SetupHeader:
    """The x86 boot protocol `struct setup_header` at 0x1f1 (Documentation/arch/x86/boot.rst)."""

    setup_sects: int
    root_flags: int
    syssize: int
    ram_size: int
    vid_mode: int
    root_dev: int
    boot_flag: int
    jump: int
    header: int
    version: int
    realmode_swtch: int
    start_sys_seg: int
    kernel_version_offset: int
    type_of_loader: int
    loadflags: int
    setup_move_size: int
    code32_start: int
    ramdisk_image: int
    ramdisk_size: int
    bootsect_kludge: int
    heap_end_ptr: int
    ext_loader_ver: int
    ext_loader_type: int
    cmd_line_ptr: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable_kernel: int
    min_alignment: int
    xloadflags: int
    cmdline_size: int
    hardware_subarch: int
    hardware_subarch_data: int
    payload_offset: int
    payload_length: int
    setup_data: int
    pref_address: int
    init_size: int
    handover_offset: int
    kernel_info_offset: int
    kernel_version: str | None = None

    @property
    def effective_setup_sects(self) -> int:
        """`setup_sects`, with 0 meaning 4 as in bzImage64_load()."""
        return self.setup_sects or 4

    @property
    def kern16_size(self) -> int:
        """Bytes of real-mode setup before the protected-mode kernel: (setup_sects + 1) * 512."""
        return (self.effective_setup_sects + 1) * 512

    @property
    def protocol(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF:02d}"

    @property
    def xloadflag_names(self) -> list[str]:
        return [name for bit, name in XLF_NAMES.items() if self.xloadflags & bit]

    def as_dict(self) -> JsonDict:
        data: JsonDict = asdict(self)
        data["protocol"] = self.protocol
        data["xloadflag_names"] = self.xloadflag_names
        data["effective_setup_sects"] = self.effective_setup_sects
        return data


@dataclass(frozen=True)
class PeSection:
    name: str
    offset: int          # PointerToRawData: where it is in the file
    size: int            # bytes of the section's content in the file
    virtual_size: int
    raw_size: int


@dataclass
class KernelImage:
    """What a kernel file is and whether `kexec_file_load` on its architecture accepts it."""

    name: str
    size: int
    # 'bzImage', 'arm64-Image', 'PE/UKI', 'PE', 'zboot', 'ELF vmlinux', 'gzip', ..., 'unknown'
    format: str
    arch: str | None         # 'x86_64', 'arm64', ... or None when unknown
    # what the kernel's probe and load checks would say (file alone); None: an arm64 Image whose
    # load depends on a CPU feature user space cannot read (Arm64Image.loadable)
    loadable: bool | None
    why_not: str | None = None
    errno: str | None = None     # what kexec_file_load would return: 'ENOEXEC', 'EINVAL', 'EFBIG'
    setup: SetupHeader | None = None
    arm64: Arm64Image | None = None   # when format is 'arm64-Image'
    pe_machine: str | None = None
    pe_sections: list[PeSection] = field(default_factory=list)
    linux_section: PeSection | None = None   # UKI: the embedded kernel
    linux_section_format: str | None = None  # 'bzImage', 'arm64-Image', ... of that section
    compression: str | None = None           # zboot payload or whole-file compression
    version: str | None = None               # kernel_version string, UKI .uname, ...
    signed: bool | None = None               # PE Authenticode certificate table present
    notes: list[str] = field(default_factory=list)

    def loadable_on(self, arch: str) -> tuple[bool, str | None, str | None]:
        """(loadable, errno, why) for a running kernel of architecture `arch`."""
        # x86 refuses in bzImage64_probe() (ENOEXEC); arm64 in image_probe()/image_load() (EINVAL)
        probe_errno = "EINVAL" if arch == "arm64" else "ENOEXEC"
        if not self.loadable:
            return False, "EFBIG" if self.errno == "EFBIG" else probe_errno, self.why_not
        if self.arch is not None and self.arch != arch:
            return False, probe_errno, (f"this is an {self.arch} {self.format}; the running "
                                        f"kernel is {arch} and loads only its own "
                                        f"architecture's images")
        return True, None, None

    def as_dict(self) -> JsonDict:
        arm = None if self.arm64 is None else self.arm64.as_dict()
        return {
            "name": self.name, "size": self.size, "format": self.format, "arch": self.arch,
            "loadable": self.loadable, "why_not": self.why_not, "errno": self.errno,
            "setup": None if self.setup is None else self.setup.as_dict(),
            "arm64": arm, "pe_machine": self.pe_machine,
            "pe_sections": [asdict(s) for s in self.pe_sections],
            "linux_section": None if self.linux_section is None else asdict(self.linux_section),
            "linux_section_format": self.linux_section_format,
            "compression": self.compression, "version": self.version, "signed": self.signed,
            "notes": list(self.notes),
        }


@dataclass
class InitrdInfo:
    """What an initrd is: the first member's format and what follows it, if cheaply known."""

    name: str
    size: int
    # 'cpio newc', 'cpio odc', 'gzip', 'zstd', 'xz', 'lz4', 'lzma', 'bzip2', 'lzo', 'unknown'
    format: str
    note: str | None = None
    parts: list[str] = field(default_factory=list)   # formats in file order, when more follow

    def as_dict(self) -> dict[str, str | int | list[str] | None]:
        return asdict(self)


# Memory a compressed-header peek may use: an lzma header can ask for a 4 GiB dictionary, and
# liblzma allocates the dictionary before decoding a byte.
PEEK_MEMLIMIT = 64 << 20


# --- reading ------------------------------------------------------------------------------


class _Reader:
    """A regular file opened (or borrowed) for positional reads; never reads a FIFO or device."""

    def __init__(self, source: Source, name: str | None, what: str) -> None:
        self.what = what
        self._owned_fd: int | None = None
        self._file: BinaryIO | None = None   # a borrowed file object, read by seek/read when
                                             # it has no descriptor (BytesIO)
        self._fd: int | None = None
        self._stamp: tuple[int, int, int] | None = None
        if isinstance(source, int):
            self.name = name or f"fd {source}"
            self._fd = source
        elif isinstance(source, (str, os.PathLike)):
            self.name = name or os.fspath(source)
            self._fd = self._open(os.fspath(source))
            self._owned_fd = self._fd
        else:
            self.name = name or getattr(source, "name", None) or f"<{what}>"
            if not isinstance(self.name, str):
                self.name = f"<{what}>"
            self._file = source
            try:
                self._fd = source.fileno()
            except (AttributeError, OSError, ValueError):
                self._fd = None   # in-memory file object (BytesIO): seek/read
        try:
            self.size = self._size()
        except BaseException:
            self.close()
            raise

    def _refuse(self, mode: int) -> None:
        if stat.S_ISREG(mode):
            return
        if stat.S_ISDIR(mode):
            raise KhotuiError(f"is a directory, not a {self.what} file", path=self.name,
                              fix=f"give the path of the {self.what} file itself")
        raise KhotuiError(
            f"is {file_kind(mode)}, not a regular file: khotui does not read it (it could block or "
            f"have side effects) and kexec_file_load refuses anything but a regular file (EINVAL)",
            path=self.name, fix=f"copy the {self.what} to a regular file and give that path")

    def _open(self, path: str) -> int:
        try:
            st = os.stat(path)   # follows symlinks; a loop is ELOOP here
        except OSError as exc:
            raise explain_os_error(exc, path, what=f"{self.what} file") from None
        self._refuse(st.st_mode)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            raise explain_os_error(exc, path, what=f"{self.what} file") from None
        return fd

    def _size(self) -> int:
        if self._fd is not None:
            try:
                st = os.fstat(self._fd)
            except OSError as exc:
                raise explain_os_error(exc, self.name, what=f"{self.what} file") from None
            self._refuse(st.st_mode)   # the path may have been swapped since stat()
            self._stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            return st.st_size
        assert self._file is not None   # no descriptor: a borrowed file object (__init__)
        pos = self._file.tell()
        end = self._file.seek(0, os.SEEK_END)
        self._file.seek(pos)
        return end

    def pread(self, offset: int, length: int) -> bytes:
        if length <= 0 or offset >= self.size:
            return b""
        length = min(length, self.size - offset)
        try:
            if self._fd is not None:
                chunks = []
                while length > 0:
                    chunk = os.pread(self._fd, length, offset)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    offset += len(chunk)
                    length -= len(chunk)
                return b"".join(chunks)
            assert self._file is not None   # no descriptor: a borrowed file object (__init__)
            pos = self._file.tell()
            try:
                self._file.seek(offset)
                return self._file.read(length)
            finally:
                self._file.seek(pos)
        except OSError as exc:
            raise explain_os_error(exc, self.name, what=f"{self.what} file") from None

    def check_unchanged(self) -> None:
        """Raise when the file was written while we read it: the headers may be torn."""
        if self._fd is None or self._stamp is None:
            return
        try:
            st = os.fstat(self._fd)
        except OSError as exc:
            raise explain_os_error(exc, self.name, what=f"{self.what} file") from None
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != self._stamp:
            raise KhotuiError(
                f"the {self.what} file changed while khotui read it (size {self._stamp[0]} -> "
                f"{st.st_size} bytes): something is still writing it", path=self.name,
                fix="wait until the copy, build or package install has finished, then run "
                    "khotui again")

    def close(self) -> None:
        if self._owned_fd is not None:
            os.close(self._owned_fd)
            self._owned_fd = None

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cstring(data: bytes, limit: int = 256) -> str:
    return data[:limit].split(b"\0", 1)[0].decode("ascii", errors="replace")


def _compression_of(head: bytes) -> str | None:
    for magic, name in _COMPRESSION_MAGICS:
        if head.startswith(magic):
            return name
    return None


def _peek_decompressed(kind: str, data: bytes) -> bytes:
    """The first bytes of a compressed stream, with the standard library only (best effort)."""
    try:
        if kind == "gzip" and data[:2] == b"\x1f\x8b":
            return zlib.decompressobj(wbits=31).decompress(data, 0x1000)
        if kind == "xz":
            return lzma.LZMADecompressor(memlimit=PEEK_MEMLIMIT).decompress(data, 0x1000)
        if kind == "lzma":
            return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE,
                                          memlimit=PEEK_MEMLIMIT).decompress(data, 0x1000)
        if kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(data, 0x1000)
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError):
        return b""
    return b""


def _raw_kind(head: bytes) -> str | None:
    """'bzImage' / 'arm64-Image' from raw magics, or None."""
    if len(head) >= 0x206 and head[0x202:0x206] == b"HdrS":
        return "bzImage"
    if len(head) >= 0x3C and head[0x38:0x3C] == b"ARM\x64":
        return "arm64-Image"
    return None


# --- kernels ------------------------------------------------------------------------------


def inspect_kernel(source: Source, *, name: str | None = None) -> KernelImage:
    """Identify a kernel image and decide, as the running kernel's probe would, if it loads."""
    with _Reader(source, name, "kernel") as rd:
        if rd.size == 0:
            raise KhotuiError("the kernel file is empty (0 bytes)", path=rd.name,
                              fix="check the path; an interrupted copy or a full /boot leaves empty files")
        head = rd.pread(0, HEAD_BYTES)
        image = _identify_kernel(rd, head)
        if rd.size > KEXEC_FILE_SIZE_MAX and image.loadable:
            image.loadable, image.errno = False, "EFBIG"
            image.why_not = "the file is larger than 4 GiB, the most kexec_file_load reads (EFBIG)"
        rd.check_unchanged()
        return image


def _identify_kernel(rd: _Reader, head: bytes) -> KernelImage:
    # an x86 bzImage begins with MZ too (its EFI stub): HdrS at 0x202 decides
    if len(head) >= 0x206 and head[0x202:0x206] == b"HdrS":
        return _bzimage(rd, head)
    if len(head) >= 0x3C and head[0x38:0x3C] == b"ARM\x64":
        return _arm64(rd, head)
    if head[:2] == b"MZ" and head[4:8] == b"zimg":
        return _zboot(rd, head)
    if head[:2] == b"MZ":
        return _pe(rd, head)
    if head[:4] == b"\x7fELF":
        return _elf(rd, head)
    kind = _compression_of(head)
    if kind is not None:
        return _compressed(rd, head, kind)
    return KernelImage(name=rd.name, size=rd.size, format="unknown", arch=None, loadable=False,
                       errno="ENOEXEC",
                       why_not="not a kernel image kexec_file_load knows: no bzImage 'HdrS' "
                               "header at 0x202 and no arm64 'ARM\\x64' magic at 0x38")


def _bzimage(rd: _Reader, head: bytes) -> KernelImage:
    end = SETUP_HDR_OFFSET + _SETUP_HEADER.size
    if len(head) < end:
        raise KhotuiError(
            f"truncated bzImage: the file has 'HdrS' but is only {rd.size} bytes, shorter than "
            f"its setup header (0x{end:x} bytes)", path=rd.name,
            fix="the file is cut short: copy the kernel again (e.g. from /boot or the build's "
                "arch/x86/boot/bzImage)")
    # one name per struct field (asserted at import)
    values = dict(zip(_SETUP_FIELDS, _SETUP_HEADER.unpack_from(head, SETUP_HDR_OFFSET), strict=True))
    version = None
    if values["kernel_version_offset"]:
        raw = rd.pread(0x200 + values["kernel_version_offset"], 256)
        version = _cstring(raw) or None
    hdr = SetupHeader(**values, kernel_version=version)
    image = KernelImage(name=rd.name, size=rd.size, format="bzImage", arch="x86_64",
                        loadable=True, setup=hdr, version=version, signed=pe_signed(rd, head))
    if head[:2] == b"MZ":
        image.notes.append("starts with MZ: the EFI stub; kexec_file_load uses the bzImage header")
    why = _bzimage64_probe(rd.size, hdr)
    if why is None and rd.size < hdr.kern16_size:
        # mirrors the kern16_size check at the top of bzImage64_load()
        why = (f"bzImage truncated: {rd.size} bytes, shorter than its "
               f"{hdr.effective_setup_sects} setup sectors + boot sector ({hdr.kern16_size} bytes)")
    if why is not None:
        image.loadable, image.errno, image.why_not = False, "ENOEXEC", why
    if not hdr.xloadflags & XLF_5LEVEL:
        image.notes.append("XLF_5LEVEL not set: a host running with 5-level paging refuses it "
                           "(ENOEXEC)")
    return image


def _bzimage64_probe(size: int, hdr: SetupHeader) -> str | None:
    """Why bzImage64_probe() would refuse it (ENOEXEC), or None."""
    # mirrors bzImage64_probe(), arch/x86/kernel/kexec-bzimage64.c (host-dependent checks aside)
    if size < 2 * 512:
        return "File is too short to be a bzImage (under 1024 bytes)"
    if hdr.boot_flag != 0xAA55:
        return f"No x86 boot sector present (boot_flag 0x{hdr.boot_flag:04x}, not 0xaa55)"
    if hdr.version < 0x020C:
        return (f"boot protocol {hdr.protocol}: the kernel requires at least protocol 2.12 "
                f"(Linux 3.8 or newer)")
    if not hdr.loadflags & LOADED_HIGH:
        return "zImage not a bzImage (LOADED_HIGH is not set)"
    if not hdr.xloadflags & XLF_KERNEL_64:
        return "not a bzImage64: XLF_KERNEL_64 is not set (a 32-bit kernel)"
    if not hdr.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G:
        return "XLF_CAN_BE_LOADED_ABOVE_4G is not set"
    return None


_BANNER = b"Linux version "
_BANNER_SCAN_LIMIT = 128 << 20


def _linux_banner(rd: _Reader) -> str | None:
    """The `linux_banner` string of an uncompressed image (init/version.c), e.g.
    "7.3.4 (root@vm) (gcc ...) #2 SMP ...", so the next kernel's release (and so its KHO ABI)
    is known; arm64 Images have no header field for it. Read in chunks, bounded."""
    chunk, overlap, pos = 1 << 20, 256, 0
    while pos < min(rd.size, _BANNER_SCAN_LIMIT):
        data = rd.pread(pos, chunk + overlap)
        if not data:
            break
        at = data.find(_BANNER)
        if at >= 0:
            tail = rd.pread(pos + at + len(_BANNER), 256)
            text = tail.split(b"\0", 1)[0].split(b"\n", 1)[0]
            # the banner of a release starts with its version number: skip format strings
            if text[:1].isdigit():
                return text.decode("ascii", errors="replace").strip() or None
            pos += at + len(_BANNER)
            continue
        pos += chunk
    return None


def _arm64(rd: _Reader, head: bytes) -> KernelImage:
    parsed = parse_arm64_image(head)
    image = KernelImage(name=rd.name, size=rd.size, format="arm64-Image", arch="arm64",
                        loadable=True, arm64=parsed, signed=pe_signed(rd, head),
                        version=_linux_banner(rd))
    if head[:2] == b"MZ":
        image.notes.append("starts with MZ: the EFI stub; kexec_file_load uses the Image header")
    if parsed is not None:
        image.loadable, image.why_not = parsed.loadable, parsed.why_not
        if not image.loadable:
            image.errno = "EINVAL"   # image_probe()/image_load(), arch/arm64/kernel/kexec_image.c
        return image
    # no Image found in the header: image_probe() and the image_size check of image_load()
    if len(head) < 0x40:
        raise KhotuiError(f"truncated arm64 Image: {rd.size} bytes, shorter than its 64-byte "
                          f"header", path=rd.name, fix="copy the kernel again")
    image_size = struct.unpack_from("<Q", head, 0x10)[0]
    if image_size == 0:
        image.loadable, image.errno = False, "EINVAL"
        image.why_not = "image_size is 0 in the Image header (a pre-3.17 kernel)"
    return image


def pe_signed(rd: _Reader, head: bytes) -> bool | None:
    """Whether a PE file carries an Authenticode signature (a non-empty certificate table).

    The kernel's verifier for bzImages, kexec_kernel_verify_pe_sig() → verify_pefile_signature()
    (crypto/asymmetric_keys/verify_pefile.c), reads IMAGE_DIRECTORY_ENTRY_SECURITY; no table
    means no signature, so lockdown or KEXEC_SIG_FORCE refuse the image. None: not a PE file.
    Whether the signature verifies against the kernel's keyrings only the kernel can tell."""
    if len(head) < 0x40 or head[:2] != b"MZ":
        return None
    e_lfanew = struct.unpack_from("<I", head, 0x3C)[0]
    pe = rd.pread(e_lfanew, 24 + 112 + 8 * 5)
    if len(pe) < 24 + 2 or pe[:4] != b"PE\0\0":
        return None
    magic = struct.unpack_from("<H", pe, 24)[0]
    base = {0x10B: 24 + 96, 0x20B: 24 + 112}.get(magic)   # data directories, PE32 / PE32+
    if base is None or len(pe) < base + 8 * 5:
        return None
    count = struct.unpack_from("<I", pe, base - 4)[0]
    if count <= 4:
        return False
    offset, size = struct.unpack_from("<II", pe, base + 8 * 4)
    return bool(size > 0 and offset > 0 and offset + size <= rd.size)


def _pe_sections(rd: _Reader, head: bytes) -> tuple[str | None, list[PeSection]] | None:
    if len(head) < 0x40:
        return None
    e_lfanew = struct.unpack_from("<I", head, 0x3C)[0]
    pe = rd.pread(e_lfanew, 24)
    if len(pe) < 24 or pe[:4] != b"PE\0\0":
        return None
    machine, nsections = struct.unpack_from("<HH", pe, 4)
    opt_size = struct.unpack_from("<H", pe, 20)[0]
    table = rd.pread(e_lfanew + 24 + opt_size, 40 * min(nsections, 96))
    sections = []
    for i in range(len(table) // 40):
        raw = table[i * 40:(i + 1) * 40]
        sname = raw[:8].split(b"\0", 1)[0].decode("ascii", errors="replace")
        vsize, _vaddr, rsize, roff = struct.unpack_from("<IIII", raw, 8)
        size = vsize if 0 < vsize <= rsize else rsize
        sections.append(PeSection(name=sname, offset=roff, size=size, virtual_size=vsize,
                                  raw_size=rsize))
    return PE_MACHINES.get(machine, f"0x{machine:04x}"), sections


def _pe(rd: _Reader, head: bytes) -> KernelImage:
    found = _pe_sections(rd, head)
    if found is None:
        return KernelImage(name=rd.name, size=rd.size, format="unknown", arch=None,
                           loadable=False, errno="ENOEXEC",
                           why_not="starts with MZ but has no PE header, bzImage 'HdrS' or arm64 "
                                   "magic: not a kernel kexec_file_load knows")
    machine, sections = found
    by_name = {s.name: s for s in sections}
    linux = by_name.get(".linux")
    if linux is None:
        return KernelImage(name=rd.name, size=rd.size, format="PE", arch=machine, loadable=False,
                           errno="ENOEXEC", pe_machine=machine, pe_sections=sections,
                           why_not="a PE/EFI executable without a Linux boot header or a .linux "
                                   "section: not a kernel kexec_file_load can load")
    inner = _raw_kind(rd.pread(linux.offset, 0x210))
    version = None
    if ".uname" in by_name:
        version = _cstring(rd.pread(by_name[".uname"].offset, min(by_name[".uname"].size, 256)))
    target = "bzImage" if inner == "bzImage" else "Image" if inner == "arm64-Image" else "kernel"
    why = (f"a Unified Kernel Image (PE/UKI): kexec_file_load in Linux 7.3 has no UKI loader; "
           f"its .linux section ({linux.size} bytes at file offset 0x{linux.offset:x}) is the "
           f"{target} to load")
    image = KernelImage(name=rd.name, size=rd.size, format="PE/UKI",
                        arch="x86_64" if inner == "bzImage" else "arm64" if inner == "arm64-Image"
                        else machine,
                        loadable=False, errno="ENOEXEC", why_not=why, pe_machine=machine,
                        pe_sections=sections, linux_section=linux, linux_section_format=inner,
                        version=version)
    image.notes.append(f"extract it: objcopy -O binary --only-section=.linux {rd.name} vmlinuz, "
                       f"or dd if={rd.name} of=vmlinuz bs=1M iflag=skip_bytes,count_bytes "
                       f"skip={linux.offset} count={linux.size}")
    if ".initrd" in by_name:
        s = by_name[".initrd"]
        image.notes.append(f"the UKI also carries an initrd (.initrd, {s.size} bytes at 0x{s.offset:x}) "
                           f"and possibly a .cmdline: pass them explicitly")
    return image


def _zboot(rd: _Reader, head: bytes) -> KernelImage:
    if len(head) < 0x40:
        raise KhotuiError(f"truncated EFI zboot image: {rd.size} bytes, shorter than its header",
                          path=rd.name, fix="copy the kernel again")
    payload_off, payload_size = struct.unpack_from("<II", head, 8)
    comp = _cstring(head[0x18:0x38], 32) or "unknown"
    found = _pe_sections(rd, head)
    machine = found[0] if found else None
    decompress = _DECOMPRESS_CMD.get(comp, f"{comp} -dc FILE > Image")
    decompress = decompress.replace("FILE", "payload")
    why = (f"compressed EFI zboot image ({comp} payload): not loadable by kexec_file_load on "
           f"this kernel as is: Linux 7.3 has no zboot loader (arm64 accepts only the raw Image, "
           f"kexec_image_ops; x86 only the bzImage). Decompress the payload: dd if={rd.name} "
           f"of=payload bs=1M iflag=skip_bytes,count_bytes skip={payload_off} "
           f"count={payload_size}; {decompress} — or use the build's arch/arm64/boot/Image")
    image = KernelImage(name=rd.name, size=rd.size, format="zboot",
                        arch="arm64" if machine == "arm64" else machine, loadable=False,
                        errno="EINVAL" if machine == "arm64" else "ENOEXEC", why_not=why,
                        pe_machine=machine, pe_sections=found[1] if found else [],
                        compression=comp)
    image.notes.append(f"payload: {payload_size} bytes at file offset 0x{payload_off:x}")
    return image


def _elf(rd: _Reader, head: bytes) -> KernelImage:
    if len(head) < 20:
        raise KhotuiError(f"truncated ELF file: {rd.size} bytes", path=rd.name,
                          fix="copy the kernel again")
    little = head[5] == 1
    e_type, e_machine = struct.unpack_from("<HH" if little else ">HH", head, 16)
    arch = ELF_MACHINES.get(e_machine, f"ELF machine {e_machine}")
    fmt = "ELF vmlinux" if e_type == 2 else "ELF"
    if arch == "arm64":
        hint = ("kexec_file_load takes the Image (arch/arm64/boot/Image); use the Image, or "
                "gunzip /boot/vmlinuz-<version> if it is an Image.gz")
        errno = "EINVAL"
    else:
        hint = ("kexec_file_load takes the bzImage (arch/x86/boot/bzImage); use "
                "/boot/vmlinuz-<version>")
        errno = "ENOEXEC"
    what = "an ELF vmlinux" if e_type == 2 else "an ELF file"
    return KernelImage(name=rd.name, size=rd.size, format=fmt, arch=arch, loadable=False,
                       errno=errno, why_not=f"this is {what} ({arch}): {hint}")


def _compressed(rd: _Reader, head: bytes, kind: str) -> KernelImage:
    inner = _raw_kind(_peek_decompressed(kind, rd.pread(0, 0x10000)))
    arch = "arm64" if inner == "arm64-Image" else "x86_64" if inner == "bzImage" else None
    inside = {"arm64-Image": " (an arm64 Image inside)",
              "bzImage": " (a bzImage inside)"}.get(inner or "", "")
    cmd = _DECOMPRESS_CMD[kind].replace("FILE", rd.name)
    verb = {"gzip": "gunzip", "bzip2": "bunzip2"}.get(kind, f"decompress ({kind} -d)")
    why = (f"{kind}-compressed image{inside}: kexec_file_load does not decompress; {verb} it "
           f"first: {cmd}")
    return KernelImage(name=rd.name, size=rd.size, format=kind, arch=arch, loadable=False,
                       errno="EINVAL" if arch == "arm64" else "ENOEXEC", why_not=why,
                       compression=kind)


# --- initrds ------------------------------------------------------------------------------

_CPIO_NEWC = (b"070701", b"070702")
_CPIO_ODC = b"070707"
_CPIO_HEADER = 110
_MAX_CPIO_ENTRIES = 1024    # enough for an early microcode/firmware cpio; then we stop looking
_MAX_ZERO_SCAN = 1 << 16


def inspect_initrd(source: Source, *, name: str | None = None) -> InitrdInfo:
    """Identify an initrd's first member and, for an uncompressed cpio, what follows it."""
    with _Reader(source, name, "initrd") as rd:
        if rd.size == 0:
            raise KhotuiError("the initrd file is empty (0 bytes)", path=rd.name,
                              fix="regenerate it (update-initramfs -u / dracut -f), or load "
                                  "without an initrd (KEXEC_FILE_NO_INITRAMFS)")
        head = rd.pread(0, 16)
        fmt = _initrd_format(head)
        info = InitrdInfo(name=rd.name, size=rd.size, format=fmt)
        if fmt == "cpio newc":
            _follow_cpio(rd, info)
        elif fmt == "cpio odc":
            info.note = ("old portable (odc) cpio: the kernel's initramfs unpacker rejects it "
                         "('incorrect cpio method used: use -H newc option'); rebuild with "
                         "cpio -H newc")
        elif fmt == "unknown":
            info.note = ("neither a newc cpio nor a compression format the kernel's initramfs "
                         "unpacker knows; the new kernel would not unpack it")
        if rd.size > KEXEC_FILE_SIZE_MAX:
            info.note = ((info.note + "; ") if info.note else "") + \
                "larger than 4 GiB: kexec_file_load refuses it (EFBIG)"
        rd.check_unchanged()
        return info


def _initrd_format(head: bytes) -> str:
    if head[:6] in _CPIO_NEWC:
        return "cpio newc"
    if head[:6] == _CPIO_ODC:
        return "cpio odc"
    kind = _compression_of(head)
    return kind or "unknown"


def _follow_cpio(rd: _Reader, info: InitrdInfo) -> None:
    """Walk newc headers to TRAILER!!!, skip the zero padding, and name what follows."""
    offset = 0
    for _ in range(_MAX_CPIO_ENTRIES):
        hdr = rd.pread(offset, _CPIO_HEADER)
        if len(hdr) < _CPIO_HEADER:
            info.note = f"the cpio archive is cut short at offset {offset}"
            return
        if hdr[:6] not in _CPIO_NEWC:
            info.note = f"bad cpio header at offset {offset}"
            return
        filesize = _cpio_hex(hdr[54:62])
        namesize = _cpio_hex(hdr[94:102])
        if filesize is None or namesize is None:
            info.note = f"bad cpio header at offset {offset}"
            return
        name = rd.pread(offset + _CPIO_HEADER, min(namesize, 16))
        offset = _align4(offset + _CPIO_HEADER + namesize)
        offset = _align4(offset + filesize)
        if name.startswith(b"TRAILER!!!"):
            break
    else:
        return   # a long archive: too many entries to follow cheaply
    # zero padding between members (the kernel skips it in 4-byte steps)
    scanned = 0
    while offset < rd.size and scanned < _MAX_ZERO_SCAN:
        block = rd.pread(offset, 4096)
        stripped = block.lstrip(b"\0")
        if stripped:
            offset += len(block) - len(stripped)
            break
        offset += len(block)
        scanned += len(block)
    else:
        return
    nxt = _initrd_format(rd.pread(offset, 16))
    info.parts = ["cpio newc", nxt]
    info.note = (f"a concatenation: cpio newc (likely early microcode/firmware) then {nxt} at "
                 f"offset {offset}")


def _cpio_hex(field: bytes) -> int | None:
    """An 8-digit newc header field; int(..., 16) alone would take ' -1' or '+1_0'."""
    if len(field) != 8 or field.strip(b"0123456789abcdefABCDEF"):
        return None
    return int(field, 16)


def _align4(value: int) -> int:
    return (value + 3) & ~3
