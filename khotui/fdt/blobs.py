"""KHO sub-blobs (`kho/out/sub_fdts/<name>`, `kho/in/sub_fdts/<name>`).

Not all are FDTs (include/linux/kho/abi/*.h in 7.3):

- `kexec-metadata`: packed LE
  `struct kho_kexec_metadata {u32 version; char previous_release[65]; u32 kexec_count;}`, 73 bytes
- `LUO`: packed LE
  `struct luo_ser {char compatible[8]; u64 liveupdate_num; u64 sessions_pa; u64 flbs_pa;}`,
  32 bytes (6.19/7.0: an FDT `luo-v1`)
- `memblock`: FDT `memblock-v1`, one child per `reserve_mem=` with `start`, `size`
  (native-endian u64)
- `kho_test`: FDT `kho-test-v1` (lib/test_kho.c)

An FDT is recognised by its magic d00dfeed, then known names, then a bounded hex dump.
Decoding never raises: a wrong size or a broken FDT gives a result with warnings.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from khotui.errors import KhotuiError
from khotui.fdt.kho import u64_native
from khotui.fdt.reader import FdtTree, is_fdt, parse_fdt
from khotui.fdt.render import hexdump
from khotui.types import JsonDict

KEXEC_METADATA_NAME = "kexec-metadata"   # KHO_METADATA_NODE_NAME
KEXEC_METADATA_SIZE = 73                 # sizeof(struct kho_kexec_metadata), __packed
KEXEC_METADATA_VERSION = 1               # KHO_KEXEC_METADATA_VERSION
NEW_UTS_LEN = 64                         # __NEW_UTS_LEN
LUO_NAME = "LUO"                         # LUO_KHO_ENTRY_NAME
LUO_SER_SIZE = 32                        # sizeof(struct luo_ser), __packed
LUO_ABI_COMPAT_LEN = 8
MEMBLOCK_NAME = "memblock"               # MEMBLOCK_KHO_FDT

HEAD_BYTES = 256  # bytes of an unknown blob kept for the hex dump


class BlobKind:
    FDT = "fdt"
    KEXEC_METADATA = "kexec-metadata"
    LUO = "luo"
    RAW = "raw"


@dataclass(frozen=True)
class KexecMetadata:
    """`struct kho_kexec_metadata`: which kernel wrote the handover, and how many kexecs so far.

    Outgoing (`out/`): `previous_release` is this kernel's release and `kexec_count` the count
    the next kernel will see (incoming + 1; 1 after a cold boot). `None` = cut off.
    """

    version: int | None
    previous_release: str | None
    kexec_count: int | None

    def as_dict(self) -> dict[str, int | str | None]:
        return {"version": self.version, "previous_release": self.previous_release,
                "kexec_count": self.kexec_count}


@dataclass(frozen=True)
class LuoSer:
    """`struct luo_ser`: the Live Update Orchestrator's root (sessions_pa = 0 until reboot)."""

    compatible: str | None
    liveupdate_num: int | None
    sessions_pa: int | None
    flbs_pa: int | None

    def as_dict(self) -> dict[str, int | str | None]:
        return {"compatible": self.compatible, "liveupdate_num": self.liveupdate_num,
                "sessions_pa": self.sessions_pa, "flbs_pa": self.flbs_pa}


@dataclass(frozen=True)
class ReserveMem:
    """One `reserve_mem=` region preserved by memblock (mm/memblock.c, `reserve-mem-v1`)."""

    name: str
    start: int | None
    size: int | None

    def as_dict(self) -> dict[str, int | str | None]:
        return {"name": self.name, "start": self.start, "size": self.size}


@dataclass
class SubBlob:
    """A decoded sub-blob. Exactly one of `fdt`, `kexec_metadata`, `luo` is set, or none (raw)."""

    name: str                  # the blob's name (sub-node name, file name under sub_fdts/)
    kind: str                  # BlobKind.*
    size: int                  # bytes present
    head: bytes                # the first HEAD_BYTES bytes, for a hex dump
    compatible: str | None = None
    fdt: FdtTree | None = None
    kexec_metadata: KexecMetadata | None = None
    luo: LuoSer | None = None
    reserve_mem: list[ReserveMem] | None = None  # memblock only
    warnings: list[str] = field(default_factory=list)

    def hexdump(self, limit: int = HEAD_BYTES) -> str:
        """The first `limit` bytes (at most HEAD_BYTES kept), then "… N more bytes"."""
        return hexdump(self.head, limit, total=self.size)

    def as_dict(self) -> JsonDict:
        return {
            "name": self.name, "kind": self.kind, "size": self.size,
            "compatible": self.compatible,
            "fdt": None if self.fdt is None else self.fdt.as_dict(),
            "kexec_metadata": None if self.kexec_metadata is None else self.kexec_metadata.as_dict(),
            "luo": None if self.luo is None else self.luo.as_dict(),
            "reserve_mem": None if self.reserve_mem is None else [r.as_dict() for r in self.reserve_mem],
            "head_hex": self.head.hex(),
            "warnings": list(self.warnings),
        }


