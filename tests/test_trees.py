"""Test fixtures copy capture trees with links kept, and no copy leads out of itself.

A fresh clone whose shared captures carried sysfs's node <-> memory block links spent 20
minutes and 1.7 GB in one fixture copying node0/memory5/node0/memory5/... (shutil.copytree
follows links by default). tests/fixtures/trees.py is the one way tests copy such a tree.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from khotui.host import memory
from khotui.host.sysroot import Sysroot
from tests.bad_inputs import time_limit
from tests.conftest import REPO, capture_names
from tests.fixtures.trees import (
    LinkLeavesTree,
    add_sysfs_links,
    copy_tree,
    flatten_sysfs_links,
    links_leaving,
)
from tests.fixtures.where import CAPTURES


def _sysfs_loop(root: Path, nodes: int = 2, blocks_per_node: int = 8) -> Path:
    """A sysroot with the node <-> memory block links sysfs has: following them never ends."""
    system = root / "sys/devices/system"
    for n in range(nodes):
        (system / f"node/node{n}").mkdir(parents=True)
        (system / f"node/node{n}/cpulist").write_text(f"{n}\n")
        for i in range(blocks_per_node):
            m = n * blocks_per_node + i
            block = system / f"memory/memory{m}"
            block.mkdir(parents=True)
            (block / "state").write_text("online\n")
            os.symlink(f"../../node/node{n}", block / f"node{n}")
            os.symlink(f"../../memory/memory{m}", system / f"node/node{n}/memory{m}")
    (system / "memory/block_size_bytes").write_text("8000000\n")
    return root


def test_a_sysfs_link_loop_is_copied_as_links(tmp_path: Path) -> None:
    src = _sysfs_loop(tmp_path / "src")
    # a copy following the links would recurse 16 ways per level until ELOOP: a hang, not a fail
    with time_limit(30):
        dest = copy_tree(src, tmp_path / "copy", writable=True)
    link = dest / "sys/devices/system/node/node0/memory5"
    assert link.is_symlink() and os.readlink(link) == "../../memory/memory5"
    assert os.readlink(dest / "sys/devices/system/memory/memory5/node0") == "../../node/node0"
    entries = sum(len(d) + len(f) for _, d, f in os.walk(dest))
    assert entries == sum(len(d) + len(f) for _, d, f in os.walk(src))
    topology = memory.read_topology(Sysroot(dest)).as_dict()
    assert topology == memory.read_topology(Sysroot(src)).as_dict()


def test_a_link_leading_out_of_the_copy_is_named(tmp_path: Path) -> None:
    src = _sysfs_loop(tmp_path / "src")
    outside = tmp_path / "host-file"
    outside.write_text("not the test's to read\n")
    os.symlink("../../../../../../host-file", src / "sys/devices/system/memory/memory3/phys_device")
    os.symlink("/etc", src / "sys/devices/system/node/etc")
    with time_limit(30), pytest.raises(LinkLeavesTree) as info:
        copy_tree(src, tmp_path / "copy")
    message = str(info.value)
    assert "memory/memory3/phys_device -> ../../../../../../host-file" in message
    assert "node/etc -> /etc" in message
    assert "node0/memory5" not in message       # links inside the copy are fine
    # the links are kept as they were: nothing outside was copied in
    assert (tmp_path / "copy/sys/devices/system/node/etc").is_symlink()


def test_links_leaving_judges_dangling_and_chained_links_by_where_they_end(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("missing-inside", root / "dangling-in")
    os.symlink("../missing-outside", root / "dangling-out")
    os.symlink("dangling-out", root / "via")           # inside, but ends outside
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    assert [p.name for p, _ in links_leaving(root)] == ["dangling-out", "via"]


def test_add_sysfs_links_turns_flattened_links_into_symlinks(tmp_path: Path, shared: Path) -> None:
    # the capture as stored (flattened), whether or not $KHOTUI_SHARED is a linked copy
    root = copy_tree(CAPTURES / "two-nodes" / "sysroot", tmp_path / "sysroot")
    flatten_sysfs_links(root)
    link = root / "sys/devices/system/node/node1/memory12"
    assert not link.is_symlink() and link.read_text() == "../../memory/memory12"
    assert add_sysfs_links(root) == 32
    assert os.readlink(link) == "../../memory/memory12"
    assert os.readlink(root / "sys/devices/system/memory/memory12/node1") == "../../node/node1"
    assert add_sysfs_links(root) == 0                  # already linked
    assert links_leaving(root) == []
    assert flatten_sysfs_links(root) == 32 and link.read_text() == "../../memory/memory12"


def test_add_sysfs_links_refuses_a_flattened_file_naming_another_target(tmp_path: Path) -> None:
    node = tmp_path / "sys/devices/system/node/node0"
    node.mkdir(parents=True)
    (tmp_path / "sys/devices/system/memory/memory1").mkdir(parents=True)
    (node / "memory1").write_text("../../memory/memory9")
    with pytest.raises(ValueError, match="memory9"):
        add_sysfs_links(tmp_path)


@pytest.mark.parametrize("name", capture_names())
def test_readers_see_a_linked_capture_as_its_flattened_form(tmp_path: Path, name: str) -> None:
    """Real sysfs has links where the captures have files: every memory reader must give the
    same model on both."""
    flat_root = copy_tree(CAPTURES / name / "sysroot", tmp_path / "flat")
    flatten_sysfs_links(flat_root)
    linked_root = copy_tree(flat_root, tmp_path / "linked")
    assert add_sysfs_links(linked_root) > 0
    flat, linked = Sysroot(flat_root), Sysroot(linked_root)
    assert memory.read_topology(linked).as_dict() == memory.read_topology(flat).as_dict()
    assert ([b.as_dict() for b in memory.read_memory_blocks(linked)]
            == [b.as_dict() for b in memory.read_memory_blocks(flat)])
    assert memory.block_runs(linked) == memory.block_runs(flat)
    assert memory.memory_node_ids(linked) == memory.memory_node_ids(flat)


# ---- the lint: no test copies a tree following its links ---------------------------------------

LINTED = ("tests", "bench", "screenshots")


def _copytree_calls(path: Path) -> list[tuple[int, bool]]:
    """(line, passes symlinks=True) of every shutil.copytree call in one file."""
    tree = ast.parse(path.read_text(), str(path))
    imported = {alias.asname or alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == "shutil"
                for alias in node.names if alias.name == "copytree"}
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_copytree = ((isinstance(func, ast.Attribute) and func.attr == "copytree"
                        and isinstance(func.value, ast.Name) and func.value.id == "shutil")
                       or (isinstance(func, ast.Name) and func.id in imported))
        if is_copytree:
            keeps = any(k.arg == "symlinks" and isinstance(k.value, ast.Constant)
                        and k.value.value is True for k in node.keywords)
            calls.append((node.lineno, keeps))
    return calls


def test_every_copytree_keeps_links() -> None:
    """A copytree of a capture must not follow links: use tests.fixtures.trees.copy_tree(), or
    pass symlinks=True where the helper cannot be imported (e.g. inside the VM guest)."""
    following = []
    seen = 0
    for top in LINTED:
        for path in sorted((REPO / top).rglob("*.py")):
            for line, keeps in _copytree_calls(path):
                seen += 1
                if not keeps:
                    following.append(f"{path.relative_to(REPO)}:{line}")
    assert seen, "the lint found no copytree call at all: it no longer sees them"
    assert following == [], f"copytree following links (use copy_tree()): {following}"


def test_the_lint_catches_a_copytree_that_follows_links(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import shutil\nfrom shutil import copytree as ct\n"
                   "shutil.copytree('a', 'b')\nct('a', 'b')\n"
                   "shutil.copytree('a', 'b', symlinks=True)\n")
    assert _copytree_calls(bad) == [(3, False), (4, False), (5, True)]
