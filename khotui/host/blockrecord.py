"""A snapshot's memory blocks in one file: `sys/devices/system/memory/khotui-blocks.jsonl`.

A 24 TiB host in 128 MiB blocks has 196,608 `memoryN` directories; copied file by file (five
attributes and a `nodeN` link each, and a `memoryN` link under its node) they made 1.6 million
small files. `khotui snapshot` writes this record instead, run-length encoded: consecutive
blocks with the same attribute values and the same node links are one line, so a host whose
blocks are all online in a few nodes takes a few dozen lines, whatever its size.

Format version 1, JSON lines (UTF-8), a header then one line per run, runs in ascending order
and not overlapping:

    {"format": "khotui-blocks", "version": 1, "attributes": ["state", "online", ...],
     "runs": 2, "blocks": 16}
    [0, 8, [0], [0], ["online\\n", "1\\n", "0\\n", "0\\n", "\\n"]]
    [8, 8, [1], [1], ["online\\n", "1\\n", "0\\n", "0\\n", "\\n"]]

A run is `[first, count, nodes, links, values]`: blocks `first` .. `first + count - 1`; `nodes`,
the ids of the nodes whose directory lists them (`nodeN/memoryM`); `links`, the `nodeN` links in
their own directories (`memoryM/nodeN`); `values`, each attribute's text as read (null: no such
file), or null when there is no `memoryM` directory (the block is only listed by a node).
`phys_index` is not recorded: it follows from the index. The header's counts tell a truncated
file from a whole one. Readers check every number against the physical address space before
expanding a run, so a corrupt line cannot make them allocate without bound.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import BinaryIO, TypeGuard

from khotui.errors import KhotuiError, explain_os_error
from khotui.host.sysroot import Sysroot

RECORD = "/sys/devices/system/memory/khotui-blocks.jsonl"
FORMAT = "khotui-blocks"
VERSION = 1

# Physical addresses are at most 52 bits (x86_64 with 5-level paging, arm64 with LPA2), and
# MAX_NUMNODES is at most 1 << 10 (NODES_SHIFT). 4 Mi blocks is 512 TiB in 128 MiB blocks;
# the model lists every block index, so a record claiming more is refused, not expanded.
MAX_PHYSMEM_BITS = 52
MAX_NUMNODES = 1 << 10
MAX_BLOCKS = 1 << 22
MAX_LINE = 64 << 10
_SMALLEST_BLOCK = 1 << 24     # 16 MiB (powerpc sections): the bound when block_size is unknown

FIX = ("take the snapshot again with `khotui snapshot OUT`; this file is written whole by "
       "khotui and is not meant to be edited")


@dataclass(frozen=True)
class BlockRun:
    """`count` consecutive memory blocks from `first` that read alike."""

    first: int
    count: int
    nodes: tuple[int, ...]                    # nodeN/memoryM entries naming these blocks
    links: tuple[int, ...]                    # memoryM/nodeN entries of these blocks
    values: tuple[str | None, ...] | None     # attribute texts; None: no memoryM directory

    @property
    def indices(self) -> range:
        return range(self.first, self.first + self.count)


Key = tuple[tuple[int, ...], tuple[int, ...], "tuple[str | None, ...] | None"]


def runs_of(blocks: Iterable[tuple[int, Key]]) -> list[BlockRun]:
    """Run-length encode (index, (nodes, links, values)) pairs given in ascending index order."""
    runs: list[BlockRun] = []
    first = prev = -2
    key: Key | None = None
    for index, k in blocks:
        if index == prev + 1 and k == key:
            prev = index
            continue
        if key is not None:
            runs.append(BlockRun(first, prev - first + 1, *key))
        first = prev = index
        key = k
    if key is not None:
        runs.append(BlockRun(first, prev - first + 1, *key))
    return runs


def format_record(runs: list[BlockRun], attributes: tuple[str, ...]) -> bytes:
    header = {"format": FORMAT, "version": VERSION, "attributes": list(attributes),
              "runs": len(runs), "blocks": sum(r.count for r in runs)}
    lines = [json.dumps(header)]
    for r in runs:
        values = None if r.values is None else list(r.values)
        lines.append(json.dumps([r.first, r.count, list(r.nodes), list(r.links), values]))
    return ("\n".join(lines) + "\n").encode()


def read_record(sysroot: Sysroot, attributes: tuple[str, ...],
                block_size: int | None) -> list[BlockRun] | None:
    """The runs of the record under a snapshot root (values in `attributes` order), or None when
    the root has none (a capture, the live host): the readers then list directories."""
    if sysroot.is_live:
        return None
    where = sysroot.display(RECORD)
    try:
        fd = sysroot.open_file(RECORD)    # beneath the root, a regular file only
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise explain_os_error(exc, where) from None
    try:
        with open(fd, "rb") as f:
            return parse_record(_lines(f, where), where, attributes, block_size)
    except OSError as exc:
        raise explain_os_error(exc, where) from None


def _lines(f: BinaryIO, where: str) -> Iterator[bytes]:
    n = 0
    while True:
        line = f.readline(MAX_LINE + 1)
        if not line:
            return
        n += 1
        if len(line) > MAX_LINE:
            raise KhotuiError(f"line {n} is longer than {MAX_LINE} bytes; not a memory block "
                              "record khotui wrote", path=where, fix=FIX)
        yield line


def _bad(where: str, n: int, what: str, line: bytes) -> KhotuiError:
    text = line.decode("utf-8", errors="replace").rstrip("\n")
    if len(text) > 80:
        text = text[:77] + "..."
    return KhotuiError(f"line {n}: {what}: {text!r}", path=where, fix=FIX)


def _json(line: bytes) -> object:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return _BAD


_BAD = object()


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _ids(v: object) -> tuple[int, ...] | None:
    """Node ids: ascending, each below MAX_NUMNODES (so at most that many)."""
    if not isinstance(v, list) or not all(_is_int(i) and 0 <= i < MAX_NUMNODES for i in v):
        return None
    if any(a >= b for a, b in pairwise(v)):
        return None
    return tuple(v)


def _whole(lines: Iterable[bytes], where: str) -> Iterator[bytes]:
    """The lines, refusing one without its newline: khotui ends every line with one, so a
    last line without it is a file cut short (a full disk, an interrupted copy)."""
    for n, line in enumerate(lines, 1):
        if not line.endswith(b"\n"):
            raise KhotuiError(f"is cut short: line {n} ends without a newline", path=where,
                              fix=FIX)
        yield line


def parse_record(lines: Iterable[bytes], where: str, attributes: tuple[str, ...],
                 block_size: int | None) -> list[BlockRun]:
    """Check and decode a record; `where` names the file in errors."""
    it = _whole(lines, where)
    head_line = next(it, b"")
    if not head_line.strip():
        raise KhotuiError("is empty: a memory block record starts with its header line",
                          path=where, fix=FIX)
    head = _json(head_line)
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise _bad(where, 1, f"not the header of a {FORMAT} record", head_line)
    version = head.get("version")
    if version != VERSION:
        raise KhotuiError(f"is a {FORMAT} record of version {version!r}; this khotui reads "
                          f"version {VERSION}", path=where,
                          fix="read it with the khotui that wrote it, or take the snapshot again "
                              "with this one")
    names, want_runs, want_blocks = head.get("attributes"), head.get("runs"), head.get("blocks")
    if (not isinstance(names, list) or not all(isinstance(a, str) for a in names)
            or len(names) > 64 or not _is_int(want_runs) or not _is_int(want_blocks)
            or want_runs < 0 or want_blocks < 0):
        raise _bad(where, 1, "the header needs 'attributes' (names), 'runs' and 'blocks' (counts)",
                   head_line)
    limit = (1 << MAX_PHYSMEM_BITS) // (block_size or _SMALLEST_BLOCK)
    if want_blocks > min(MAX_BLOCKS, limit):
        raise _bad(where, 1, f"announces {want_blocks} memory blocks; at most "
                   f"{min(MAX_BLOCKS, limit)} fit a {MAX_PHYSMEM_BITS}-bit physical address "
                   "space in a model khotui builds", head_line)
    pick = [names.index(a) if a in names else None for a in attributes]

    runs: list[BlockRun] = []
    total = 0
    end = 0
    n = 1
    for line in it:
        n += 1
        if not line.strip():
            continue
        item = _json(line)
        if not (isinstance(item, list) and len(item) == 5):
            raise _bad(where, n, "not a run [first, count, nodes, links, values]", line)
        first, count, nodes, links, values = item
        if not (_is_int(first) and _is_int(count) and first >= 0 and count >= 1):
            raise _bad(where, n, "first and count must be whole numbers, count at least 1", line)
        if first < end:
            raise _bad(where, n, f"block {first} comes before the end of the previous run "
                       f"(block {end}); runs are ascending and do not overlap", line)
        if first + count > limit:
            raise _bad(where, n, f"blocks {first}-{first + count - 1} lie beyond the "
                       f"{MAX_PHYSMEM_BITS}-bit physical address space ({limit} blocks)", line)
        total += count
        if total > want_blocks or len(runs) >= want_runs:
            raise _bad(where, n, f"more than the header's {want_runs} runs of {want_blocks} "
                       "blocks", line)
        node_ids, link_ids = _ids(nodes), _ids(links)
        if node_ids is None or link_ids is None:
            raise _bad(where, n, f"nodes and links must be ascending node ids below "
                       f"{MAX_NUMNODES}", line)
        if values is not None:
            if not (isinstance(values, list) and len(values) == len(names)
                    and all(v is None or isinstance(v, str) for v in values)):
                raise _bad(where, n, f"values must be null or {len(names)} texts or nulls, one "
                           "per attribute of the header", line)
            values = tuple(None if i is None else values[i] for i in pick)
        runs.append(BlockRun(first, count, node_ids, link_ids, values))
        end = first + count
    if len(runs) != want_runs or total != want_blocks:
        raise KhotuiError(f"is cut short: the header announces {want_runs} runs of {want_blocks} "
                          f"blocks, the file has {len(runs)} runs of {total}", path=where, fix=FIX)
    return runs
