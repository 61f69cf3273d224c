"""The running kernel's purgatory and the next kernel's KHO ABI, read from real kernel images.

Real: bzImage-kho-7.3.4 (the running kernel of every x86 capture, whose kernel log shows the
purgatory segment bufsz 0x4000 memsz 0x5000) and the arm64 Image.gz of the same release.
Synthetic (built here, marked so): bzImages around a chosen body, a corrupt or truncated
payload, a zstd payload, a decompression bomb, a kcore/kallsyms pair.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import struct
from pathlib import Path

import pytest

from khotui.host.kernellog import parse_kernel_log
from khotui.host.running_image import (
    PURGATORY_RECORD,
    Tried,
    exact_purgatory,
    read_kcore_purgatory,
    running_purgatory,
)
from khotui.host.sysroot import Sysroot
from khotui.image.decompress import DecompressError, decompress, kernel_body
from khotui.image.kho_abi import kho_compatibles, read_next_abi
from khotui.image.purgatory import (
    PurgatoryError,
    find_purgatory,
    purgatory_layout,
    read_image_purgatory,
)
from khotui.plan.checks import CheckContext, check_next_abi
from khotui.types import FAIL, OK, WARN
from tests.conftest import CAPTURES, VM
from tests.fixtures.trees import copy_tree

BZIMAGE = VM / "bzImage-kho-7.3.4"
ARM64_GZ = VM / "arm64" / "Image-kho-7.3.4-arm64.gz"
pytestmark = pytest.mark.skipif(not BZIMAGE.exists(), reason=f"{BZIMAGE} is missing")


@pytest.fixture(scope="module")
def real() -> bytes:
    return BZIMAGE.read_bytes()


@pytest.fixture(scope="module")
def real_purgatory(real) -> bytes:
    found = find_purgatory(kernel_body(real).data)
    assert found is not None
    return found.elf


def logged_purgatory() -> tuple[int, int]:
    """The purgatory segment the kernel logged in the two-nodes capture."""
    load = parse_kernel_log((CAPTURES / "two-nodes/load/kernel.log").read_text())
    mem = load.loaded["purgatory"].mem
    seg = next(s for s in load.segments if s.mem == mem)
    return seg.bufsz, seg.memsz


# --- the reader on the real image -------------------------------------------------------


def test_real_bzimage_purgatory_is_what_the_kernel_logged(real):
    image = read_image_purgatory(real)
    assert image.how == "bzImage payload (gzip)"
    assert image.found is not None and image.found.size_confirmed
    lay = image.layout
    assert lay is not None
    assert (lay.bufsz, lay.memsz) == logged_purgatory() == (0x4000, 0x5000)
    assert lay.buf_align == 0x1000
    names = [s.name for s in lay.sections]
    assert ".text" in names and ".bss" in names
    bss = next(s for s in lay.sections if s.name == ".bss")
    assert bss.nobits and bss.offset == lay.bufsz      # bss lands after the loaded bytes
    # the banner the running kernel prints in /proc/version
    version = (CAPTURES / "two-nodes/sysroot/proc/version").read_text().strip()
    assert f"Linux version {image.banners[-1]}" == version


def test_layout_follows_kexec_purgatory_setup_kbuf(real_purgatory):
    """A section's alignment is honoured the kernel's way: bufsz is ALIGNed to the bss's."""
    elf = bytearray(real_purgatory)
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shnum, = struct.unpack_from("<H", elf, 0x3C)
    for i in range(shnum):
        at = shoff + i * 64
        sh_type, = struct.unpack_from("<I", elf, at + 4)
        if sh_type == 8:                                  # .bss: make it 0x3000, align 0x2000
            struct.pack_into("<Q", elf, at + 32, 0x3000)
            struct.pack_into("<Q", elf, at + 48, 0x2000)
    lay = purgatory_layout(bytes(elf))
    assert lay.bufsz == 0x4000 and lay.memsz == 0x7000 and lay.buf_align == 0x2000


def test_not_a_purgatory_is_refused(real_purgatory):
    with pytest.raises(PurgatoryError):
        purgatory_layout(real_purgatory[:100])
    et_exec = bytearray(real_purgatory)
    struct.pack_into("<H", et_exec, 16, 2)
    with pytest.raises(PurgatoryError, match="not ET_REL"):
        purgatory_layout(bytes(et_exec))


# --- synthetic images (built here) ------------------------------------------------------


def synthetic_bzimage(real: bytes, payload: bytes) -> bytes:
    """SYNTHETIC: the real setup code and header, with `payload` as the compressed kernel."""
    setup = ((real[0x1F1] or 4) + 1) * 512
    head = bytearray(real[:setup])
    struct.pack_into("<II", head, 0x248, 0, len(payload))
    return bytes(head) + payload


