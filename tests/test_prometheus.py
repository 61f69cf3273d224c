"""`khotui plan --format prometheus [--textfile PATH]` and contrib/systemd/khotui-check.*: the
daily dry run as node_exporter metrics, on the real captures.

Every exposition is read back with the Prometheus client's own text-format parser
(prometheus_client.parser), never with string matching, and the values asserted are the ones an
operator alerts on: fits 1 on two-nodes, fits 0 with EADDRNOTAVAIL on scratch-too-small with its
64 MiB initrd, the scratch sizes the kernel's debugfs shows, what is left of them after the
plan, and the failing checks `plan --json` lists.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from khotui.cli import main as cli
from khotui.cli import prometheus
from khotui.host import safewrite
from tests.conftest import CAPTURES, REPO, VM
from tests.fixtures.trees import copy_tree
from tests.test_cli_captures import make_initrd, with_running_image

NOW = 1_790_000_000.5
UNITS = REPO / "contrib" / "systemd"


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    # the check's time comes from one function; tests fix it (no test reads a wall clock)
    monkeypatch.setattr(cli, "_now", lambda: NOW)


def metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """name -> [(labels, value)], through prometheus_client's parser; every family must be a
    documented khotui_ gauge."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("khotui_"), family.name
        assert family.type == "gauge" and family.documentation, family.name
        assert family.name not in out, f"{family.name} twice"
        out[family.name] = [(dict(s.labels), s.value) for s in family.samples]
    return out


def one(found: dict, name: str) -> float:
    samples = found[name]
    assert len(samples) == 1 and samples[0][0] == {}, samples
    return samples[0][1]


def capture_args(capture: str, tmp_path: Path) -> list[str]:
    """plan's arguments for a capture, as its load was made (kernel, initrd, command line)."""
    cap = CAPTURES / capture
    if not cap.is_dir() or not (VM / "bzImage-kho-7.3.4").exists():
        pytest.skip(f"{cap} or the KHO kernel is missing")
    root = with_running_image(capture, tmp_path)
    args = ["plan", "--root", str(root), "--kernel", str(VM / "bzImage-kho-7.3.4"),
            "--cmdline", (cap / "load" / "cmdline").read_text()]
    m = re.search(r"^initrd: (\d+) bytes", (cap / "scenario.txt").read_text(), re.M)
    if m:
        args += ["--initrd", str(make_initrd(int(m.group(1)), tmp_path / "initrd"))]
    return args


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def both(args: list[str], capsys) -> tuple[int, dict, dict]:
    """(exit code, the metrics, plan --json) for the same arguments; the codes agree."""
    code, out, _ = run([*args, "--format", "prometheus"], capsys)
    json_code, json_out, _ = run([*args, "--json"], capsys)
    assert code == json_code
    return code, metrics(out), json.loads(json_out)


def scratch_len(capture: str) -> list[int]:
    """The kernel's kho_scratch[] sizes, read from the capture's debugfs text independently."""
    text = (CAPTURES / capture / "sysroot/sys/kernel/debug/kho/out/scratch_len").read_text()
    return [int(word, 16) for word in text.split()]


def free_after(plan: dict) -> dict[str, int]:
    """Each region's size minus the memsz of the segments plan --json says it put there."""
    free = {}
    for r in plan["kho"]["scratch"]:
        name = r["kind"] if r["kind"] != "node" else f"node{r['node']}"
        free[str(r["index"])] = r["size"] - sum(s["memsz"] for s in plan["segments"]
                                                if s["mem"] is not None and s["region"] == name)
    return free


def failing(plan: dict) -> int:
    return sum(c["status"] == "fail" for c in plan["checks"])


# -- the exposition on the real captures ------------------------------------------------------


