"""NUMA nodes and memory blocks: /sys/devices/system/node and /sys/devices/system/memory.

Two reads, because a large host has ~200,000 memory block directories:

* `read_topology(sysroot)` — nodes, the block size, and per node the count and ranges of its
  memory blocks, taken from the `nodeN/memoryM` entries (one directory listing per node; no
  block directory is opened).
* `read_memory_blocks(sysroot)` — every block with its attributes (state, removable,
  valid_zones...), one small file read per attribute: seconds on a huge host, so on request.

On the live host both enumerate through pyudev (`subsystem='node'`/`'memory'`); under a
snapshot root they read the snapshot's memory block record (khotui.host.blockrecord) when it
has one, and list directories otherwise (the captures, the demo). All give equal models (tested
on this machine). In the captures the sysfs links `nodeN/memoryM` and `memoryM/nodeN` are small
files holding the link target; only their names are used here. `block_runs()` is what a
snapshot records.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Protocol

from khotui.errors import KhotuiError
from khotui.host.blockrecord import BlockRun, Key, read_record, runs_of
from khotui.host.sysroot import DirReader, Sysroot
from khotui.types import JsonDict

NODE_DIR = "/sys/devices/system/node"
MEMORY_DIR = "/sys/devices/system/memory"
BLOCK_SIZE = "/sys/devices/system/memory/block_size_bytes"

_NODE_RE = re.compile(r"node(\d+)")
_MEMORY_RE = re.compile(r"memory(\d+)")
# Attributes of a memory block device (drivers/base/memory.c) that read_memory_blocks() reads
# and a snapshot records (phys_index is index-derived, not read).
BLOCK_READ = ("state", "online", "phys_device", "removable", "valid_zones")
NODE_ATTRIBUTES = ("cpulist", "meminfo")
NODE_STATE_FILES = ("possible", "online", "has_normal_memory", "has_high_memory", "has_memory",
                    "has_cpu", "has_generic_initiator")


# Node and CPU ids: NR_CPUS is at most 8192 (x86_64 MAXSMP), MAX_NUMNODES 1024. A list naming
# more ids than this is not from sysfs, and expanding '0-4000000000' would exhaust memory.
MAX_LIST_IDS = 1 << 16


def parse_list(text: str, *, path: str | None = None) -> list[int]:
    """A kernel list such as `0-3,8,10-11` as sorted ints ([] for an empty line)."""
    # mirrors bitmap_parselist(), lib/bitmap-str.c (without the ':used/group' form)
    result: list[int] = []
    text = text.strip()
    if not text:
        return result
    try:
        for part in text.split(","):
            lo, sep, hi = part.partition("-")
            if sep:
                a, b = int(lo, 10), int(hi, 10)
                if b < a or a < 0:
                    raise ValueError(part)
                if b - a + 1 + len(result) > MAX_LIST_IDS:
                    raise KhotuiError(f"names more than {MAX_LIST_IDS} ids ({part.strip()!r}); "
                                      "no host has that many nodes or CPUs", path=path,
                                      fix="this file should be read from sysfs unchanged")
                result.extend(range(a, b + 1))
            else:
                if len(result) >= MAX_LIST_IDS:
                    raise KhotuiError(f"names more than {MAX_LIST_IDS} ids; no host has that "
                                      "many nodes or CPUs", path=path,
                                      fix="this file should be read from sysfs unchanged")
                result.append(int(part, 10))
    except ValueError:
        raise KhotuiError(f"not a kernel list like '0-3,8': {text!r}", path=path,
                          fix="this file should be read from sysfs unchanged") from None
    return sorted(set(result))


def _ranges(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted ids as runs [(first, last)]."""
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


