"""Inputs the hostile-input tests and the fuzzers found: each once crashed or blew up a parser.

Every test here is the smallest input that did it, kept so the fix stays fixed.
"""

from __future__ import annotations

import pytest

from khotui.errors import KhotuiError
from khotui.host.boot import parse_meminfo
from khotui.host.memory import _mem_total_kb, _memory_ids


def test_meminfo_non_ascii_digit_is_skipped_not_a_crash():
    # '²'.isdigit() is True but int('²') raises ValueError
    assert parse_meminfo("MemTotal: ² kB\nMemFree: 12 kB\n") == {"MemFree": 12}
    assert _mem_total_kb("Node 0 MemTotal: ² kB\n") is None
    assert _memory_ids(["memory²", "memory3"]) == [3]


def test_meminfo_with_a_5000_digit_value_is_skipped():
    # int() refuses decimal strings over 4300 digits (ValueError)
    assert parse_meminfo("MemTotal: " + "9" * 5000 + " kB\n") == {}
    assert _mem_total_kb("Node 0 MemTotal: " + "9" * 5000 + " kB\n") is None


@pytest.mark.parametrize("text", [
    "kexec_file: kernel: 000 kernel_size: 0123\n",           # int('0123', 0) raised ValueError
    "kexec_file: kernel: 000 kernel_size: " + "9" * 5000 + "\n",
    "kexec_file: nr_segments = " + "9" * 5000 + "\n",
    "kexec_file: segment[" + "1" * 5000 + "]: buf=0 bufsz=0x1 mem=0x1 memsz=0x1\n",
])
def test_kernel_log_odd_numbers(text):
    from khotui.host.kernellog import parse_kernel_log_all
    parse_kernel_log_all(text)


def test_kernel_log_decimal_kernel_size_with_leading_zero():
    from khotui.host.kernellog import parse_kernel_log
    assert parse_kernel_log("kexec_file: kernel: 000 kernel_size: 0123\n").kernel_size == 123


def _cpio_header(filesize: bytes, namesize: bytes = b"0000000B") -> bytes:
    hdr = b"070701" + b"0" * 48 + filesize + b"0" * 32 + namesize + b"0" * 8
    assert len(hdr) == 110
    return hdr


@pytest.mark.parametrize("field", [b"-0000010", b" +00_010", b"0000001 "])
def test_cpio_size_fields_are_strict_hex(field):
    # int(b'-0000010', 16) is -16: the walk went backwards (and a BytesIO seek(-n) raised)
    import io

    from khotui.image.inspect import inspect_initrd
    data = _cpio_header(field) + b"TRAILER!!!\0" + b"\0" * 100
    info = inspect_initrd(io.BytesIO(data), name="initrd")
    assert info.format == "cpio newc" and "bad cpio header" in (info.note or "")


def test_lzma_header_asking_for_a_4gib_dictionary_does_not_allocate_it():
    import io
    import tracemalloc

    from khotui.image.inspect import inspect_kernel
    data = b"\x5d\x00\x00\xff\xff" + b"\xff" * 8 + b"\0" * 64
    tracemalloc.start()
    try:
        image = inspect_kernel(io.BytesIO(data), name="vmlinuz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert image.format == "lzma" and not image.loadable
    assert peak < 80 << 20, peak    # was 4 GiB


@pytest.mark.parametrize("text", ["0-4000000000", "0-20000000", ",".join(["7"] * 70000)])
def test_node_list_naming_billions_of_ids_is_refused_not_expanded(text):
    # parse_list('0-20000000') built a 20-million-int list (3.7 GB RSS)
    import tracemalloc

    from khotui.host.memory import parse_list
    tracemalloc.start()
    try:
        with pytest.raises(KhotuiError) as info:
            parse_list(text, path="/sys/devices/system/node/has_memory")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "has_memory" in str(info.value) and info.value.fix
    assert peak < 16 << 20, peak


def test_node_list_at_the_bound_still_parses():
    from khotui.host.memory import MAX_LIST_IDS, parse_list
    assert len(parse_list(f"0-{MAX_LIST_IDS - 1}")) == MAX_LIST_IDS


def test_iomem_nested_1500_levels_is_an_error_not_a_recursion_error():
    # parse_iomem accepted it, then Iomem.as_dict() (snapshots, JSON) hit RecursionError
    from khotui.host.iomem import parse_iomem
    deep = "".join("  " * i + f"0-ff : r{i}\n" for i in range(1500))
    with pytest.raises(KhotuiError) as info:
        parse_iomem(deep, path="/proc/iomem")
    assert "nested" in info.value.message and info.value.fix
    ok = "".join("  " * i + f"0-ff : r{i}\n" for i in range(20))
    parse_iomem(ok).as_dict()


def test_unbalanced_quote_in_the_running_cmdline_does_not_swallow_appended_tokens():
    # 'foo="bar' + append 'kho=on' joined to 'foo="bar kho=on': the kernel's next_arg() reads
    # that as foo='bar kho=on' and the new kernel never sees kho=on
    from khotui.cmdline import next_cmdline, split_cmdline
    from khotui.host.boot import cmdline_param
    new = next_cmdline('ro foo="bar', "kho=on")
    assert cmdline_param(new, "kho") == "on"
    assert split_cmdline(new)[-1] == "kho=on"
    # hypothesis' find: '"' then '" BOOT_IMAGE' re-split into a bare BOOT_IMAGE token
    assert split_cmdline(next_cmdline('"', '" BOOT_IMAGE')) == ['""', '" BOOT_IMAGE"']


@pytest.mark.parametrize("cmdline, expected", [
    ('console=ttyS0 foo="bar kho=on"', "fail"),     # kho=on is inside foo's quoted value
    ("console=ttyS0 -- kho=on", "fail"),              # after --: an argument for init
    ("console=ttyS0 kho=on", "ok"),
    ("console=ttyS0 kho=1 kho=off", "warn"),          # the last one wins: an explicit choice
])
def test_kho_on_is_read_as_the_kernel_reads_it(cmdline, expected):
    from khotui.plan.checks import CheckContext, check_cmdline
    ctx = CheckContext(live=False, arch="x86_64", osrelease="7.3.4", kho_enabled=True,
                       cmdline=cmdline)
    assert check_cmdline(ctx)[0].status == expected


def test_plan_with_kho_off_and_an_all_zero_iomem_does_not_fail_placement(tmp_path, shared):
    # as non-root, plan reported EADDRNOTAVAIL 'fits in no System RAM range: System RAM 0x0-0x0'
    from khotui.plan import PlanRequest, plan_load
    from tests.bad_inputs import KERNEL, KOFF
    from tests.fixtures.trees import copy_tree
    root = copy_tree(KOFF, tmp_path / "sysroot")
    iomem = root / "proc/iomem"
    iomem.chmod(0o644)
    iomem.write_text("".join(_zero_line(line) for line in iomem.read_text().splitlines(True)))
    result = plan_load(root, PlanRequest(kernel=str(KERNEL)))
    assert result.plan is None and result.fits is None
    assert not any(f.id == "segments-fit" for f in result.findings)
    assert any("run khotui as root" in n for n in result.notes) and not result.exact
    assert any(f.id == "iomem" and f.status == "warn" for f in result.findings)


def _zero_line(line: str) -> str:
    import re
    return re.sub(r"^( *)[0-9a-f]+-[0-9a-f]+", r"\g<1>00000000-00000000", line)