def decode_sub_blob(name: str, data: bytes, *, path: str | None = None) -> SubBlob:
    """Decode one sub-blob. `name` is the blob name or its file path (the last component is
    used to recognise it); `path` names the file in messages (default: `name`).
    """
    display = path or name
    blob_name = PurePosixPath(name).name or name
    data = bytes(data)
    blob = SubBlob(name=blob_name, kind=BlobKind.RAW, size=len(data), head=data[:HEAD_BYTES])
    if is_fdt(data):
        try:
            tree = parse_fdt(data, display)
        except KhotuiError as exc:
            blob.warnings.append(f"begins with the FDT magic but is not a readable device "
                                 f"tree: {exc.message}")
            return blob
        blob.kind = BlobKind.FDT
        blob.fdt = tree
        blob.compatible = tree.root.string("compatible")
        blob.warnings.extend(tree.warnings)
        if blob.compatible == "memblock-v1" or blob_name == MEMBLOCK_NAME:
            blob.reserve_mem = _memblock(tree, blob.warnings)
        return blob
    if blob_name == KEXEC_METADATA_NAME:
        blob.kind = BlobKind.KEXEC_METADATA
        blob.kexec_metadata = _kexec_metadata(data, blob.warnings)
    elif blob_name == LUO_NAME:
        blob.kind = BlobKind.LUO
        blob.luo = _luo(data, blob.warnings)
        blob.compatible = blob.luo.compatible
    elif not data:
        blob.warnings.append("blob is empty")
    return blob


def _size_warning(what: str, have: int, want: int) -> str | None:
    if have < want:
        return f"{what} is {have} bytes, expected {want}: fields past byte {have} are missing"
    if have > want:
        return (f"{what} is {have} bytes, expected {want}: decoded the first {want}, "
                f"{have - want} more bytes not understood (a newer layout?)")
    return None


def _kexec_metadata(data: bytes, warnings: list[str]) -> KexecMetadata:
    # mirrors struct kho_kexec_metadata, include/linux/kho/abi/kexec_metadata.h
    note = _size_warning("kexec-metadata", len(data), KEXEC_METADATA_SIZE)
    if note:
        warnings.append(note)
    version = struct.unpack_from("<I", data, 0)[0] if len(data) >= 4 else None
    release = None
    release_raw = data[4:4 + NEW_UTS_LEN + 1]
    if release_raw:
        end = release_raw.find(b"\0")
        if end < 0:
            warnings.append("previous_release is not NUL-terminated")
            end = len(release_raw)
        release = release_raw[:end].decode("utf-8", errors="backslashreplace")
    count = (struct.unpack_from("<I", data, 69)[0] if len(data) >= KEXEC_METADATA_SIZE else None)
    if version is not None and version != KEXEC_METADATA_VERSION:
        warnings.append(f"kexec-metadata version {version}, khotui knows version "
                        f"{KEXEC_METADATA_VERSION}: the fields may mean something else")
    return KexecMetadata(version, release, count)


def _luo(data: bytes, warnings: list[str]) -> LuoSer:
    # mirrors struct luo_ser, include/linux/kho/abi/luo.h; luo_early_startup() wants >= 32 bytes
    note = _size_warning("LUO", len(data), LUO_SER_SIZE)
    if note:
        warnings.append(note)
    compatible = None
    if data:
        raw = data[:LUO_ABI_COMPAT_LEN]
        end = raw.find(b"\0")
        compatible = raw[:end if end >= 0 else len(raw)].decode("utf-8", errors="backslashreplace")

    def u64_at(off: int) -> int | None:
        return struct.unpack_from("<Q", data, off)[0] if len(data) >= off + 8 else None

    return LuoSer(compatible, u64_at(8), u64_at(16), u64_at(24))


def _memblock(tree: FdtTree, warnings: list[str]) -> list[ReserveMem]:
    # mirrors prepare_kho_fdt() / reserve_mem_kho_revive(), mm/memblock.c
    regions = []
    for child in tree.root.children:
        values = []
        for pname in ("start", "size"):
            prop = child.prop(pname)
            value = None if prop is None else u64_native(prop.raw)
            if prop is None:
                warnings.append(f"{child.path}: no {pname} property")
            elif value is None:
                warnings.append(f"{child.path}: {pname} is {len(prop.raw)} bytes, not 8")
            values.append(value)
        regions.append(ReserveMem(child.name, values[0], values[1]))
    return regions
