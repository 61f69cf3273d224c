#!/usr/bin/env python3
"""Guest-side helpers for the VM tier: standard library only, run as root inside the guest.

    guestutil.py load KERNEL [--initrd FILE] [--cmdline STR] [--flags N] [--ima-copy DIR]
        kexec_file_load(2) through ctypes (syscall 320 on x86_64, 294 on arm64); prints a JSON
        line {"errno": N, "error": "...", "flags": N}; exit 0 on success, 1 on failure.
        --cmdline defaults to $KHO_NEXT_CMDLINE (set by the init script); flags default to
        KEXEC_FILE_DEBUG (0x8), plus KEXEC_FILE_NO_INITRAMFS (0x4) without --initrd.
        --ima-copy DIR: after opening the files (opening them as root adds IMA FILE_CHECK
        measurements under ima_policy=tcb) and right before the syscall, copy the IMA
        measurement list (binary_runtime_measurements, runtime_measurements_count) to DIR:
        the list the kernel sizes its kexec IMA segment from.
    guestutil.py kexec
        reboot(LINUX_REBOOT_CMD_KEXEC); only returns (exit 1) if the kernel refused.
    guestutil.py kmsg OUT
        copy every /dev/kmsg record currently in the buffer to OUT (non-blocking), one
        "[seconds] message" line each, like dmesg.
    guestutil.py scratch
        the KHO scratch regions from debugfs as JSON [{"phys": N, "len": N}, ...].
    guestutil.py copytree SRC DST
        copy a directory tree (e.g. a snapshot) to the out share, without metadata.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import shutil
import sys

KEXEC_FILE_NO_INITRAMFS = 0x4
KEXEC_FILE_DEBUG = 0x8
LINUX_REBOOT_CMD_KEXEC = 0x45584543
SYSCALLS = {"x86_64": 320, "aarch64": 294, "riscv64": 294}
KHO = "/sys/kernel/debug/kho"

libc = ctypes.CDLL(None, use_errno=True)


def load(argv: list[str]) -> int:
    kernel, initrd, cmdline, flags = None, None, os.environ.get("KHO_NEXT_CMDLINE"), None
    ima_copy = None
    it = iter(argv)
    for a in it:
        if a == "--initrd":
            initrd = next(it)
        elif a == "--cmdline":
            cmdline = next(it)
        elif a == "--flags":
            flags = int(next(it), 0)
        elif a == "--ima-copy":
            ima_copy = next(it)
        elif kernel is None:
            kernel = a
        else:
            raise SystemExit(f"guestutil load: unexpected argument {a!r}")
    if kernel is None or cmdline is None:
        raise SystemExit("usage: guestutil.py load KERNEL [--initrd F] [--cmdline S] [--flags N]")
    if flags is None:
        flags = KEXEC_FILE_DEBUG | (0 if initrd else KEXEC_FILE_NO_INITRAMFS)
    kfd = os.open(kernel, os.O_RDONLY)
    ifd = os.open(initrd, os.O_RDONLY) if initrd else -1
    buf = cmdline.encode() + b"\0"
    if ima_copy and os.path.isdir("/sys/kernel/security/ima"):
        # securityfs is never measured (dont_measure fsmagic), so this copy adds no entry.
        os.makedirs(ima_copy, exist_ok=True)
        for name in ("binary_runtime_measurements", "runtime_measurements_count"):
            with open(f"/sys/kernel/security/ima/{name}", "rb") as src, \
                    open(os.path.join(ima_copy, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
    nr = SYSCALLS[platform.machine()]
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(nr), ctypes.c_int(kfd), ctypes.c_int(ifd),
                      ctypes.c_ulong(len(buf)), ctypes.c_char_p(buf), ctypes.c_ulong(flags))
    err = ctypes.get_errno() if rc != 0 else 0
    print(json.dumps({"errno": err, "error": errno.errorcode.get(err, "") if err else "",
                      "strerror": os.strerror(err) if err else "", "flags": flags,
                      "cmdline": cmdline}))
    return 0 if rc == 0 else 1


def kexec() -> int:
    sys.stdout.flush()
    rc = libc.reboot(ctypes.c_int(LINUX_REBOOT_CMD_KEXEC))
    err = ctypes.get_errno()
    print(f"reboot(LINUX_REBOOT_CMD_KEXEC) returned {rc}: errno {err} "
          f"({errno.errorcode.get(err, '?')}: {os.strerror(err)})")
    return 1


def kmsg(out: str) -> int:
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    lines = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # EPIPE: a record was overwritten; keep reading
                continue
            if not rec:
                break
            head, _, rest = rec.decode(errors="replace").partition(";")
            msg = rest.split("\n", 1)[0]  # continuation lines (" KEY=value") dropped
            fields = head.split(",")
            usec = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0
            lines.append(f"[{usec // 1000000:5d}.{usec % 1000000:06d}] {msg}")
    finally:
        os.close(fd)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


def scratch() -> int:
    def hexes(name: str) -> list[int]:
        with open(f"{KHO}/out/{name}") as f:
            return [int(x, 16) for x in f.read().split()]

    phys, lens = hexes("scratch_phys"), hexes("scratch_len")
    print(json.dumps([{"phys": p, "len": n} for p, n in zip(phys, lens, strict=True)]))
    return 0


def copytree(src: str, dst: str) -> int:
    shutil.copytree(src, dst, copy_function=shutil.copyfile, dirs_exist_ok=True,
                    symlinks=True)
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "load":
        return load(rest)
    if cmd == "kexec":
        return kexec()
    if cmd == "kmsg" and len(rest) == 1:
        return kmsg(rest[0])
    if cmd == "scratch":
        return scratch()
    if cmd == "copytree" and len(rest) == 2:
        return copytree(*rest)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
