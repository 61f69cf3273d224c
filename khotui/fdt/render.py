"""Text views of decoded FDTs and blobs for the TUI and the CLI: DTS-like, one-line, hex.

KHO's u64 properties are stored in CPU byte order (little-endian), so they are shown as the
kernel reads them (`<phys 0x40034000>`), with a note that dtc would show the bytes as two
big-endian cells, i.e. byte-swapped.
"""

from __future__ import annotations

from khotui.fdt.reader import FdtNode, FdtProp, FdtTree

# 8-byte properties the kernel writes with fdt_property(..., &u64, 8): kind shown before the
# value. `start`/`size` only in memblock's `reserve-mem-v1` nodes (mm/memblock.c).
KHO_NATIVE_U64 = {
    "preserved-memory-map": "phys",
    "preserved-data": "phys",
    "fdt": "phys",
    "blob-size": "size",
}
RESERVE_MEM_U64 = {"start": "phys", "size": "size"}

MAX_VALUE_BYTES = 64  # longer values are shown cut, with the count of the rest


def hexdump(data: bytes, limit: int = 256, *, offset: int = 0, total: int | None = None) -> str:
    """`hexdump -C`-style lines for at most `limit` bytes, then "… N more bytes".

    `total` is the full size when `data` is already only the head of a larger blob.
    """
    shown = data[:max(0, limit)]
    lines = []
    for pos in range(0, len(shown), 16):
        chunk = shown[pos:pos + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk[:8])
        if len(chunk) > 8:
            hexes += "  " + " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 0x20 <= b < 0x7f else "." for b in chunk)
        lines.append(f"{offset + pos:08x}  {hexes:<49s} |{text}|")
    rest = (len(data) if total is None else max(total, len(data))) - len(shown)
    if rest > 0:
        lines.append(f"… {rest} more bytes")
    if not data:
        lines.append("(empty)")
    return "\n".join(lines)


def _printable_strings(raw: bytes) -> list[str] | None:
    """The value as a string list when it looks like one (dtc's heuristic), else None."""
    if len(raw) < 2 or raw[-1] != 0:
        return None
    parts = raw[:-1].split(b"\0")
    if any(not p for p in parts):
        return None
    if not all(0x20 <= b < 0x7f for p in parts for b in p):
        return None
    return [p.decode("ascii") for p in parts]


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _native_u64_kind(prop: FdtProp, node: FdtNode | None, node_path: str) -> str | None:
    if len(prop.raw) != 8 or not (prop.name_known or prop.name_inferred):
        return None
    kind = KHO_NATIVE_U64.get(prop.name)
    if kind is not None:
        return kind
    if prop.name in RESERVE_MEM_U64:
        compatible = node.string("compatible") if node is not None else None
        if compatible == "reserve-mem-v1":
            return RESERVE_MEM_U64[prop.name]
    return None


def format_value(prop: FdtProp, *, node: FdtNode | None = None,
                 node_path: str = "") -> tuple[str, str | None]:
    """(DTS value text, comment or None) for a property."""
    raw = prop.raw
    if not raw:
        return "", None
    kind = _native_u64_kind(prop, node, node_path)
    if kind is not None:
        value = int.from_bytes(raw, "little")
        be = (int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:], "big"))
        comment = (f"u64 in CPU order (LE); dtc shows it byte-swapped: <{be[0]:#010x} "
                   f"{be[1]:#010x}>")
        if kind == "size":
            comment = f"{value} bytes; " + comment
        return f"<{kind} {value:#x}>", comment
    strings = _printable_strings(raw)
    if strings is not None:
        return ", ".join(_quote(s) for s in strings), None
    cut = raw[:MAX_VALUE_BYTES]
    more = len(raw) - len(cut)
    note = f"… {more} more bytes" if more else None
    if len(raw) % 4 == 0:
        cells = " ".join(f"{int.from_bytes(cut[i:i + 4], 'big'):#010x}"
                         for i in range(0, len(cut), 4))
        return f"<{cells}>", note
    return "[" + " ".join(f"{b:02x}" for b in cut) + "]", note


def describe_property(node_path: str, prop: FdtProp, *, node: FdtNode | None = None) -> str:
    """One line: `/kho_test/preserved-data = <phys 0x1ebe000>  (8 bytes)`."""
    value, comment = format_value(prop, node=node, node_path=node_path)
    base = node_path.rstrip("/")
    text = f"{base}/{prop.name}"
    if value:
        text += f" = {value}"
    text += f"  ({len(prop.raw)} bytes"
    if prop.name_inferred:
        text += f"; name inferred, strings+{prop.nameoff:#x} {prop.name_missing}"
    if comment:
        text += f"; {comment}"
    return text + ")"


def to_dts(tree: FdtTree) -> str:
    """A DTS-like text of the tree, with the file's state and warnings as leading comments."""
    out = ["/dts-v1/;", f"// {tree.name}"]
    h = tree.header
    out.append(f"// version {h.version}, last_comp_version {h.last_comp_version}, "
               f"totalsize {h.totalsize}")
    if tree.truncated_text:
        out.append(f"// TRUNCATED: {tree.truncated_text}; what follows is what parses")
    for warning in tree.warnings:
        out.append(f"// warning: {warning}")
    for address, size in tree.reserve_map:
        out.append(f"/memreserve/ {address:#018x} {size:#018x};")
    out.append("")
    # Iterative walk: (node, depth, closing?) so a deep tree cannot exhaust the Python stack.
    todo: list[tuple[FdtNode, int, bool]] = [(tree.root, 0, False)]
    while todo:
        node, depth, closing = todo.pop()
        pad = "\t" * depth
        if closing:
            out.append(f"{pad}}};")
            continue
        label = "/" if depth == 0 else (node.name or "<unnamed>")
        out.append(f"{pad}{label} {{")
        for prop in node.properties:
            value, comment = format_value(prop, node=node, node_path=node.path)
            line = f"{pad}\t{prop.name}" + (f" = {value};" if value else ";")
            notes = []
            if prop.name_inferred:
                notes.append(f"name inferred: strings+{prop.nameoff:#x} {prop.name_missing}")
            if comment:
                notes.append(comment)
            if notes:
                line += "\t// " + "; ".join(notes)
            out.append(line)
        todo.append((node, depth, True))
        for child in reversed(node.children):
            todo.append((child, depth + 1, False))
    if not tree.complete:
        out.append("// (incomplete: the structure block did not end cleanly)")
    return "\n".join(out) + "\n"
