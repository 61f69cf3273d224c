"""The KHO root FDT (`kho/out/fdt`, `kho/in/fdt`): ABI string, memory map, sub-nodes.

Schema (reference/kho-abi.md §2.1, §2.2; include/linux/kho/abi/kexec_handover.h in 7.3):

    / { compatible = "kho-v4"; preserved-memory-map = <u64>;
        <name> { preserved-data = <u64>; blob-size = <u64>; }; ... };

The u64 values are written with `fdt_property(..., &u64, 8)`: **CPU byte order** (little-endian
on x86_64 and arm64), not FDT big-endian cells. Before 7.1 (`kho-v1`, 6.16-7.0) the sub-node
property was `fdt` (the phys of a sub-FDT, whose size is its own totalsize).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import pairwise

from khotui.fdt.reader import FdtNode, FdtProp, FdtTree, parse_fdt
from khotui.types import JsonDict

PROP_COMPATIBLE = "compatible"
PROP_MEMORY_MAP = "preserved-memory-map"  # KHO_FDT_MEMORY_MAP_PROP_NAME
PROP_PRESERVED_DATA = "preserved-data"    # KHO_SUB_TREE_PROP_NAME (7.1+)
PROP_BLOB_SIZE = "blob-size"              # KHO_SUB_TREE_SIZE_PROP_NAME (kho-v3+)
PROP_LEGACY_FDT = "fdt"                   # PROP_SUB_FDT, 6.16-7.0 (kho-v1)

# The property names a KHO root FDT uses; used to name properties whose strings are cut off.
KHO_PROP_NAMES = (PROP_COMPATIBLE, PROP_MEMORY_MAP, PROP_PRESERVED_DATA, PROP_BLOB_SIZE,
                  PROP_LEGACY_FDT)

# Root `compatible` strings khotui knows, with the releases that write them (kho-abi.md §2.2).
# The string is an opaque ABI version: two kernels with different strings cannot hand over
# (kho_get_fdt's fdt_node_check_compatible() check, kernel/liveupdate/kexec_handover.c).
KNOWN_KHO_ABIS: dict[str, str] = {
    "kho-v1": "6.16 - 7.0",
    "kho-v2": "7.1",
    "kho-v3": "7.1/7.2",
    "kho-v4": "7.2, 7.3",
}


# not enum.StrEnum: that would change str() and format() of a member from "KhoLayout.FDT" to "fdt"
class KhoLayout(str, enum.Enum):  # noqa: UP042
    """How sub-nodes point at their blobs, derived from the properties that appear."""

    FDT = "fdt"                                   # 6.16-7.0 (kho-v1): `fdt`
    PRESERVED_DATA = "preserved-data"             # 7.1 (kho-v2): `preserved-data` only
    BLOB_SIZE = "preserved-data+blob-size"        # kho-v3, kho-v4 (7.1/7.2 on, 7.3)
    MIXED = "mixed"                               # sub-nodes disagree
    UNKNOWN = "unknown"                           # no sub-node and an unknown compatible

    @property
    def kernels(self) -> str:
        return _LAYOUT_KERNELS[self]


_LAYOUT_KERNELS = {
    KhoLayout.FDT: "6.16 - 7.0 (sub-node property `fdt`)",
    KhoLayout.PRESERVED_DATA: "7.1 (sub-node property `preserved-data`)",
    KhoLayout.BLOB_SIZE: "7.1/7.2 and later (`preserved-data` + `blob-size`)",
    KhoLayout.MIXED: "sub-nodes use different layouts",
    KhoLayout.UNKNOWN: "cannot tell: no sub-nodes and an unknown ABI string",
}

_LAYOUT_BY_ABI = {"kho-v1": KhoLayout.FDT, "kho-v2": KhoLayout.PRESERVED_DATA,
                  "kho-v3": KhoLayout.BLOB_SIZE, "kho-v4": KhoLayout.BLOB_SIZE}


def u64_native(raw: bytes) -> int | None:
    """A KHO u64 property: exactly 8 bytes, CPU (little-endian) order; else None."""
    if len(raw) != 8:
        return None
    return int.from_bytes(raw, "little")


@dataclass
class KhoSubtree:
    """One sub-node of the root: a blob handed over, named like its `sub_fdts/` file."""

    name: str
    preserved_data: int | None = None   # phys of the blob (7.1+)
    blob_size: int | None = None        # bytes (kho-v3+)
    legacy_fdt: int | None = None       # phys of the sub-FDT (6.16-7.0)
    warnings: list[str] = field(default_factory=list)

    @property
    def phys(self) -> int | None:
        """Where the blob is, whichever layout says so."""
        return self.preserved_data if self.preserved_data is not None else self.legacy_fdt

    @property
    def layout(self) -> KhoLayout | None:
        if self.preserved_data is not None or self.blob_size is not None:
            return KhoLayout.BLOB_SIZE if self.blob_size is not None else KhoLayout.PRESERVED_DATA
        if self.legacy_fdt is not None:
            return KhoLayout.FDT
        return None

    def as_dict(self) -> dict[str, int | str | list[str] | None]:
        return {"name": self.name, "preserved_data": self.preserved_data,
                "blob_size": self.blob_size, "legacy_fdt": self.legacy_fdt,
                "layout": None if self.layout is None else self.layout.value,
                "warnings": list(self.warnings)}


@dataclass
class KhoFdt:
    """A decoded KHO root FDT. `tree` is the FDT as read (with inferred names filled in)."""

    name: str
    tree: FdtTree
    compatible: str | None
    preserved_memory_map: int | None
    subtrees: list[KhoSubtree]
    layout: KhoLayout
    warnings: list[str] = field(default_factory=list)  # the tree's warnings, then KHO ones

    @property
    def abi_known(self) -> bool:
        return self.compatible in KNOWN_KHO_ABIS

    @property
    def abi_kernels(self) -> str | None:
        """Releases writing this ABI string ("7.2, 7.3"), or None when unknown."""
        return KNOWN_KHO_ABIS.get(self.compatible or "")

    @property
    def truncated(self) -> tuple[int, int] | None:
        return self.tree.truncated

    @property
    def truncated_text(self) -> str | None:
        return self.tree.truncated_text

    @property
    def memory_map_empty(self) -> bool:
        """preserved-memory-map is 0: on 6.19/7.0 (kho-v1) that means not finalized yet."""
        return self.preserved_memory_map == 0

    def subtree(self, name: str) -> KhoSubtree | None:
        for s in self.subtrees:
            if s.name == name:
                return s
        return None

    def as_dict(self) -> JsonDict:
        return {
            "name": self.name,
            "compatible": self.compatible,
            "abi_known": self.abi_known,
            "abi_kernels": self.abi_kernels,
            "preserved_memory_map": self.preserved_memory_map,
            "layout": self.layout.value,
            "layout_kernels": self.layout.kernels,
            "truncated": self.tree.as_dict()["truncated"],
            "subtrees": [s.as_dict() for s in self.subtrees],
            "warnings": list(self.warnings),
            "tree": self.tree.as_dict(),
        }


def decode_kho_fdt(data: bytes, name: str) -> KhoFdt:
    """Decode a KHO root FDT (`out/fdt` or `in/fdt`); `name` is how to name the file.

    Raises KhotuiError when the data is not a device tree at all; anything else odd (unknown
    ABI, wrong property lengths, a cut file) is reported in `warnings`.
    """
    tree = parse_fdt(data, name)
    warnings = list(tree.warnings)
    inferred = _infer_names(tree)
    if inferred:
        names = ", ".join(sorted(set(inferred.values())))
        warnings.append(f"property names inferred from their lengths in the strings block "
                        f"({names}): the strings lie past the end of the file")
        tree = _with_inferred_names(tree, inferred)
    root = tree.root

    compatible = root.string(PROP_COMPATIBLE)
    if compatible is None:
        warnings.append("root has no compatible property: cannot tell the KHO ABI version")
    elif compatible not in KNOWN_KHO_ABIS:
        warnings.append(f"unknown KHO ABI {compatible!r} (khotui knows "
                        f"{', '.join(KNOWN_KHO_ABIS)}); only a kernel with the same string "
                        f"can take this handover")

    memory_map = None
    prop = root.prop(PROP_MEMORY_MAP)
    if prop is None:
        warnings.append(f"root has no {PROP_MEMORY_MAP} property")
    else:
        memory_map = u64_native(prop.raw)
        if memory_map is None:
            # mirrors the len check after fdt_getprop() in kho_get_mem_map_phys(), kexec_handover.c
            warnings.append(f"{PROP_MEMORY_MAP} is {len(prop.raw)} bytes, not 8: the next "
                            f"kernel would refuse this handover")

    subtrees = [_decode_subtree(child) for child in root.children]
    for sub in subtrees:
        warnings.extend(f"/{sub.name}: {w}" for w in sub.warnings)
    layout = _layout(subtrees, compatible)
    expected = _LAYOUT_BY_ABI.get(compatible or "")
    if expected is not None and layout not in (expected, KhoLayout.UNKNOWN):
        warnings.append(f"sub-nodes use the {layout.value} layout but {compatible} uses "
                        f"{expected.value}")
    return KhoFdt(name=name, tree=tree, compatible=compatible, preserved_memory_map=memory_map,
                  subtrees=subtrees, layout=layout, warnings=warnings)


def _decode_subtree(node: FdtNode) -> KhoSubtree:
    sub = KhoSubtree(node.name)
    for pname, attr in ((PROP_PRESERVED_DATA, "preserved_data"), (PROP_BLOB_SIZE, "blob_size"),
                        (PROP_LEGACY_FDT, "legacy_fdt")):
        prop = node.prop(pname)
        if prop is None:
            continue
        value = u64_native(prop.raw)
        if value is None:
            # mirrors kho_in_debugfs_init() "node %s prop %s has invalid length: %d"
            sub.warnings.append(f"{pname} has invalid length {len(prop.raw)} (must be 8); the "
                                f"next kernel skips this blob")
        setattr(sub, attr, value)
    has = {p.name for p in node.properties}
    if PROP_PRESERVED_DATA in has and PROP_LEGACY_FDT in has:
        sub.warnings.append(f"has both {PROP_PRESERVED_DATA} and the pre-7.1 {PROP_LEGACY_FDT}")
    if PROP_PRESERVED_DATA not in has and PROP_LEGACY_FDT not in has:
        sub.warnings.append(f"has neither {PROP_PRESERVED_DATA} nor {PROP_LEGACY_FDT}: no blob "
                            f"is handed over under this name")
    elif PROP_PRESERVED_DATA in has and PROP_BLOB_SIZE not in has:
        sub.warnings.append(f"{PROP_PRESERVED_DATA} without {PROP_BLOB_SIZE}: a 7.3 kernel "
                            f"skips it (kho_retrieve_subtree())")
    if node.children:
        sub.warnings.append(f"has {len(node.children)} child node(s); KHO sub-nodes have none")
    return sub


def _layout(subtrees: list[KhoSubtree], compatible: str | None) -> KhoLayout:
    seen = {s.layout for s in subtrees if s.layout is not None}
    if len(seen) == 1:
        return seen.pop()
    if len(seen) > 1:
        return KhoLayout.MIXED
    return _LAYOUT_BY_ABI.get(compatible or "", KhoLayout.UNKNOWN)


def _infer_names(tree: FdtTree) -> dict[int, str]:
    """Names for properties whose strings were cut off, from the length of their slot.

    libfdt stores each name once, NUL-terminated, back to back; so the distance from one
    nameoff to the next (or to size_dt_strings) is the name's length + 1. The KHO root names
    all differ in length, so a slot length picks at most one of them. The `out/fdt` debugfs
    blob keeps its boot-time size while the FDT grows (kho_add_subtree()), which cuts exactly
    the strings block.
    """
    offsets: set[int] = set()
    missing: set[int] = set()
    for node in tree.nodes():
        for p in node.properties:
            offsets.add(p.nameoff)
            if not p.name_known:
                missing.add(p.nameoff)
    if not missing:
        return {}
    ordered = sorted(o for o in offsets if o < tree.header.size_dt_strings)
    ordered.append(tree.header.size_dt_strings)
    by_length: dict[int, list[str]] = {}
    for n in KHO_PROP_NAMES:
        by_length.setdefault(len(n), []).append(n)
    out: dict[int, str] = {}
    for here, nxt in pairwise(ordered):
        if here not in missing:
            continue
        candidates = by_length.get(nxt - here - 1, [])
        if len(candidates) == 1:
            out[here] = candidates[0]
    return out


def _with_inferred_names(tree: FdtTree, inferred: dict[int, str]) -> FdtTree:
    def fix(p: FdtProp) -> FdtProp:
        if p.name_known or p.nameoff not in inferred:
            return p
        return replace(p, name=inferred[p.nameoff], name_inferred=True)

    mapping: dict[int, FdtNode] = {}
    for node in tree.nodes():
        mapping[id(node)] = FdtNode(node.name, node.path, [fix(p) for p in node.properties], [])
    for node in tree.nodes():
        mapping[id(node)].children = [mapping[id(c)] for c in node.children]
    return replace(tree, root=mapping[id(tree.root)], warnings=list(tree.warnings))


def cross_check_sub_blobs(kho: KhoFdt, sizes: Mapping[str, int]) -> list[str]:
    """Compare the root's sub-nodes with the `sub_fdts/` files beside it (name -> file size).

    A sub-node without a file is what the kernel does with an invalid node
    (kho_in_debugfs_init() skips it); a size other than blob-size means the blob was rewritten
    or the snapshot is inconsistent.
    """
    notes = []
    for sub in kho.subtrees:
        if sub.name not in sizes:
            notes.append(f"sub-node {sub.name} has no sub_fdts/{sub.name} file")
        elif sub.blob_size is not None and sizes[sub.name] != sub.blob_size:
            notes.append(f"sub_fdts/{sub.name} is {sizes[sub.name]} bytes but its blob-size "
                         f"says {sub.blob_size}")
    known = {s.name for s in kho.subtrees}
    for name in sizes:
        if name not in known:
            if kho.truncated is None:
                notes.append(f"sub_fdts/{name} has no sub-node in the root FDT")
            else:
                notes.append(f"sub_fdts/{name} has no sub-node in the part of the root FDT "
                             f"that was readable ({kho.truncated_text})")
    return notes


def abi_compatible(a: str | None, b: str | None) -> bool:
    """Can a kernel writing ABI `a` hand over to one expecting `b`? Exact match only."""
    return a is not None and a == b


__all__ = [
    "KHO_PROP_NAMES",
    "KNOWN_KHO_ABIS",
    "KhoFdt",
    "KhoLayout",
    "KhoSubtree",
    "abi_compatible",
    "cross_check_sub_blobs",
    "decode_kho_fdt",
    "u64_native",
]
