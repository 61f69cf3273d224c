"""Broken and hostile input: a KhotuiError or a result with warnings, never anything else.

That the work stays bounded by the reader's caps, not by what a hostile header claims, is
measured in tests/test_scale.py (marked perf)."""

from __future__ import annotations

import struct

import pytest

from khotui.errors import KhotuiError
from khotui.fdt import decode_kho_fdt, decode_sub_blob, parse_fdt, to_dts
from khotui.fdt.reader import FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_NOP, FDT_PROP, MAX_DEPTH, MAX_TOKENS
from tests.fixtures.fdt_blobs import begin, blob, prop, tok

NAME = "/sys/kernel/debug/kho/out/fdt"


GOOD = blob(begin("") + prop(0, b"kho-v4\0") + begin("n") + tok(FDT_END_NODE) +
            tok(FDT_END_NODE, FDT_END))


def expect_error(data: bytes, *phrases: str) -> KhotuiError:
    with pytest.raises(KhotuiError) as info:
        parse_fdt(data, NAME)
    err = info.value
    assert err.path == NAME and err.fix
    for phrase in phrases:
        assert phrase in err.message
    return err


def test_good_blob_parses_cleanly():
    tree = parse_fdt(GOOD, NAME)
    assert tree.complete and not tree.warnings
    assert tree.root.string("compatible") == "kho-v4"
    assert [c.path for c in tree.root.children] == ["/n"]


def test_zero_length():
    expect_error(b"", "empty")


def test_wrong_magic():
    expect_error(b"\x7fELF" + b"\0" * 60, "not a flattened device tree", "7f454c46")


def test_short_header():
    expect_error(GOOD[:20], "header cut short")


def test_enormous_totalsize_in_a_40_byte_file():
    data = struct.pack(">10I", 0xD00DFEED, 0xFFFFFFFF, 0x38, 0x40, 0x28, 17, 16, 0, 0x10, 0x10)
    assert len(data) == 40
    expect_error(data, "past the end")


def test_enormous_totalsize_reports_truncation_not_allocation():
    data = GOOD[:4] + struct.pack(">I", 0xFFFFFFF0) + GOOD[8:]
    tree = parse_fdt(data, NAME)
    assert tree.truncated == (len(GOOD), 0xFFFFFFF0)
    assert tree.root.string("compatible") == "kho-v4"


@pytest.mark.parametrize("field, value", [
    ("off_dt_struct", 0x7FFFFFFF), ("off_dt_strings", 0xFFFFFFFF), ("off_mem_rsvmap", 4),
    ("size_dt_strings", 0xFFFFFF00), ("size_dt_struct", 0xFFFFFF00), ("totalsize", 8),
])
def test_header_offsets_outside_totalsize(field, value):
    expect_error(blob(begin("") + tok(FDT_END_NODE, FDT_END), **{field: value}), "header")


def test_unsupported_versions():
    expect_error(blob(begin("") + tok(FDT_END_NODE, FDT_END), version=3), "too old")
    expect_error(blob(begin("") + tok(FDT_END_NODE, FDT_END), last_comp_version=18),
                 "version 18")


def test_structure_block_past_end_of_file():
    data = blob(begin("") + tok(FDT_END_NODE, FDT_END))
    expect_error(data[:0x30], "structure block starts")


def test_unterminated_node_nesting_and_missing_end():
    tree = parse_fdt(blob(begin("") + begin("a") + begin("b")), NAME)
    assert not tree.complete
    assert any("before FDT_END" in w for w in tree.warnings)
    assert any("left open" in w and "/a/b" in w for w in tree.warnings)
    assert tree.find("/a/b") is not None


def test_end_node_without_begin():
    tree = parse_fdt(blob(begin("") + tok(FDT_END_NODE, FDT_END_NODE, FDT_END)), NAME)
    assert any("closes no open node" in w for w in tree.warnings)


def test_no_root_node():
    expect_error(blob(tok(FDT_NOP, FDT_END)), "no root node")


def test_second_root_ignored():
    tree = parse_fdt(blob(begin("") + tok(FDT_END_NODE) + begin("x") + tok(FDT_END_NODE, FDT_END)),
                     NAME)
    assert any("second root" in w for w in tree.warnings) and not tree.root.children


