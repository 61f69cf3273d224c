"""Issue #13 items 8, 9, 11-14: the CLI a script can trust, and the words each surface uses.

The CLI through `cli.main(argv)` where only the output matters, and as a subprocess where the
exit code and stdout are the contract.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from khotui.cli import main as cli
from khotui.cmdline import accepted_length, cmdline_len, length_text
from khotui.host.choose import default_kernel, resolve_file
from khotui.host.sysroot import Sysroot
from khotui.plan import checks
from tests.conftest import REPO

DEMO_KERNEL = "/boot/vmlinuz-7.3.4"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "khotui", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    rc = cli.main(argv)
    return rc, json.loads(capsys.readouterr().out)


# --- 9: one length, the kernel's ------------------------------------------------------------


def test_the_length_is_the_syscalls_cmdline_len_everywhere():
    assert cmdline_len("ro") == 3 and cmdline_len("") == 1
    assert length_text(135, 2017) == "135 of 2017 bytes (with the NUL)"
    # an empty line does not read as "1 of 2017" alone
    assert length_text(1, 2017).startswith("empty")


def test_a_too_long_command_line_gets_one_fail_line_with_one_number(capsys):
    room = 2047 - 30
    long_line = "kho=on " + "x" * (room - 7)   # room + 1 bytes with the NUL: one too many
    rc, out = _json(capsys, ["plan", "--demo", "--kernel", DEMO_KERNEL, "--cmdline", long_line,
                             "--json"])
    assert rc == cli.EXIT_WOULD_FAIL
    failing = [c for c in out["checks"] if c["status"] == "fail"]
    assert [c["id"] for c in failing] == ["cmdline-length"]
    assert f"{room + 1} of {room} bytes (with the NUL)" in failing[0]["message"]
    assert accepted_length(2047) == room


def test_prepare_and_plan_show_the_same_number(capsys):
    from khotui.tui.screens.plan import _request_line
    from khotui.tui.viewmodel import Plan, PlanInput, Source
    src = Source(REPO / "khotui" / "demo", demo=True)
    plan = Plan(request=PlanInput("/k", None, "a" * 134), would_succeed=True, verdict="",
                segments=[], regions=[], findings=[])
    assert "135 bytes (with the NUL)" in _request_line(src, plan)


# --- 8: fixes in each surface's words; kho=off is a choice ----------------------------------


def _ctx(cmdline: str) -> checks.CheckContext:
    return checks.CheckContext(live=False, arch="x86_64", osrelease="7.3.4", kho_enabled=True,
                               cmdline=cmdline)


def test_missing_kho_on_fix_is_a_flag_on_the_cli_and_a_key_in_the_app():
    (f,) = checks.check_cmdline(_ctx("root=/dev/vda"))
    assert f.status == "fail"
    assert "--append kho=on" in f.fix_for("cli")
    app = f.fix_for("app")
    assert "--append" not in app and "Prepare" in app and "press e" in app
    assert f.as_dict()["fix"] == f.fix_for("cli")       # JSON speaks the CLI's language


def test_explicit_kho_off_is_stated_back_not_corrected():
    (f,) = checks.check_cmdline(_ctx("root=/dev/vda kho=off"))
    assert f.status == "warn"
    assert "will not receive the handover" in f.message
    assert "add kho=on" not in (f.fix or "")


def test_an_unreadable_kho_value_still_fails():
    (f,) = checks.check_cmdline(_ctx("root=/dev/vda kho=maybe"))
    assert f.status == "fail" and "kho=maybe" in f.message


def test_cli_plan_with_append_kho_off_does_not_advise_kho_on():
    r = run_cli("plan", "--demo", "--kernel", DEMO_KERNEL, "--append", "kho=off")
    assert "add kho=on" not in r.stdout and "will not receive the handover" in r.stdout


# --- 11: what the app shows can be typed on the CLI ------------------------------------------


def test_a_path_the_demo_lists_plans_on_the_cli():
    r = run_cli("plan", "--demo", "--kernel", DEMO_KERNEL, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["would_succeed"] is True
    assert any("read from the snapshot" in a for a in out["notes"])


def test_a_link_out_of_the_snapshot_is_refused(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz-9").symlink_to("/etc/hostname")
    from khotui.errors import KhotuiError
    with pytest.raises(KhotuiError, match="leads out of the snapshot"):
        resolve_file(Sysroot(tmp_path), "/boot/vmlinuz-9")
    # a path the snapshot lacks is this machine's file
    assert resolve_file(Sysroot(tmp_path), "/etc/hostname").in_root is False


def test_kernels_lists_the_demo_kernel_and_the_default(capsys):
    rc, out = _json(capsys, ["kernels", "--demo", "--json"])
    assert rc == 0 and out["schema"] == "khotui.kernels/1"
    assert [k["kernel_path"] for k in out["kernels"]] == [DEMO_KERNEL]
    assert out["default"] == DEMO_KERNEL and out["kernels"][0]["default"] is True


def _bls_root(tmp_path, default: str | None = None, efivar: str | None = None):
    entries = tmp_path / "boot" / "loader" / "entries"
    entries.mkdir(parents=True)
    for v in ("6.1.0", "6.9.0"):
        (tmp_path / "boot" / f"vmlinuz-{v}").write_bytes(b"x")
        (entries / f"linux-{v}.conf").write_text(f"title L\nversion {v}\nlinux /vmlinuz-{v}\n")
    if default:
        (tmp_path / "boot" / "loader" / "loader.conf").write_text(f"timeout 3\ndefault {default}\n")
    if efivar:
        d = tmp_path / "sys/firmware/efi/efivars"
        d.mkdir(parents=True)
        (d / "LoaderEntryDefault-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f").write_bytes(
            b"\x07\x00\x00\x00" + (efivar + "\0").encode("utf-16-le"))
    return Sysroot(tmp_path)


def test_default_kernel_follows_systemd_order(tmp_path):
    k, why = default_kernel(_bls_root(tmp_path / "a"))
    assert k.version == "6.9.0" and "first boot loader entry" in why       # newest first
    k, why = default_kernel(_bls_root(tmp_path / "b", default="linux-6.1*"))
    assert k.version == "6.1.0" and "loader.conf" in why
    k, why = default_kernel(_bls_root(tmp_path / "c", default="linux-6.9*",
                                      efivar="linux-6.1.0.conf"))
    assert k.version == "6.1.0" and "LoaderEntryDefault" in why            # efivar wins


# --- 12: JSON everywhere ----------------------------------------------------------------------


def test_every_json_object_carries_its_schema(capsys):
    assert _json(capsys, ["status", "--demo", "--json"])[1]["schema"] == "khotui.status/1"
    assert _json(capsys, ["plan", "--demo", "--kernel", DEMO_KERNEL, "--json"])[1]["schema"] \
        == "khotui.plan/1"


def test_an_error_with_json_is_json_on_stdout_and_exit_2():
    r = run_cli("plan", "--demo", "--kernel", "/no/such/kernel", "--json")
    assert r.returncode == 2
    out = json.loads(r.stdout)
    assert out["schema"] == "khotui.error/1"
    assert out["error"]["path"] == "/no/such/kernel" and out["error"]["fix"]
    r = run_cli("plan", "--demo", "--json")          # a usage error too
    assert r.returncode == 2 and "--kernel" in json.loads(r.stdout)["error"]["message"]


def test_dry_run_load_json_says_dry_run():
    r = run_cli("load", "--demo", "--kernel", DEMO_KERNEL, "--json", "--yes")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["schema"] == "khotui.load/1" and out["dry_run"] is True and out["load"] is None
    r = run_cli("unload", "--demo", "--json", "--yes")
    out = json.loads(r.stdout)
    assert out["schema"] == "khotui.unload/1" and out["dry_run"] is True


def test_help_documents_exit_codes_and_snapshot_out():
    r = run_cli("--help")
    assert "exit codes:" in r.stdout and "130" in r.stdout
    assert "snapshot OUT" in r.stdout and "khotui.error/1" in r.stdout


# --- 13: one host ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--demo", "status", "--root", "/tmp"],
                                  ["--root", "/tmp", "status", "--demo"]])
def test_two_hosts_at_two_levels_exit_2(argv, capsys):
    assert cli.main(argv) == cli.EXIT_USAGE
    assert "two hosts given" in capsys.readouterr().err
