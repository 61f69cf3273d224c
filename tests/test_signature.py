"""Lockdown needs a signed image: khotui reads the PE certificate table the kernel's verifier uses."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

from khotui.image.inspect import inspect_kernel
from tests.conftest import CAPTURES, REPO, VM
from tests.fixtures.trees import copy_tree


def signed_copy(tmp_path):
    data = bytearray((VM / "bzImage-kho-7.3.4").read_bytes())
    e_lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    assert data[e_lfanew:e_lfanew + 4] == b"PE\0\0"
    opt = e_lfanew + 24
    magic = struct.unpack_from("<H", data, opt)[0]
    base = opt + (112 if magic == 0x20B else 96)
    # append a (fake) certificate and point IMAGE_DIRECTORY_ENTRY_SECURITY at it
    cert_off = len(data)
    data += b"\0" * 64
    struct.pack_into("<II", data, base + 8 * 4, cert_off, 64)
    out = tmp_path / "vmlinuz-signed"
    out.write_bytes(bytes(data))
    return out


def test_unsigned_and_signed_bzimage(tmp_path, shared):
    assert inspect_kernel(VM / "bzImage-kho-7.3.4").signed is False
    assert inspect_kernel(signed_copy(tmp_path)).signed is True


def test_lockdown_accepts_a_signed_image(tmp_path, shared):
    root = tmp_path / "root"
    copy_tree(CAPTURES / "two-nodes" / "sysroot", root)
    lock = root / "sys/kernel/security/lockdown"
    lock.chmod(0o644)
    lock.write_text("none [integrity] confidentiality\n")
    out = subprocess.run([sys.executable, "-m", "khotui", "plan", "--json", "--root", str(root),
                          "--kernel", str(signed_copy(tmp_path)), "--append", "x=1"],
                         cwd=REPO, capture_output=True, text=True)
    lockdown = next(c for c in json.loads(out.stdout)["checks"] if c["id"] == "lockdown")
    assert lockdown["status"] == "ok" and "signature" in lockdown["message"]
