"""Snapshots: every reader gives the same model on the source and on the copy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from khotui.errors import KhotuiError
from khotui.host.blockrecord import RECORD
from khotui.host.boot import read_boot
from khotui.host.iomem import read_iomem
from khotui.host.kernels import find_kernels
from khotui.host.kho import read_kho
from khotui.host.memory import BLOCK_READ, memory_node_ids, read_memory_blocks, read_topology
from khotui.host.snapshot import MANIFEST, read_kmsg, write_snapshot
from khotui.host.state import read_kexec_state
from khotui.host.sysroot import Sysroot
from khotui.host.system import read_system
from tests.conftest import CAPTURES, REPO

sys.path.insert(0, str(REPO / "bench"))
import gen_sysroot

RECORD_REL = RECORD.lstrip("/")


def all_sysroots() -> list[Path]:
    if not CAPTURES.is_dir():
        return []
    return sorted(p for p in CAPTURES.glob("**/sysroot") if p.is_dir())


def models(sysroot: Sysroot) -> dict:
    return {
        "boot": read_boot(sysroot).as_dict(),
        "kho": read_kho(sysroot).as_dict(),
        "iomem": read_iomem(sysroot).as_dict(),
        "topology": read_topology(sysroot).as_dict(),
        "blocks": [b.as_dict() for b in read_memory_blocks(sysroot)],
        "state": read_kexec_state(sysroot).as_dict(),
        "kernels": [k.as_dict() for k in find_kernels(sysroot)],
        "system": read_system(sysroot).as_dict(),
    }


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _is_block_file(rel: str) -> bool:
    """memoryN/* and nodeN/memoryM: what a snapshot keeps in the block record instead."""
    return bool(re.fullmatch(r"sys/devices/system/(memory/memory\d+/.*|node/node\d+/memory\d+)",
                             rel))


@pytest.mark.parametrize("root", all_sysroots(), ids=lambda p: str(p.relative_to(CAPTURES)))
def test_snapshot_of_each_capture_reads_the_same(root, tmp_path):
    out = tmp_path / "snap"
    skipped = write_snapshot(Sysroot(root), out)
    assert skipped == []
    assert models(Sysroot(out)) == models(Sysroot(root))
    # the layout is the capture's: every file the captures hold is copied byte for byte, but
    # for the memory blocks and their node links, which are in the one record
    source, copy = _tree(root), _tree(out)
    copy.pop(MANIFEST)
    blocks = {rel for rel in source if _is_block_file(rel)}
    assert bool(blocks) == (RECORD_REL in copy)
    copy.pop(RECORD_REL, None)
    assert copy == {rel: data for rel, data in source.items() if rel not in blocks}


def test_snapshot_of_a_snapshot_copies_dmesg(tmp_path):
    src = tmp_path / "src"
    (src / "proc").mkdir(parents=True)
    (src / "proc/cmdline").write_text("kho=on\n")
    (src / "dmesg").write_text("[    0.000000] Linux version 7.3.4\n")
    write_snapshot(Sysroot(src), tmp_path / "out")
    assert (tmp_path / "out/dmesg").read_text() == "[    0.000000] Linux version 7.3.4\n"


def test_refuses_non_empty_out_dir(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out/x").write_text("")
    with pytest.raises(KhotuiError) as err:
        write_snapshot(Sysroot(tmp_path / "src"), tmp_path / "out")
    assert "not empty" in err.value.message and err.value.fix


def test_refuses_out_dir_inside_source(tmp_path):
    (tmp_path / "proc").mkdir()
    with pytest.raises(KhotuiError) as err:
        write_snapshot(Sysroot(tmp_path), tmp_path / "proc/snap")
    assert "source" in err.value.message


def test_never_writes_under_the_source(tmp_path):
    root = next(iter(all_sysroots()), None)
    if root is None:
        pytest.skip("no captures")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    write_snapshot(Sysroot(root), tmp_path / "snap")
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_unreadable_files_are_skipped_with_reason(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "proc").mkdir(parents=True)
    (src / "proc/cmdline").write_text("kho=on\n")
    (src / "proc/iomem").write_text("00000000-00000fff : Reserved\n")
    real = Sysroot.read_bytes

    def read_bytes(self, host_path, **kw):
        if host_path == "/proc/iomem":
            from khotui.errors import explain_os_error
            raise explain_os_error(PermissionError(13, "Permission denied"), host_path)
        return real(self, host_path, **kw)

    if os.geteuid() != 0:
        (src / "proc/iomem").chmod(0)
    else:  # root reads through chmod 000
        monkeypatch.setattr(Sysroot, "read_bytes", read_bytes)
    skipped = write_snapshot(Sysroot(src), tmp_path / "out")
    (src / "proc/iomem").chmod(0o644)
    assert len(skipped) == 1 and skipped[0].startswith("/proc/iomem:") and "permission" in skipped[0]
    assert (tmp_path / "out/proc/cmdline").exists() and not (tmp_path / "out/proc/iomem").exists()
    assert "/proc/iomem" in (tmp_path / "out" / MANIFEST).read_text()


def test_sysfs_links_between_blocks_and_nodes_go_to_the_record(tmp_path):
    src = tmp_path / "src"
    mem = src / "sys/devices/system/memory/memory3"
    node = src / "sys/devices/system/node/node1"
    mem.mkdir(parents=True)
    node.mkdir(parents=True)
    (mem / "state").write_text("online\n")
    (mem / "node1").symlink_to("../../node/node1")
    (node / "memory3").symlink_to("../../memory/memory3")
    (src / "sys/devices/system/memory/block_size_bytes").write_text("8000000\n")
    write_snapshot(Sysroot(src), tmp_path / "out")
    out = tmp_path / "out/sys/devices/system"
    assert not (out / "memory/memory3").exists() and not (out / "node/node1/memory3").exists()
    assert (out / "node/node1").is_dir()
    assert (tmp_path / "out" / RECORD_REL).read_text().splitlines()[1:] == \
        ['[3, 1, [1], [1], ["online\\n", null, null, null, null]]']
    assert_blocks_read_alike(src, tmp_path / "out")


def assert_blocks_read_alike(src: Path, out: Path) -> None:
    topo = read_topology(Sysroot(src))
    assert read_topology(Sysroot(out)).as_dict() == topo.as_dict()
    assert memory_node_ids(Sysroot(out)) == memory_node_ids(Sysroot(src))
    for attributes in (BLOCK_READ, ("state",)):
        assert [b.as_dict() for b in read_memory_blocks(Sysroot(out), attributes=attributes)] == \
            [b.as_dict() for b in read_memory_blocks(Sysroot(src), attributes=attributes)]


def _files(root: Path) -> tuple[int, int]:
    """(files, directories) below root."""
    paths = list(root.rglob("*"))
    return sum(p.is_file() for p in paths), sum(p.is_dir() for p in paths)


def _synthetic(tmp_path: Path, blocks: int) -> Path:
    shape = gen_sysroot.Shape(nodes=4, blocks=blocks, iomem_lines=120, fdt_nodes=40,
                              sub_blobs=10)
    return gen_sysroot.generate(tmp_path / f"host-{blocks}", shape, jobs=1)


def test_synthetic_hosts_read_alike_and_the_file_count_does_not_grow_with_blocks(tmp_path):
    counts = []
    for blocks in (64, 1280):
        src = _synthetic(tmp_path, blocks)
        out = tmp_path / f"snap-{blocks}"
        assert write_snapshot(Sysroot(src), out) == []
        assert_blocks_read_alike(src, out)
        assert models(Sysroot(out)) == models(Sysroot(src))
        assert read_topology(Sysroot(out)).block_count == blocks
        assert not list(out.glob("sys/devices/system/memory/memory*"))
        counts.append(_files(out))
    # the source has ~8 files a block; the snapshot the same count for 64 and 1,280 blocks
    assert counts[0] == counts[1], counts
    # all online, one node each: a run per node and one more where the PCI hole splits node 0
    record = (tmp_path / "snap-1280" / RECORD_REL).read_text().splitlines()
    assert len(record) == 1 + 4 + 1


def test_blocks_that_differ_make_runs_and_read_alike(tmp_path):
    """Offline blocks, a block in two nodes, links on one side only, missing attributes, and
    a block a node lists without a directory of its own: all come back as they were."""
    src = tmp_path / "src"
    system = src / "sys/devices/system"
    (system / "memory").mkdir(parents=True)
    (system / "memory/block_size_bytes").write_text("8000000\n")
    for nid in range(3):
        (system / f"node/node{nid}").mkdir(parents=True)
        (system / f"node/node{nid}/cpulist").write_text(f"{nid}\n")
    layout = {  # index: (node-side, block-side, state, valid_zones or None)
        **{i: ([0], [0], "online", "DMA32") for i in range(0, 6)},
        **{i: ([0], [0], "offline", "Normal Movable") for i in range(6, 9)},
        9: ([0, 1], [0, 1], "online", "Normal"),
        **{i: ([1], [1], "online", None) for i in range(10, 14)},
        14: ([], [2], "going-offline", ""),           # only memoryM/nodeN
        20: ([2], [], "online", "Movable"),           # only nodeN/memoryM
    }
    for i, (nodes, links, state, zones) in layout.items():
        d = system / f"memory/memory{i}"
        d.mkdir()
        for name, value in (("state", state), ("online", str(int(state == "online"))),
                            ("phys_device", "0"), ("removable", "1")):
            (d / name).write_text(value + "\n")
        if zones is not None:
            (d / "valid_zones").write_text(zones + "\n")
        for n in links:
            (d / f"node{n}").symlink_to(f"../../node/node{n}")
        for n in nodes:
            (system / f"node/node{n}/memory{i}").symlink_to(f"../../memory/memory{i}")
    (system / "node/node2/memory30").write_text("../../memory/memory30")   # no memory30/
    out = tmp_path / "out"
    assert write_snapshot(Sysroot(src), out) == []
    assert_blocks_read_alike(src, out)
    runs = (out / RECORD_REL).read_text().splitlines()[1:]
    assert [json.loads(r)[:2] for r in runs] == [[0, 6], [6, 3], [9, 1], [10, 4], [14, 1],
                                                  [20, 1], [30, 1]]
    assert json.loads(runs[-1]) == [30, 1, [2], [], None]
    blocks = read_memory_blocks(Sysroot(out))
    assert [(b.index, b.node, b.state) for b in blocks if b.index in (9, 14, 20)] == \
        [(9, 0, "online"), (14, 2, "going-offline"), (20, 2, "online")]
    assert 30 not in [b.index for b in blocks]
    assert 30 in read_topology(Sysroot(out)).nodes[2].memory_blocks


def test_a_snapshot_of_a_snapshot_keeps_the_record(tmp_path):
    src = _synthetic(tmp_path, 100)
    write_snapshot(Sysroot(src), tmp_path / "a")
    write_snapshot(Sysroot(tmp_path / "a"), tmp_path / "b")
    assert (tmp_path / "b" / RECORD_REL).read_bytes() == (tmp_path / "a" / RECORD_REL).read_bytes()
    assert_blocks_read_alike(src, tmp_path / "b")


def _status_json(root: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "khotui", "status", "--json", "--root",
                             str(root)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout.replace(str(root), "ROOT"))


def _cli_roots() -> list[Path]:
    return sorted(p for p in CAPTURES.glob("*/sysroot") if p.is_dir()) if CAPTURES.is_dir() else []