@dataclass
class Node:
    id: int
    has_memory: bool
    cpulist: list[int]
    mem_total_kb: int | None          # `Node N MemTotal:` of nodeN/meminfo
    memory_blocks: list[int]          # block indices (from nodeN/memoryM)

    def block_ranges(self, block_size: int | None) -> list[tuple[int, int]]:
        """Physical address runs (start, end inclusive) covered by this node's blocks."""
        if not block_size:
            return []
        return [(a * block_size, (b + 1) * block_size - 1) for a, b in _ranges(self.memory_blocks)]

    def as_dict(self, block_size: int | None = None) -> JsonDict:
        return {
            "id": self.id,
            "has_memory": self.has_memory,
            "cpulist": list(self.cpulist),
            "mem_total_kb": self.mem_total_kb,
            "memory_block_count": len(self.memory_blocks),
            "memory_block_runs": [list(r) for r in _ranges(self.memory_blocks)],
            "memory_ranges": [[hex(a), hex(b)] for a, b in self.block_ranges(block_size)],
        }


@dataclass
class MemoryBlock:
    index: int
    start: int
    size: int
    state: str | None                 # 'online' | 'offline' | 'going-offline'
    online: bool | None
    node: int | None                  # lowest node with a nodeN link (a block may span nodes)
    removable: bool | None
    valid_zones: str | None
    phys_device: int | None

    def as_dict(self) -> dict[str, int | str | bool | None]:
        return {
            "index": self.index, "start": self.start, "size": self.size, "state": self.state,
            "online": self.online, "node": self.node, "removable": self.removable,
            "valid_zones": self.valid_zones, "phys_device": self.phys_device,
        }


@dataclass
class Topology:
    nodes: list[Node]
    block_size: int | None            # memory/block_size_bytes (hex in sysfs)
    memory_nodes: list[int]           # node ids with memory: N_MEMORY order (ascending)
    memory_nodes_source: str | None   # 'has_memory' or 'node memory blocks'
    node_states: dict[str, list[int]] = field(default_factory=dict)  # possible, online, has_*

    def node(self, nid: int) -> Node | None:
        for n in self.nodes:
            if n.id == nid:
                return n
        return None

    @property
    def block_count(self) -> int:
        return sum(len(n.memory_blocks) for n in self.nodes)

    def as_dict(self) -> JsonDict:
        return {
            "block_size": self.block_size,
            "memory_nodes": list(self.memory_nodes),
            "memory_nodes_source": self.memory_nodes_source,
            "node_states": {k: list(v) for k, v in sorted(self.node_states.items())},
            "nodes": [n.as_dict(self.block_size) for n in self.nodes],
        }


def read_block_size(sysroot: Sysroot) -> int | None:
    text = sysroot.read_optional_text(BLOCK_SIZE)
    if text is None:
        return None
    try:
        value = int(text.strip(), 16)  # printed "%lx" by block_size_bytes_show()
    except ValueError:
        raise KhotuiError(f"not a hex block size: {text.strip()!r}", path=sysroot.display(BLOCK_SIZE),
                          fix="this file should be read from sysfs unchanged") from None
    if value <= 0:
        raise KhotuiError("memory block size is 0", path=sysroot.display(BLOCK_SIZE),
                          fix="this file should be read from sysfs unchanged")
    return value


def _node_names(sysroot: Sysroot) -> list[tuple[int, str]]:
    """(id, host dir) of every node: pyudev on the live host, a directory listing otherwise."""
    found: dict[int, str] = {}
    if sysroot.is_live:
        for dev in _udev_devices("node"):
            m = _NODE_RE.fullmatch(dev.sys_name)
            if m:
                found[int(m.group(1))] = f"{NODE_DIR}/{dev.sys_name}"
    else:
        return _node_dirs(sysroot)
    return sorted(found.items())


def _node_dirs(sysroot: Sysroot) -> list[tuple[int, str]]:
    """(id, host dir) of every `nodeN` directory, by listing NODE_DIR."""
    found: dict[int, str] = {}
    for name in sysroot.listdir(NODE_DIR):
        m = _NODE_RE.fullmatch(name)
        if m and sysroot.is_dir(f"{NODE_DIR}/{name}"):
            found[int(m.group(1))] = f"{NODE_DIR}/{name}"
    return sorted(found.items())


