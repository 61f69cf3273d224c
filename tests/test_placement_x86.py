"""The x86_64 placement against the kernel's own log of every x86 capture.

Each input is built from the capture's sysroot (scratch_phys/scratch_len, /proc/iomem, meminfo,
the EFI runtime map, config.gz), the real bzImage, an initrd of the scenario's size and the exact
load/cmdline; the expectation is the capture's load/kernel.log parsed by khotui.host.kernellog.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest

from khotui.host.kernellog import DEFAULT_PURGATORY, learn_purgatory, parse_kernel_log
from khotui.image.inspect import inspect_kernel
from khotui.placement.core import Plan
from khotui.placement.x86_64 import (
    X86PlanInput,
    boot_params_bufsz,
    plan_x86_64,
)
from khotui.plan.dryrun import x86_kernel
from khotui.types import ScratchRegion
from tests.conftest import CAPTURES, VM

X86_CAPTURES = ["two-nodes", "efi-two-nodes", "one-node-no-initrd", "kho-off", "scratch-too-small"]
BZIMAGE = VM / "bzImage-kho-7.3.4"


# --- small local readers (the host package will own the real ones) -----------------------


def read_scratch(sysroot: Path) -> list[ScratchRegion]:
    out = sysroot / "sys/kernel/debug/kho/out"
    if not out.is_dir():
        return []
    phys = [int(x, 16) for x in (out / "scratch_phys").read_text().split()]
    lens = [int(x, 16) for x in (out / "scratch_len").read_text().split()]
    kinds = ["lowmem", "global"]
    return [ScratchRegion(i, kinds[i] if i < 2 else "node", None if i < 2 else i - 2, a, s)
            for i, (a, s) in enumerate(zip(phys, lens, strict=True))]


def read_system_ram(sysroot: Path) -> list[tuple[int, int]]:
    ranges = []
    for line in (sysroot / "proc/iomem").read_text().splitlines():
        if line.startswith(" "):
            continue
        span, _, name = line.partition(" : ")
        if name.strip() == "System RAM":
            lo, hi = span.split("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def read_meminfo_kb(sysroot: Path, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", (sysroot / "proc/meminfo").read_text(), re.M)
    assert m, key
    return int(m.group(1))


def read_config(sysroot: Path) -> dict[str, str]:
    text = gzip.decompress((sysroot / "proc/config.gz").read_bytes()).decode()
    return dict(line.split("=", 1) for line in text.splitlines()
                if line.startswith("CONFIG_") and "=" in line)


def efi_entries(sysroot: Path) -> int:
    d = sysroot / "sys/firmware/efi/runtime-map"
    return len(list(d.iterdir())) if d.is_dir() else 0


def kho_enabled(sysroot: Path) -> bool:
    return "kho=on" in (sysroot / "proc/cmdline").read_text().split()


def initrd_size(capture: Path) -> int | None:
    m = re.search(r"^initrd: (\d+) bytes", (capture / "scenario.txt").read_text(), re.M)
    return int(m.group(1)) if m else None


@pytest.fixture(scope="module")
def bzimage():
    if not BZIMAGE.is_file():
        pytest.skip(f"{BZIMAGE} is missing")
    return inspect_kernel(BZIMAGE)


def make_initrd(size: int, tmp: Path) -> Path:
    out = tmp / f"initrd-{size}"
    subprocess.run([sys.executable, str(CAPTURES / "make-initrd"), str(size), str(out)],
                   check=True)
    return out


def build_input(name: str, kernel, tmp: Path) -> X86PlanInput:
    capture = CAPTURES / name
    sysroot = capture / "sysroot"
    config = read_config(sysroot)
    size = initrd_size(capture)
    if size is not None:
        # the load path inspects the real file; so do we, for the size it reports
        from khotui.image.inspect import inspect_initrd
        size = inspect_initrd(make_initrd(size, tmp)).size
    return X86PlanInput(
        kho_enabled=kho_enabled(sysroot),
        kernel=x86_kernel(kernel),
        cmdline=(capture / "load/cmdline").read_bytes(),
        initrd_size=size,
        scratch=read_scratch(sysroot),
        system_ram=read_system_ram(sysroot),
        cma_total_kb=read_meminfo_kb(sysroot, "CmaTotal"),
        no_cma=False,
        efi_runtime_map_entries=efi_entries(sysroot),
        config_kexec_handover=config.get("CONFIG_KEXEC_HANDOVER") == "y",
        config_ima_kexec=config.get("CONFIG_IMA_KEXEC") == "y",
        config_dma_cma=config.get("CONFIG_DMA_CMA") == "y",
        config_arch_keep_memblock=config.get("CONFIG_ARCH_KEEP_MEMBLOCK") == "y",
        mem_total_kb=read_meminfo_kb(sysroot, "MemTotal"),
        purgatory=DEFAULT_PURGATORY,
    )


def kernel_log(name: str):
    load = parse_kernel_log((CAPTURES / name / "load/kernel.log").read_text())
    assert load is not None, f"{name}: no kexec_file load in the log"
    return load


def _need(name: str) -> None:
    if not (CAPTURES / name / "load").is_dir():
        pytest.skip(f"capture {name} is missing")


# --- the captures --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["two-nodes", "efi-two-nodes", "one-node-no-initrd", "kho-off"])
def test_every_segment_matches_the_kernel_log(name, bzimage, tmp_path):
    _need(name)
    assert (CAPTURES / name / "load/errno").read_text().strip() == "0"
    plan = plan_x86_64(build_input(name, bzimage, tmp_path))
    log = kernel_log(name)
    assert plan.fits is True and plan.errno is None, plan.message
    assert log.nr_segments == len(log.segments) == len(plan.segments)
    for seg, logged in zip(plan.segments, log.segments, strict=True):
        assert (seg.name, seg.mem, seg.memsz, seg.bufsz) == \
               (logged.name, logged.mem, logged.memsz, logged.bufsz), (name, seg)


def test_scratch_too_small_is_eaddrnotavail_naming_the_initrd(bzimage, tmp_path):
    name = "scratch-too-small"
    _need(name)
    assert (CAPTURES / name / "load/errno").read_text().strip() == "99"
    plan = plan_x86_64(build_input(name, bzimage, tmp_path))
    assert plan.fits is False
    assert plan.errno == "EADDRNOTAVAIL"
    assert plan.failed_segment == "initrd"
    assert plan.message.startswith("initrd (64 MiB) fits in no scratch region: lowmem 48 MiB")
    assert [r.name for r in plan.regions_tried] == ["lowmem", "global", "node0", "node1"]
    assert [r.size for r in plan.regions_tried] == [48 << 20, 8 << 20, 8 << 20, 8 << 20]
    # the kernel got as far as the kernel segment: what it logged before failing must match
    log = kernel_log(name)
    assert not log.complete and log.segments == []
    for seg_name in ("purgatory", "boot-params", "kernel"):
        line, seg = log.loaded[seg_name], plan.segment(seg_name)
        assert seg.mem == line.mem
        if line.memsz is not None:
            assert (seg.bufsz, seg.memsz) == (line.bufsz, line.memsz)
    assert "initrd" not in log.loaded
    assert plan.segment("initrd").mem is None


@pytest.mark.parametrize("name", X86_CAPTURES)
def test_final_cmdline_is_the_load_cmdline(name):
    _need(name)
    log = kernel_log(name)
    assert log.arch == "x86_64"
    if log.cmdline is not None:   # not logged when the load failed before setup_cmdline()
        assert log.cmdline.encode() == (CAPTURES / name / "load/cmdline").read_bytes()


@pytest.mark.parametrize("name", ["two-nodes", "efi-two-nodes", "one-node-no-initrd", "kho-off"])
def test_purgatory_learnt_from_each_capture_is_the_default(name):
    _need(name)
    learnt = learn_purgatory((CAPTURES / name / "load/kernel.log").read_text())
    assert learnt == (DEFAULT_PURGATORY.bufsz, DEFAULT_PURGATORY.memsz)


def test_boot_params_size_formula_matches_every_capture(bzimage, tmp_path):
    for name in X86_CAPTURES:
        _need(name)
        inp = build_input(name, bzimage, tmp_path)
        assert boot_params_bufsz(inp) == kernel_log(name).loaded["boot-params"].bufsz, name


# --- beyond the captures: CMA, cmdline, missing data ---------------------------------------


def test_kho_off_with_a_cma_area_cannot_be_predicted(bzimage, tmp_path):
    _need("kho-off")
    inp = build_input("kho-off", bzimage, tmp_path)
    inp.cma_total_kb, inp.config_dma_cma = 65536, True
    plan = plan_x86_64(inp)
    assert plan.fits is None and plan.walk == "cma"
    assert all(s.mem is None for s in plan.segments)
    assert any("KEXEC_FILE_NO_CMA" in n for n in plan.notes)
    inp.no_cma = True
    again = plan_x86_64(inp)
    assert again.fits is True
    assert [s.mem for s in again.segments] == [s.mem for s in kernel_log("kho-off").segments]


def test_cmdline_longer_than_the_image_allows_is_einval(bzimage, tmp_path):
    _need("two-nodes")
    inp = build_input("two-nodes", bzimage, tmp_path)
    limit = bzimage.setup.cmdline_size - 30 - 1      # 2047 - elfcorehdr room - NUL
    inp.cmdline = b"x" * limit
    assert plan_x86_64(inp).fits is True
    inp.cmdline = b"x" * (limit + 1)
    plan = plan_x86_64(inp)
    assert (plan.fits, plan.errno) == (False, "EINVAL")
    # one number everywhere: the kernel's cmdline_len (NUL included) against accepted_length()
    assert f"{limit + 2} of {limit + 1} bytes (with the NUL)" in plan.message
    assert "shorten it by 1 bytes" in plan.message and plan.segments == []


def test_kho_on_without_scratch_data_is_unknown_not_a_failure(bzimage, tmp_path):
    _need("two-nodes")
    inp = build_input("two-nodes", bzimage, tmp_path)
    inp.scratch = []
    plan = plan_x86_64(inp)
    assert plan.fits is None and plan.errno is None and "scratch_phys" in plan.message


def test_keep_memblock_kernels_do_not_walk_iomem(bzimage, tmp_path):
    _need("kho-off")
    inp = build_input("kho-off", bzimage, tmp_path)
    inp.config_arch_keep_memblock = True
    plan = plan_x86_64(inp)
    assert plan.fits is None and plan.walk == "memblock"
    inp.memblock_free = inp.system_ram
    assert plan_x86_64(inp).fits is True


def test_not_a_bzimage_is_enoexec(tmp_path, bzimage):
    _need("two-nodes")
    elf = tmp_path / "vmlinux"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little")
                    + (62).to_bytes(2, "little") + bytes(100))
    inp = build_input("two-nodes", inspect_kernel(elf), tmp_path)
    plan = plan_x86_64(inp)
    assert (plan.fits, plan.errno) == (False, "ENOEXEC") and "bzImage" in plan.message


def test_as_dict_is_json_ready(bzimage, tmp_path):
    import json
    _need("two-nodes")
    plan: Plan = plan_x86_64(build_input("two-nodes", bzimage, tmp_path))
    data = json.loads(json.dumps(plan.as_dict()))
    assert data["segments"][0]["name"] == "kho-scratch"
    assert data["segments"][0]["mem"] == 0x7EBF0000
