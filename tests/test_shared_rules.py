"""Rules the CLI and the TUI share, each in one place in the core: the command-line checks the
TUI previews while the operator types, the load flags, the memory-hotplug watcher."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from khotui.cmdline import accepted_length
from khotui.host.memory import watch_memory_blocks
from khotui.host.sysroot import Sysroot
from khotui.load import commit
from khotui.load import syscall as kexec
from khotui.plan import PlanRequest, checks, cmdline_findings, context_for, host_status, plan_load
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
    assert f.status == "fail" and "71 of 70 bytes (with the NUL)" in f.message


@pytest.mark.parametrize("cmdline, status", [
    ("root=/dev/vda kho=on", "ok"),
    ("root=/dev/vda kho=y", "ok"),                  # kstrtobool, as the kernel parses it
    ("root=/dev/vda", "fail"),
    ("root=/dev/vda kho=on kho=off", "warn"),       # the last one wins: an explicit choice
    ('root=/dev/vda -- kho=on', "fail"),            # after --: init's, not the kernel's
])
def test_cmdline_findings_are_the_plans_findings(shared, cmdline, status):
    """What the TUI shows while typing is what `khotui plan` would say about that line."""
    st = host_status(CAPTURES / "two-nodes" / "sysroot")
    (kho,) = [f for f in cmdline_findings(st, cmdline) if f.id == "cmdline-kho"]
    assert kho.status == status
    ctx = context_for(st)
    ctx.cmdline = cmdline
    assert [f.message for f in checks.check_cmdline(ctx)] == \
        [f.message for f in cmdline_findings(st, cmdline)]


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


# --- one rule per idea: what issue #9 unified ----------------------------------------------


def test_kho_after_double_dash_is_init_s_in_the_diff_and_in_the_checks(shared):
    """parse_args() stops at `--` (init/main.c): `kho=on -- kho=off` leaves KHO on, and the
    TUI's live diff and the plan's cmdline-kho check both say so."""
    from khotui.cmdline import diff_cmdline, kho_requested
    line = "root=/dev/vda kho=on -- kho=off"
    assert diff_cmdline("root=/dev/vda", line).kho == "on"
    assert kho_requested(line) is True
    st = host_status(CAPTURES / "two-nodes" / "sysroot")
    (kho,) = [f for f in cmdline_findings(st, line) if f.id == "cmdline-kho"]
    assert kho.status == "ok"


def _without_node_ids(capture: str, tmp_path):
    """A copy of a capture without its node topology: the node ids of the per-node scratch
    regions cannot be told."""
    import shutil
    root = tmp_path / capture
    shutil.copytree(CAPTURES / capture / "sysroot", root, symlinks=True)
    shutil.rmtree(root / "sys/devices/system/node")
    return root


def test_unknown_node_regions_are_named_alike_on_both_architectures(shared, tmp_path):
    """A node region whose node is unknown is named by its kho_scratch[] index, on x86_64 and
    arm64 alike, in the plan and in `plan --json` (was node0 on x86_64, node?0 on arm64,
    node? in the TUI)."""
    import gzip

    from tests.conftest import VM
    image = tmp_path / "Image"
    packed = VM / "arm64" / "Image-kho-7.3.4-arm64.gz"
    if not packed.exists() or not (VM / "bzImage-kho-7.3.4").exists():
        pytest.skip("the test kernels are missing")
    image.write_bytes(gzip.decompress(packed.read_bytes()))
    big = tmp_path / "big.img"       # fits in no scratch region: every region is tried
    with open(big, "wb") as f:
        f.write(b"070701")
        f.truncate(1 << 30)
    tried = {}
    for capture, kernel in (("two-nodes", VM / "bzImage-kho-7.3.4"), ("two-nodes-arm64", image)):
        root = _without_node_ids(capture, tmp_path)
        st = host_status(root)
        assert [r.node for r in st.kho.scratch if r.kind == "node"] == [None, None]
        result = plan_load(root, PlanRequest(kernel=str(kernel), initrd=str(big)),
                                  status=st)
        assert result.plan is not None and result.plan.fits is False
        tried[capture] = [r.name for r in result.plan.regions_tried]
        assert [s.region for s in result.segments() if s.mem is not None] and all(
            s.region in tried[capture] for s in result.segments() if s.mem is not None)
    assert tried["two-nodes"] == tried["two-nodes-arm64"] == \
        ["lowmem", "global", "scratch[2]", "scratch[3]"]


def test_placement_imports_only_the_base_modules():
    """placement is a pure model of the kernel: it imports types, units, cmdline, errors and
    itself, never the host readers, the image parsers or the FDT reader."""
    import ast

    from tests.conftest import REPO
    allowed = ("khotui.placement", "khotui.types", "khotui.units", "khotui.cmdline",
               "khotui.errors")
    offenders = []
    for path in (REPO / "khotui" / "placement").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.name}: {n}" for n in names
                          if n.startswith("khotui") and not n.startswith(allowed)]
    assert offenders == []


def test_planning_reads_nothing_after_the_read_steps(shared, monkeypatch):
    """dry_run() plans from values already read: the kernel log, /sys/firmware/fdt, /proc/iomem
    and /boot/config-* are read by host_status() and read_plan_inputs(), never during it."""
    from khotui.host.sysroot import Sysroot
    from khotui.image.inspect import inspect_kernel
    from khotui.plan import dry_run, read_plan_inputs
    from tests.conftest import VM
    kernel_path = VM / "bzImage-kho-7.3.4"
    if not kernel_path.exists():
        pytest.skip("the test kernel is missing")
    st = host_status(CAPTURES / "two-nodes" / "sysroot")
    request = PlanRequest(kernel=str(kernel_path))
    kernel = inspect_kernel(str(kernel_path))
    inputs = read_plan_inputs(st, request, kernel)

    def no_read(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the pure plan read the host")
    for name in ("read_text", "read_optional_text", "read_bytes", "exists", "listdir"):
        monkeypatch.setattr(Sysroot, name, no_read)
    result = dry_run(st, request, kernel, None, inputs)
    assert result.plan is not None and result.plan.fits is True


def test_host_errors_are_problems_and_status_json_keeps_their_text(tmp_path):
    import shutil

    from khotui.errors import Problem
    root = tmp_path / "sysroot"
    shutil.copytree(CAPTURES / "two-nodes" / "sysroot", root, symlinks=True)
    (root / "proc/iomem").write_text("not an iomem line\n")
    st = host_status(root)
    problem = st.errors["iomem"]
    assert isinstance(problem, Problem) and problem.path and problem.message
    assert st.as_dict()["errors"]["iomem"] == str(problem)
    (iomem,) = [f for f in st.findings if f.id == "iomem"]
    assert "\n" not in iomem.message and iomem.message.startswith(problem.headline)