@pytest.mark.parametrize("root", [*_cli_roots(), "synthetic"],
                         ids=lambda p: p if isinstance(p, str) else p.parent.name)
def test_status_json_is_the_same_on_a_snapshot(root, tmp_path):
    """`khotui snapshot` then `khotui status --json --root` says what status said on the source."""
    if root == "synthetic":
        root = _synthetic(tmp_path, 256)
    out = tmp_path / "snap"
    result = subprocess.run([sys.executable, "-m", "khotui", "snapshot", "--root", str(root),
                             str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (out / RECORD_REL).is_file()
    before, after = _status_json(root), _status_json(out)
    assert after == before
    assert [r["node"] for r in after["kho"]["scratch"] if r["kind"] == "node"] or \
        not after["kho"]["enabled"]


@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="/dev/kmsg is not readable here")
def test_read_kmsg_does_not_block():
    text = read_kmsg()
    assert text == "" or text.startswith("[")


@pytest.mark.skipif(os.geteuid() != 0, reason="a live snapshot needs root to read what matters")
def test_live_snapshot_reads_like_the_host(tmp_path):
    out = tmp_path / "live"
    write_snapshot(Sysroot("/"), out)
    snap = Sysroot(out)
    live = Sysroot("/")
    assert read_topology(snap).as_dict() == read_topology(live).as_dict()
    assert read_iomem(snap).as_dict() == read_iomem(live).as_dict()
    assert read_kho(snap).as_dict() == read_kho(live).as_dict()
    assert [b.as_dict() for b in read_memory_blocks(snap)] == [b.as_dict() for b in read_memory_blocks(live)]
    boot_snap, boot_live = read_boot(snap).as_dict(), read_boot(live).as_dict()
    boot_snap.pop("meminfo"), boot_live.pop("meminfo")  # changes by the second
    assert boot_snap == boot_live
    assert (out / "dmesg").exists()


def test_a_block_attribute_larger_than_a_page_is_skipped_with_its_reason(tmp_path):
    src = tmp_path / "src"
    mem = src / "sys/devices/system/memory/memory2"
    mem.mkdir(parents=True)
    (src / "sys/devices/system/memory/block_size_bytes").write_text("8000000\n")
    (mem / "state").write_text("online\n")
    (mem / "valid_zones").write_bytes(b"N" * (1 << 20))
    skipped = write_snapshot(Sysroot(src), tmp_path / "out")
    assert skipped == ["/sys/devices/system/memory/memory2/valid_zones: file is larger than "
                       "65536 bytes; refusing to read it whole"]
    block, = read_memory_blocks(Sysroot(tmp_path / "out"))
    assert (block.index, block.state, block.valid_zones) == (2, "online", None)


def test_a_source_the_reader_would_refuse_is_reported_at_snapshot_time(tmp_path):
    """A node id past MAX_NUMNODES is no sysfs tree: the snapshot says so and leaves the blocks
    out, rather than writing a record that every later read refuses."""
    src = tmp_path / "src"
    system = src / "sys/devices/system"
    (system / "memory/memory2").mkdir(parents=True)
    (system / "memory/block_size_bytes").write_text("8000000\n")
    (system / "memory/memory2/state").write_text("online\n")
    (system / "node/node5000").mkdir(parents=True)
    (system / "node/node5000/memory2").write_text("../../memory/memory2")
    skipped = write_snapshot(Sysroot(src), tmp_path / "out")
    assert len(skipped) == 1 and skipped[0].startswith(
        "/sys/devices/system/memory: not recorded, the source is not what sysfs gives:")
    assert "node" in skipped[0]
    assert not (tmp_path / "out" / RECORD_REL).exists()
    assert read_memory_blocks(Sysroot(tmp_path / "out")) == []
    # and `khotui snapshot` tells the operator what the copy lacks
    out = subprocess.run([sys.executable, "-m", "khotui", "snapshot", "--root", str(src),
                          str(tmp_path / "cli")], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "wrote a snapshot" in out.stdout
    assert "khotui: 1 not copied:" in out.stderr
    assert "skipped /sys/devices/system/memory: not recorded" in out.stderr


def test_the_generator_writes_the_record_a_snapshot_of_its_host_would(tmp_path):
    """bench/gen_sysroot.py can write a big host in snapshot form (one record, not 1.6M files),
    which the TUI scale test uses; it must be what `khotui snapshot` writes of the same host."""
    shape = gen_sysroot.Shape(nodes=4, blocks=1280, iomem_lines=120, fdt_nodes=40, sub_blobs=10)
    tree = gen_sysroot.generate(tmp_path / "tree", shape, jobs=1)
    compact = gen_sysroot.generate(tmp_path / "compact", shape, snapshot=True)
    assert write_snapshot(Sysroot(tree), tmp_path / "snap") == []
    assert (compact / RECORD_REL).read_bytes() == (tmp_path / "snap" / RECORD_REL).read_bytes()
    assert models(Sysroot(compact)) == models(Sysroot(tree))


def test_a_big_host_s_block_read_is_announced_before_it_starts(tmp_path, monkeypatch):
    import khotui.host.snapshot as snapshot
    monkeypatch.setattr(snapshot, "SLOW_BLOCKS", 1000)
    notes: list[str] = []
    write_snapshot(Sysroot(_synthetic(tmp_path, 1280)), tmp_path / "big", progress=notes.append)
    assert notes == ["reading 1,280 memory blocks (5 files each; about 1 s)"]
    notes.clear()
    write_snapshot(Sysroot(_synthetic(tmp_path, 64)), tmp_path / "small", progress=notes.append)
    assert notes == []
