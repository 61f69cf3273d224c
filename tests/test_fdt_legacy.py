"""6.16 - 7.0 (`kho-v1`) layouts, from the synthetic sysroots in fixtures/legacy_kho.py."""

from __future__ import annotations

import pytest

from khotui.fdt import BlobKind, KhoLayout, decode_kho_fdt, decode_sub_blob, to_dts
from tests.fixtures.legacy_kho import (
    MEMORY_MAP_PHYS,
    RESERVE_MEM,
    SUB_FDT_PHYS,
    build_kho_v1_root,
    make_legacy_sysroot,
)

OUT = "sys/kernel/debug/kho/out"


@pytest.fixture(autouse=True)
def _needs_shared(shared):
    return shared


@pytest.mark.parametrize("kernel", ["6.16", "6.17", "6.18"])
def test_before_6_19_no_fdt_until_finalized(tmp_path, kernel):
    root = make_legacy_sysroot(tmp_path / "s", finalized=False, kernel=kernel)
    out = root / OUT
    assert (out / "finalize").read_text() == "0\n"
    assert not (out / "fdt").exists()
    assert list((out / "sub_fdts").iterdir()) == []
    assert not (root / "sys/kernel/debug/kho/in").exists()
    assert (root / "proc/sys/kernel/osrelease").read_text() == f"{kernel}.0\n"


@pytest.mark.parametrize("kernel", ["6.16", "6.17", "6.18", "6.19", "7.0"])
def test_finalized_kho_v1(tmp_path, kernel):
    out = make_legacy_sysroot(tmp_path / "s", finalized=True, kernel=kernel) / OUT
    assert (out / "finalize").read_text() == "1\n"
    kho = decode_kho_fdt((out / "fdt").read_bytes(), str(out / "fdt"))
    assert kho.compatible == "kho-v1" and kho.abi_kernels == "6.16 - 7.0"
    assert kho.layout is KhoLayout.FDT
    assert kho.preserved_memory_map == MEMORY_MAP_PHYS and not kho.memory_map_empty
    assert kho.warnings == []
    names = {s.name for s in kho.subtrees}
    assert names == ({"memblock"} if kernel == "6.16" else {"memblock", "kho_test"})
    for sub in kho.subtrees:
        assert sub.legacy_fdt == SUB_FDT_PHYS[sub.name] == sub.phys
        assert sub.preserved_data is None and sub.blob_size is None
        # every sub-blob of this era is an FDT, named like its sub-node
        blob = decode_sub_blob(sub.name, (out / "sub_fdts" / sub.name).read_bytes())
        assert blob.kind == BlobKind.FDT and not blob.warnings
    assert "fdt = <phys 0x1ebd000>" in to_dts(kho.tree)


@pytest.mark.parametrize("kernel", ["6.19", "7.0"])
def test_6_19_fdt_from_boot_with_empty_memory_map(tmp_path, kernel):
    out = make_legacy_sysroot(tmp_path / "s", finalized=False, kernel=kernel) / OUT
    assert (out / "finalize").read_text() == "0\n"
    kho = decode_kho_fdt((out / "fdt").read_bytes(), "out/fdt")
    assert kho.compatible == "kho-v1" and kho.layout is KhoLayout.FDT
    assert kho.preserved_memory_map == 0 and kho.memory_map_empty
    assert {s.name for s in kho.subtrees} == {"memblock", "kho_test"}
    assert sorted(p.name for p in (out / "sub_fdts").iterdir()) == ["kho_test", "memblock"]


def test_memblock_reserve_mem_is_native_endian(tmp_path):
    out = make_legacy_sysroot(tmp_path / "s", finalized=True, kernel="6.16") / OUT
    blob = decode_sub_blob("memblock", (out / "sub_fdts/memblock").read_bytes())
    assert blob.compatible == "memblock-v1"
    [region] = blob.reserve_mem
    assert (region.name, region.start, region.size) == RESERVE_MEM
    assert "start = <phys 0x7f000000>" in to_dts(blob.fdt)


def test_patch_level_release_and_bad_kernel(tmp_path):
    root = make_legacy_sysroot(tmp_path / "s", finalized=True, kernel="6.18.3")
    assert (root / "proc/sys/kernel/osrelease").read_text() == "6.18.3\n"
    assert "6.18.3" in (root / "proc/version").read_text()
    with pytest.raises(ValueError):
        make_legacy_sysroot(tmp_path / "t", finalized=True, kernel="7.3")


def test_empty_kho_v1_root_layout_comes_from_abi():
    kho = decode_kho_fdt(build_kho_v1_root(0, {}), "out/fdt")
    assert kho.subtrees == [] and kho.layout is KhoLayout.FDT
