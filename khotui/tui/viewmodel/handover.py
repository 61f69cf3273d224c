"""Handover: kho/out and kho/in, each blob decoded by `khotui.fdt` (FDT, packed struct, or hex)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from khotui.tui.viewmodel import (
    FdtBlob,
    FdtNodeView,
    FdtProperty,
    Handover,
    HandoverSide,
    Problem,
    _guard,
)

if TYPE_CHECKING:
    from khotui.fdt import FdtNode, FdtTree, KhoFdt
    from khotui.tui.viewmodel import Source


def handover(src: Source) -> Handover:
    """Both sides from the shared host state: kho/ was read and the root FDTs decoded once
    (khotui.plan.host_status); only the sub-blobs are decoded here, and DTS text on request."""
    status = _guard(src.status)
    if isinstance(status, Problem):
        return Handover(sides=status)
    if "kho" in status.errors:
        return Handover(sides=status.errors["kho"])
    state = status.kho
    sides: list[HandoverSide] = []
    notes: list[str] = []
    if not state.enabled and not state.in_fdt:
        notes.append(state.off_message or "KHO is off: nothing is handed over")
    for title, fdt, decoded, key, fdt_path, subs, sub_dir in (
            ("outgoing (kho/out)", state.out_fdt, status.kho_out, "kho_out", state.out_fdt_path,
             state.out_sub_fdts, "out"),
            ("incoming (kho/in)", state.in_fdt, status.kho_in, "kho_in", state.in_fdt_path,
             state.in_sub_fdts, "in")):
        if fdt is None and not subs:
            continue
        side = HandoverSide(title)
        if fdt is not None:
            path = fdt_path or f"/sys/kernel/debug/kho/{sub_dir}/fdt"
            error = status.errors.get(key)
            side.blobs.append(_root_blob(fdt, path, decoded,
                                         None if error is None else error.headline))
        for name, data in sorted(subs.items()):
            path = f"/sys/kernel/debug/kho/{sub_dir}/sub_fdts/{name}"
            side.blobs.append(_sub_blob(name, data, path))
        sides.append(side)
    if state.enabled and not any(s.title.startswith("incoming") for s in sides):
        notes.append("no kho/in: this kernel did not boot through a KHO kexec")
    return Handover(sides=sides, notes=notes)


def _dts_of(tree: FdtTree) -> Callable[[], str]:
    def render() -> str:
        from khotui.fdt import to_dts
        dts = _guard(lambda: to_dts(tree))
        return str(dts) if isinstance(dts, Problem) else dts
    return render


# the hex view scrolls (only visible lines are drawn): a whole 1 MiB blob is fine
HEX_LIMIT = 1 << 20


def _hex_of(data: bytes) -> Callable[[], str]:
    def render() -> str:
        from khotui.fdt import hexdump
        return hexdump(data, HEX_LIMIT)
    return render


def _root_blob(data: bytes, path: str, kho: KhoFdt | None, error: str | None) -> FdtBlob:
    blob = FdtBlob(name="fdt", path=path, size=len(data), kind="fdt", raw=data,
                   hex_source=_hex_of(data))
    if kho is None:
        blob.kind = "raw"
        blob.warnings.append(error or "the KHO FDT could not be decoded")
        return blob
    blob.root = _node_view(kho.tree.root)
    blob.dts_source = _dts_of(kho.tree)
    blob.warnings.extend(kho.warnings)
    if kho.truncated_text and not any(kho.truncated_text in w for w in blob.warnings):
        blob.warnings.insert(0, kho.truncated_text)
    return blob


def _sub_blob(name: str, data: bytes, path: str) -> FdtBlob:
    from khotui.fdt import decode_sub_blob
    blob = FdtBlob(name=name, path=path, size=len(data), kind="raw", raw=data,
                   hex_source=_hex_of(data))
    sub = _guard(lambda: decode_sub_blob(name, data, path=path))
    if isinstance(sub, Problem):
        blob.warnings.append(sub.message)
        return blob
    blob.warnings.extend(sub.warnings)
    if name == "LUO" and "/in/" in path:
        # luo_early_startup() (kernel/liveupdate/luo_core.c) frees the incoming struct after
        # reading it; debugfs still shows that page (khotui.host.luo._incoming)
        blob.warnings.append("the kernel freed this page after reading it at boot: these bytes "
                             "may no longer be what it read (the Overview's Live update panel "
                             "has the number it kept)")
    if sub.fdt is not None:
        blob.kind = "fdt"
        blob.root = _node_view(sub.fdt.root)
        blob.dts_source = _dts_of(sub.fdt)
    else:
        struct = sub.kexec_metadata if sub.kexec_metadata is not None else sub.luo
        if struct is not None:
            blob.kind = "struct"
            blob.fields = [(k, _fmt_field(k, v)) for k, v in struct.as_dict().items()]
    return blob


def _fmt_field(name: str, value: object) -> str:
    if value is None:
        return "— (cut off)"
    if isinstance(value, int) and (name.endswith("_pa") or name.endswith("addr")):
        return f"0x{value:x}"
    return str(value)


def _node_view(node: FdtNode) -> FdtNodeView:
    def props() -> list[FdtProperty]:
        from khotui.fdt import format_value
        out: list[FdtProperty] = []
        for p in node.properties:
            value, comment = format_value(p, node=node, node_path=node.path)
            text = value or "(empty)"
            if comment:
                text += f"  // {comment}"
            out.append(FdtProperty(p.name, text, p.raw))
        return out

    return FdtNodeView(node.name or "/", node.path or "/", child_count=len(node.children),
                       load_properties=props,
                       load_children=lambda: [_node_view(c) for c in node.children])
