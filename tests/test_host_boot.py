"""Boot info: command line, release, arch, config, meminfo, firmware."""

from __future__ import annotations

import gzip

import pytest

from khotui.cmdline import kstrtobool
from khotui.errors import KhotuiError
from khotui.host.boot import cmdline_param, cmdline_tokens, parse_config, read_boot, read_running_fdt
from khotui.host.sysroot import Sysroot
from tests.conftest import CAPTURES


def capture(name: str) -> Sysroot:
    root = CAPTURES / name
    if not root.is_dir():
        pytest.skip(f"{root} is missing: the real KHO captures are needed for this test")
    return Sysroot(root)


def test_two_nodes_boot():
    info = read_boot(capture("two-nodes/sysroot"))
    assert info.cmdline.endswith("panic=-1 kho=on") and not info.cmdline.endswith("\n")
    assert info.osrelease == "7.3.4" and info.version.startswith("Linux version 7.3.4")
    assert (info.arch, info.arch_source) == ("x86_64", "config")   # no /proc/sys/kernel/arch here
    assert info.config_source == "/proc/config.gz"
    assert info.config["CONFIG_KEXEC_HANDOVER"] == "y"
    assert "CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT" not in info.config
    assert info.config["CONFIG_LOCALVERSION"] == ""
    assert info.config_enabled("CONFIG_KEXEC_FILE") and info.config_enabled("CONFIG_KEXEC_SIG") is False
    assert info.meminfo["CmaTotal"] == 0 and info.meminfo["MemTotal"] == 2036808
    assert not info.efi_boot and info.efi_runtime_map_entries == 0 and info.fdt_path is None
    assert info.cmdline_param("kho") == "on" and info.cmdline_param("quiet") is None
    assert "ro" in info.cmdline_tokens()


def test_efi_capture():
    info = read_boot(capture("efi-two-nodes/sysroot"))
    assert info.efi_boot and info.efi_runtime_map_entries == 5
    assert (info.arch, info.arch_source) == ("x86_64", "/proc/sys/kernel/arch")


def test_arm64_capture():
    sysroot = capture("two-nodes-arm64/sysroot")
    info = read_boot(sysroot)
    assert (info.arch, info.arch_source) == ("arm64", "/proc/sys/kernel/arch")  # 'aarch64' in the file
    assert info.fdt_path == "/sys/firmware/fdt"
    assert info.meminfo["CmaTotal"] == 32768
    fdt = read_running_fdt(sysroot)
    assert fdt[:4] == bytes.fromhex("d00dfeed") and len(fdt) == 1 << 20
    assert read_running_fdt(capture("two-nodes/sysroot")) is None


def test_cmdline_tokens_quotes_and_init_args():
    line = 'root=/dev/sda1 dyndbg="file kexec_file.c +p" kho=on -- kho=off single'
    assert cmdline_tokens(line) == ["root=/dev/sda1", "dyndbg=file kexec_file.c +p", "kho=on"]
    assert cmdline_param(line, "kho") == "on"
    assert cmdline_param("kho=on kho=off", "kho") == "off"
    assert cmdline_param("kho", "kho") == ""


@pytest.mark.parametrize("value,expected", [("on", True), ("ON", True), ("1", True), ("y", True),
                                            ("off", False), ("0", False), ("n", False),
                                            ("", None), ("maybe", None), ("o", None), (None, None)])
def test_kstrtobool(value, expected):
    assert kstrtobool(value) is expected


def test_parse_config():
    config = parse_config('CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D="str"\nCONFIG_E=0x10\n')
    assert config == {"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_D": "str", "CONFIG_E": "0x10"}


def _root(tmp_path, **files):
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return Sysroot(tmp_path)


def test_config_from_boot_when_no_config_gz(tmp_path):
    sysroot = _root(tmp_path, **{"proc/cmdline": "quiet\n", "proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
                                 "boot/config-6.1.0-18-amd64": "CONFIG_ARM64=y\n"})
    info = read_boot(sysroot)
    assert info.config_source == "/boot/config-6.1.0-18-amd64"
    assert (info.arch, info.arch_source) == ("arm64", "config")
    assert info.meminfo == {} and info.config_enabled("CONFIG_X") is False


def test_no_config_at_all(tmp_path):
    info = read_boot(_root(tmp_path, **{"proc/cmdline": "quiet\n"}))
    assert info.config == {} and info.config_source is None and info.config_enabled("CONFIG_A") is None
    assert info.arch is None and info.osrelease is None


def test_corrupt_config_gz(tmp_path):
    sysroot = _root(tmp_path, **{"proc/cmdline": "x\n", "proc/config.gz": b"not gzip"})
    with pytest.raises(KhotuiError) as err:
        read_boot(sysroot)
    assert err.value.path.endswith("proc/config.gz") and err.value.fix


def test_truncated_config_gz(tmp_path):
    data = gzip.compress(b"CONFIG_A=y\n" * 1000)
    sysroot = _root(tmp_path, **{"proc/cmdline": "x\n", "proc/config.gz": data[: len(data) // 2]})
    with pytest.raises(KhotuiError) as err:
        read_boot(sysroot)
    assert err.value.path.endswith("proc/config.gz")


def test_not_a_root(tmp_path):
    with pytest.raises(KhotuiError) as err:
        read_boot(Sysroot(tmp_path))
    assert err.value.path.endswith("proc/cmdline") and "snapshot" in err.value.fix
