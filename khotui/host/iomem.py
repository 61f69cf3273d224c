"""/proc/iomem as a tree of resources.

Each line is `start-end : name`, hex without 0x, `end` inclusive, indented two spaces per
nesting level (r_show(), kernel/resource.c). A non-root reader sees every address as 0
(`iomem_is_exclusive`/`r_show` hide them): `Iomem.all_zero` says so, and placement must not
trust such a map. Nothing KHO-specific appears here; it serves the KHO-off placement, which
walks the `System RAM` ranges from the top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple, TypedDict

from khotui.errors import KhotuiError
from khotui.host.sysroot import Sysroot
from khotui.types import JsonDict

IOMEM = "/proc/iomem"
SYSTEM_RAM = "System RAM"
# add_memory_driver_managed() names (drivers/dax/kmem.c); kexec_file skips them
# (locate_mem_hole_callback(), kernel/kexec_file.c: IORESOURCE_SYSRAM_DRIVER_MANAGED).
DRIVER_MANAGED_PREFIX = "System RAM ("

# kernel/resource.c nests a handful of levels (System RAM > Kernel code; PCI bus > bridge >
# device > BAR): deeper is not the kernel's output, and would overflow recursive walks.
MAX_DEPTH = 32

_LINE_ONE = re.compile(r"( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)")
_LINE = re.compile(r"^( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$", re.MULTILINE)


class ResourceDict(TypedDict):
    """`Resource.as_dict()`: one line and, nested, the lines under it."""

    start: int
    end: int
    name: str
    children: list[ResourceDict]


class Resource:
    """One /proc/iomem line: [start, end] (end inclusive), its name, depth and children."""

    # a plain slotted class, not a dataclass: a 20,000-line iomem builds 20,000 of these
    __slots__ = ("children", "depth", "end", "name", "start")

    def __init__(self, start: int, end: int, name: str, depth: int,
                 children: list[Resource] | None = None) -> None:
        self.start = start
        self.end = end
        self.name = name
        self.depth = depth
        self.children = [] if children is None else children

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def as_dict(self) -> ResourceDict:
        return {"start": self.start, "end": self.end, "name": self.name,
                "children": [c.as_dict() for c in self.children]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Resource) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"Resource({self.start:#x}-{self.end:#x} {self.name!r}, depth={self.depth})"


class RamRange(NamedTuple):
    start: int
    end: int                   # inclusive
    driver_managed: bool = False  # "System RAM (kmem)": not used by kexec_file placement


@dataclass
class Iomem:
    resources: list[Resource]  # top level, in file order
    flat: list[Resource]       # every resource, depth-first in file order
    all_zero: bool             # every address read as 0: the reader was not root
    path: str = IOMEM

    def system_ram(self) -> list[RamRange]:
        """Top-level `System RAM`, plus driver-managed `System RAM (...)` at any depth, ascending."""
        ranges = [RamRange(r.start, r.end) for r in self.resources if r.name == SYSTEM_RAM]
        ranges += [RamRange(r.start, r.end, True) for r in self.flat
                   if r.name.startswith(DRIVER_MANAGED_PREFIX)]
        return sorted(ranges)

    def find(self, text: str, *, limit: int | None = None) -> list[Resource]:
        """Resources whose name contains `text` (case-insensitive) or, when `text` reads as a
        hex address (`57a00000`, `0x57a00000`), that contain that address; depth-first in
        file order, at most `limit` of them."""
        needle = text.strip().lower()
        if not needle:
            return []
        try:
            addr: int | None = int(needle, 16)
        except ValueError:
            addr = None
        out: list[Resource] = []
        for r in self.flat:
            if needle in r.name.lower() or (addr is not None and r.start <= addr <= r.end):
                out.append(r)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def containing(self, addr: int) -> list[Resource]:
        """The chain of resources containing `addr`, outermost first."""
        chain: list[Resource] = []
        level = self.resources
        while True:
            hit = next((r for r in level if r.start <= addr <= r.end), None)
            if hit is None:
                return chain
            chain.append(hit)
            level = hit.children

    def as_dict(self) -> JsonDict:
        return {"all_zero": self.all_zero,
                "resources": [r.as_dict() for r in self.resources],
                "system_ram": [list(r) for r in self.system_ram()]}


def _error(message: str, path: str, lineno: int) -> KhotuiError:
    return KhotuiError(f"line {lineno}: {message}", path=path,
                       fix="give /proc/iomem as the kernel printed it (cat /proc/iomem as root)")


def _line_numbers(text: str) -> list[int]:
    """1-based line number of each non-empty line (only computed to report an error)."""
    return [i for i, line in enumerate(text.split("\n"), 1) if line]


def _find_garbage(text: str, path: str) -> KhotuiError:
    for lineno, line in enumerate(text.split("\n"), 1):
        if line and not _LINE_ONE.fullmatch(line):
            return _error(f"not 'start-end : name': {line[:80]!r}", path, lineno)
    return _error("unreadable content", path, 0)  # not reached: findall and fullmatch agree


def parse_iomem(text: str, *, path: str = IOMEM) -> Iomem:
    """Parse /proc/iomem text; linear in the number of lines (20,000 lines: ~30 ms)."""
    rows = _LINE.findall(text)  # one C-level pass; garbage lines are skipped by it...
    lines = text.split("\n")
    if len(rows) != len(lines) - lines.count(""):
        raise _find_garbage(text, path)  # ...and caught here by counting lines
    top: list[Resource] = []
    flat: list[Resource] = []
    stack: list[Resource] = []   # stack[d] = the open resource at depth d
    zero = True
    for row, (indent, s_hex, e_hex, name) in enumerate(rows):
        n = len(indent)
        depth = n >> 1
        start, end = int(s_hex, 16), int(e_hex, 16)
        if n & 1 or depth > len(stack) or end < start or depth >= MAX_DEPTH:
            raise _row_error(text, path, row, n, depth, len(stack), s_hex, e_hex)
        if end:
            zero = False
        if depth:
            del stack[depth:]
            parent = stack[-1]
            if start < parent.start or end > parent.end:
                raise _error(f"{s_hex}-{e_hex} lies outside its parent "
                             f"{parent.start:x}-{parent.end:x} ({parent.name})", path,
                             _line_numbers(text)[row])
            res = Resource(start, end, name, depth)
            parent.children.append(res)
            stack.append(res)
        else:
            res = Resource(start, end, name, 0)
            top.append(res)
            stack = [res]
        flat.append(res)
    return Iomem(resources=top, flat=flat, all_zero=zero and bool(flat), path=path)


def _row_error(text: str, path: str, row: int, n: int, depth: int, open_depth: int,
               s_hex: str, e_hex: str) -> KhotuiError:
    lineno = _line_numbers(text)[row]
    if n & 1:
        return _error(f"odd indentation ({n} spaces; the kernel indents by two)", path, lineno)
    if depth > open_depth:
        return _error(f"nested {depth} levels deep under a resource at depth {open_depth - 1}",
                      path, lineno)
    if depth >= MAX_DEPTH:
        return _error(f"nested {depth} levels deep; /proc/iomem nests only a few levels "
                      f"(khotui reads up to {MAX_DEPTH})", path, lineno)
    return _error(f"end {e_hex} is below start {s_hex}", path, lineno)


def read_iomem(sysroot: Sysroot) -> Iomem:
    text = sysroot.read_optional_text(IOMEM)
    if text is None:
        raise KhotuiError("no /proc/iomem", path=sysroot.display(IOMEM),
                          fix="give the root of a snapshot that holds proc/iomem")
    iomem = parse_iomem(text, path=sysroot.display(IOMEM))
    return iomem


def all_zero_message(iomem: Iomem) -> KhotuiError:
    """The error to show when placement needs addresses from an all-zero /proc/iomem."""
    return KhotuiError("every address reads as 0: /proc/iomem hides addresses from non-root readers",
                       path=iomem.path, fix="run as root (sudo khotui ...)")
