"""Write the seed corpus of each target from the real inputs (tests/bad_inputs.SEEDS)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bad_inputs import SEEDS  # noqa: E402

PICK = {
    "fdt": lambda k: k.startswith(("fdt:", "sub:kho_test", "sub:memblock")),
    "sub_blob": lambda k: k.startswith("sub:"),
    "iomem": lambda k: k.startswith("iomem:"),
    "scratch": lambda k: k.startswith("scratch_phys:"),
    "kernel": lambda k: k in ("bzImage", "arm64-Image"),
    "initrd": lambda k: False,
    "kernellog": lambda k: k.startswith("kernel.log:"),
    "cmdline": lambda k: False,
    "host_text": lambda k: False,
    "block_record": lambda k: False,
}
EXTRA = {
    "initrd": [b"070701" + b"0" * 48 + b"00000000" + b"0" * 32 + b"0000000B" + b"0" * 8
               + b"TRAILER!!!\0\0" + b"\0" * 512 + b"\x1f\x8b\x08\0", b"\x28\xb5\x2f\xfd" + b"\0" * 16],
    "cmdline": [b'BOOT_IMAGE=/vmlinuz root=/dev/vda ro console=ttyS0 kho=on foo="a b"\0kho=on'],
    "host_text": [b"CONFIG_KEXEC_HANDOVER=y\n# CONFIG_X is not set\nMemTotal: 2030 kB\n",
                  b"title Linux\nversion 7.3.4\nlinux /vmlinuz-7.3.4\noptions ro kho=on\n",
                  b"0-3,8,10-11\n"],
    "scratch": [b"0x76c00000\n0x0\n0x40000000\n--\n0x8000000\n0x0\n0x4000000\n"],
    "block_record": [
        b'{"format": "khotui-blocks", "version": 1, "attributes": ["state", "online", '
        b'"phys_device", "removable", "valid_zones"], "runs": 3, "blocks": 13}\n'
        b'[0, 8, [0], [0], ["online\\n", "1\\n", "0\\n", "0\\n", "DMA32\\n"]]\n'
        b'[8, 4, [1], [1], ["offline\\n", "0\\n", "0\\n", "1\\n", null]]\n'
        b'[30, 1, [2], [], null]\n'],
}


def write(target: str, corpus: Path, limit: int = 64 << 10) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    items = [v[:limit] for k, v in SEEDS.items() if PICK[target](k)] + EXTRA.get(target, [])
    if target == "sub_blob":
        items = [bytes([i]) + v for v in items for i in range(5)]
    for data in items:
        (corpus / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)
    return len(items)
