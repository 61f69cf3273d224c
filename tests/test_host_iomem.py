"""/proc/iomem parsing: the captures, a non-root view, bad input, a large file.

How parse time grows with the lines is measured in tests/test_scale.py (marked perf)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from khotui.errors import KhotuiError
from khotui.host.iomem import RamRange, parse_iomem, read_iomem
from khotui.host.sysroot import Sysroot
from tests.conftest import CAPTURES


def capture(name: str) -> Sysroot:
    root = CAPTURES / name
    if not root.is_dir():
        pytest.skip(f"{root} is missing: the real KHO captures are needed for this test")
    return Sysroot(root)


def test_two_nodes_tree_and_system_ram():
    iomem = read_iomem(capture("two-nodes/sysroot"))
    assert not iomem.all_zero
    assert iomem.system_ram() == [RamRange(0x1000, 0x9FBFF), RamRange(0x100000, 0x7FFDFFFF)]
    ram = iomem.resources[6]
    assert (ram.name, ram.depth, ram.start, ram.end) == ("System RAM", 0, 0x100000, 0x7FFDFFFF)
    assert [c.name for c in ram.children] == ["Kernel code", "Kernel rodata", "Kernel data", "Kernel bss"]
    assert ram.children[0].depth == 1
    pci = [r for r in iomem.flat if r.name == "virtio-pci-modern"]
    assert [r.depth for r in pci] == [2, 2]
    assert iomem.resources[-1].end == 0xFFFFFFFFFF
    assert [r.name for r in iomem.containing(0x57A00000)] == ["System RAM", "Kernel code"]
    assert len(iomem.find("kernel")) == 4


def test_find_by_name_or_address_in_file_order_with_a_limit():
    iomem = read_iomem(capture("two-nodes/sysroot"))
    # an address finds the chain that holds it, outermost first, with either spelling
    assert [r.name for r in iomem.find("57a00000")] == ["System RAM", "Kernel code"]
    assert [r.name for r in iomem.find("0x57A00000")] == ["System RAM", "Kernel code"]
    assert [r.name for r in iomem.find("KERNEL", limit=2)] == ["Kernel code", "Kernel rodata"]
    assert iomem.find("  ") == [] and iomem.find("no such range") == []


def test_efi_capture_has_split_system_ram():
    ram = read_iomem(capture("efi-two-nodes/sysroot")).system_ram()
    assert len(ram) == 7 and ram[-1] == RamRange(0x7F7FF000, 0x7FF4FFFF)
    assert all(a.end < b.start for a, b in itertools.pairwise(ram))


def test_arm64_capture():
    ram = read_iomem(capture("two-nodes-arm64/sysroot")).system_ram()
    assert ram == [RamRange(0x40000000, 0x7FFFFFFF), RamRange(0x80000000, 0xBFFFFFFF)]


def test_non_root_view_is_all_zero():
    text = "00000000-00000000 : Reserved\n00000000-00000000 : System RAM\n  00000000-00000000 : Kernel code\n"
    iomem = parse_iomem(text)
    assert iomem.all_zero and len(iomem.flat) == 3
    assert not parse_iomem("00000000-00000fff : Reserved\n").all_zero
    assert not parse_iomem("").all_zero  # nothing at all is not the non-root view


def test_driver_managed_ram_is_marked():
    text = ("00000000-7fffffff : System RAM\n"
            "100000000-1ffffffff : Soft Reserved\n"
            "  100000000-1ffffffff : dax0.0\n"
            "    100000000-1ffffffff : System RAM (kmem)\n")
    assert parse_iomem(text).system_ram() == [RamRange(0, 0x7FFFFFFF),
                                              RamRange(0x100000000, 0x1FFFFFFFF, True)]


def test_empty_name():
    assert parse_iomem("00000000-00000fff : \n").resources[0].name == ""


@pytest.mark.parametrize("text,lineno,words", [
    ("00-ff : a\n  10-20 : b\n      11-12 : c\n", 3, "nested"),
    ("00-ff : a\ngarbage here\n", 2, "start-end"),
    ("00-ff : a\n 10-20 : b\n", 2, "odd indentation"),
    ("00-ff : a\n  100-200 : b\n", 2, "outside its parent"),
    ("  00-ff : a\n", 1, "nested"),
    ("ff-00 : a\n", 1, "below start"),
    ("00-ff a\n", 1, "start-end"),
    ("\n\n00-ff : a\n\n  10-20 : b\n  zz\n", 6, "start-end"),
    ("\n00-ff : a\n\n    10-20 : b\n", 4, "nested"),
])
def test_bad_input_names_file_and_line(text, lineno, words):
    with pytest.raises(KhotuiError) as err:
        parse_iomem(text, path="/snap/proc/iomem")
    assert err.value.path == "/snap/proc/iomem" and err.value.fix
    assert f"line {lineno}:" in err.value.message and words in err.value.message


def test_missing_iomem(tmp_path):
    with pytest.raises(KhotuiError) as err:
        read_iomem(Sysroot(tmp_path))
    assert err.value.path.endswith("proc/iomem")


def _big(blocks: int) -> str:
    lines = []
    for i in range(blocks):
        b = i * 0x100000
        lines += [f"{b:08x}-{b + 0xfffff:08x} : System RAM", f"  {b:08x}-{b + 0xfff:08x} : Kernel code",
                  f"    {b:08x}-{b + 0xff:08x} : sub", f"  {b + 0x1000:08x}-{b + 0x1fff:08x} : reserved"]
    return "\n".join(lines) + "\n"


def test_20000_nested_lines_parse_whole() -> None:
    iomem = parse_iomem(_big(5000))
    assert len(iomem.flat) == 20000
    assert [r.depth for r in iomem.flat[:4]] == [0, 1, 2, 1]
    assert len(iomem.system_ram()) == 5000



@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789abcdefx- :\n\tSystemRAM", max_size=200))
def test_any_text_parses_or_raises_khotui_error(text):
    try:
        iomem = parse_iomem(text)
    except KhotuiError as err:
        assert err.path and err.fix and "line " in err.message
    else:
        for r in iomem.flat:
            assert r.start <= r.end and all(r.start <= c.start and c.end <= r.end for c in r.children)
