"""Installed kernels from /boot and Boot Loader Specification entries."""

from __future__ import annotations

import pytest

from khotui.errors import KhotuiError
from khotui.host.kernels import find_kernels, parse_bls_entry, version_key
from khotui.host.sysroot import Sysroot


def _write(root, files):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return Sysroot(root)


def test_version_sort():
    versions = ["6.1.0-18-amd64", "6.10.0", "6.1.0-9-amd64", "5.15.0-100-generic", "6.10.0-rc1",
                "6.10.0~rc2", "6.2"]
    assert sorted(versions, key=version_key, reverse=True) == [
        "6.10.0", "6.10.0~rc2", "6.10.0-rc1", "6.2", "6.1.0-18-amd64", "6.1.0-9-amd64",
        "5.15.0-100-generic"]


def test_debian_and_fedora_pairs(tmp_path):
    sysroot = _write(tmp_path, {
        "proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
        "boot/vmlinuz-6.1.0-18-amd64": b"k" * 100, "boot/initrd.img-6.1.0-18-amd64": b"i",
        "boot/vmlinuz-6.10.0": b"k" * 10, "boot/initramfs-6.10.0.img": b"i",
        "boot/vmlinuz-5.10.0-old": b"k",  # no initrd
        "boot/config-6.1.0-18-amd64": "CONFIG_A=y\n", "boot/System.map-6.10.0": "",
    })
    kernels = find_kernels(sysroot)
    assert [(k.version, k.initrd_path, k.running, k.source) for k in kernels] == [
        ("6.10.0", "/boot/initramfs-6.10.0.img", False, "boot"),
        ("6.1.0-18-amd64", "/boot/initrd.img-6.1.0-18-amd64", True, "boot"),
        ("5.10.0-old", None, False, "boot"),
    ]
    assert kernels[1].kernel_path == "/boot/vmlinuz-6.1.0-18-amd64" and kernels[1].size == 100
    assert kernels[1].mtime > 0
    import json
    json.dumps([k.as_dict() for k in kernels])


def test_bls_entries_paths_relative_to_their_partition(tmp_path):
    sysroot = _write(tmp_path, {
        "proc/sys/kernel/osrelease": "6.8.5-301.fc40.x86_64\n",
        "boot/loader/entries/abc-6.8.5-301.fc40.x86_64.conf":
            "# comment\ntitle Fedora Linux (6.8.5-301.fc40.x86_64) 40\nversion 6.8.5-301.fc40.x86_64\n"
            "linux /vmlinuz-6.8.5-301.fc40.x86_64\ninitrd /initramfs-6.8.5-301.fc40.x86_64.img\n"
            "options root=UUID=1234 ro\noptions quiet\n",
        "boot/vmlinuz-6.8.5-301.fc40.x86_64": b"k" * 7,
        "efi/loader/entries/arch.conf": "title Arch\nlinux /vmlinuz-linux\ninitrd /intel-ucode.img\n"
                                         "initrd /initramfs-linux.img\noptions rw\n",
        "efi/vmlinuz-linux": b"k",
        "boot/efi/loader/entries/uki.conf": "title UKI\nefi /EFI/Linux/uki.efi\n",  # not kexec-able here
    })
    kernels = find_kernels(sysroot)
    bls = [k for k in kernels if k.source == "bls"]
    fedora = next(k for k in bls if k.version.startswith("6.8.5"))
    assert fedora.kernel_path == "/boot/vmlinuz-6.8.5-301.fc40.x86_64" and fedora.size == 7
    assert fedora.initrd_path == "/boot/initramfs-6.8.5-301.fc40.x86_64.img"
    assert fedora.options == "root=UUID=1234 ro quiet" and fedora.running
    assert fedora.title == "Fedora Linux (6.8.5-301.fc40.x86_64) 40"
    assert fedora.entry_path == "/boot/loader/entries/abc-6.8.5-301.fc40.x86_64.conf"
    arch = next(k for k in bls if k.title == "Arch")
    assert arch.version == "arch" and arch.kernel_path == "/efi/vmlinuz-linux"
    assert arch.initrd_path == "/efi/intel-ucode.img" and not arch.running
    assert not any(k.title == "UKI" for k in kernels)
    # the /boot pair of the same version is listed too, after the BLS entry
    same = [k for k in kernels if k.version == fedora.version]
    assert [k.source for k in same] == ["bls", "boot"]


def test_bls_entry_missing_kernel_file_has_no_size(tmp_path):
    sysroot = _write(tmp_path, {"boot/loader/entries/x.conf": "linux /gone\n"})
    (k,) = find_kernels(sysroot)
    assert k.size is None and k.mtime is None and k.version == "x"


def test_parse_bls_entry_tabs():
    assert parse_bls_entry("title\tFoo Bar\n")["title"] == ["Foo Bar"]


def test_unreadable_entry_is_a_khotui_error(tmp_path):
    sysroot = _write(tmp_path, {"boot/loader/entries/big.conf": "x" * (1 << 17)})
    with pytest.raises(KhotuiError) as err:
        find_kernels(sysroot)
    assert err.value.path.endswith("big.conf")


def test_no_boot_at_all(tmp_path):
    assert find_kernels(Sysroot(tmp_path)) == []
