"""The Overview's view model: the core's typed state mapped field by field (no attribute-or-key
lookups that would hide a misspelt field as an empty panel)."""

from __future__ import annotations

import shutil

from textual.content import Content

from khotui.errors import Problem as CoreProblem
from khotui.tui.screens.overview import kexec_content, scratch_content
from khotui.tui.viewmodel import Finding, Problem, ScratchRegion, Source
from tests.conftest import CAPTURES


def _copy(tmp_path, capture: str = "two-nodes"):
    root = tmp_path / capture
    shutil.copytree(CAPTURES / capture / "sysroot", root, symlinks=True)
    return root


def test_overview_shows_the_reboot_load_limit_of_the_host(shared, tmp_path):
    root = _copy(tmp_path)
    (root / "proc/sys/kernel/kexec_load_limit_reboot").write_text("3\n")
    ov = Source(root).overview()
    assert not isinstance(ov.kexec, Problem) and ov.kexec is not None
    assert ov.kexec.load_limit_reboot == 3
    assert "load limit     3" in kexec_content(ov.kexec).plain.splitlines()


def test_overview_shows_unlimited_for_minus_one(shared):
    ov = Source(CAPTURES / "two-nodes" / "sysroot").overview()
    assert ov.kexec.load_limit_reboot == -1
    assert "unlimited (-1)" in kexec_content(ov.kexec).plain


def test_overview_hands_the_core_types_to_the_screen(shared):
    ov = Source(CAPTURES / "two-nodes" / "sysroot").overview()
    assert all(isinstance(r, ScratchRegion) for r in ov.scratch)
    assert [r.name for r in ov.scratch] == ["lowmem", "global", "node0", "node1"]
    assert all(isinstance(f, Finding) for f in ov.findings)
    assert ov.worst in ("ok", "warn", "fail")
    head, body = scratch_content(ov.scratch)
    assert isinstance(head, Content) and head.plain.split()[:2] == ["#", "kind"]
    lines = body.plain.splitlines()
    assert lines[2].split()[:3] == ["2", "node", "0"] and "36 MiB" in lines[2]


def test_many_scratch_regions_get_a_summary_above_the_list():
    regions = [ScratchRegion(0, "lowmem", None, 0x70000000, 128 << 20),
               ScratchRegion(1, "global", None, 0x100000000, 0)] + [
        ScratchRegion(2 + n, "node", n, (n + 1) << 36, 512 << 20) for n in range(32)]
    head, body = scratch_content(regions)
    assert isinstance(head, Content)
    assert head.plain.splitlines()[0].startswith("34 regions, 16.1 GiB in all, nodes 0–31, 1 empty")
    assert len(body.plain.splitlines()) == 34


def test_an_unreadable_source_is_its_panels_problem_with_its_fix(shared, tmp_path):
    root = _copy(tmp_path)
    (root / "proc/iomem").write_text("garbage\n")
    src = Source(root)
    status = src.status()
    problem = status.errors["iomem"]
    assert isinstance(problem, CoreProblem)
    mm = src.memory()
    assert isinstance(mm.iomem, Problem)
    assert mm.iomem == problem        # the core's object itself: path, message and fix
