"""A bounded reader for flattened device trees (FDT/DTB, header version 16 and 17).

Written for data khotui does not trust: debugfs blobs that may be cut short, snapshots copied
from another host, files an operator points at by mistake. Every offset and length is checked
against the bytes actually present, never against what the header claims; nothing is allocated
from a header field; the walk is limited in depth and in token count. What cannot be read
becomes a line in `FdtTree.warnings`, and the tree holds everything read before that point.
Only input that is not an FDT at all, or whose header leaves nothing to walk, raises
`KhotuiError`.

The token walk mirrors libfdt's `fdt_check_header()` and `fdt_next_tag()`
(scripts/dtc/libfdt/fdt.c); token values and header layout are those of scripts/dtc/libfdt/fdt.h.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypedDict

from khotui.errors import KhotuiError
from khotui.types import JsonDict

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9

# Header versions this reader walks. 17 is what libfdt's fdt_create() writes (KHO, dtc);
# 16 lacks only size_dt_struct. Older layouts align property values and are not produced by
# any kernel that has KHO.
FDT_FIRST_SUPPORTED_VERSION = 16
FDT_LAST_SUPPORTED_VERSION = 17  # mirrors FDT_LAST_SUPPORTED_VERSION, libfdt.h

HEADER_SIZE_V17 = 40
HEADER_SIZE_V16 = 36
RSVMAP_ENTRY_SIZE = 16

MAX_DEPTH = 64             # nesting deeper than this is reported, not followed
MAX_TOKENS = 200_000       # a KHO root FDT has a few dozen tokens
MAX_RSVMAP_ENTRIES = 1024  # memory reservation map entries listed before giving up

_HEADER_FIELDS = ("magic", "totalsize", "off_dt_struct", "off_dt_strings", "off_mem_rsvmap",
                  "version", "last_comp_version", "boot_cpuid_phys", "size_dt_strings",
                  "size_dt_struct")


@dataclass(frozen=True)
class FdtHeader:
    """The big-endian FDT header (`struct fdt_header`, scripts/dtc/libfdt/fdt.h)."""

    magic: int
    totalsize: int
    off_dt_struct: int
    off_dt_strings: int
    off_mem_rsvmap: int
    version: int
    last_comp_version: int
    boot_cpuid_phys: int
    size_dt_strings: int
    size_dt_struct: int | None  # absent in version 16

    @property
    def size(self) -> int:
        """Bytes the header itself occupies (mirrors fdt_header_size_())."""
        return HEADER_SIZE_V17 if self.version >= 17 else HEADER_SIZE_V16

    def as_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in _HEADER_FIELDS}


@dataclass(frozen=True)
class FdtProp:
    """One property: its name and raw value bytes exactly as stored.

    When the name cannot be read (its string lies past the end of a cut file, outside the
    strings block, or is unterminated) `name` is a placeholder such as
    `<name at strings+0x2c: past end of file>` and `name_missing` says why. A decoder that knows
    the schema may put an inferred name in `name` and set `name_inferred`.
    """

    name: str
    raw: bytes
    nameoff: int = 0
    offset: int = 0  # file offset of the FDT_PROP token
    name_missing: str | None = None
    name_inferred: bool = False

    @property
    def name_known(self) -> bool:
        return self.name_missing is None

    def as_dict(self) -> dict[str, str | int | bool]:
        data: dict[str, str | int | bool] = {"name": self.name, "length": len(self.raw),
                                             "hex": self.raw.hex()}
        if self.name_missing is not None:
            data["name_missing"] = self.name_missing
            data["nameoff"] = self.nameoff
        if self.name_inferred:
            data["name_inferred"] = True
        return data


class FdtNodeDict(TypedDict):
    """`FdtNode.as_dict()`: a node, its properties' `FdtProp.as_dict()` and, nested, its children."""

    name: str
    path: str
    properties: list[dict[str, str | int | bool]]
    children: list[FdtNodeDict]