def test_two_nodes_fits_and_says_so_in_metrics(tmp_path, capsys):
    code, found, plan = both(capture_args("two-nodes", tmp_path), capsys)
    assert code == 0 and plan["fits"] is True
    assert one(found, "khotui_check_success") == 1
    assert one(found, "khotui_check_timestamp_seconds") == NOW
    assert one(found, "khotui_plan_fits") == 1
    assert one(found, "khotui_plan_would_succeed") == 1
    assert one(found, "khotui_plan_placement_predicted") == 1
    assert one(found, "khotui_kho_enabled") == 1
    # every input read (the running kernel's image is installed): exact, nothing assumed
    assert one(found, "khotui_plan_exact") == 1 and one(found, "khotui_plan_assumptions") == 0
    assert found["khotui_plan_errno_info"] == []
    assert one(found, "khotui_checks_failed") == failing(plan) == 0
    # the sizes the kernel's debugfs shows, in kho_scratch[] order, the global one empty
    sizes = {labels["index"]: v for labels, v in found["khotui_scratch_bytes"]}
    assert sizes == {str(i): n for i, n in enumerate(scratch_len("two-nodes"))}
    assert sizes["1"] == 0
    labels = [lab for lab, _ in found["khotui_scratch_bytes"]]
    assert labels[0] == {"index": "0", "kind": "lowmem", "node": ""}
    assert labels[3] == {"index": "3", "kind": "node", "node": "1"}
    free = {lab["index"]: v for lab, v in found["khotui_scratch_free_bytes"]}
    assert free == free_after(plan)
    assert free["0"] < sizes["0"]          # the segments went to lowmem
    checks = {(lab["id"], lab["status"]): v for lab, v in found["khotui_plan_check_findings"]}
    assert checks[("segments-fit", "ok")] == 1
    assert sum(checks.values()) == len(plan["checks"])
    assert found["khotui_plan_kernel_info"] == [
        ({"path": str(VM / "bzImage-kho-7.3.4"), "release": "7.3.4",
          "initrd": plan["initrd"]["path"]}, 1)]
    assert found["khotui_running_kernel_info"] == [({"release": "7.3.4", "arch": "x86_64"}, 1)]
    segs = [(lab["name"], lab["region"], v) for lab, v in found["khotui_plan_segment_bytes"]]
    assert segs == [(s["name"], s["region"], s["memsz"]) for s in plan["segments"]]


def test_scratch_too_small_with_the_64mib_initrd_fails_with_eaddrnotavail(tmp_path, capsys):
    code, found, plan = both(capture_args("scratch-too-small", tmp_path), capsys)
    assert code == 1 and plan["fits"] is False
    assert one(found, "khotui_check_success") == 1          # a valid answer, not a broken check
    assert one(found, "khotui_plan_fits") == 0
    assert one(found, "khotui_plan_would_succeed") == 0
    assert found["khotui_plan_errno_info"] == [({"errno": "EADDRNOTAVAIL"}, 1)]
    assert one(found, "khotui_checks_failed") == failing(plan) == 1
    checks = {(lab["id"], lab["status"]) for lab, _ in found["khotui_plan_check_findings"]}
    assert ("segments-fit", "fail") in checks
    sizes = [v for _, v in found["khotui_scratch_bytes"]]
    assert sizes == scratch_len("scratch-too-small") == [48 << 20, 8 << 20, 8 << 20, 8 << 20]
    free = {lab["index"]: v for lab, v in found["khotui_scratch_free_bytes"]}
    assert free == free_after(plan)
    # what an operator reads off the dashboard: the initrd needs more than any region has left
    initrd = next(v for lab, v in found["khotui_plan_segment_bytes"] if lab["name"] == "initrd")
    assert initrd == 64 << 20 and max(free.values()) < initrd
    assert [lab["region"] for lab, _ in found["khotui_plan_segment_bytes"]
            if lab["name"] == "initrd"] == [""]