def _memory_ids(names: list[str]) -> list[int]:
    """Block indices of the `memoryN` entries of a node directory, without a regex per name."""
    return sorted(int(n[6:]) for n in names if n.startswith("memory") and n[6:].isascii()
                  and n[6:].isdigit())


class _UdevAttributes(Protocol):
    def get(self, name: str) -> bytes | None: ...


class _UdevDevice(Protocol):
    """What khotui reads of a `pyudev.Device` (pyudev ships no type information)."""

    @property
    def sys_name(self) -> str: ...

    @property
    def attributes(self) -> _UdevAttributes: ...

    @property
    def action(self) -> str | None: ...


def _udev_devices(subsystem: str) -> list[_UdevDevice]:
    try:
        import pyudev  # type: ignore[import-untyped]  # pyudev ships no types: see _UdevDevice
        devices: list[_UdevDevice] = list(pyudev.Context().list_devices(subsystem=subsystem))
        return devices
    except Exception as exc:  # ImportError, udev missing in a container...
        raise KhotuiError(f"cannot enumerate {subsystem} devices through udev: {exc}",
                          path=NODE_DIR if subsystem == "node" else MEMORY_DIR,
                          fix="install pyudev and libudev, or read a snapshot with --root") from None


def _mem_total_kb(text: str | None) -> int | None:
    if text is None:
        return None
    for line in text.splitlines():
        parts = line.split()
        # "Node 0 MemTotal:        1030736 kB" (node_read_meminfo(), drivers/base/node.c)
        if (len(parts) >= 4 and parts[2] == "MemTotal:" and parts[3].isascii()
                and parts[3].isdigit() and len(parts[3]) <= 20):
            return int(parts[3])
    return None


def read_topology(sysroot: Sysroot) -> Topology:
    """Nodes and their memory-block summary; does not open any memory block directory."""
    block_size = read_block_size(sysroot)
    states: dict[str, list[int]] = {}
    for name in NODE_STATE_FILES:
        host = f"{NODE_DIR}/{name}"
        text = sysroot.read_optional_text(host)
        if text is not None:
            states[name] = parse_list(text, path=sysroot.display(host))
    runs = read_record(sysroot, BLOCK_READ, block_size)
    listed = _node_blocks(runs) if runs is not None else None
    nodes: list[Node] = []
    for nid, host_dir in _node_names(sysroot):
        blocks = listed.get(nid, []) if listed is not None else _memory_ids(sysroot.listdir(host_dir))
        cpus_host = f"{host_dir}/cpulist"
        cpus_text = sysroot.read_optional_text(cpus_host)
        cpulist = parse_list(cpus_text, path=sysroot.display(cpus_host)) if cpus_text is not None else []
        mem_total = _mem_total_kb(sysroot.read_optional_text(f"{host_dir}/meminfo"))
        nodes.append(Node(id=nid, has_memory=False, cpulist=cpulist, mem_total_kb=mem_total,
                          memory_blocks=blocks))
    if "has_memory" in states:
        memory_nodes, source = states["has_memory"], "has_memory"
    else:
        # no has_memory file (as in the captures): nodes that own memory blocks
        memory_nodes, source = [n.id for n in nodes if n.memory_blocks], "node memory blocks"
        if not nodes:
            source = None
    for n in nodes:
        n.has_memory = n.id in memory_nodes
    return Topology(nodes=nodes, block_size=block_size, memory_nodes=memory_nodes,
                    memory_nodes_source=source, node_states=states)