@dataclass
class FdtNode:
    """A node: `name` as stored (the root's is ""), `path` from the root ("/", "/kho_test")."""

    name: str
    path: str
    properties: list[FdtProp] = field(default_factory=list)
    children: list[FdtNode] = field(default_factory=list)

    def prop(self, name: str) -> FdtProp | None:
        """The first property called `name` (known names only), or None."""
        for p in self.properties:
            if p.name == name and (p.name_known or p.name_inferred):
                return p
        return None

    def child(self, name: str) -> FdtNode | None:
        for c in self.children:
            if c.name == name:
                return c
        return None

    def walk(self) -> Iterator[FdtNode]:
        """This node and every descendant, depth first, in file order (iterative: no recursion)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def string(self, name: str) -> str | None:
        """A property read as one NUL-terminated string (first of a list), else None."""
        p = self.prop(name)
        if p is None:
            return None
        return decode_c_string(p.raw)

    def as_dict(self) -> FdtNodeDict:
        # Built iteratively so a deep tree cannot exhaust the Python stack.
        def shell(node: FdtNode) -> FdtNodeDict:
            return {"name": node.name, "path": node.path,
                    "properties": [p.as_dict() for p in node.properties], "children": []}

        out = shell(self)
        todo: list[tuple[FdtNode, FdtNodeDict]] = [(self, out)]
        while todo:
            node, dest = todo.pop()
            for c in node.children:
                child_dict = shell(c)
                dest["children"].append(child_dict)
                todo.append((c, child_dict))
        return out


@dataclass
class FdtTree:
    """What `parse_fdt()` read: header, root node, reservation map and what went wrong."""

    name: str                      # how the operator knows the file (display path)
    header: FdtHeader
    root: FdtNode
    size: int                      # bytes in the file
    reserve_map: list[tuple[int, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    truncated: tuple[int, int] | None = None  # (bytes present, header totalsize)
    complete: bool = True          # the walk reached FDT_END with every node closed

    @property
    def truncated_text(self) -> str | None:
        """"233 of 293 bytes" when the file is shorter than its header says, else None."""
        if self.truncated is None:
            return None
        have, declared = self.truncated
        return f"{have} of {declared} bytes"

    def nodes(self) -> Iterator[FdtNode]:
        return self.root.walk()

    def find(self, path: str) -> FdtNode | None:
        """The node at `path` ("/" or "/a/b"), or None."""
        node = self.root
        for part in [p for p in path.split("/") if p]:
            nxt = node.child(part)
            if nxt is None:
                return None
            node = nxt
        return node

    def as_dict(self) -> JsonDict:
        return {
            "name": self.name,
            "size": self.size,
            "header": self.header.as_dict(),
            "truncated": None if self.truncated is None else {
                "have": self.truncated[0], "declared": self.truncated[1],
                "text": self.truncated_text},
            "complete": self.complete,
            "reserve_map": [{"address": a, "size": s} for a, s in self.reserve_map],
            "warnings": list(self.warnings),
            "root": self.root.as_dict(),
        }


def decode_c_string(raw: bytes) -> str:
    """Bytes up to the first NUL (or all of them), as text; undecodable bytes escaped."""
    end = raw.find(b"\0")
    if end >= 0:
        raw = raw[:end]
    return raw.decode("utf-8", errors="backslashreplace")


def is_fdt(data: bytes) -> bool:
    """True when `data` begins with the FDT magic d00dfeed."""
    return len(data) >= 4 and data[:4] == b"\xd0\x0d\xfe\xed"


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _not_fdt(name: str, message: str) -> KhotuiError:
    return KhotuiError(message, path=name,
                       fix="check that this is a flattened device tree (a KHO fdt file from "
                           "/sys/kernel/debug/kho); compare with `hexdump -C` of the file")


def parse_header(data: bytes, name: str) -> FdtHeader:
    """Read and sanity-check the header (mirrors fdt_check_header(), libfdt/fdt.c).

    Offsets are checked against the header's own `totalsize` here; against the bytes present
    later, where a short file is a truncation to report rather than an error.
    """
    if len(data) == 0:
        raise _not_fdt(name, "file is empty: no device tree in it")
    if len(data) < 4 or not is_fdt(data):
        shown = data[:4].hex() or "nothing"
        raise _not_fdt(name, f"not a flattened device tree: begins with {shown}, not d00dfeed")
    if len(data) < HEADER_SIZE_V16:
        raise _not_fdt(name, f"device tree header cut short: {len(data)} of at least "
                             f"{HEADER_SIZE_V16} bytes present")
    (magic, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap, version, last_comp_version,
     boot_cpuid_phys, size_dt_strings) = struct.unpack_from(">9I", data, 0)
    size_dt_struct: int | None = None
    if version >= 17:
        if len(data) < HEADER_SIZE_V17:
            raise _not_fdt(name, f"device tree header cut short: {len(data)} of "
                                 f"{HEADER_SIZE_V17} bytes present")
        (size_dt_struct,) = struct.unpack_from(">I", data, 36)
    header = FdtHeader(magic, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap, version,
                       last_comp_version, boot_cpuid_phys, size_dt_strings, size_dt_struct)
    if version < FDT_FIRST_SUPPORTED_VERSION:
        raise _not_fdt(name, f"device tree version {version} is too old to read "
                             f"(khotui reads versions {FDT_FIRST_SUPPORTED_VERSION}-"
                             f"{FDT_LAST_SUPPORTED_VERSION}; KHO writes 17)")
    if header.last_comp_version > FDT_LAST_SUPPORTED_VERSION:
        raise _not_fdt(name, f"device tree needs a reader for version "
                             f"{header.last_comp_version} (khotui reads up to "
                             f"{FDT_LAST_SUPPORTED_VERSION})")
    hsize = header.size
    total = header.totalsize
    if total < hsize:
        raise _not_fdt(name, f"header totalsize {total} is smaller than the header itself")
    for label, off in (("memory reservation map", header.off_mem_rsvmap),
                       ("structure block", header.off_dt_struct),
                       ("strings block", header.off_dt_strings)):
        if off < hsize or off > total:
            raise _not_fdt(name, f"header puts the {label} at offset {off:#x}, outside the "
                                 f"{hsize}..{total} bytes the header describes")
    if header.off_dt_strings + header.size_dt_strings > total:
        raise _not_fdt(name, f"header puts the strings block at {header.off_dt_strings:#x}+"
                             f"{header.size_dt_strings:#x}, past its totalsize {total}")
    if size_dt_struct is not None and header.off_dt_struct + size_dt_struct > total:
        raise _not_fdt(name, f"header puts the structure block at {header.off_dt_struct:#x}+"
                             f"{size_dt_struct:#x}, past its totalsize {total}")
    return header


class _Strings:
    """Property names from the strings block, bounded by the block and by the bytes present."""

    def __init__(self, data: bytes, header: FdtHeader) -> None:
        self.data = data
        self.start = header.off_dt_strings
        self.size = header.size_dt_strings
        self.cache: dict[int, tuple[str, str | None]] = {}

    def name(self, nameoff: int) -> tuple[str, str | None]:
        """(name, None) or (placeholder, reason) for a property's nameoff."""
        hit = self.cache.get(nameoff)
        if hit is not None:
            return hit
        result = self._lookup(nameoff)
        if len(self.cache) < 4096:
            self.cache[nameoff] = result
        return result

    def _lookup(self, nameoff: int) -> tuple[str, str | None]:
        where = f"strings+{nameoff:#x}"
        if nameoff >= self.size:
            reason = f"outside the {self.size}-byte strings block"
            return f"<name at {where}: {reason}>", reason
        begin = self.start + nameoff
        block_end = self.start + self.size
        have_end = min(block_end, len(self.data))
        if begin >= len(self.data):
            reason = "past end of file"
            return f"<name at {where}: {reason}>", reason
        nul = self.data.find(b"\0", begin, have_end)
        if nul < 0:
            reason = "past end of file" if block_end > len(self.data) else "unterminated"
            return f"<name at {where}: {reason}>", reason
        raw = self.data[begin:nul]
        if not raw:
            reason = "empty name"
            return f"<name at {where}: {reason}>", reason
        return raw.decode("utf-8", errors="backslashreplace"), None


