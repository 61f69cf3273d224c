"""VM tier: skip (one line, with the reason) only when the tier cannot run on this machine.

Reasons to skip (guest.missing_prerequisite): KHOTUI_SKIP_VM=1, no qemu-system-x86_64, no KHO
kernel (build one with tests/vm/build-kernel), no .venv, or not root while the venv's interpreter
is unreadable to this user (the guest reads the host's / over 9p with QEMU's permissions).
Everything else that goes wrong once QEMU and the kernel are there is a failure, not a skip.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guest


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    reason = None
    checked = False
    for item in items:
        if here not in Path(item.path).resolve().parents:
            continue
        item.add_marker(pytest.mark.vm)
        if not checked:
            reason, checked = guest.missing_prerequisite(), True
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"VM tier: {reason}"))


def new_run_dir(tmp_path_factory, name: str) -> Path:
    """A fresh run directory on the host file system (the guest sees it at the same path).

    Under $KHOTUI_VM_OUT when set (kept, e.g. as CI artifacts: serial log, what the guest
    wrote, QEMU command line, timing.json), else in pytest's temporary directory.
    """
    base = os.environ.get("KHOTUI_VM_OUT")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{name[:40]}-", dir=base))
    return tmp_path_factory.mktemp(f"vm-{name[:40]}")


@pytest.fixture(scope="session")
def vm_dirs(tmp_path_factory):
    """`vm_dirs(name)` -> a new run directory; for module-scoped boots shared by tests."""
    return lambda name: new_run_dir(tmp_path_factory, name)


@pytest.fixture
def vm_run_dir(vm_dirs, request) -> Path:
    return vm_dirs(request.node.name)