def memory_node_ids(sysroot: Sysroot) -> list[int]:
    """Node ids with memory in `for_each_node_state(nid, N_MEMORY)` order.

    From `has_memory`, else the nodes with at least one `memoryM` entry: the first entry of
    each node directory is enough, so a 32-node, 196,000-block host costs 32 short directory
    scans instead of listing (and sorting) every block as read_topology() does.
    """
    host = f"{NODE_DIR}/has_memory"
    text = sysroot.read_optional_text(host)
    if text is not None:
        return parse_list(text, path=sysroot.display(host))
    if sysroot.is_live:
        return read_topology(sysroot).memory_nodes
    runs = read_record(sysroot, BLOCK_READ, read_block_size(sysroot))
    if runs is not None:
        listing = {nid for r in runs for nid in r.nodes}
        return [nid for nid, _ in _node_names(sysroot) if nid in listing]
    return [nid for nid, host_dir in _node_names(sysroot) if _has_memory_entry(sysroot, host_dir)]


def _has_memory_entry(sysroot: Sysroot, host_dir: str) -> bool:
    """Does this node directory hold any `memoryN` entry? Stops at the first one."""
    with closing(sysroot.iter_names(host_dir)) as names:
        return any(n.startswith("memory") and n[6:].isdigit() for n in names)


def _flag(text: str | None) -> bool | None:
    if text is None:
        return None
    text = text.strip()
    if text in ("0", "1"):
        return text == "1"
    return None


def _int(text: str | None, base: int = 10) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip(), base)
    except ValueError:
        return None


def _block(sysroot: Sysroot, index: int, block_size: int, attrs: dict[str, str | None],
           node: int | None) -> MemoryBlock:
    state = attrs.get("state")
    zones = attrs.get("valid_zones")
    return MemoryBlock(index=index, start=index * block_size, size=block_size,
                       state=state.strip() if state is not None else None,
                       online=_flag(attrs.get("online")), node=node,
                       removable=_flag(attrs.get("removable")),
                       valid_zones=zones.strip() if zones is not None else None,
                       phys_device=_int(attrs.get("phys_device")))


def read_memory_blocks(sysroot: Sysroot, topology: Topology | None = None, *,
                       attributes: tuple[str, ...] = BLOCK_READ) -> list[MemoryBlock]:
    """Every memory block with its attributes, by index. Costly on a huge host: on request only.

    One small file read per block and attribute (~50 µs each on a slow VM: 196,000 blocks ×
    5 attributes ≈ 50 s); pass fewer `attributes` (e.g. ("state",)) for a cheaper read. Those
    not read are None.
    """
    topology = topology or read_topology(sysroot)
    block_size = topology.block_size
    if block_size is None:
        return []
    node_of: dict[int, int] = {}
    for n in topology.nodes:
        for b in n.memory_blocks:
            node_of.setdefault(b, n.id)
    blocks: list[MemoryBlock] = []
    if sysroot.is_live:
        for dev in _udev_devices("memory"):
            m = _MEMORY_RE.fullmatch(dev.sys_name)
            if not m:
                continue
            index = int(m.group(1))
            attrs = {a: _udev_attr(dev, a) for a in attributes}
            node = node_of.get(index)
            if node is None:
                node = _link_node(sysroot, f"{MEMORY_DIR}/{dev.sys_name}")
            blocks.append(_block(sysroot, index, block_size, attrs, node))
    elif (runs := read_record(sysroot, BLOCK_READ, block_size)) is not None:
        want = set(attributes)
        for r in runs:
            if r.values is None:
                continue
            # read_record() gives one value per name asked for, in that order
            attrs = {a: v for a, v in zip(BLOCK_READ, r.values, strict=True) if a in want}
            link = min(r.links) if r.links else None
            for index in r.indices:
                blocks.append(_block(sysroot, index, block_size, attrs, node_of.get(index, link)))
    else:
        for name in sysroot.listdir(MEMORY_DIR):
            m = _MEMORY_RE.fullmatch(name)
            if not m:
                continue
            index = int(m.group(1))
            host_dir = f"{MEMORY_DIR}/{name}"
            attrs = {a: sysroot.read_optional_text(f"{host_dir}/{a}") for a in attributes}
            node = node_of.get(index)
            if node is None:
                node = _link_node(sysroot, host_dir)
            blocks.append(_block(sysroot, index, block_size, attrs, node))
    blocks.sort(key=lambda b: b.index)
    return blocks