def parse_fdt(data: bytes, name: str) -> FdtTree:
    """Parse `data` (the bytes of an FDT file); `name` is how errors and warnings name it.

    Raises KhotuiError only when there is no tree to show (not an FDT, a header that
    contradicts itself, no root node); every other problem becomes a warning.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise KhotuiError(f"expected the bytes of a device tree, got {type(data).__name__}",
                          path=name, fix="this is a bug in khotui: please report it")
    data = bytes(data)
    header = parse_header(data, name)
    file_size = have = len(data)
    warnings: list[str] = []
    truncated = None
    if have < header.totalsize:
        truncated = (have, header.totalsize)
        warnings.append(f"file is shorter than its device tree header says: {have} of "
                        f"{header.totalsize} bytes; showing what is present")
    elif have > header.totalsize:
        warnings.append(f"{have - header.totalsize} bytes after the device tree's "
                        f"totalsize {header.totalsize} ignored")
        data = data[:header.totalsize]
        have = len(data)

    reserve_map = _read_reserve_map(data, header, warnings)

    struct_start = header.off_dt_struct
    if header.size_dt_struct is not None:
        struct_end = struct_start + header.size_dt_struct
    else:  # version 16: the block runs at most to the strings or the end
        struct_end = header.totalsize
    if struct_start >= have:
        raise _not_fdt(name, f"structure block starts at {struct_start:#x}, past the end of "
                             f"the {have}-byte file: no nodes to show")
    root, complete = _walk(data, header, struct_start, min(struct_end, have),
                           struct_end > have, warnings, name)
    return FdtTree(name=name, header=header, root=root, size=file_size, reserve_map=reserve_map,
                   warnings=warnings, truncated=truncated, complete=complete)


def _read_reserve_map(data: bytes, header: FdtHeader, warnings: list[str]) -> list[tuple[int, int]]:
    """Entries of the memory reservation map up to the (0, 0) terminator, bounded."""
    entries: list[tuple[int, int]] = []
    pos = header.off_mem_rsvmap
    for _ in range(MAX_RSVMAP_ENTRIES):
        if pos + RSVMAP_ENTRY_SIZE > len(data):
            warnings.append(f"memory reservation map at {header.off_mem_rsvmap:#x} is cut short "
                            f"by the end of the file")
            return entries
        address, size = struct.unpack_from(">QQ", data, pos)
        if address == 0 and size == 0:
            return entries
        entries.append((address, size))
        pos += RSVMAP_ENTRY_SIZE
    warnings.append(f"memory reservation map has more than {MAX_RSVMAP_ENTRIES} entries; "
                    f"the rest are not listed")
    return entries


def _walk(data: bytes, header: FdtHeader, pos: int, end: int, cut: bool,
          warnings: list[str], name: str) -> tuple[FdtNode, bool]:
    """Walk the structure block [pos, end) (mirrors fdt_next_tag(), libfdt/fdt.c)."""
    strings = _Strings(data, header)
    stack: list[FdtNode] = []
    root: FdtNode | None = None
    complete = False
    cut_note = " (the file is cut short)" if cut else ""
    unnamed: dict[str, int] = {}  # reason -> number of properties whose name is unreadable

    for _ in range(MAX_TOKENS):
        if pos + 4 > end:
            warnings.append(f"structure block ends at {end:#x} before FDT_END{cut_note}")
            break
        tag = struct.unpack_from(">I", data, pos)[0]
        if tag == FDT_BEGIN_NODE:
            nul = data.find(b"\0", pos + 4, end)
            if nul < 0:
                warnings.append(f"node name at {pos + 4:#x} runs past the end of the structure "
                                f"block{cut_note}")
                break
            node_name = data[pos + 4:nul].decode("utf-8", errors="backslashreplace")
            if root is not None and not stack:
                warnings.append(f"a second root node at {pos:#x} is ignored")
                break
            if len(stack) >= MAX_DEPTH:
                warnings.append(f"nodes nested deeper than {MAX_DEPTH} levels at {pos:#x}; "
                                f"the rest is not read")
                break
            if stack:
                parent = stack[-1]
                path = (parent.path.rstrip("/") + "/" + node_name)
                node = FdtNode(node_name, path)
                parent.children.append(node)
            else:
                node = FdtNode(node_name, "/")
                root = node
            stack.append(node)
            pos = _align4(nul + 1)
        elif tag == FDT_END_NODE:
            if not stack:
                warnings.append(f"FDT_END_NODE at {pos:#x} closes no open node")
                break
            stack.pop()
            pos += 4
        elif tag == FDT_PROP:
            if pos + 12 > end:
                warnings.append(f"property header at {pos:#x} is cut short{cut_note}")
                break
            length, nameoff = struct.unpack_from(">II", data, pos + 4)
            pname, missing = strings.name(nameoff)
            value_end = pos + 12 + length
            if value_end > end:
                present = max(0, end - (pos + 12))
                warnings.append(f"property {pname} at {pos:#x} claims {length} bytes but only "
                                f"{present} are present{cut_note}")
                break
            if not stack:
                warnings.append(f"property {pname} at {pos:#x} is outside any node")
                break
            if missing is not None:
                unnamed[missing] = unnamed.get(missing, 0) + 1
            stack[-1].properties.append(FdtProp(pname, data[pos + 12:value_end], nameoff, pos,
                                                missing))
            pos = _align4(value_end)
        elif tag == FDT_NOP:
            pos += 4
        elif tag == FDT_END:
            if stack:
                warnings.append(f"FDT_END at {pos:#x} while {stack[-1].path} is still open")
            elif root is None:
                pass
            else:
                complete = True
            break
        else:
            warnings.append(f"unknown token {tag:#x} at {pos:#x}; the rest is not read")
            break
    else:
        warnings.append(f"more than {MAX_TOKENS} tokens; the rest is not read")

    for reason, count in unnamed.items():
        warnings.append(f"{count} property name(s) cannot be read: {reason} (strings block at "
                        f"{header.off_dt_strings:#x}+{header.size_dt_strings:#x}, file has "
                        f"{len(data)} bytes)")
    if stack and complete is False:
        open_paths = ", ".join(n.path for n in stack[-3:])
        warnings.append(f"{len(stack)} node(s) left open: {open_paths}")
    if root is None:
        raise _not_fdt(name, "no root node in the structure block" + cut_note)
    return root, complete
