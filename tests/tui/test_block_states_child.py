"""The child interpreter that reads block states (khotui.tui.viewmodel.memory) runs as root:
nothing of the caller's (current directory, PYTHON* variables) may choose its code (issue #10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from khotui.tui.viewmodel import Source
from khotui.tui.viewmodel import memory as vm_memory
from tests.tui.helpers import copy_demo

# Each planted module leaves a marker when imported, then fails the import loudly.
PLANT = "open({marker!r}, 'w').write(__file__)\nraise SystemExit('planted {name} ran')\n"
NAMES = ("json", "khotui", "sitecustomize", "usercustomize")


def _plant(where: Path, marker: Path) -> None:
    where.mkdir(exist_ok=True)
    for name in NAMES:
        (where / f"{name}.py").write_text(PLANT.format(marker=str(marker), name=name))


def test_planted_modules_in_the_cwd_are_not_imported(tmp_path, monkeypatch):
    # the attack as reported: a json.py in the operator's current directory ran as root
    root = copy_demo(tmp_path)
    expected = Source(root, demo=True).block_states()
    marker, cwd = tmp_path / "pwned", tmp_path / "cwd"
    _plant(cwd, marker)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(vm_memory, "STATES_IN_CHILD", 0)     # what a >20,000-block host does
    got = Source(root, demo=True).block_states()
    assert not marker.exists(), f"a planted module ran in the child: {marker.read_text()}"
    assert isinstance(got, list) and got == expected


def test_planted_modules_on_pythonpath_are_not_imported(tmp_path, monkeypatch):
    root = copy_demo(tmp_path)
    expected = Source(root, demo=True).block_states()
    marker, env_dir = tmp_path / "pwned", tmp_path / "pythonpath"
    _plant(env_dir, marker)
    monkeypatch.setenv("PYTHONPATH", str(env_dir))
    monkeypatch.setattr(vm_memory, "STATES_IN_CHILD", 0)
    got = Source(root, demo=True).block_states()
    assert not marker.exists(), f"a planted module ran in the child: {marker.read_text()}"
    assert got == expected


def test_a_relative_root_still_reads_the_same_snapshot(tmp_path, monkeypatch):
    # `khotui --root sysroot` from the snapshot's parent: the child's cwd is "/", so the parent
    # must hand over the absolute path
    copy_demo(tmp_path)
    monkeypatch.chdir(tmp_path)
    expected = Source(Path("sysroot"), demo=True).block_states()
    monkeypatch.setattr(vm_memory, "STATES_IN_CHILD", 0)
    got = Source(Path("sysroot"), demo=True).block_states()
    assert isinstance(got, list) and got == expected


@pytest.mark.parametrize("var", ["PYTHONPATH", "PYTHONHOME", "PYTHONINSPECT"])
def test_the_child_gets_no_environment(tmp_path, monkeypatch, var):
    # PYTHONHOME pointing nowhere would stop the child's interpreter from starting at all
    root = copy_demo(tmp_path)
    expected = Source(root, demo=True).block_states()
    monkeypatch.setenv(var, str(tmp_path / "nowhere"))
    monkeypatch.setattr(vm_memory, "STATES_IN_CHILD", 0)
    assert Source(root, demo=True).block_states() == expected
