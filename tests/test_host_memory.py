"""Nodes and memory blocks: the captures, the pyudev path on this machine, and scale."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from khotui.errors import KhotuiError
from khotui.host.memory import parse_list, read_memory_blocks, read_topology
from khotui.host.sysroot import Sysroot
from tests.conftest import CAPTURES

GiB = 1 << 30


def capture(name: str) -> Sysroot:
    root = CAPTURES / name
    if not root.is_dir():
        pytest.skip(f"{root} is missing: the real KHO captures are needed for this test")
    return Sysroot(root)


def test_parse_list():
    assert parse_list("0-2,5,7-8\n") == [0, 1, 2, 5, 7, 8]
    assert parse_list("\n") == []
    with pytest.raises(KhotuiError):
        parse_list("0-x", path="/sys/devices/system/node/online")


def test_two_nodes_topology():
    topo = read_topology(capture("two-nodes/sysroot"))
    assert topo.block_size == 128 << 20
    assert topo.memory_nodes == [0, 1] and topo.memory_nodes_source == "node memory blocks"
    n0, n1 = topo.nodes
    assert (n0.id, n0.has_memory, n0.cpulist, n0.mem_total_kb) == (0, True, [0, 1], 1030736)
    assert n0.memory_blocks == list(range(8)) and n1.memory_blocks == list(range(8, 16))
    assert n0.block_ranges(topo.block_size) == [(0, GiB - 1)]
    assert n1.block_ranges(topo.block_size) == [(GiB, 2 * GiB - 1)]
    assert topo.node_states["online"] == [0, 1] and topo.block_count == 16


def test_arm64_blocks_start_at_1gib():
    sysroot = capture("two-nodes-arm64/sysroot")
    topo = read_topology(sysroot)
    assert topo.nodes[0].memory_blocks == list(range(8, 16)) and topo.nodes[1].cpulist == []
    blocks = read_memory_blocks(sysroot, topo)
    assert [b.index for b in blocks] == list(range(8, 24))
    b = blocks[0]
    assert (b.start, b.size, b.state, b.online, b.node, b.removable, b.valid_zones) == \
        (GiB, 128 << 20, "online", True, 0, True, "DMA")
    assert blocks[-1].node == 1


def test_capture_blocks_match_node_links():
    sysroot = capture("two-nodes/sysroot")
    blocks = read_memory_blocks(sysroot)
    assert [b.node for b in blocks] == [0] * 8 + [1] * 8
    assert blocks[0].valid_zones == "" and blocks[0].removable is False


def test_synthetic_has_memory_and_block_node_links(tmp_path):
    files = {
        "sys/devices/system/memory/block_size_bytes": "8000000\n",
        "sys/devices/system/node/has_memory": "0,2\n",
        "sys/devices/system/node/node0/cpulist": "0-3\n",
        "sys/devices/system/node/node1/cpulist": "4-7\n",
        "sys/devices/system/node/node2/cpulist": "\n",
        "sys/devices/system/memory/memory0/state": "online\n",
        "sys/devices/system/memory/memory0/node0": "../../node/node0",
        "sys/devices/system/memory/memory5/state": "offline\n",
        "sys/devices/system/memory/memory5/node2": "../../node/node2",
        "sys/devices/system/memory/memory5/valid_zones": "Movable\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    topo = read_topology(Sysroot(tmp_path))
    assert topo.memory_nodes == [0, 2] and topo.memory_nodes_source == "has_memory"
    assert [n.has_memory for n in topo.nodes] == [True, False, True]
    blocks = read_memory_blocks(Sysroot(tmp_path), topo)  # no nodeN/memoryM: uses memoryM/nodeN
    assert [(b.index, b.node, b.state, b.valid_zones) for b in blocks] == \
        [(0, 0, "online", None), (5, 2, "offline", "Movable")]


def test_bad_block_size(tmp_path):
    path = tmp_path / "sys/devices/system/memory/block_size_bytes"
    path.parent.mkdir(parents=True)
    path.write_text("lots\n")
    with pytest.raises(KhotuiError) as err:
        read_topology(Sysroot(tmp_path))
    assert err.value.path.endswith("block_size_bytes") and err.value.fix


def test_no_sysfs_at_all(tmp_path):
    topo = read_topology(Sysroot(tmp_path))
    assert topo.nodes == [] and topo.block_size is None and read_memory_blocks(Sysroot(tmp_path)) == []


@pytest.mark.skipif(not Path("/sys/devices/system/memory").is_dir(),
                    reason="this machine has no /sys/devices/system/memory to compare pyudev with")
def test_pyudev_path_equals_file_path_on_this_machine(monkeypatch):
    pytest.importorskip("pyudev")
    live = Sysroot("/")
    assert live.is_live
    topo_udev = read_topology(live)
    blocks_udev = [b.as_dict() for b in read_memory_blocks(live, topo_udev)]
    # the same root read as if it were a snapshot: directory listings and files
    monkeypatch.setattr(Sysroot, "is_live", property(lambda self: False))
    files = Sysroot("/")
    topo_files = read_topology(files)
    blocks_files = [b.as_dict() for b in read_memory_blocks(files, topo_files)]
    assert topo_udev.as_dict() == topo_files.as_dict()
    assert blocks_udev == blocks_files and blocks_udev


def test_summary_opens_no_memory_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The summary lists the node directories only: a huge host has ~200,000 memory block
    directories, and opening each costs seconds. (How its time grows with the blocks is in
    tests/test_scale.py, marked perf.)"""
    nodes, per_node = 4, 500
    for nid in range(nodes):
        d = tmp_path / f"sys/devices/system/node/node{nid}"
        d.mkdir(parents=True)
        for i in range(per_node):
            block = nid * per_node + i
            (d / f"memory{block}").write_text(f"../../memory/memory{block}")
            (tmp_path / f"sys/devices/system/memory/memory{block}").mkdir(parents=True)
            (tmp_path / f"sys/devices/system/memory/memory{block}/state").write_text("online\n")
    (tmp_path / "sys/devices/system/memory/block_size_bytes").write_text("8000000\n")
    touched: list[str] = []
    for name in ("listdir", "read_optional_text", "read_attribute", "is_dir", "exists"):
        real = getattr(Sysroot, name)

        def spy(self: Sysroot, host_path: str, *a: object, _real: Callable[..., object] = real,
                **k: object) -> object:
            touched.append(host_path)
            return _real(self, host_path, *a, **k)
        monkeypatch.setattr(Sysroot, name, spy)
    topo = read_topology(Sysroot(tmp_path))
    assert topo.block_count == 2_000
    assert topo.nodes[3].block_ranges(topo.block_size) == [(1_500 << 27, (2_000 << 27) - 1)]
    assert touched and not [p for p in touched if "/memory/memory" in p]


def test_cheap_block_read_leaves_other_attributes_none():
    blocks = read_memory_blocks(capture("two-nodes/sysroot"), attributes=("state",))
    assert blocks[0].state == "online" and blocks[0].removable is None and blocks[0].node == 0
