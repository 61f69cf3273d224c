"""Memory map: /proc/iomem, NUMA nodes and memory blocks, scratch regions, planned segments."""

from __future__ import annotations

from typing import TYPE_CHECKING

from khotui.errors import KhotuiError
from khotui.tui.viewmodel import (
    BlockRun,
    IomemLine,
    MemoryMap,
    MemRange,
    Plan,
    Problem,
    _guard,
)
from khotui.types import JsonDict

if TYPE_CHECKING:
    from khotui.host.iomem import Resource
    from khotui.host.kho import KhoState
    from khotui.host.memory import MemoryBlock, Topology
    from khotui.plan.status import HostStatus
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


# Up to this many memory blocks, each block's `state` is read with the map (one small file
# each: ~30 µs); above it (a 24 TiB host has 196,608), on request (`Source.block_states()`).
STATES_WITH_MAP = 4096


def memory_map(src: Source, plan: Plan | None) -> MemoryMap:
    """From the shared host state (iomem, scratch) and the node topology (one directory listing
    per node); no memory block directory is opened unless the host has few blocks."""
    from khotui.host.iomem import all_zero_message
    notes: list[str] = []
    ranges: list[MemRange] = []
    status = _guard(src.status)
    lines: list[IomemLine] | Problem
    ram: list[tuple[int, int]] = []
    iomem = None if isinstance(status, Problem) else status.iomem
    if iomem is None:
        error = status if isinstance(status, Problem) else _iomem_problem(status)
        lines = error
        notes.append(f"/proc/iomem: {error.message}" if error.path is None else error.headline)
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

    bands, blocks, block_size, count = _nodes(src, ram, notes)
    if isinstance(blocks, list) and count <= STATES_WITH_MAP:
        states = _guard(lambda: block_states(src))
        if not isinstance(states, Problem):
            blocks = states

    if isinstance(status, Problem):
        notes.append(f"scratch regions: {status.headline}")
    elif "kho" in status.errors:
        notes.append(f"scratch regions: {status.errors['kho'].headline}")
    else:
        ranges += _scratch(status.kho)
    if plan is not None:
        ranges += [MemRange(s.mem, s.mem + s.memsz - 1, "segment", s.name)
                   for s in plan.segments if s.mem is not None and s.memsz]
    return MemoryMap(bands=bands, ranges=ranges, iomem=lines, blocks=blocks,
                     block_size=block_size, block_count=count, notes=notes)


def search_iomem(src: Source, query: str, limit: int) -> list[IomemLine] | Problem:
    status = _guard(src.status)
    if isinstance(status, Problem):
        return status
    if status.iomem is None:
        return _iomem_problem(status)
    return [_line(r) for r in status.iomem.find(query, limit=limit)]


def _iomem_problem(status: HostStatus) -> Problem:
    problem = status.errors.get("iomem")
    return Problem("not readable") if problem is None else problem


def _line(r: Resource) -> IomemLine:
    # children are converted on first access by the tree; keep the core's objects behind them
    return _LazyLine(r)


class _LazyLine(IomemLine):
    def __init__(self, r: Resource) -> None:
        self.start, self.end, self.name, self.depth = r.start, r.end, r.name, r.depth
        self._r = r
        self._children: list[IomemLine] | None = None

    @property
    def children(self) -> list[IomemLine]:
        if self._children is None:
            self._children = [_LazyLine(c) for c in self._r.children]
        return self._children

    @children.setter
    def children(self, value: list[IomemLine]) -> None:
        self._children = value

    @property
    def has_children(self) -> bool:
        return bool(self._r.children)


def _scratch(kho: KhoState) -> list[MemRange]:
    return [MemRange(r.addr, r.end, "scratch", r.label) for r in kho.scratch if r.size]


def _topology(src: Source) -> Topology:
    from khotui.host.memory import read_topology
    return src.cached("topology", lambda: read_topology(src.sysroot))


