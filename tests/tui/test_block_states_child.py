"""The child interpreter that reads block states (khotui.tui.viewmodel.memory) runs as root:
nothing of the caller's (current directory, PYTHON* variables) may choose its code (issue #10)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from khotui.tui.viewmodel import Source
from khotui.tui.viewmodel import memory as vm_memory
from tests.tui.helpers import copy_demo

# Each planted module leaves a marker when imported, then fails the import loudly.
PLANT = "open({marker!r}, 'w').write(__file__)\nraise SystemExit('planted {name} ran')\n"
NAMES = ("json", "khotui", "sitecustomize", "usercustomize", "encodings")


def _plant(where: Path, marker: Path) -> None:
    where.mkdir(exist_ok=True)
    for name in NAMES:
        (where / f"{name}.py").write_text(PLANT.format(marker=str(marker), name=name))


def test_planted_modules_in_the_cwd_and_pythonpath_are_not_imported(tmp_path, monkeypatch):
    root = copy_demo(tmp_path)
    expected = Source(root, demo=True).block_states()
    marker = tmp_path / "pwned"
    cwd, env_dir = tmp_path / "cwd", tmp_path / "pythonpath"
    _plant(cwd, marker)
    _plant(env_dir, marker)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PYTHONPATH", str(env_dir))
    monkeypatch.setenv("PYTHONSTARTUP", str(env_dir / "json.py"))
    monkeypatch.setattr(vm_memory, "STATES_IN_CHILD", 0)     # what a >20,000-block host does
    # relative, as `khotui --root sysroot` from the snapshot's parent would give it: the child's
    # cwd is "/", so the parent must hand over the absolute path
    os.chdir(tmp_path)
    got = Source(Path("sysroot"), demo=True).block_states()
    os.chdir(cwd)
    got_in_cwd = Source(root, demo=True).block_states()
    assert not marker.exists(), f"a planted module ran in the child: {marker.read_text()}"
    assert got == expected and got_in_cwd == expected
    assert isinstance(got, list) and got


@pytest.mark.parametrize("var", ["PYTHONPATH", "PYTHONHOME", "PYTHONINSPECT"])
def test_the_child_gets_no_environment(tmp_path, monkeypatch, var):
    # PYTHONHOME pointing nowhere would stop the child's interpreter from starting at all
    root = copy_demo(tmp_path)
    expected = Source(root, demo=True).block_states()
    monkeypatch.setenv(var, str(tmp_path / "nowhere"))
    monkeypatch.setattr(vm_memory, "STATES_IN_CHILD", 0)
    assert Source(root, demo=True).block_states() == expected