def body_with(*parts: bytes) -> bytes:
    return b"\0" * 64 + b"\0".join(parts) + b"\0" * 64


@pytest.mark.parametrize("kind,compress", [
    ("xz", lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)),
    ("lzma", lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE)),
    ("bzip2", bz2.compress),
])
def test_every_stdlib_payload_format_is_read(real, real_purgatory, kind, compress):
    body = body_with(b"Linux version 9.9.9 (x@y) (cc) #1", real_purgatory,
                     struct.pack("<Q", len(real_purgatory)))
    image = read_image_purgatory(synthetic_bzimage(real, compress(body) + b"\x10\x00\x00\x00"))
    assert image.how == f"bzImage payload ({kind})"
    assert image.layout is not None and image.layout.memsz == 0x5000


def test_truncated_corrupt_zstd_and_bomb_are_reasons_not_crashes(real):
    payload = gzip.compress(b"x" * 100_000)
    with pytest.raises(DecompressError, match="truncated bzImage"):
        kernel_body(synthetic_bzimage(real, payload)[:-100])
    corrupt = bytearray(payload)
    corrupt[20:40] = b"\xff" * 20
    with pytest.raises(DecompressError, match="corrupt"):
        kernel_body(synthetic_bzimage(real, bytes(corrupt)))
    with pytest.raises(DecompressError, match="truncated"):
        decompress(payload[: len(payload) // 2], "gzip")
    with pytest.raises(DecompressError, match="no zstd decompressor"):
        kernel_body(synthetic_bzimage(real, b"\x28\xb5\x2f\xfd" + b"\0" * 64))
    bomb = gzip.compress(b"\0" * (8 << 20))
    with pytest.raises(DecompressError, match="more than 1 MiB"):
        decompress(bomb, "gzip", cap=1 << 20)
    bomb_xz = lzma.compress(b"\0" * (8 << 20))
    with pytest.raises(DecompressError, match="more than 1 MiB"):
        decompress(bomb_xz, "xz", cap=1 << 20)


# --- the host: image, record, kcore, default --------------------------------------------


def capture_root(tmp_path: Path) -> Path:
    return copy_tree(CAPTURES / "two-nodes" / "sysroot", tmp_path / "root", writable=True)


def test_running_image_is_read_and_verified(tmp_path):
    root = capture_root(tmp_path)
    (root / "usr/lib/modules/7.3.4").mkdir(parents=True)
    shutil.copyfile(BZIMAGE, root / "usr/lib/modules/7.3.4/vmlinuz")
    pg = running_purgatory(Sysroot(root), lambda: None)
    assert pg.exact and (pg.bufsz, pg.memsz, pg.align) == (0x4000, 0x5000, 0x1000)
    assert "usr/lib/modules/7.3.4/vmlinuz" in pg.source


def test_image_of_another_build_is_not_used(tmp_path):
    """Same release, other build: its banner differs from /proc/version, so it is not used."""
    root = capture_root(tmp_path)
    (root / "boot").mkdir()
    shutil.copyfile(BZIMAGE, root / "boot/vmlinuz-7.3.4")
    version = root / "proc/version"
    version.write_text(version.read_text().replace("#2 SMP", "#3 SMP"))
    pg = running_purgatory(Sysroot(root), lambda: None)
    assert not pg.exact
    assert "is not the running kernel" in pg.source and "boot/vmlinuz-7.3.4" in pg.source


def test_default_names_what_was_tried_and_how_to_provide_it(tmp_path):
    pg = running_purgatory(Sysroot(capture_root(tmp_path)), lambda: None)
    assert not pg.exact and (pg.bufsz, pg.memsz) == (0x4000, 0x5000)
    assert "7.3.4 test build" in pg.source and "/boot/vmlinuz-7.3.4" in pg.source
    assert "khotui snapshot" in pg.source


def test_record_is_read_and_a_bad_record_is_named(tmp_path, real_purgatory):
    root = capture_root(tmp_path)
    (root / PURGATORY_RECORD.lstrip("/")).write_bytes(real_purgatory)
    pg = running_purgatory(Sysroot(root), lambda: None)
    assert pg.exact and pg.memsz == 0x5000 and "khotui-purgatory.ro" in pg.source
    (root / PURGATORY_RECORD.lstrip("/")).write_bytes(b"garbage")
    tried = Tried()
    assert exact_purgatory(Sysroot(root), tried) is None
    assert any("khotui-purgatory.ro is not a purgatory ELF" in n for n in tried.notes)


def synthetic_kcore(path: Path, vaddr: int, blob: bytes) -> None:
    """SYNTHETIC /proc/kcore: an ELF64 core with one PT_LOAD holding `blob` at `vaddr`."""
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\0" * 9, 4, 62, 1, 0,
                       64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 4, 0x1000, vaddr, 0, len(blob), len(blob), 0x1000)
    path.write_bytes((ehdr + phdr).ljust(0x1000, b"\0") + blob)


def test_kcore_fallback_with_a_synthetic_pair(tmp_path, real_purgatory):
    base = 0xFFFFFFFF82000000
    blob = real_purgatory + b"\0" * (-len(real_purgatory) % 8) + struct.pack("<Q", len(real_purgatory))
    size_at = base + len(real_purgatory) + (-len(real_purgatory) % 8)
    synthetic_kcore(tmp_path / "kcore", base, blob)
    (tmp_path / "kallsyms").write_text(
        f"ffffffff81000000 T _text\n{base:016x} R kexec_purgatory\n{size_at:016x} R "
        f"kexec_purgatory_size\n")
    elf = read_kcore_purgatory(str(tmp_path / "kallsyms"), str(tmp_path / "kcore"))
    assert purgatory_layout(elf).memsz == 0x5000
    (tmp_path / "kallsyms").write_text(
        "0000000000000000 R kexec_purgatory\n0000000000000000 R kexec_purgatory_size\n")
    with pytest.raises(PurgatoryError, match="kptr_restrict"):
        read_kcore_purgatory(str(tmp_path / "kallsyms"), str(tmp_path / "kcore"))


# --- the next kernel's KHO ABI ----------------------------------------------------------


def test_real_images_accept_kho_v4(real):
    assert kho_compatibles(kernel_body(real).data) == ("kho-v4",)
    if ARM64_GZ.exists():
        abi = read_next_abi(ARM64_GZ)
        assert abi.compatibles == ("kho-v4",) and abi.how == "gzip-compressed file"


def abi_ctx(**kw: object) -> CheckContext:
    ctx = CheckContext(live=False, arch="x86_64", osrelease="7.3.4", kho_enabled=True,
                       kho_abi="kho-v4", kernel_loadable=True, kernel_version="7.3.4 (x@y) #1")
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def test_next_abi_from_the_image(real, tmp_path):
    older = tmp_path / "bzImage-kho-v3"   # SYNTHETIC: a next kernel that accepts only kho-v3
    older.write_bytes(synthetic_bzimage(real, gzip.compress(body_with(b"kho-v3"))))
    abi = read_next_abi(older)
    assert abi.compatibles == ("kho-v3",)
    [f] = check_next_abi(abi_ctx(next_kho_compatibles=abi.compatibles, next_abi_how=abi.how))
    assert f.status == FAIL and "kho-v3" in f.message and "kho-v4" in f.message
    none = tmp_path / "bzImage-no-kho"    # SYNTHETIC: built without KHO
    none.write_bytes(synthetic_bzimage(real, gzip.compress(body_with(b"Linux version 7.3.4"))))
    abi = read_next_abi(none)
    [f] = check_next_abi(abi_ctx(next_kho_compatibles=abi.compatibles, next_abi_how=abi.how))
    assert f.status == FAIL and "built without KHO" in f.message
    [f] = check_next_abi(abi_ctx(next_kho_compatibles=("kho-v4",), next_abi_how="x"))
    assert f.status == OK


def test_unreadable_next_image_falls_back_to_the_release_and_says_so(real, tmp_path):
    zst = tmp_path / "bzImage-zstd"       # SYNTHETIC: a zstd payload the stdlib cannot read
    zst.write_bytes(synthetic_bzimage(real, b"\x28\xb5\x2f\xfd" + b"\0" * 64))
    abi = read_next_abi(zst)
    assert abi.compatibles is None and "zstd" in (abi.error or "")
    [f] = check_next_abi(abi_ctx(next_abi_error=abi.error, kernel_version="7.0.1 (x@y) #1"))
    assert f.status == FAIL and "guessed from its release" in f.message and "zstd" in f.message


def test_kho_v1_pairs_of_different_releases_warn():
    ctx = abi_ctx(osrelease="6.17.2", kho_abi="kho-v1", kernel_version="6.17.9 (x@y) #1",
                  next_kho_compatibles=("kho-v1",), next_abi_how="bzImage payload (gzip)")
    found = {f.id: f for f in check_next_abi(ctx)}
    assert found["next-abi"].status == OK
    assert found["next-abi-v1-bitmap"].status == WARN
    assert "bitmap" in found["next-abi-v1-bitmap"].message
    same = abi_ctx(osrelease="6.17.2", kho_abi="kho-v1", kernel_version="6.17.2 (x@y) #1",
                   next_kho_compatibles=("kho-v1",))
    assert [f.id for f in check_next_abi(same)] == ["next-abi"]