def test_unterminated_node_name():
    tree_data = blob(begin("") + tok(FDT_BEGIN_NODE) + b"abcd" * 3)
    tree = parse_fdt(tree_data, NAME)
    assert any("node name" in w for w in tree.warnings)


def test_unterminated_property_name_string():
    tree = parse_fdt(blob(begin("") + prop(0, b"x\0") + tok(FDT_END_NODE, FDT_END),
                          strings=b"compatible"), NAME)
    [p] = tree.root.properties
    assert p.name == "<name at strings+0x0: unterminated>" and not p.name_known
    assert p.raw == b"x\0"


def test_nameoff_outside_strings_block():
    tree = parse_fdt(blob(begin("") + prop(0x1000, b"\1\2") + tok(FDT_END_NODE, FDT_END)), NAME)
    assert "outside the 11-byte strings block" in tree.root.properties[0].name


def test_property_length_past_end():
    structure = begin("") + tok(FDT_PROP, 0x7FFFFFF0, 0) + b"abcd" + tok(FDT_END_NODE, FDT_END)
    tree = parse_fdt(blob(structure), NAME)
    assert any("claims 2147483632 bytes" in w for w in tree.warnings)
    assert tree.root.properties == []


def test_unknown_token():
    tree = parse_fdt(blob(begin("") + tok(0x77, FDT_END_NODE, FDT_END)), NAME)
    assert any("unknown token 0x77" in w for w in tree.warnings)


def test_nops_are_skipped():
    tree = parse_fdt(blob(tok(FDT_NOP) + begin("") + tok(FDT_NOP, FDT_END_NODE, FDT_NOP, FDT_END)),
                     NAME)
    assert tree.complete and not tree.warnings


def test_depth_bomb_stops_at_the_limit():
    structure = begin("") + begin("d") * 100_000
    tree = parse_fdt(blob(structure), NAME)
    assert any(f"deeper than {MAX_DEPTH}" in w for w in tree.warnings)
    deepest = max(n.path.count("/") for n in tree.nodes())
    assert deepest == MAX_DEPTH - 1
    to_dts(tree)  # iterative: no RecursionError
    tree.as_dict()


def test_token_flood_stops_at_the_token_limit():
    structure = begin("") + tok(FDT_NOP) * 500_000 + tok(FDT_END_NODE, FDT_END)
    tree = parse_fdt(blob(structure), NAME)
    assert any(f"more than {MAX_TOKENS} tokens" in w for w in tree.warnings)


def test_reserve_map_runs_off_the_end():
    data = blob(begin("") + tok(FDT_END_NODE, FDT_END), off_mem_rsvmap=40)
    data = data[:40] + b"\1" * 16 + data[56:]  # first entry nonzero; then the struct block
    tree = parse_fdt(data, NAME)
    assert tree.reserve_map[0] == (0x0101010101010101, 0x0101010101010101)


def test_bytes_after_totalsize_are_reported():
    tree = parse_fdt(GOOD + b"\xff" * 100, NAME)
    assert any("100 bytes after" in w for w in tree.warnings) and tree.complete


def test_version_16_has_no_size_dt_struct():
    structure = begin("") + tok(FDT_END_NODE, FDT_END)
    strings = b"compatible\0"
    off_struct = 36 + 16
    header = struct.pack(">9I", 0xD00DFEED, off_struct + len(structure) + len(strings), off_struct,
                         off_struct + len(structure), 36, 16, 16, 0, len(strings))
    tree = parse_fdt(header + b"\0" * 16 + structure + strings, NAME)
    assert tree.complete and tree.header.size_dt_struct is None


def test_not_bytes():
    with pytest.raises(KhotuiError):
        parse_fdt("d00dfeed", NAME)  # type: ignore[arg-type]


# ---- KHO level ----------------------------------------------------------------------------

def kho_blob(*props_and_nodes: bytes, strings: bytes) -> bytes:
    return blob(begin("") + b"".join(props_and_nodes) + tok(FDT_END_NODE, FDT_END), strings)


STRINGS = b"compatible\0preserved-memory-map\0preserved-data\0blob-size\0"
COMPAT, MAP, PDATA, BSIZE = 0, 11, 32, 47


