"""The arm64 Image header, and what kexec_file_load (Linux 7.3) accepts.

Real first: the arm64 build of the KHO kernel in shared/vm/arm64; then synthetic headers for
each way image_probe()/image_load() say no, and for Image.gz and EFI zboot.
"""

from __future__ import annotations

import gzip
import struct

import pytest

from khotui.image.arm64 import LINUX_PE_MAGIC, Arm64Running, parse_arm64_image, probe_arm64_image


@pytest.fixture(scope="module")
def real_image(tmp_path_factory) -> bytes:
    from tests.conftest import VM
    packed = VM / "arm64" / "Image-kho-7.3.4-arm64.gz"
    if not packed.is_file():
        pytest.skip(f"{packed} is missing")
    image = tmp_path_factory.mktemp("arm64") / "Image"
    image.write_bytes(gzip.decompress(packed.read_bytes()))
    return image.read_bytes()


def header(*, text_offset=0, image_size=0x19B0000, flags=0xA, magic=b"ARM\x64", mz=True,
           size=64) -> bytes:
    """A 64-byte struct arm64_image_header (arch/arm64/include/asm/image.h)."""
    code0 = 0xFA405A4D if mz else 0x14000000          # 'MZ@\xfa' (EFI stub) or a branch
    data = struct.pack("<IIQQQQQQ4sI", code0, 0x14515B3B, text_offset, image_size, flags,
                       0, 0, 0, magic, 0x40)
    return (data + bytes(4096))[:size] if size > 64 else data[:size]


def test_real_image_header(real_image):
    img = parse_arm64_image(real_image)
    assert img is not None
    assert img.kind == "image"
    assert img.efi_stub                       # begins with 'MZ': still an Image, not a UKI
    assert real_image[:2] == b"MZ" and real_image[0x38:0x3C] == b"ARM\x64"
    assert img.file_size == 0x18F6A00          # = kernel_size in the capture's kernel.log
    assert img.text_offset == 0
    assert img.image_size == 0x19B0000        # the kernel segment's memsz in the capture
    assert img.flags == 0xA
    assert img.endianness == "little"
    assert img.page_size == 4096 and img.page_size_text == "4 KiB"
    assert img.phys_base_anywhere is True
    assert img.pe_offset == 0x40
    assert img.loadable is True and img.why_not is None
    assert img.as_dict()["page_size"] == "4 KiB"


def test_real_image_gz_is_recognised_but_not_loadable():
    from tests.conftest import VM
    packed = VM / "arm64" / "Image-kho-7.3.4-arm64.gz"
    if not packed.is_file():
        pytest.skip(f"{packed} is missing")
    img = parse_arm64_image(packed.read_bytes())
    assert img is not None and img.kind == "image.gz"
    assert img.loadable is False
    assert "uncompressed Image" in img.why_not and "EINVAL" in img.why_not
    assert "gunzip" in img.fix
    assert img.inner is not None
    assert (img.inner.image_size, img.inner.text_offset, img.inner.page_size) == \
        (0x19B0000, 0, 4096)


def test_running_config_of_the_capture(shared):
    config = gzip.decompress(
        (shared / "kho/two-nodes-arm64/sysroot/proc/config.gz").read_bytes()).decode()
    running = Arm64Running.from_config(config)
    assert running.page_size == 4096 and running.big_endian is False


def test_x86_bzimage_is_not_an_arm64_image(shared):
    bz = shared / "vm" / "bzImage-kho-7.3.4"
    if not bz.is_file():
        pytest.skip(f"{bz} is missing")
    data = bz.read_bytes()[:1 << 16]
    assert data[:2] == b"MZ"                  # also an EFI stub, but no ARM\x64 magic
    assert parse_arm64_image(data) is None
    assert "ARM\\x64" in probe_arm64_image(data).why_not


def test_truncated_before_the_magic():
    data = header()[:30]
    assert parse_arm64_image(data) is None
    img = probe_arm64_image(data)
    assert img.kind == "not-image" and img.loadable is False
    assert "30 bytes" in img.why_not and "64-byte" in img.why_not


