"""What the operator reads: DTS view, one-line properties, hex dumps, JSON."""

from __future__ import annotations

import json

from khotui.fdt import FdtNode, FdtProp, decode_sub_blob, describe_property, hexdump, parse_fdt, to_dts
from khotui.fdt.reader import FDT_END, FDT_END_NODE
from tests.fixtures.fdt_blobs import begin, blob, prop, tok


def test_hexdump_is_bounded_and_says_how_much_is_left():
    text = hexdump(bytes(range(40)), 32)
    lines = text.splitlines()
    assert lines[0].startswith("00000000  00 01 02 03 04 05 06 07  08 09")
    assert lines[1].startswith("00000010  10 11")
    assert lines[-1] == "… 8 more bytes"
    assert hexdump(b"") == "(empty)"
    assert "|AB|" in hexdump(b"AB")


def test_values_strings_cells_bytes_and_long():
    node = FdtNode("n", "/n")
    assert describe_property("/n", FdtProp("compatible", b"a\0b\0")) .startswith(
        '/n/compatible = "a", "b"')
    assert "= <0x00000010>" in describe_property("/n", FdtProp("nr_folios", b"\0\0\0\x10"))
    assert "= [01 02 03]" in describe_property("/n", FdtProp("x", b"\1\2\3"))
    assert describe_property("/", FdtProp("empty", b"")) == "/empty  (0 bytes)"
    long = describe_property("/n", FdtProp("big", b"\0" * 1000), node=node)
    assert "936 more bytes" in long and len(long) < 800


def test_kho_u64_shown_native_with_dtc_note():
    p = FdtProp("preserved-memory-map", (0x40034000).to_bytes(8, "little"))
    line = describe_property("/", p)
    assert line.startswith("/preserved-memory-map = <phys 0x40034000>  (8 bytes")
    assert "dtc shows it byte-swapped: <0x00400340 0x00000000>" in line
    size = describe_property("/x", FdtProp("blob-size", (73).to_bytes(8, "little")))
    assert "<size 0x49>" in size and "73 bytes" in size
    # 8-byte `size` outside a reserve-mem-v1 node stays big-endian cells
    assert "<0x00000000 0x00000049>" in describe_property("/x", FdtProp("size", (73).to_bytes(8, "big")))


def test_to_dts_shape_and_unreadable_names():
    strings = b"compatible\0"
    structure = (begin("") + prop(0, b"kho-v4\0") + prop(0x40, b"\0" * 8) +
                 begin("child") + tok(FDT_END_NODE, FDT_END_NODE, FDT_END))
    tree = parse_fdt(blob(structure, strings), "t")
    dts = to_dts(tree)
    assert dts.startswith("/dts-v1/;\n// t\n")
    assert '\tcompatible = "kho-v4";' in dts
    assert "<name at strings+0x40: outside the 11-byte strings block>" in dts
    assert "\tchild {\n\t};\n};\n" in dts


def test_json_of_everything():
    tree = parse_fdt(blob(begin("") + prop(0, b"kho-v4\0") + tok(FDT_END_NODE, FDT_END)), "t")
    data = json.loads(json.dumps(tree.as_dict()))
    assert data["root"]["properties"][0] == {"name": "compatible", "length": 7,
                                             "hex": b"kho-v4\0".hex()}
    assert data["truncated"] is None and data["complete"] is True
    big = decode_sub_blob("mystery", bytes(1000))
    assert big.hexdump(32).splitlines()[-1] == "… 968 more bytes"
    assert big.hexdump().splitlines()[-1] == "… 744 more bytes"
    raw = decode_sub_blob("mystery", b"\1\2")
    assert json.loads(json.dumps(raw.as_dict()))["head_hex"] == "0102"
