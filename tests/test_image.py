"""Kernel and initrd inspection: the real bzImage first, then synthetic files of each kind."""

from __future__ import annotations

import gzip
import io
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from khotui.errors import KhotuiError
from khotui.image.inspect import inspect_initrd, inspect_kernel
from tests.conftest import CAPTURES, VM

BZIMAGE = VM / "bzImage-kho-7.3.4"
ARM64_GZ = VM / "arm64" / "Image-kho-7.3.4-arm64.gz"


@pytest.fixture(scope="module")
def bz_bytes() -> bytes:
    if not BZIMAGE.is_file():
        pytest.skip(f"{BZIMAGE} is missing")
    return BZIMAGE.read_bytes()


@pytest.fixture
def no_hang():
    """Fail instead of hanging if something blocks (a FIFO read)."""
    def _alarm(*_):
        raise TimeoutError("inspection blocked")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# --- the real bzImage ----------------------------------------------------------------------


def test_real_bzimage_setup_header(bz_bytes):
    k = inspect_kernel(BZIMAGE)
    assert (k.format, k.arch, k.loadable, k.why_not, k.errno) == \
           ("bzImage", "x86_64", True, None, None)
    assert k.size == len(bz_bytes) == 10048512
    h = k.setup
    assert h.version == 0x20F and h.protocol == "2.15"
    assert h.setup_sects == 39 and h.kern16_size == 40 * 512
    assert h.init_size == 0x2048000            # the memsz every capture logs for the kernel
    assert h.kernel_alignment == 0x200000
    assert h.pref_address == 0x1000000
    assert h.relocatable_kernel == 1
    assert h.xloadflags == 0x7F
    assert {"XLF_KERNEL_64", "XLF_CAN_BE_LOADED_ABOVE_4G", "XLF_5LEVEL"} <= set(h.xloadflag_names)
    assert h.cmdline_size == 2047
    assert h.boot_flag == 0xAA55 and h.header == 0x53726448   # "HdrS"
    assert h.kernel_version.startswith("7.3.4 (root@vm)")
    assert h.handover_offset == 0x98CBD0
    # the kernel segment's bufsz in every capture log: file size less the real-mode part
    assert k.size - h.kern16_size == 0x990400
    assert any("MZ" in n for n in k.notes)     # EFI stub, still a bzImage


def test_open_file_and_fd_keep_their_offset(bz_bytes):
    with open(BZIMAGE, "rb") as f:
        f.seek(123)
        k = inspect_kernel(f, name="vmlinuz")
        assert f.tell() == 123
        assert k.name == "vmlinuz" and k.format == "bzImage"
        fd = f.fileno()
        assert inspect_kernel(fd, name="fd").setup.init_size == 0x2048000
        assert os.lseek(fd, 0, os.SEEK_CUR) == 123


def test_in_memory_file(bz_bytes):
    k = inspect_kernel(io.BytesIO(bz_bytes[:0x8000] + bytes(0x10000)), name="mem")
    assert k.format == "bzImage" and k.loadable


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


@pytest.mark.parametrize("offset,fmt,value,why", [
    (0x206, "<H", 0x020B, "protocol 2.12"),
    (0x236, "<H", 0x7F & ~0x2, "XLF_CAN_BE_LOADED_ABOVE_4G"),
    (0x236, "<H", 0x7F & ~0x1, "XLF_KERNEL_64"),
    (0x211, "<B", 0, "zImage"),
    (0x1FE, "<H", 0, "boot sector"),
])
def test_bzimage64_probe_refusals_are_enoexec(bz_bytes, tmp_path, offset, fmt, value, why):
    path = tmp_path / "bzImage"
    path.write_bytes(_patched(bz_bytes[:0x10000], offset, fmt, value))
    k = inspect_kernel(path)
    assert (k.format, k.loadable, k.errno) == ("bzImage", False, "ENOEXEC")
    assert why in k.why_not
    assert k.loadable_on("x86_64")[:2] == (False, "ENOEXEC")


def test_bzimage_truncated_mirrors_the_kernel(bz_bytes, tmp_path):
    path = tmp_path / "cut"
    path.write_bytes(bz_bytes[:30 * 512])       # header intact, setup sectors cut
    k = inspect_kernel(path)
    assert not k.loadable and "bzImage truncated" in k.why_not and k.errno == "ENOEXEC"


