"""KHO FDT and sub-blob decoding: a bounded FDT reader, the KHO schema, text views.

    parse_fdt(data, name) -> FdtTree           any FDT, bounded, cut files reported
    decode_kho_fdt(data, name) -> KhoFdt       kho/out/fdt, kho/in/fdt
    decode_sub_blob(name, data) -> SubBlob     kho/*/sub_fdts/<name>
    to_dts(tree), describe_property(path, prop), hexdump(data, limit)

Everything here works on bytes already read (the host layer reads, size-capped) and raises
only `KhotuiError`. Imports only the shared base modules (errors, types, units).
"""

from khotui.fdt.blobs import BlobKind, KexecMetadata, LuoSer, ReserveMem, SubBlob, decode_sub_blob
from khotui.fdt.kho import (
    KHO_PROP_NAMES,
    KNOWN_KHO_ABIS,
    KhoFdt,
    KhoLayout,
    KhoSubtree,
    abi_compatible,
    cross_check_sub_blobs,
    decode_kho_fdt,
    u64_native,
)
from khotui.fdt.reader import FDT_MAGIC, FdtHeader, FdtNode, FdtProp, FdtTree, is_fdt, parse_fdt
from khotui.fdt.render import describe_property, format_value, hexdump, to_dts

__all__ = [
    "FDT_MAGIC",
    "KHO_PROP_NAMES",
    "KNOWN_KHO_ABIS",
    "BlobKind",
    "FdtHeader",
    "FdtNode",
    "FdtProp",
    "FdtTree",
    "KexecMetadata",
    "KhoFdt",
    "KhoLayout",
    "KhoSubtree",
    "LuoSer",
    "ReserveMem",
    "SubBlob",
    "abi_compatible",
    "cross_check_sub_blobs",
    "decode_kho_fdt",
    "decode_sub_blob",
    "describe_property",
    "format_value",
    "hexdump",
    "is_fdt",
    "parse_fdt",
    "to_dts",
    "u64_native",
]
