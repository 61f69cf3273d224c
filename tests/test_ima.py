"""The IMA segment (khotui.host.ima): the measurement list read from securityfs, the entries the
load adds, and where the segment sends the later segments, on copies of real captures with a
synthetic list of a chosen size (the captures ran with IMA off)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from khotui.host.ima import ImaState, LoadFile, MeasurementList, parse_list, predict_segment
from khotui.host.sysroot import Sysroot
from khotui.plan import PlanRequest, plan_load
from tests.conftest import CAPTURES, VM
from tests.fixtures.trees import copy_tree

BZIMAGE = VM / "bzImage-kho-7.3.4"
IMA = "sys/kernel/security/ima"


def ima_ng_entry(name: str, digest: bytes = b"\x11" * 32) -> bytes:
    """One ima-ng entry as ima_measurements_show() writes it (ima_fs.c)."""
    d = b"sha256:\0" + digest
    n = name.encode() + b"\0"
    data = struct.pack("<I", len(d)) + d + struct.pack("<I", len(n)) + n
    return (struct.pack("<I", 10) + b"\x22" * 20 + struct.pack("<I", 6) + b"ima-ng"
            + struct.pack("<I", len(data)) + data)


def synthetic_list(size: int) -> bytes:
    """ima-ng entries adding up to exactly `size` bytes."""
    out = bytearray(ima_ng_entry("boot_aggregate"))
    i = 0
    while len(out) < size:
        left = size - len(out)
        entry = ima_ng_entry(f"/usr/lib/f{i:07d}")
        if left < len(entry) + 100:   # the last one takes the rest, in its name
            base = len(ima_ng_entry(""))
            entry = ima_ng_entry("/" + "x" * (left - base - 1))
        out += entry
        i += 1
    assert len(out) == size
    return bytes(out)


def host_with_ima(capture: str, tmp: Path, list_size: int, *, policy: str | None = None) -> Path:
    root = copy_tree(CAPTURES / capture / "sysroot", tmp / "sysroot", writable=True)
    cfg = root / "proc/config.gz"
    text = gzip.decompress(cfg.read_bytes()).decode()
    text = text.replace("# CONFIG_IMA_KEXEC is not set", "") + "\nCONFIG_IMA_KEXEC=y\n"
    cfg.write_bytes(gzip.compress(text.encode()))
    ima = root / IMA
    ima.mkdir(parents=True)
    (ima / "binary_runtime_measurements").write_bytes(synthetic_list(list_size))
    (ima / "runtime_measurements_count").write_text("1\n")
    if policy is not None:
        (ima / "policy").write_text(policy)
    return root


@pytest.fixture(scope="module")
def bzimage() -> Path:
    if not BZIMAGE.is_file():
        pytest.skip(f"{BZIMAGE} is missing")
    return BZIMAGE


def initrd(tmp: Path, size: int) -> Path:
    path = tmp / "initrd.img"
    path.write_bytes(b"070701" + b"\0" * (size - 6))
    return path


def plan(root: Path, kernel: Path, initrd_path: Path | None):
    cmdline = (CAPTURES / "two-nodes/load/cmdline").read_text().strip()
    return plan_load(root, PlanRequest(kernel=str(kernel),
                                       initrd=None if initrd_path is None else str(initrd_path),
                                       cmdline=cmdline))


def by_name(result) -> dict:
    return {s.name: s for s in result.segments()}


def test_a_1mb_list_moves_the_scratch_array_purgatory_and_boot_params(bzimage, tmp_path):
    small = plan(host_with_ima("two-nodes", tmp_path / "a", 300), bzimage,
                 initrd(tmp_path, 8 << 20))
    big = plan(host_with_ima("two-nodes", tmp_path / "b", 1 << 20), bzimage,
               initrd(tmp_path, 8 << 20))
    s, b = by_name(small), by_name(big)
    assert list(s) == ["ima", "kho-scratch", "purgatory", "boot-params", "kernel", "initrd"]
    # ALIGN(list + 24 + staged 0 + 24 + PAGE_SIZE/2, PAGE_SIZE), ima_add_kexec_buffer()
    assert b["ima"].memsz == (((1 << 20) + 48 + 2048 + 4095) // 4096) * 4096 == 0x101000
    assert s["ima"].memsz == 0x1000
    for name in ("kho-scratch", "purgatory", "boot-params"):
        assert b[name].mem != s[name].mem, name
        assert b[name].mem < s[name].mem
    assert b["kernel"].mem == s["kernel"].mem        # the kernel's 2 MiB slot is still free
    assert big.would_succeed


def test_a_9mb_list_with_48m_of_lowmem_scratch_moves_the_initrd_out_of_lowmem(bzimage, tmp_path):
    # the scratch-too-small capture's kho_scratch=48M,8M,8M
    assert "kho_scratch=48M,8M,8M" in (CAPTURES / "scratch-too-small/sysroot/proc/cmdline").read_text()
    rd = initrd(tmp_path, 7 << 20)
    small = plan(host_with_ima("scratch-too-small", tmp_path / "a", 300), bzimage, rd)
    big = plan(host_with_ima("scratch-too-small", tmp_path / "b", 9 << 20), bzimage, rd)
    assert by_name(small)["initrd"].region == "lowmem"
    assert by_name(big)["initrd"].region not in (None, "lowmem")
    assert by_name(big)["ima"].region == "lowmem"
    assert big.fits


def test_the_segment_counts_the_entries_this_load_adds(bzimage, tmp_path):
    policy = "dont_measure fsmagic=0x9fa0\nmeasure func=FILE_CHECK mask=^MAY_READ euid=0\n" \
             "measure func=KEXEC_CMDLINE\n"
    root = host_with_ima("two-nodes", tmp_path / "a", 4096 * 3 - 48 - 2048 - 10, policy=policy)
    rd = initrd(tmp_path, 8 << 20)
    result = plan(root, bzimage, rd)
    ima = by_name(result)["ima"]
    cmdline = result.cmdline.encode()
    # ima-ng: pcr, sha1 digest, name length, "ima-ng", data length, then d-ng and n-ng
    kernel_entry = 4 + 20 + 4 + 6 + 4 + (4 + 7 + 1 + 32) + (4 + len(str(bzimage.resolve())) + 1)
    initrd_entry = 4 + 20 + 4 + 6 + 4 + (4 + 7 + 1 + 32) + (4 + len(str(rd.resolve())) + 1)
    # ima-buf (process_buffer_measurement()): d-ng, n-ng "kexec-cmdline", the bytes without NUL
    cmdline_entry = 4 + 20 + 4 + 7 + 4 + (4 + 40) + (4 + 14) + (4 + len(cmdline))
    total = 4096 * 3 - 10 + kernel_entry + initrd_entry + cmdline_entry
    assert ima.memsz == (total + 4095) // 4096 * 4096 == 4 * 4096
    notes = " ".join(result.notes)
    assert "this load adds kernel" in notes and "kexec-cmdline" in notes


def test_a_file_already_in_the_list_is_not_counted_again(bzimage, tmp_path):
    import hashlib
    policy = "measure func=FILE_CHECK mask=^MAY_READ euid=0\n"
    root = host_with_ima("two-nodes", tmp_path / "a", 300, policy=policy)
    lst = root / IMA / "binary_runtime_measurements"
    digest = hashlib.sha256(bzimage.read_bytes()).digest()
    lst.write_bytes(lst.read_bytes() + ima_ng_entry(str(bzimage.resolve()), digest))
    result = plan(root, bzimage, None)
    notes = " ".join(result.notes)
    assert "this load adds nothing" in notes


def test_the_list_is_parsed_as_it_streams_in_small_reads():
    data = synthetic_list(50_000) + ima_ng_entry("/sbin/init")
    chunks = iter([data[i:i + 7] for i in range(0, len(data), 7)] + [b""])
    parsed = parse_list(lambda n: next(chunks), "list")
    assert parsed.size == len(data)
    assert parsed.hash_algo == "sha256"
    assert "/sbin/init" in parsed.files


def test_a_cut_list_is_an_error_naming_the_file():
    from khotui.errors import KhotuiError
    data = synthetic_list(1000)[:-3]
    with pytest.raises(KhotuiError) as exc:
        chunks = iter([data, b""])
        parse_list(lambda n: next(chunks), "/sys/kernel/security/ima/binary_runtime_measurements")
    assert "binary_runtime_measurements" in str(exc.value.path)


def test_near_a_page_boundary_the_plan_says_the_size_can_still_change():
    lst = MeasurementList(size=4096 - 48 - 2048 - 20, count=10, largest_entry=120)
    seg = predict_segment(ImaState(present=True, measurements=lst, policy=""), config={},
                          running_cmdline="", files=[], next_cmdline=b"", page_size=4096,
                          mem_total_kb=None)
    assert seg.memsz == 4096
    assert any("next page boundary" in a for a in seg.notes)
    far = MeasurementList(size=100, count=1, largest_entry=100)
    seg = predict_segment(ImaState(present=True, measurements=far, policy=""), config={},
                          running_cmdline="", files=[], next_cmdline=b"", page_size=4096,
                          mem_total_kb=None)
    assert not any("next page boundary" in a for a in seg.notes)


def test_unreadable_policy_is_an_assumption_naming_the_boot_policy():
    lst = MeasurementList(size=100, count=1, largest_entry=100)
    kernel = LoadFile("kernel", "/boot/vmlinuz", 0, 0xEF53, 0, lambda algo: None)
    seg = predict_segment(ImaState(present=True, measurements=lst, policy=None), config={},
                          running_cmdline="ima_policy=tcb", files=[kernel], next_cmdline=b"x",
                          page_size=4096, mem_total_kb=None)
    assert not seg.exact
    assert any("CONFIG_IMA_READ_POLICY" in a for a in seg.assumptions)
    assert [what for what, _ in seg.added] == ["kernel /boot/vmlinuz (ima-ng)"]
    # tmpfs files are not measured on FILE_CHECK (dont_measure_rules[], ima_policy.c)
    tmp = LoadFile("kernel", "/tmp/vmlinuz", 0, 0x01021994, 0, lambda algo: None)
    seg = predict_segment(ImaState(present=True, measurements=lst, policy=None), config={},
                          running_cmdline="ima_policy=tcb", files=[tmp], next_cmdline=b"",
                          page_size=4096, mem_total_kb=None)
    assert seg.added == []


def test_no_config_visible_is_an_assumption_not_a_silent_drop(bzimage, tmp_path):
    root = host_with_ima("two-nodes", tmp_path / "a", 1 << 20)
    (root / "proc/config.gz").unlink()
    (root / "proc/sys/kernel/arch").write_text("x86_64\n")   # the config said it before
    result = plan(root, bzimage, None)
    assert by_name(result)["ima"].memsz == 0x101000
    assert any("CONFIG_IMA_KEXEC unknown" in a for a in result.assumptions)


def test_a_snapshot_keeps_the_list_so_root_gives_the_same_answer(bzimage, tmp_path):
    from khotui.host.snapshot import write_snapshot
    root = host_with_ima("two-nodes", tmp_path / "a", 1 << 20)
    write_snapshot(Sysroot(root), tmp_path / "snap")
    rd = initrd(tmp_path, 8 << 20)
    first = [(s.name, s.mem, s.memsz) for s in plan(root, bzimage, rd).segments()]
    again = [(s.name, s.mem, s.memsz) for s in plan(tmp_path / "snap", bzimage, rd).segments()]
    assert first == again
    assert first[0] == ("ima", first[0][1], 0x101000)