def test_truncated_header_is_an_error(bz_bytes, tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(bz_bytes[:0x210])
    with pytest.raises(KhotuiError) as exc:
        inspect_kernel(path)
    assert exc.value.path == str(path) and "truncated" in exc.value.message and exc.value.fix


# --- arm64 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arm64_gz() -> bytes:
    if not ARM64_GZ.is_file():
        pytest.skip(f"{ARM64_GZ} is missing")
    return ARM64_GZ.read_bytes()


def test_arm64_image_gz_says_gunzip_first(arm64_gz):
    k = inspect_kernel(ARM64_GZ)
    assert (k.format, k.arch, k.loadable) == ("gzip", "arm64", False)
    assert "gunzip" in k.why_not and "arm64 Image" in k.why_not
    assert k.loadable_on("arm64")[1] == "EINVAL"
    assert k.loadable_on("x86_64")[1] == "ENOEXEC"


def test_arm64_image_with_mz_is_an_arm64_image(arm64_gz, tmp_path):
    d = gzip.GzipFile(fileobj=io.BytesIO(arm64_gz))
    head = d.read(1 << 20)
    assert head[:2] == b"MZ"
    path = tmp_path / "Image"
    path.write_bytes(head)
    k = inspect_kernel(path)
    assert (k.format, k.arch) == ("arm64-Image", "arm64")
    assert k.loadable_on("arm64")[0] is True
    ok, errno, why = k.loadable_on("x86_64")
    assert (ok, errno) == (False, "ENOEXEC") and "arm64" in why


# --- synthetic kernels ---------------------------------------------------------------------


def elf_header(machine: int = 62, e_type: int = 2) -> bytes:
    return (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", e_type, machine)
            + bytes(64 - 20))


def test_elf_vmlinux(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(elf_header() + bytes(4096))
    k = inspect_kernel(path)
    assert (k.format, k.arch, k.loadable, k.errno) == ("ELF vmlinux", "x86_64", False, "ENOEXEC")
    assert "arch/x86/boot/bzImage" in k.why_not and "/boot/vmlinuz-" in k.why_not


def pe_file(sections: list[tuple[bytes, bytes]], machine: int = 0x8664,
            dos_extra: bytes = b"") -> bytes:
    """An MZ/PE file with the given (name, content) sections, content at 0x1000 steps."""
    e_lfanew = 0x80
    dos = bytearray(b"MZ" + bytes(0x3A) + struct.pack("<I", e_lfanew))
    dos[2:2 + len(dos_extra)] = dos_extra
    dos += bytes(e_lfanew - len(dos))
    opt_size = 0xF0
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", machine, len(sections), 0, 0, 0, opt_size, 0x206)
    table = b""
    offset = 0x1000
    body = b""
    for name, content in sections:
        raw = (len(content) + 0x1FF) // 0x200 * 0x200
        table += struct.pack("<8sIIIIIIHHI", name, len(content), offset, raw, offset, 0, 0, 0, 0, 0)
        body += content + bytes(raw - len(content))
        body += bytes((0x1000 - len(body) % 0x1000) % 0x1000)
        offset = 0x1000 + len(body)
    head = bytes(dos) + coff + bytes(opt_size) + table
    return head + bytes(0x1000 - len(head)) + body


def test_uki_points_at_its_linux_section(bz_bytes, tmp_path):
    linux = bz_bytes[:0x3000]
    path = tmp_path / "linux.efi"
    path.write_bytes(pe_file([(b".osrel", b"ID=test\n"), (b".uname", b"7.3.4\0"),
                              (b".linux", linux), (b".initrd", b"070701")]))
    k = inspect_kernel(path)
    assert (k.format, k.loadable, k.arch) == ("PE/UKI", False, "x86_64")
    assert k.linux_section is not None and k.linux_section.size == len(linux)
    assert k.linux_section_format == "bzImage" and k.version == "7.3.4"
    assert f"0x{k.linux_section.offset:x}" in k.why_not and "bzImage" in k.why_not
    with open(path, "rb") as f:
        f.seek(k.linux_section.offset)
        assert f.read(0x210)[0x202:0x206] == b"HdrS"
    assert any("objcopy" in n for n in k.notes)


def test_plain_pe_without_linux_section(tmp_path):
    path = tmp_path / "app.efi"
    path.write_bytes(pe_file([(b".text", b"\xc3" * 16)]))
    k = inspect_kernel(path)
    assert (k.format, k.loadable) == ("PE", False)


def test_zboot(tmp_path):
    payload = gzip.compress(b"x" * 1000)
    hdr = bytearray(pe_file([(b".text", b"\xc3" * 16)], machine=0xAA64))
    hdr[4:8] = b"zimg"
    struct.pack_into("<II", hdr, 8, len(hdr), len(payload))
    hdr[0x18:0x1D] = b"gzip\0"
    path = tmp_path / "vmlinuz.efi"
    path.write_bytes(bytes(hdr) + payload)
    k = inspect_kernel(path)
    assert (k.format, k.arch, k.compression, k.loadable) == ("zboot", "arm64", "gzip", False)
    assert "compressed EFI zboot image" in k.why_not and "no zboot loader" in k.why_not
    assert f"skip={len(hdr)}" in k.why_not


def test_gzip_unknown_inside(tmp_path):
    path = tmp_path / "blob.gz"
    path.write_bytes(gzip.compress(b"hello" * 1000))
    k = inspect_kernel(path)
    assert (k.format, k.loadable) == ("gzip", False) and "gunzip it first" in k.why_not


def test_unknown(tmp_path):
    path = tmp_path / "text"
    path.write_bytes(b"not a kernel\n")
    k = inspect_kernel(path)
    assert (k.format, k.loadable, k.errno) == ("unknown", False, "ENOEXEC")


# --- files that are not files --------------------------------------------------------------


def test_zero_length(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with pytest.raises(KhotuiError, match="empty") as exc:
        inspect_kernel(path)
    assert exc.value.path == str(path) and exc.value.fix
    with pytest.raises(KhotuiError, match="empty"):
        inspect_initrd(path)


def test_directory(tmp_path):
    with pytest.raises(KhotuiError, match="directory") as exc:
        inspect_kernel(tmp_path)
    assert exc.value.path == str(tmp_path)


def test_fifo_is_refused_without_blocking(tmp_path, no_hang):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(KhotuiError, match="FIFO") as exc:
        inspect_kernel(fifo)
    assert exc.value.path == str(fifo) and exc.value.fix
    with pytest.raises(KhotuiError, match="FIFO"):
        inspect_initrd(fifo)
    # an already-open FIFO descriptor is refused too, before any read
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(KhotuiError, match="FIFO"):
            inspect_initrd(fd, name="initrd fd")
    finally:
        os.close(fd)


def test_device_node(no_hang):
    with pytest.raises(KhotuiError, match="device node"):
        inspect_kernel("/dev/null")


def test_symlink_loop(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(KhotuiError, match="symbolic link loop") as exc:
        inspect_kernel(a)
    assert exc.value.path == str(a)


def test_missing_file(tmp_path):
    with pytest.raises(KhotuiError, match="no such"):
        inspect_initrd(tmp_path / "nope")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"x" * 100)
    path.chmod(0)
    with pytest.raises(KhotuiError, match="permission denied"):
        inspect_kernel(path)


# --- initrds -------------------------------------------------------------------------------


def make_initrd(size: int, tmp: Path) -> Path:
    out = tmp / f"initrd-{size}"
    subprocess.run([sys.executable, str(CAPTURES / "make-initrd"), str(size), str(out)],
                   check=True)
    return out


def test_capture_style_initrd(tmp_path):
    if not (CAPTURES / "make-initrd").is_file():
        pytest.skip("make-initrd is missing")
    info = inspect_initrd(make_initrd(8388608, tmp_path))
    assert (info.size, info.format, info.parts) == (8388608, "cpio newc", [])


def newc(name: bytes, data: bytes) -> bytes:
    fields = [1, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    out = b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    out += bytes(-len(out) % 4) + data
    return out + bytes(-len(out) % 4)


def test_microcode_then_compressed(tmp_path):
    early = newc(b"kernel/x86/microcode/GenuineIntel.bin", b"\x01" * 1000) + newc(b"TRAILER!!!", b"")
    early += bytes(512 - len(early) % 512)
    path = tmp_path / "initrd.img"
    path.write_bytes(early + b"\x28\xb5\x2f\xfd" + bytes(100))
    info = inspect_initrd(path)
    assert info.format == "cpio newc" and info.parts == ["cpio newc", "zstd"]
    assert "concatenation" in info.note and str(len(early)) in info.note


@pytest.mark.parametrize("head,fmt", [
    (gzip.compress(b"x"), "gzip"),
    (b"\x28\xb5\x2f\xfd" + bytes(8), "zstd"),
    (b"\xfd7zXZ\x00" + bytes(8), "xz"),
    (b"\x02\x21\x4c\x18" + bytes(8), "lz4"),
    (b"\x5d\x00\x00\x80\x00" + bytes(8), "lzma"),
    (b"BZh91AY&SY" + bytes(8), "bzip2"),
    (b"\x89LZO\x00\r\n\x1a\n" + bytes(8), "lzo"),
    (b"070707" + bytes(100), "cpio odc"),
    (b"plain text", "unknown"),
])
def test_initrd_formats(tmp_path, head, fmt):
    path = tmp_path / "initrd"
    path.write_bytes(head)
    info = inspect_initrd(path)
    assert info.format == fmt and info.size == len(head)
    if fmt == "cpio odc":
        assert "-H newc" in info.note


def test_unreadable_descriptor(tmp_path):
    path = tmp_path / "wronly"
    path.write_bytes(b"x" * 2000)
    fd = os.open(path, os.O_WRONLY)
    try:
        with pytest.raises(KhotuiError, match="cannot read") as exc:
            inspect_kernel(fd, name=str(path))
        assert exc.value.path == str(path)
    finally:
        os.close(fd)