def test_memory_map_of_wrong_length_is_a_warning():
    kho = decode_kho_fdt(kho_blob(prop(COMPAT, b"kho-v4\0"), prop(MAP, b"\1\2\3\4"),
                                  strings=STRINGS), NAME)
    assert kho.preserved_memory_map is None
    assert any("4 bytes, not 8" in w for w in kho.warnings)


def test_unknown_abi_and_missing_properties():
    kho = decode_kho_fdt(kho_blob(prop(COMPAT, b"kho-v9\0"), begin("x") + tok(FDT_END_NODE),
                                  strings=STRINGS), NAME)
    assert kho.compatible == "kho-v9" and not kho.abi_known
    assert any("unknown KHO ABI 'kho-v9'" in w for w in kho.warnings)
    assert any("no preserved-memory-map" in w for w in kho.warnings)
    assert any("/x: has neither" in w for w in kho.warnings)
    assert kho.layout.value == "unknown"


def test_subnode_with_bad_lengths():
    node = begin("t") + prop(PDATA, b"\0" * 4) + prop(BSIZE, b"\0" * 9) + tok(FDT_END_NODE)
    kho = decode_kho_fdt(kho_blob(prop(COMPAT, b"kho-v4\0"), prop(MAP, b"\0" * 8), node,
                                  strings=STRINGS), NAME)
    sub = kho.subtree("t")
    assert sub.preserved_data is None and sub.blob_size is None
    assert sum("invalid length" in w for w in sub.warnings) == 2


def test_layout_disagreeing_with_abi():
    node = begin("t") + prop(PDATA, b"\0" * 8) + prop(BSIZE, b"\0" * 8) + tok(FDT_END_NODE)
    kho = decode_kho_fdt(kho_blob(prop(COMPAT, b"kho-v1\0"), prop(MAP, b"\0" * 8), node,
                                  strings=STRINGS), NAME)
    assert any("kho-v1 uses fdt" in w for w in kho.warnings)


def test_kho_decode_of_garbage_is_khotui_error():
    with pytest.raises(KhotuiError) as info:
        decode_kho_fdt(b"\0" * 64, NAME)
    assert info.value.path == NAME


# ---- sub-blobs ----------------------------------------------------------------------------

def test_kexec_metadata_short():
    blob_ = decode_sub_blob("kexec-metadata", struct.pack("<I", 1) + b"7.3")
    meta = blob_.kexec_metadata
    assert (meta.version, meta.previous_release, meta.kexec_count) == (1, "7.3", None)
    assert any("7 bytes, expected 73" in w for w in blob_.warnings)
    assert any("not NUL-terminated" in w for w in blob_.warnings)


def test_kexec_metadata_long_and_new_version():
    data = struct.pack("<I", 2) + b"6.99".ljust(65, b"\0") + struct.pack("<I", 5) + b"extra"
    blob_ = decode_sub_blob("kexec-metadata", data)
    assert blob_.kexec_metadata.kexec_count == 5
    assert any("5 more bytes" in w for w in blob_.warnings)
    assert any("version 2" in w for w in blob_.warnings)


def test_kexec_metadata_empty():
    blob_ = decode_sub_blob("kexec-metadata", b"")
    assert blob_.kexec_metadata.version is None


def test_luo_exact_and_short():
    data = b"luo-v5\0\0" + struct.pack("<QQQ", 1, 0, 0x1234000)
    luo = decode_sub_blob("LUO", data).luo
    assert (luo.compatible, luo.liveupdate_num, luo.sessions_pa, luo.flbs_pa) == (
        "luo-v5", 1, 0, 0x1234000)
    short = decode_sub_blob("/x/sub_fdts/LUO", data[:20])
    assert short.luo.liveupdate_num == 1 and short.luo.sessions_pa is None
    assert short.warnings


def test_unknown_blob_keeps_a_bounded_head():
    blob_ = decode_sub_blob("mystery", b"\xab" * 10_000)
    assert blob_.kind == "raw" and blob_.size == 10_000 and len(blob_.head) == 256


def test_blob_with_fdt_magic_but_broken():
    blob_ = decode_sub_blob("kho_test", b"\xd0\x0d\xfe\xed" + b"\xff" * 40, path="/p/kho_test")
    assert blob_.kind == "raw" and blob_.warnings
    assert "not a readable device tree" in blob_.warnings[0]
