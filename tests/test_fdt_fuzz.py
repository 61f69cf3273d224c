"""Property tests: nothing but KhotuiError ever escapes the decoders; valid trees round-trip."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyfdt.pyfdt import Fdt, FdtPropertyBytes, FdtPropertyStrings
from pyfdt.pyfdt import FdtNode as PyNode

from khotui.errors import KhotuiError
from khotui.fdt import decode_kho_fdt, decode_sub_blob, describe_property, parse_fdt, to_dts
from tests.conftest import CAPTURES
from tests.fixtures.pyfdt_shape import our_shape, pyfdt_shape

KHO = "sys/kernel/debug/kho"
SEEDS = {
    "out_fdt": CAPTURES / "two-nodes/sysroot" / KHO / "out/fdt",
    "in_fdt": CAPTURES / "two-nodes/next-kernel/sysroot" / KHO / "in/fdt",
    "kho_test": CAPTURES / "two-nodes/sysroot" / KHO / "out/sub_fdts/kho_test",
    "kexec-metadata": CAPTURES / "two-nodes/sysroot" / KHO / "out/sub_fdts/kexec-metadata",
}
SEED_BYTES = {k: p.read_bytes() for k, p in SEEDS.items() if p.is_file()}

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def exercise(data: bytes, blob_name: str = "kho_test") -> None:
    """Everything a caller might do with untrusted bytes; only KhotuiError may come out."""
    try:
        kho = decode_kho_fdt(data, "fuzz/fdt")
    except KhotuiError:
        pass
    else:
        to_dts(kho.tree)
        json.dumps(kho.as_dict())
        for node in kho.tree.nodes():
            for p in node.properties:
                describe_property(node.path, p, node=node)
    blob = decode_sub_blob(blob_name, data)  # never raises
    json.dumps(blob.as_dict())
    if blob.fdt is not None:
        to_dts(blob.fdt)


@FUZZ
@given(st.binary(max_size=512), st.sampled_from(["kho_test", "kexec-metadata", "LUO", "x"]))
def test_random_bytes(data, blob_name):
    exercise(data, blob_name)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_behind_a_magic(data):
    exercise(b"\xd0\x0d\xfe\xed" + data)


def _mutations(seed: bytes):
    """Byte flips, u32 overwrites at header/token positions, cuts and insertions of a seed."""
    edit = st.one_of(
        st.tuples(st.just("set"), st.integers(0, len(seed) - 1), st.integers(0, 255)),
        st.tuples(st.just("word"), st.integers(0, len(seed) // 4 - 1),
                  st.sampled_from([0, 1, 2, 3, 4, 9, 0x7FFFFFFF, 0xFFFFFFFF, 0x100, len(seed)])),
        st.tuples(st.just("cut"), st.integers(0, len(seed)), st.just(0)),
        st.tuples(st.just("insert"), st.integers(0, len(seed)), st.integers(0, 255)),
    )
    return st.lists(edit, min_size=1, max_size=6)


def _apply(seed: bytes, edits) -> bytes:
    data = bytearray(seed)
    for kind, where, value in edits:
        if kind == "set" and where < len(data):
            data[where] = value
        elif kind == "word" and where * 4 + 4 <= len(data):
            data[where * 4:where * 4 + 4] = value.to_bytes(4, "big")
        elif kind == "cut":
            del data[where:]
        elif kind == "insert":
            data[where:where] = bytes([value]) * 4
    return bytes(data)


@pytest.mark.parametrize("seed_name", sorted(SEED_BYTES))
def test_mutated_captures(seed_name):
    seed = SEED_BYTES[seed_name]

    @FUZZ
    @given(_mutations(seed))
    def run(edits):
        exercise(_apply(seed, edits), "kexec-metadata" if seed_name == "kexec-metadata" else "kho_test")

    run()


# ---- valid trees built with pyfdt parse to the same structure -----------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789,-_", min_size=1, max_size=12)


@st.composite
def pyfdt_trees(draw, depth=0):
    node = PyNode(draw(names) if depth else "/")
    used = set()
    for _ in range(draw(st.integers(0, 4))):
        pname = draw(names)
        if pname in used:
            continue
        used.add(pname)
        if draw(st.booleans()):
            node.append(FdtPropertyStrings(pname, [draw(st.text(alphabet="kho-v1234 ", min_size=1,
                                                                 max_size=8))]))
        else:
            raw = draw(st.binary(min_size=1, max_size=24))
            node.append(FdtPropertyBytes.init_raw(pname, raw))
    if depth < 3:
        for _ in range(draw(st.integers(0, 3))):
            child = draw(pyfdt_trees(depth=depth + 1))
            if child.get_name() in used:
                continue
            used.add(child.get_name())
            node.append(child)
    return node


@settings(FUZZ, max_examples=120)
@given(pyfdt_trees())
def test_valid_trees_match_pyfdt(root):
    fdt = Fdt(version=17, last_comp_version=16)
    fdt.add_rootnode(root)
    data = fdt.to_dtb()
    tree = parse_fdt(data, "built")
    assert tree.complete and not tree.warnings
    assert our_shape(tree.root) == pyfdt_shape(data)
    # any cut of a valid tree still behaves
    for cut in (len(data) - 1, len(data) // 2, 41):
        with contextlib.suppress(KhotuiError):
            parse_fdt(data[:cut], "cut")
