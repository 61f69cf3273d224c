"""Rules the CLI and the TUI share, each in one place in the core: the command-line checks the
TUI previews while the operator types, the load flags, the memory-hotplug watcher."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from khotui.plan import checks

from khotui.load import commit

from khotui.load import syscall as kexec

from khotui.plan import report
from khotui.cmdline import accepted_length
from khotui.host.memory import watch_memory_blocks
from khotui.host.sysroot import Sysroot
from tests.conftest import CAPTURES


def test_accepted_length_keeps_room_for_elfcorehdr():
    # bzImage64_load(): cmdline_len (with NUL) + MAX_ELFCOREHDR_STR_LEN <= cmdline_size
    assert accepted_length(2048) == 2048 - 30
    assert accepted_length(None) is None and accepted_length(0) is None
    assert accepted_length(20) == 0


def test_check_cmdline_length_boundary_uses_the_same_limit():
    ctx = checks.CheckContext(live=False, arch="x86_64", osrelease="7.3.4", kernel_cmdline_size=100)
    ctx.cmdline = "x" * 69                      # 70 bytes with its NUL: exactly the limit
    assert [f.status for f in checks.check_cmdline(ctx)] == ["ok"]
    ctx.cmdline = "x" * 70
    (f,) = checks.check_cmdline(ctx)
    assert f.status == "fail" and "accepts 70" in f.message


@pytest.mark.parametrize("cmdline, status", [
    ("root=/dev/vda kho=on", "ok"),
    ("root=/dev/vda kho=y", "ok"),                  # kstrtobool, as the kernel parses it
    ("root=/dev/vda", "fail"),
    ("root=/dev/vda kho=on kho=off", "fail"),       # the last one wins
    ('root=/dev/vda -- kho=on', "fail"),            # after --: init's, not the kernel's
])
def test_cmdline_findings_are_the_plans_findings(shared, cmdline, status):
    """What the TUI shows while typing is what `khotui plan` would say about that line."""
    st = report.host_status(CAPTURES / "two-nodes" / "sysroot")
    (kho,) = [f for f in report.cmdline_findings(st, cmdline) if f.id == "cmdline-kho"]
    assert kho.status == status
    ctx = report.context_for(st)
    ctx.cmdline = cmdline
    assert [f.message for f in checks.check_cmdline(ctx)] == \
        [f.message for f in report.cmdline_findings(st, cmdline)]


def _plan(release: str, initrd: str | None = "/boot/initrd", no_cma: bool = False):
    return SimpleNamespace(request=SimpleNamespace(initrd=initrd, no_cma=no_cma),
                           status=SimpleNamespace(boot=SimpleNamespace(osrelease=release)))


def test_load_flags_drop_what_the_running_kernel_predates():
    assert commit.load_flags(_plan("7.3.4")) == kexec.KEXEC_FILE_DEBUG
    assert commit.load_flags(_plan("7.3.4", initrd=None)) == \
        kexec.KEXEC_FILE_DEBUG | kexec.KEXEC_FILE_NO_INITRAMFS
    # KEXEC_FILE_DEBUG is 6.8+: older kernels answer EINVAL to an unknown flag
    assert commit.load_flags(_plan("6.6.50")) == 0
    assert commit.load_flags(_plan("6.16.3", no_cma=True)) == kexec.KEXEC_FILE_DEBUG
    assert commit.load_flags(_plan("6.17.0", no_cma=True)) == \
        kexec.KEXEC_FILE_DEBUG | kexec.KEXEC_FILE_NO_CMA


def test_memory_watcher_is_silent_on_a_snapshot(tmp_path):
    (tmp_path / "proc").mkdir()
    assert list(watch_memory_blocks(Sysroot(tmp_path), lambda: False)) == []
