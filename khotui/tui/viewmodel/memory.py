"""Memory map: /proc/iomem, NUMA nodes and memory blocks, scratch regions, planned segments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from khotui.tui.viewmodel import (BlockRun, IomemLine, MemoryMap, MemRange, Plan, Problem,
                                  _guard)

if TYPE_CHECKING:
    from khotui.tui.viewmodel import Source

# iomem names → the picture's kinds (colour and legend only; nothing decides on them)
KERNEL_NAMES = ("Kernel code", "Kernel rodata", "Kernel data", "Kernel bss")


def kind_of(name: str, depth: int) -> str | None:
    if name in KERNEL_NAMES:
        return "kernel"
    if name == "Crash kernel":
        return "crash"
    if depth > 0:
        return "reserved" if name.lower() == "reserved" and depth == 1 else None
    if name.startswith("System RAM"):
        return "ram"
    if name.lower().startswith("reserved"):
        return "reserved"
    if name.startswith(("ACPI", "EFI", "Persistent", "Unknown E820")):
        return "acpi"
    return "other"


def memory_map(src: "Source", plan: Plan | None) -> MemoryMap:
    from khotui.host.iomem import all_zero_message, read_iomem
    notes: list[str] = []
    ranges: list[MemRange] = []
    iomem = _guard(lambda: read_iomem(src.sysroot))
    lines: list[IomemLine] | Problem
    ram: list[tuple[int, int]] = []
    if isinstance(iomem, Problem):
        lines = iomem
        notes.append(f"/proc/iomem: {iomem.message}")
    else:
        if iomem.all_zero:
            err = all_zero_message(iomem)
            notes.append(f"{err.message} ({err.fix})" if err.fix else err.message)
        lines = [_line(r) for r in iomem.resources]
        for r in iomem.flat:
            kind = kind_of(r.name, r.depth)
            if kind:
                ranges.append(MemRange(r.start, r.end, kind, r.name))
            if kind == "ram":
                ram.append((r.start, r.end))

    bands, blocks, block_size = _nodes(src, ram, notes)

    scratch = _guard(lambda: _scratch(src))
    if isinstance(scratch, Problem):
        notes.append(f"scratch regions: {scratch.message}")
    else:
        ranges += scratch
    if plan is not None:
        ranges += [MemRange(s.mem, s.mem + s.memsz - 1, "segment", s.name)
                   for s in plan.segments if s.mem is not None and s.memsz]
    return MemoryMap(bands=bands, ranges=ranges, iomem=lines, blocks=blocks,
                     block_size=block_size, notes=notes)


def _line(r: Any) -> IomemLine:
    # children are converted on first access by the tree; keep the core's objects behind them
    return _LazyLine(r)


class _LazyLine(IomemLine):
    def __init__(self, r: Any) -> None:  # noqa: D107
        self.start, self.end, self.name, self.depth = r.start, r.end, r.name, r.depth
        self._r = r
        self._children: list[IomemLine] | None = None

    @property  # type: ignore[override]
    def children(self) -> list[IomemLine]:
        if self._children is None:
            self._children = [_LazyLine(c) for c in self._r.children]
        return self._children

    @children.setter
    def children(self, value: list[IomemLine]) -> None:
        self._children = value


def _scratch(src: "Source") -> list[MemRange]:
    from khotui.host.kho import read_kho
    state = read_kho(src.sysroot)
    out = []
    for r in state.scratch:
        if r.size:
            label = f"scratch[{r.index}] {r.kind}" + (f" node{r.node}" if r.kind == "node" else "")
            out.append(MemRange(r.addr, r.addr + r.size - 1, "scratch", label))
    return out


def _nodes(src: "Source", ram: list[tuple[int, int]], notes: list[str]):
    """Bands per NUMA node (from memory blocks), else per System RAM span; block runs."""
    from khotui.host.memory import read_memory_blocks, read_topology
    topo = _guard(lambda: read_topology(src.sysroot))
    bands: list[tuple[str, int, int]] = []
    blocks: list[BlockRun] | Problem
    block_size = None
    if isinstance(topo, Problem):
        blocks = topo
    else:
        block_size = topo.block_size
        raw = _guard(lambda: read_memory_blocks(src.sysroot, topo))
        blocks = raw if isinstance(raw, Problem) else _runs(raw)
        if not isinstance(raw, Problem):
            per_node: dict[int | None, list[tuple[int, int]]] = {}
            for b in raw:
                per_node.setdefault(b.node, []).append((b.start, b.start + b.size - 1))
            for node, spans in sorted(per_node.items(), key=lambda kv: min(s for s, _ in kv[1])):
                label = f"node{node}" if node is not None else "no node"
                bands.append((label, min(s for s, _ in spans), max(e for _, e in spans)))
    if not bands and ram:
        bands.append(("System RAM", min(s for s, _ in ram), max(e for _, e in ram)))
        notes.append("no NUMA memory blocks: one band over all System RAM")
    return bands, blocks, block_size


def _runs(blocks: list[Any]) -> list[BlockRun]:
    runs: list[BlockRun] = []
    for b in sorted(blocks, key=lambda b: b.index):
        state = b.state or ("online" if b.online else "offline" if b.online is False else "?")
        last = runs[-1] if runs else None
        if last and last.node == b.node and last.state == state and last.last + 1 == b.index \
                and last.end + 1 == b.start:
            last.last = b.index
            last.end = b.start + b.size - 1
        else:
            runs.append(BlockRun(node=b.node, first=b.index, last=b.index, start=b.start,
                                 end=b.start + b.size - 1, state=state))
    return runs