def test_unknown_scratch_is_no_fit_value_at_all(tmp_path, capsys):
    # KHO on but kho/ unreadable (a snapshot without debugfs): no placement can be predicted,
    # so khotui_plan_fits is absent (not a guessed 0 or 1) and says why in its companion
    cap = CAPTURES / "two-nodes"
    if not cap.is_dir():
        pytest.skip(f"{cap} is missing")
    root = copy_tree(cap / "sysroot", tmp_path / "root", writable=True)
    shutil.rmtree(root / "sys/kernel/debug")
    args = ["plan", "--root", str(root), "--kernel", str(VM / "bzImage-kho-7.3.4"),
            "--cmdline", (cap / "load" / "cmdline").read_text()]
    code, found, plan = both(args, capsys)
    assert code == 1 and plan["fits"] is None and plan["kho"]["scratch"] is None
    assert "khotui_plan_fits" in found and found["khotui_plan_fits"] == []
    assert one(found, "khotui_plan_placement_predicted") == 0
    assert one(found, "khotui_kho_enabled") == 1
    assert one(found, "khotui_plan_exact") == 0
    assert found["khotui_scratch_bytes"] == [] and found["khotui_scratch_free_bytes"] == []
    assert one(found, "khotui_checks_failed") == failing(plan) >= 1
    assert ("kho-scratch", "fail") in {(lab["id"], lab["status"])
                                       for lab, _ in found["khotui_plan_check_findings"]}


def test_kho_off_has_no_scratch_series_but_a_prediction(tmp_path, capsys):
    code, found, plan = both(capture_args("kho-off", tmp_path), capsys)
    assert code == (0 if plan["would_succeed"] else 1)
    assert one(found, "khotui_kho_enabled") == 0
    assert one(found, "khotui_plan_fits") == 1
    assert found["khotui_scratch_bytes"] == [] and found["khotui_scratch_free_bytes"] == []


def test_the_demo_with_the_default_kernel(capsys):
    # the unit's own arguments, on the bundled capture
    code, found, plan = both(["plan", "--demo", "--kernel", "default"], capsys)
    assert one(found, "khotui_plan_would_succeed") == (code == 0)
    assert one(found, "khotui_checks_failed") == failing(plan)
    assert found["khotui_plan_kernel_info"][0][0]["path"] == plan["kernel"]["path"]


# -- formats and errors -----------------------------------------------------------------------


def test_format_json_is_json_and_text_is_the_default(capsys):
    _, by_flag, _ = run(["plan", "--demo", "--kernel", "default", "--json"], capsys)
    _, by_format, _ = run(["plan", "--demo", "--kernel", "default", "--format", "json"], capsys)
    assert json.loads(by_flag) == json.loads(by_format)
    assert json.loads(by_format)["schema"] == "khotui.plan/1"
    _, text, _ = run(["plan", "--demo", "--kernel", "default", "--format", "text"], capsys)
    _, default, _ = run(["plan", "--demo", "--kernel", "default"], capsys)
    assert text == default and "prediction:" in text