def _nodes(src: Source, ram: list[tuple[int, int]], notes: list[str]
           ) -> tuple[list[tuple[str, int, int]], list[BlockRun] | Problem, int | None, int]:
    """Bands per NUMA node and block runs per node, from the topology alone (state unknown);
    else one band over System RAM."""
    from khotui.host.memory import _ranges
    topo = _guard(lambda: _topology(src))
    bands: list[tuple[str, int, int]] = []
    blocks: list[BlockRun] | Problem
    block_size: int | None = None
    count = 0
    if isinstance(topo, Problem):
        blocks = topo
    else:
        block_size = topo.block_size
        count = topo.block_count
        blocks = []
        for n in topo.nodes:
            spans = n.block_ranges(block_size)
            if spans:
                bands.append((f"node{n.id}", spans[0][0], spans[-1][1]))
            # strict=False: spans is empty when the block size is unknown, and then no run is drawn
            for (first, last), (start, end) in zip(_ranges(n.memory_blocks), spans, strict=False):
                blocks.append(BlockRun(node=n.id, first=first, last=last, start=start, end=end,
                                       state=""))
        bands.sort(key=lambda b: b[1])
        blocks.sort(key=lambda b: b.first)
    if not bands and ram:
        bands.append(("System RAM", min(s for s, _ in ram), max(e for _, e in ram)))
        notes.append("no NUMA memory blocks: one band over all System RAM")
    return bands, blocks, block_size, count


# Above this many blocks their states are read in a child process. In a thread of the app the
# read (Python for every block, 15-20 s on 196,608) holds the GIL so much that the event loop
# waits for it after each of its own system calls: 90-130 ms frames while it runs.
STATES_IN_CHILD = 20_000


def block_states(src: Source) -> list[BlockRun]:
    """Every block's `state` (one file per block: seconds on a 196,608-block host), as runs."""
    topo = _topology(src)
    if topo.block_count <= STATES_IN_CHILD:
        from khotui.host.memory import read_memory_blocks
        return _runs(read_memory_blocks(src.sysroot, topo, attributes=("state",)))
    import json
    import os
    import subprocess
    import sys

    import khotui
    # A fresh interpreter, not multiprocessing: no fork of a threaded app, and no re-import of
    # whatever the main module is. It runs as root, so nothing of the caller's may choose its
    # code: `-c` puts the current directory first on sys.path (a `json.py` there would run as
    # root), and PYTHONPATH/PYTHONSTARTUP/PYTHONHOME would too. `-I` (isolated mode: no cwd or
    # script directory on the path, PYTHON* variables and the user site ignored), cwd "/" and an
    # empty environment close all three. khotui itself is found by the directory this very
    # khotui was imported from, passed as an argument (never spliced into the code), so the
    # child runs the parent's code even when that came from a checkout on PYTHONPATH.
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(khotui.__file__)))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from khotui.tui.viewmodel.memory import state_runs_child; state_runs_child()")
    # the root absolute: the child's cwd is "/", where a relative `--root snap` means /snap
    root = os.path.abspath(src.root)
    child = subprocess.run([sys.executable, "-I", "-c", code, package_dir, root],
                           capture_output=True, text=True, check=False, cwd="/", env={})
    try:
        answer = json.loads(child.stdout)
    except ValueError:
        raise KhotuiError(f"the block state reader failed: {child.stderr.strip()[-300:]}",
                          fix="read the states from a shell: cat /sys/devices/system/memory/"
                              "memory*/state") from None
    if "error" in answer:
        message, path, fix = answer["error"]
        raise KhotuiError(message, path=path, fix=fix)
    return [BlockRun(*run) for run in answer["runs"]]


def state_runs_child() -> None:
    """The child's side of block_states(): the runs of the root `sys.argv[2]` as JSON on stdout
    (`sys.argv[1]` is where khotui was imported from)."""
    import json
    import sys

    from khotui.host.memory import read_memory_blocks
    from khotui.host.sysroot import Sysroot
    try:
        runs = _runs(read_memory_blocks(Sysroot(sys.argv[2]), attributes=("state",)))
        answer: JsonDict = {"runs": [[r.node, r.first, r.last, r.start, r.end, r.state] for r in runs]}
    except KhotuiError as exc:
        answer = {"error": [exc.message, exc.path, exc.fix]}
    json.dump(answer, sys.stdout)


def _runs(blocks: list[MemoryBlock]) -> list[BlockRun]:
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
