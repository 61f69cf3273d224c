"""The ground-truth captures of tests/fixtures/captures/ (issue #11) are whole and say what
their README says: the kernel rules that khotui models are checked against them here, on the
kernel's own numbers, so a capture edited by hand or re-recorded wrongly fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fixtures.where import GROUND_TRUTH

PAGE = 4096
# The second (IMA) build's captures; the arm64 and EFI captures beside them have other rules.
CAPTURES = sorted(p for p in GROUND_TRUTH.glob("ima-*") if (p / "scenario.txt").is_file())
SEG = re.compile(r"kexec_file: segment\[(\d+)\]: buf=\S+ bufsz=(0x[0-9a-f]+) "
                 r"mem=(0x[0-9a-f]+) memsz=(0x[0-9a-f]+)")
IMA = "sys/kernel/security/ima"


def segments(capture: Path) -> list[tuple[int, int, int]]:
    """(bufsz, mem, memsz) of the last load in load/kernel.log."""
    segs: list[tuple[int, int, int]] = []
    for line in (capture / "load" / "kernel.log").read_text().splitlines():
        m = SEG.search(line)
        if m:
            if m.group(1) == "0":
                segs = []
            segs.append((int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16)))
    return segs


def align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def test_the_eight_captures_are_there() -> None:
    assert [p.name for p in CAPTURES] == [
        "ima-kho-booted", "ima-list-long", "ima-list-short", "ima-nodebugfs-cold",
        "ima-nodebugfs-kho-booted", "ima-tight-long", "ima-tight-short", "ima-two-nodes"]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_ima_segment_is_sized_from_the_list_at_the_syscall(capture: Path) -> None:
    # security/integrity/ima/ima_kexec.c ima_add_kexec_buffer(): no buffer (bufsz 0), memsz =
    # ALIGN(list + 2 * sizeof(struct ima_kexec_hdr) (ima_queue.c adds it to BINARY and
    # BINARY_STAGED) + PAGE_SIZE / 2, PAGE_SIZE); added first, before the KHO page.
    listed = (capture / "load" / "ima-at-syscall" / "binary_runtime_measurements").stat().st_size
    bufsz, _mem, memsz = segments(capture)[0]
    assert (capture / "load" / "errno").read_text().strip() == "0"
    assert bufsz == 0
    assert memsz == align(listed + 2 * 24 + PAGE // 2, PAGE)


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_every_segment_is_in_scratch_and_the_purgatory_is_the_recorded_one(capture: Path) -> None:
    segs = segments(capture)
    assert len(segs) == 6  # IMA, KHO, purgatory, boot params, kernel, initrd
    kho = capture / "sysroot" / "sys" / "kernel" / "debug" / "kho" / "out"
    if kho.is_dir():
        phys = [int(x, 16) for x in (kho / "scratch_phys").read_text().split()]
        lens = [int(x, 16) for x in (kho / "scratch_len").read_text().split()]
        for _bufsz, mem, memsz in segs:
            assert any(p <= mem and mem + memsz <= p + n for p, n in zip(phys, lens, strict=True))
    else:
        assert "debugfs NOT mounted" in (capture / "scenario.txt").read_text()
    # The purgatory segment's sizes follow from khotui-purgatory.ro's ALLOC sections
    # (kernel/kexec_file.c kexec_purgatory_setup_kbuf()): 0x4000 / 0x5000 for this build too.
    ro = (capture / "sysroot" / "khotui-purgatory.ro").read_bytes()
    assert ro[:4] == b"\x7fELF" and len(ro) == 21736
    assert segs[2][0] == 0x4000 and segs[2][2] == 0x5000


def test_the_longer_list_moves_the_initrd_below_the_kernel() -> None:
    short, long = (segments(GROUND_TRUTH / n) for n in ("ima-list-short", "ima-list-long"))
    kernel = short[4]
    assert long[4] == kernel
    assert short[5][1] >= kernel[1] + kernel[2]           # above the kernel's end
    assert long[5][1] + long[5][2] <= kernel[1]           # below its start
    assert long[0][2] > short[0][2]


def test_under_tight_scratch_the_longer_list_moves_the_initrd_to_another_region() -> None:
    kho = GROUND_TRUTH / "ima-tight-short" / "sysroot" / "sys" / "kernel" / "debug" / "kho" / "out"
    phys = [int(x, 16) for x in (kho / "scratch_phys").read_text().split()]
    lens = [int(x, 16) for x in (kho / "scratch_len").read_text().split()]

    def region(mem: int) -> int:
        return next(i for i, (p, n) in enumerate(zip(phys, lens, strict=True))
                    if p <= mem < p + n)

    short, long = (segments(GROUND_TRUTH / n) for n in ("ima-tight-short", "ima-tight-long"))
    assert [region(m) for _b, m, _s in short] == [0] * 6
    # IMA segment 0x59000: the kernel drops to the region's start, the initrd leaves region 0.
    assert long[4][1] == phys[0] and region(long[5][1]) == 1


def test_efi_capture_records_the_firmware_descriptor_size_under_a_zero_boot_protocol() -> None:
    """efi-two-nodes-bootparams: OVMF booted the kernel through the EFI stub's PE entry, which
    zeroes boot_params and never sets hdr.version (efi_allocate_bootparams(),
    drivers/firmware/efi/libstub/x86-stub.c): version reads 0x0000 while efi_info is filled."""
    cap = GROUND_TRUTH / "efi-two-nodes-bootparams"
    bp = cap / "sysroot" / "sys" / "kernel" / "boot_params"
    data = (bp / "data").read_bytes()
    assert (bp / "version").read_text() == "0x0000\n"
    assert data[0x1C0:0x1C4] == b"EL64"
    assert int.from_bytes(data[0x1C8:0x1CC], "little") == 48
    runtime_map = cap / "sysroot" / "sys" / "firmware" / "efi" / "runtime-map"
    assert sorted(p.name for p in runtime_map.iterdir()) == ["0", "1", "2", "3", "4"]
    segs = [tuple(int(x, 16) for x in m.groups()[1:])
            for m in SEG.finditer((cap / "load" / "kernel.log").read_text())]
    # (bufsz, mem, memsz): KHO page, purgatory, boot params, kernel, initrd
    assert segs[2] == (0x1290, 0x7B7F9000, 0x2000)
    assert len(segs) == 5
