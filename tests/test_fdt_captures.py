"""The real KHO 7.3 captures decode the way an operator would read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from khotui.fdt import (
    BlobKind,
    KhoLayout,
    cross_check_sub_blobs,
    decode_kho_fdt,
    decode_sub_blob,
    describe_property,
    parse_fdt,
    to_dts,
)
from tests.conftest import CAPTURES
from tests.fixtures.pyfdt_shape import our_shape, pyfdt_header, pyfdt_shape

KHO = Path("sys/kernel/debug/kho")


def _kho_dirs() -> list[Path]:
    if not CAPTURES.is_dir():
        return []
    return sorted(p for p in CAPTURES.glob("**/sys/kernel/debug/kho") if p.is_dir())


def _root_fdts() -> list[Path]:
    return [d / sub / "fdt" for d in _kho_dirs() for sub in ("out", "in") if (d / sub / "fdt").is_file()]


def _sub_blobs() -> list[Path]:
    return [f for d in _kho_dirs() for f in sorted(d.glob("*/sub_fdts/*")) if f.is_file()]


def _id(p: Path) -> str:
    return str(p.relative_to(CAPTURES))


ROOT_FDTS = _root_fdts()
SUB_BLOBS = _sub_blobs()


@pytest.fixture
def two_nodes(shared: Path) -> Path:
    return shared / "kho" / "two-nodes"


def test_captures_are_there(shared):
    assert len(ROOT_FDTS) >= 10 and len(SUB_BLOBS) >= 20


@pytest.mark.parametrize("path", ROOT_FDTS, ids=_id)
def test_every_root_fdt_is_kho_v4_with_both_subnodes(path):
    kho = decode_kho_fdt(path.read_bytes(), str(path))
    assert kho.compatible == "kho-v4"
    assert kho.abi_known and kho.abi_kernels == "7.2, 7.3"
    assert kho.layout is KhoLayout.BLOB_SIZE
    assert kho.preserved_memory_map  # nonzero physical address
    assert {s.name for s in kho.subtrees} == {"kho_test", "kexec-metadata"}
    for sub in kho.subtrees:
        assert sub.preserved_data and sub.blob_size and sub.legacy_fdt is None
        assert not sub.warnings
    json.dumps(kho.as_dict())


@pytest.mark.parametrize("path", SUB_BLOBS, ids=_id)
def test_every_sub_blob_decodes_without_warnings(path):
    blob = decode_sub_blob(path.name, path.read_bytes(), path=str(path))
    assert not blob.warnings
    if path.name == "kho_test":
        assert blob.kind == BlobKind.FDT and blob.compatible == "kho-test-v1"
        assert blob.fdt.complete and blob.fdt.truncated is None
    else:
        assert path.name == "kexec-metadata"
        assert blob.kind == BlobKind.KEXEC_METADATA
        assert blob.kexec_metadata.version == 1
        assert blob.kexec_metadata.previous_release == "7.3.4"
    json.dumps(blob.as_dict())


def test_two_nodes_out_fdt_is_truncated_but_lists_what_parses(two_nodes):
    path = two_nodes / "sysroot" / KHO / "out/fdt"
    data = path.read_bytes()
    assert len(data) == 233

    tree = parse_fdt(data, "out/fdt")
    assert tree.truncated == (233, 293)
    assert tree.truncated_text == "233 of 293 bytes"
    assert any("233 of 293 bytes" in w for w in tree.warnings)
    assert [c.name for c in tree.root.children] == ["kho_test", "kexec-metadata"]
    # The strings block starts at 0xec, past the 233 bytes: no name can be read.
    names = [p.name for n in tree.nodes() for p in n.properties]
    assert "<name at strings+0x2f: past end of file>" in names
    assert all(n.startswith("<name at strings+0x") for n in names)

    kho = decode_kho_fdt(data, "out/fdt")
    assert kho.truncated_text == "233 of 293 bytes"
    assert kho.compatible == "kho-v4"
    assert kho.preserved_memory_map == 0x40034000
    assert kho.subtree("kho_test").preserved_data == 0x1EBE000
    assert kho.subtree("kho_test").blob_size == 240
    assert kho.subtree("kexec-metadata").blob_size == 73
    assert any("inferred" in w for w in kho.warnings)
    dts = to_dts(kho.tree)
    assert "TRUNCATED: 233 of 293 bytes" in dts
    assert "name inferred: strings+0x20 past end of file" in dts


def test_truncated_and_complete_root_agree(two_nodes):
    """The cut out/fdt and the handed-over in/fdt hold the same handover."""
    out = decode_kho_fdt((two_nodes / "sysroot" / KHO / "out/fdt").read_bytes(), "out/fdt")
    inc = decode_kho_fdt((two_nodes / "next-kernel/sysroot" / KHO / "in/fdt").read_bytes(), "in/fdt")
    assert [s.as_dict() for s in out.subtrees] == [s.as_dict() for s in inc.subtrees]
    assert out.preserved_memory_map == inc.preserved_memory_map


def test_next_kernel_in_fdt_is_complete(two_nodes):
    path = two_nodes / "next-kernel/sysroot" / KHO / "in/fdt"
    kho = decode_kho_fdt(path.read_bytes(), str(path))
    assert kho.tree.size == 293 and kho.truncated is None and kho.tree.complete
    assert kho.warnings == []
    assert [(s.name, s.preserved_data, s.blob_size) for s in kho.subtrees] == [
        ("kho_test", 0x1EBE000, 240), ("kexec-metadata", 0x18CB000, 73)]
    line = describe_property("/kho_test", kho.tree.find("/kho_test").prop("preserved-data"))
    assert line.startswith("/kho_test/preserved-data = <phys 0x1ebe000>")
    assert "byte-swapped" in line


def test_in_sub_blob_sizes_match_blob_size(two_nodes):
    kho_dir = two_nodes / "next-kernel/sysroot" / KHO / "in"
    kho = decode_kho_fdt((kho_dir / "fdt").read_bytes(), "in/fdt")
    for sub in kho.subtrees:
        assert (kho_dir / "sub_fdts" / sub.name).stat().st_size == sub.blob_size


@pytest.mark.parametrize("where, count", [
    ("sysroot/sys/kernel/debug/kho/out", 1),               # cold boot: the next kernel is #1
    ("next-kernel/sysroot/sys/kernel/debug/kho/in", 1),    # what the new kernel received
    ("next-kernel/sysroot/sys/kernel/debug/kho/out", 2),   # and what it would pass on
])
def test_kexec_metadata_counts(two_nodes, where, count):
    path = two_nodes / where / "sub_fdts/kexec-metadata"
    meta = decode_sub_blob("kexec-metadata", path.read_bytes()).kexec_metadata
    assert (meta.version, meta.previous_release, meta.kexec_count) == (1, "7.3.4", count)


def test_kho_test_blob_is_fdt(two_nodes):
    blob = decode_sub_blob(str(two_nodes / "sysroot" / KHO / "out/sub_fdts/kho_test"),
                           (two_nodes / "sysroot" / KHO / "out/sub_fdts/kho_test").read_bytes())
    assert blob.name == "kho_test" and blob.kind == BlobKind.FDT
    assert blob.compatible == "kho-test-v1"
    assert blob.fdt.find("/data").prop("folios_info") is not None


# ---- cross-check against pyfdt on complete blobs --------------------------------------------

COMPLETE = [p for p in ROOT_FDTS if p.parent.name == "in"] + \
           [p for p in SUB_BLOBS if p.name == "kho_test"]


@pytest.mark.parametrize("path", COMPLETE, ids=_id)
def test_structure_matches_pyfdt(path):
    data = path.read_bytes()
    tree = parse_fdt(data, str(path))
    assert our_shape(tree.root) == pyfdt_shape(data)
    header = pyfdt_header(data)
    assert tree.header.as_dict() == {k: header[k] for k in tree.header.as_dict()}


@pytest.mark.parametrize("path", ROOT_FDTS, ids=_id)
def test_sub_fdts_files_agree_with_the_root(path):
    kho = decode_kho_fdt(path.read_bytes(), str(path))
    sizes = {f.name: f.stat().st_size for f in (path.parent / "sub_fdts").iterdir()}
    assert cross_check_sub_blobs(kho, sizes) == []
    notes = cross_check_sub_blobs(kho, {"kho_test": 1, "LUO": 32})
    assert notes == ["sub_fdts/kho_test is 1 bytes but its blob-size says 240",
                     "sub-node kexec-metadata has no sub_fdts/kexec-metadata file",
                     "sub_fdts/LUO has no sub-node in the "
                     + ("part of the root FDT that was readable (233 of 293 bytes)"
                        if kho.truncated else "root FDT")]
