"""Block states on a big host are read in a child interpreter (khotui.tui.viewmodel.memory):
in a thread of the app the read held the GIL so much that frames took 90-130 ms."""

from __future__ import annotations

import shutil

from khotui.tui.viewmodel import Problem, Source
from khotui.tui.viewmodel import memory as vm_memory
from tests.tui.helpers import copy_demo


def test_the_child_reads_what_the_thread_reads(tmp_path, monkeypatch):
    root = copy_demo(tmp_path)
    in_thread = Source(root, demo=True).block_states()
    monkeypatch.setattr(vm_memory, "STATES_IN_CHILD", 0)
    in_child = Source(root, demo=True).block_states()
    assert isinstance(in_child, list) and in_child == in_thread
    assert [(r.node, r.first, r.last, r.state) for r in in_child] == \
        [(0, 0, 7, "online"), (1, 8, 15, "online")]


def test_a_failure_in_the_child_comes_back_as_the_operator_s_message(tmp_path, monkeypatch):
    root = copy_demo(tmp_path)
    source = Source(root, demo=True)
    source.status()
    vm_memory._topology(source)                      # the parent's view, read before the damage
    block = root / "sys/devices/system/memory/block_size_bytes"
    block.write_text("not hex\n")
    monkeypatch.setattr(vm_memory, "STATES_IN_CHILD", 0)
    got = source.block_states()
    assert isinstance(got, Problem)
    # the error stays an object across the child: the file, what is wrong with it, the fix
    assert got.path is not None and got.path.endswith("block_size_bytes")
    assert "not a hex block size" in got.message
    assert got.fix
    shutil.rmtree(root)