def test_truncated_after_the_magic():
    data = header(size=0x3C)                 # magic present, res5 missing: image_probe() says no
    img = parse_arm64_image(data)
    assert img is not None and img.kind == "image"
    assert img.loadable is False
    assert "truncated" in img.why_not and "EINVAL" in img.why_not


def test_wrong_magic():
    data = header(magic=b"ARM\x65", size=4096)
    assert parse_arm64_image(data) is None
    img = probe_arm64_image(data)
    assert img.loadable is False
    assert "0x38" in img.why_not and "EINVAL" in img.why_not
    assert "Image" in img.fix


def test_image_size_zero():
    img = parse_arm64_image(header(image_size=0))
    assert img.loadable is False
    assert "image_size is 0" in img.why_not and "3.17" in img.why_not


def test_big_endian_depends_on_mixed_endian_cpus():
    data = header(flags=0xA | 1)
    img = parse_arm64_image(data)
    assert img.endianness == "big"
    # the kernel accepts it only when system_supports_mixed_endian(): not visible to user space
    assert img.loadable is None
    assert "big-endian" in img.why_not and "mixed endianness" in img.why_not
    assert "little-endian" in img.fix
    no = parse_arm64_image(data, running=Arm64Running(mixed_endian=False))
    assert no.loadable is False and "EINVAL" in no.why_not
    yes = parse_arm64_image(data, running=Arm64Running(mixed_endian=True))
    assert yes.loadable is True


def test_page_size_mismatch():
    data = header(flags=(2 << 1) | 8)          # 16K pages
    img = parse_arm64_image(data)
    assert img.page_size == 16384 and img.page_size_text == "16 KiB"
    assert img.loadable is None                # TGran16 support is not visible to user space
    assert "16 KiB pages" in img.why_not and "4 KiB" in img.why_not
    assert "CONFIG_ARM64_4K_PAGES" in img.fix
    no = parse_arm64_image(data, running=Arm64Running(granules=frozenset({4096, 65536})))
    assert no.loadable is False and "EINVAL" in no.why_not
    # same page size as the running kernel: always fine
    assert parse_arm64_image(data, running=Arm64Running(page_size=16384)).loadable is True


def test_page_size_unspecified_is_not_checked():
    img = parse_arm64_image(header(flags=0))
    assert img.page_size is None and img.page_size_text == "unspecified"
    assert img.loadable is True


def test_synthetic_image_gz():
    img = parse_arm64_image(gzip.compress(header(size=4096)))
    assert img.kind == "image.gz" and img.compression == "gzip"
    assert img.loadable is False and "gunzip" in img.fix
    assert img.inner.image_size == 0x19B0000


def test_gzip_of_something_else_is_not_arm64():
    assert parse_arm64_image(gzip.compress(b"hello" * 100)) is None


def zboot(payload: bytes, comp=b"gzip") -> bytes:
    """An EFI zboot header (drivers/firmware/efi/libstub/zboot-header.S) around `payload`."""
    head = bytearray(0x200)
    head[0:2] = b"MZ"
    head[4:8] = b"zimg"
    struct.pack_into("<IIII", head, 8, len(head), len(payload), 0, 0)
    head[0x18:0x18 + len(comp) + 1] = comp + b"\0"
    struct.pack_into("<II", head, 0x38, LINUX_PE_MAGIC, 0x40)
    return bytes(head) + payload


def test_zboot_is_not_loadable_and_says_how_to_extract():
    data = zboot(gzip.compress(header(size=4096)))
    img = parse_arm64_image(data)
    assert img is not None and img.kind == "zboot"
    assert img.efi_stub and img.compression == "gzip"
    assert img.loadable is False
    assert "zboot" in img.why_not and "EINVAL" in img.why_not
    assert f"skip={0x200}" in img.fix and "gunzip" in img.fix
    assert img.inner is not None and img.inner.image_size == 0x19B0000


def test_zboot_with_zstd_payload():
    img = parse_arm64_image(zboot(b"\x28\xb5\x2f\xfd" + bytes(64), comp=b"zstd22"))
    assert img.kind == "zboot" and img.compression == "zstd22"
    assert img.inner is None and "unzstd" in img.fix