@pytest.mark.parametrize(("words", "said"), [
    (["--json", "--format", "prometheus"], "--json and --format prometheus disagree"),
    (["--textfile", "x.prom"], "--textfile needs --format prometheus"),
    (["--format", "json", "--textfile", "x.prom"], "--textfile needs --format prometheus"),
])
def test_contradicting_options_are_usage_errors(words, said, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main(["plan", "--demo", "--kernel", "default", *words])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and said in err and "Traceback" not in out + err
    assert not (tmp_path / "x.prom").exists()


def test_bad_input_still_answers_in_metrics_and_in_the_textfile(tmp_path, capsys):
    # exit 2 (no such kernel): the host must show up as broken, not keep yesterday's answer
    where = tmp_path / "textfile"
    where.mkdir(mode=0o755)
    target = where / "khotui.prom"
    target.write_text("khotui_plan_fits 1\n")        # yesterday's answer
    code, out, err = run(["plan", "--demo", "--kernel", str(tmp_path / "missing"),
                          "--format", "prometheus", "--textfile", str(target)], capsys)
    assert code == 2
    assert str(tmp_path / "missing") in err and "fix:" in err
    assert f"wrote {target}" in out
    found = metrics(target.read_text())
    assert one(found, "khotui_check_success") == 0
    assert one(found, "khotui_check_timestamp_seconds") == NOW
    [(labels, value)] = found["khotui_check_error_info"]
    assert value == 1 and labels["path"] == str(tmp_path / "missing") and labels["fix"]
    assert "khotui_plan_fits" not in found
    # without --textfile, the same on stdout
    code, out, _ = run(["plan", "--demo", "--kernel", str(tmp_path / "missing"),
                        "--format", "prometheus"], capsys)
    assert code == 2 and one(metrics(out), "khotui_check_success") == 0


def test_a_usage_error_answers_on_stdout_only(tmp_path, capsys):
    target = tmp_path / "khotui.prom"
    with pytest.raises(SystemExit) as exc:
        cli.main(["plan", "--demo", "--format", "prometheus", "--textfile", str(target)])
    out, _ = capsys.readouterr()
    assert exc.value.code == 2
    found = metrics(out)
    assert one(found, "khotui_check_success") == 0
    assert "--kernel" in found["khotui_check_error_info"][0][0]["message"]
    assert not target.exists()


# -- label escaping -----------------------------------------------------------------------------


def test_escaping_of_label_values():
    assert prometheus.escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    text = prometheus.render([prometheus.Family("khotui_x", "h\\elp\nline").add(
        1, path='/boot/"x"\\\n', other="")])
    [family] = text_string_to_metric_families(text)
    assert family.documentation == "h\\elp\nline"
    assert family.samples[0].labels == {"path": '/boot/"x"\\\n', "other": ""}


def test_a_hostile_kernel_path_cannot_forge_a_metric(tmp_path, capsys):
    # a kernel file whose name closes the label and writes its own sample on a new line
    kernel = VM / "bzImage-kho-7.3.4"
    if not kernel.exists():
        pytest.skip(f"{kernel} is missing")
    name = 'vmlinuz"} 1\nkhotui_plan_fits{x="\\" 1\nkhotui_checks_failed 0\n\\'
    hostile = tmp_path / name
    shutil.copyfile(kernel, hostile)
    _, out, _ = run(["plan", "--demo", "--kernel", str(hostile), "--format", "prometheus"],
                    capsys)
    found = metrics(out)
    [(labels, _)] = found["khotui_plan_kernel_info"]
    assert labels["path"] == str(hostile)
    assert all(len(found[n]) <= 1 for n in ("khotui_plan_fits", "khotui_checks_failed"))
    assert found["khotui_plan_fits"] == [] or found["khotui_plan_fits"][0][0] == {}


def test_a_path_that_is_not_utf8_still_gives_utf8_metrics():
    name = os.fsdecode(b"/boot/vmlinuz-\xff\xfe")
    text = prometheus.render([prometheus.Family("khotui_x", "h").add(1, path=name)])
    text.encode("utf-8")             # no surrogate escapes leak into the file
    [family] = text_string_to_metric_families(text)
    assert family.samples[0].labels["path"] == "/boot/vmlinuz-\\xff\\xfe"


def test_a_check_answering_twice_is_one_sample_with_a_count():
    # one finding per LUO session holder: the format allows one sample per label set
    from khotui.plan import PlanRequest, plan_load
    from khotui.types import WARN, Finding
    cap = CAPTURES / "two-nodes"
    if not cap.is_dir():
        pytest.skip(f"{cap} is missing")
    result = plan_load(cap / "sysroot", PlanRequest(kernel=str(VM / "bzImage-kho-7.3.4"),
                                                    cmdline=(cap / "load/cmdline").read_text()))
    result.findings += [Finding("luo-session-holder", WARN, f"session {n}", "keep it")
                        for n in range(3)]
    found = metrics(prometheus.plan_metrics(result, now=NOW))
    counts = {(lab["id"], lab["status"]): v for lab, v in found["khotui_plan_check_findings"]}
    assert counts[("luo-session-holder", "warn")] == 3
    assert sum(counts.values()) == len(result.findings)


# -- the textfile writer ----------------------------------------------------------------------


@pytest.fixture
def textdir(tmp_path) -> Path:
    d = tmp_path / "textfile_collector"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    return d


def write_via_cli(target: Path, capsys) -> tuple[int, str, str]:
    return run(["plan", "--demo", "--kernel", "default", "--format", "prometheus",
                "--textfile", str(target)], capsys)


def test_textfile_is_0644_whatever_the_umask_and_parses(textdir, capsys):
    old = os.umask(0o077)
    try:
        code, out, _ = write_via_cli(textdir / "khotui.prom", capsys)
    finally:
        os.umask(old)
    target = textdir / "khotui.prom"
    assert code in (0, 1) and f"wrote {target}" in out
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert one(metrics(target.read_text()), "khotui_check_success") == 1
    assert sorted(p.name for p in textdir.iterdir()) == ["khotui.prom"]


def test_no_partial_textfile_is_ever_visible(textdir, capsys, monkeypatch):
    # while the new text is written and synced, the collector still reads the old file whole,
    # and the temporary is a dot file it ignores (it reads *.prom only)
    target = textdir / "khotui.prom"
    target.write_text("# old\n")
    seen = []
    real_fsync = os.fsync

    def spy(fd):
        if not seen:
            seen.append((target.read_text(), sorted(p.name for p in textdir.iterdir())))
        return real_fsync(fd)
    monkeypatch.setattr(safewrite.os, "fsync", spy)
    write_via_cli(target, capsys)
    old_text, names = seen[0]
    assert old_text == "# old\n"
    assert [n for n in names if n.endswith(".prom")] == ["khotui.prom"]
    assert any(n.startswith(".khotui.prom.") for n in names)
    assert one(metrics(target.read_text()), "khotui_check_success") == 1


def test_a_failed_write_leaves_the_old_file_and_no_temporary(textdir, capsys, monkeypatch):
    target = textdir / "khotui.prom"
    target.write_text("# old\n")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(safewrite.os, "write", full)
    code, _, err = write_via_cli(target, capsys)
    assert code == 2 and "No space left" in err and str(target) in err and "fix:" in err
    assert target.read_text() == "# old\n"
    assert sorted(p.name for p in textdir.iterdir()) == ["khotui.prom"]


def test_a_link_at_the_target_is_refused_not_followed(textdir, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (textdir / "khotui.prom").symlink_to(victim)
    code, out, err = write_via_cli(textdir / "khotui.prom", capsys)
    assert code == 2 and "symbolic link" in err and "fix:" in err and out == ""
    assert victim.read_text() == "keep me" and (textdir / "khotui.prom").is_symlink()


def test_a_linked_directory_is_refused(textdir, tmp_path, capsys):
    (tmp_path / "linked").symlink_to(textdir)
    code, _, err = write_via_cli(tmp_path / "linked" / "khotui.prom", capsys)
    assert code == 2 and "never written through a link" in err
    assert list(textdir.iterdir()) == []


@pytest.mark.parametrize(("mode", "owner", "said"), [
    (0o777, 0, "writable by others (mode 0777)"),
    (0o1777, 0, "writable by others (mode 1777)"),    # sticky is not enough for the last one
    (0o775, 0, "writable by others (mode 0775)"),
    (0o755, 65534, "owned by uid 65534"),
])
def test_a_directory_others_can_change_is_refused(textdir, capsys, mode, owner, said):
    os.chmod(textdir, mode)
    os.chown(textdir, owner, -1)
    code, _, err = write_via_cli(textdir / "khotui.prom", capsys)
    assert code == 2 and said in err and "chmod 0755" in err
    assert list(textdir.iterdir()) == []


def test_a_missing_directory_is_refused_not_made(tmp_path, capsys):
    code, _, err = write_via_cli(tmp_path / "nope" / "khotui.prom", capsys)
    assert code == 2 and "does not exist" in err and "install -d -m 0755" in err
    assert not (tmp_path / "nope").exists()


def test_a_name_node_exporter_ignores_is_said(textdir, capsys):
    code, _, err = write_via_cli(textdir / "khotui.txt", capsys)
    assert code in (0, 1) and "reads only *.prom" in err


# -- the systemd units --------------------------------------------------------------------------


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections: key -> every value given (systemd allows repeats)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None and "=" in line, line
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def exec_start() -> list[str]:
    [line] = unit("khotui-check.service")["Service"]["ExecStart"]
    return shlex.split(line)


def test_the_service_runs_plan_with_flags_khotui_has(tmp_path, capsys):
    words = exec_start()
    assert words[0] == "khotui" and words[1] == "plan"
    assert words[words.index("--kernel") + 1] == "default"
    textfile = Path(words[words.index("--textfile") + 1])
    assert textfile.name == "khotui.prom"
    # the unit's arguments through khotui's own argparse, on the demo, into a temp directory
    where = tmp_path / "collector"
    where.mkdir(mode=0o755)
    os.chmod(where, 0o755)
    args = words[1:]
    args[args.index("--textfile") + 1] = str(where / textfile.name)
    code, _, _ = run([*args, "--demo"], capsys)
    assert code in (0, 1)
    assert one(metrics((where / "khotui.prom").read_text()), "khotui_check_success") == 1
    # and the sandbox lets it write exactly there
    service = unit("khotui-check.service")["Service"]
    assert service["ProtectSystem"] == ["strict"]
    assert [p.lstrip("-") for p in service["ReadWritePaths"]] == [str(textfile.parent)]


@pytest.mark.parametrize("where", ["live", "demo"])
def test_the_units_command_never_reaches_a_kexec_syscall(where, tmp_path):
    # the ExecStart as written (textfile moved to a temp directory), under the seccomp filter
    # that kills on kexec_load, kexec_file_load and reboot; on this machine's own host too,
    # where any answer (0, 1, or 2 with khotui_check_success 0) must land in the textfile
    import sys

    from tests import syscall_guard
    if not syscall_guard.supported():
        pytest.skip("seccomp guard supports x86_64 and aarch64 Linux only")
    collector = tmp_path / "collector"
    collector.mkdir(mode=0o755)
    os.chmod(collector, 0o755)
    args = exec_start()[1:]
    args[args.index("--textfile") + 1] = str(collector / "khotui.prom")
    if where == "demo":
        args.append("--demo")
    result = subprocess.run([sys.executable, str(REPO / "tests" / "syscall_guard.py"),
                             sys.executable, "-m", "khotui", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1, 2), result
    assert "Traceback" not in result.stderr
    found = metrics((collector / "khotui.prom").read_text())
    assert one(found, "khotui_check_success") == (result.returncode != 2)


def test_the_service_is_a_oneshot_where_would_fail_is_a_result():
    service = unit("khotui-check.service")["Service"]
    assert service["Type"] == ["oneshot"]
    assert "1" in service["SuccessExitStatus"][0].split()
    assert "2" not in service["SuccessExitStatus"][0].split()
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateNetwork"):
        assert service[key] == ["yes"], key
    assert "@reboot" in service["SystemCallFilter"][0]


def test_the_service_keeps_what_a_root_plan_reads():
    # each of these would make the daily answer differ from an operator's `sudo khotui plan`
    # (reasons in the unit's comments): kcore/kallsyms, kmsg, CAP_SYS_RAWIO, /usr/lib/modules
    service = unit("khotui-check.service")["Service"]
    for key in ("ProtectKernelTunables", "ProtectKernelLogs", "PrivateDevices", "ProtectClock",
                "ProtectKernelModules", "ProcSubset", "ProtectProc", "MemoryDenyWriteExecute"):
        assert key not in service, key
    caps = set(service["CapabilityBoundingSet"][0].split())
    assert {"CAP_SYS_BOOT", "CAP_SYS_ADMIN", "CAP_SYS_RAWIO", "CAP_SYSLOG"} <= caps


def test_the_timer_runs_the_service_daily():
    timer = unit("khotui-check.timer")
    assert timer["Timer"]["OnCalendar"] == ["daily"]
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Timer"]["RandomizedDelaySec"]
    assert "Unit" not in timer["Timer"]     # the same name: khotui-check.service
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def test_systemd_analyze_verify_finds_nothing(tmp_path):
    tool = shutil.which("systemd-analyze")
    system = Path("/usr/lib/systemd/system")
    if tool is None or not (system / "timers.target").exists():
        pytest.skip("systemd-analyze or the system's unit directory is missing")
    # a root with khotui in systemd's search path and the system's own units
    root = tmp_path / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/khotui").write_text("#!/bin/sh\n")
    (root / "usr/local/bin/khotui").chmod(0o755)
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name in ("khotui-check.service", "khotui-check.timer"):
        shutil.copyfile(UNITS / name, root / "etc/systemd/system" / name)
    result = subprocess.run([tool, "verify", f"--root={root}", "khotui-check.service",
                             "khotui-check.timer"], capture_output=True, text=True, timeout=60)
    if "--root" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip(f"this systemd-analyze has no --root: {result.stderr.strip()}")
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result