def _node_blocks(runs: list[BlockRun]) -> dict[int, list[int]]:
    """Per node id, the ascending block indices its directory lists (nodeN/memoryM)."""
    out: dict[int, list[int]] = {}
    for r in runs:
        for nid in r.nodes:
            out.setdefault(nid, []).extend(r.indices)
    return out


def block_runs(sysroot: Sysroot,
               on_error: Callable[[str, str], None] | None = None) -> list[BlockRun]:
    """Every memory block and its node links as runs (khotui.host.blockrecord), what a snapshot
    records: from the record if the root has one, else by listing the node and memory
    directories (on the live host too: sysfs is such a tree). An attribute that cannot be read
    is None, reported to `on_error(host_path, message)` if given, else raised."""
    runs = read_record(sysroot, BLOCK_READ, read_block_size(sysroot))
    if runs is not None:
        return runs
    listed: dict[int, list[int]] = {}
    for nid, host_dir in _node_dirs(sysroot):
        for index in _memory_ids(sysroot.listdir(host_dir)):
            listed.setdefault(index, []).append(nid)
    names = {int(m.group(1)): name for m, name in
             ((_MEMORY_RE.fullmatch(n), n) for n in sysroot.listdir(MEMORY_DIR)) if m}

    def keyed() -> Iterator[tuple[int, Key]]:
        # in index order, read as they are encoded: one block's texts in memory at a time
        for index in sorted(listed.keys() | names.keys()):
            nodes = tuple(listed.get(index, ()))
            name = names.get(index)
            if name is None:            # listed by a node, no memoryM directory
                yield index, (nodes, (), None)
                continue
            host_dir = f"{MEMORY_DIR}/{name}"
            # the block's directory resolved once, its entries read relative to it
            with sysroot.open_dir(host_dir) as block:
                entries = block.names()
                values = tuple(_attribute(block, a, on_error) for a in BLOCK_READ)
            links = tuple(sorted({int(k.group(1)) for k in map(_NODE_RE.fullmatch, entries) if k}))
            yield index, (nodes, links, values)
    return runs_of(keyed())


def _attribute(block: DirReader, name: str,
               on_error: Callable[[str, str], None] | None) -> str | None:
    try:
        return block.attribute(name)
    except KhotuiError as exc:
        if on_error is None:
            raise
        on_error(f"{block.host_path}/{name}", exc.message)
        return None


def watch_memory_blocks(sysroot: Sysroot, cancelled: Callable[[], bool],
                        poll: float = 1.0) -> Iterator[str]:
    """Yield the action ('add', 'remove', 'online', 'offline') each time a memory block comes,
    goes or changes state (udev `memory` events: memory hotplug, drivers/base/memory.c), until
    `cancelled()` turns true; checked every `poll` seconds. Nothing on a snapshot, nor where
    udev cannot be reached (no pyudev, a container without netlink): refresh on demand there."""
    if not sysroot.is_live:
        return
    try:
        import pyudev  # untyped; mypy reports only the first import (in _udev_devices())
        monitor = pyudev.Monitor.from_netlink(pyudev.Context())
        monitor.filter_by("memory")
    except Exception:
        return
    while not cancelled():
        device: _UdevDevice | None = monitor.poll(timeout=poll)
        if device is not None and device.action in ("add", "remove", "online", "offline"):
            yield device.action


def _udev_attr(dev: _UdevDevice, name: str) -> str | None:
    try:
        value = dev.attributes.get(name)
    except Exception:
        return None
    if value is None:
        return None
    return value.decode("utf-8", errors="replace")


def _link_node(sysroot: Sysroot, host_dir: str) -> int | None:
    ids = [int(m.group(1)) for m in map(_NODE_RE.fullmatch, sysroot.listdir(host_dir)) if m]
    return min(ids) if ids else None
