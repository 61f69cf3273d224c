"""`kexec_file_load(2)` and `reboot(2)` as khotui reaches them: flags, syscall numbers, the
`Syscalls` seam, the ctypes wrapper, and the dry-run kill switch.

KHO data reaches the next kernel only through `kexec_file_load` (`kho_fill_kimage()` is called
only from kernel/kexec_file.c `kimage_file_prepare_segments()`), so this is the only load
syscall khotui knows. Nothing here runs at import time: the real libc path exists only after an
explicit `real_syscalls()`, and a process that called `forbid_real_syscalls()` (every dry-run
entry point does) can never reach it again. The rest of khotui takes a `Syscalls` object, which
is how tests inject a recorder instead of the kernel.

Kernel references are Linux 7.3.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Callable
from typing import Protocol

from khotui.errors import KhotuiError

# include/uapi/linux/kexec.h
KEXEC_FILE_UNLOAD = 0x00000001
KEXEC_FILE_ON_CRASH = 0x00000002
KEXEC_FILE_NO_INITRAMFS = 0x00000004
KEXEC_FILE_DEBUG = 0x00000008  # 6.8
KEXEC_FILE_NO_CMA = 0x00000010  # 6.17
KEXEC_FILE_FORCE_DTB = 0x00000020  # ~6.18; effect only on x86 (SETUP_DTB)
# mirrors KEXEC_FILE_FLAGS, include/linux/kexec.h; any other bit is EINVAL
KEXEC_FILE_FLAGS = (KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS
                    | KEXEC_FILE_DEBUG | KEXEC_FILE_NO_CMA | KEXEC_FILE_FORCE_DTB)

FLAG_NAMES = {
    KEXEC_FILE_UNLOAD: "UNLOAD",
    KEXEC_FILE_ON_CRASH: "ON_CRASH",
    KEXEC_FILE_NO_INITRAMFS: "NO_INITRAMFS",
    KEXEC_FILE_DEBUG: "DEBUG",
    KEXEC_FILE_NO_CMA: "NO_CMA",
    KEXEC_FILE_FORCE_DTB: "FORCE_DTB",
}

# The first release whose KEXEC_FILE_FLAGS accepts the bit; older kernels answer EINVAL.
FLAG_SINCE = {
    KEXEC_FILE_DEBUG: (6, 8),
    KEXEC_FILE_NO_CMA: (6, 17),
    KEXEC_FILE_FORCE_DTB: (6, 18),
}

# Kernel/initrd size limit: KEXEC_FILE_SIZE_MAX, kernel/kexec_file.c (larger: EFBIG).
KEXEC_FILE_SIZE_MAX = 4 << 30


# Syscall numbers: arch/x86/entry/syscalls/syscall_64.tbl, arch/arm64/tools/syscall_64.tbl,
# scripts/syscall.tbl (generic, riscv64).
SYS_KEXEC_FILE_LOAD = {"x86_64": 320, "aarch64": 294, "arm64": 294, "riscv64": 294}
SYS_REBOOT = {"x86_64": 169, "aarch64": 142, "arm64": 142, "riscv64": 142}

# include/uapi/linux/reboot.h; for the later `--exec` path (kernel/reboot.c sys_reboot()).
LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_KEXEC = 0x45584543



def _machine() -> str:
    return os.uname().machine


def syscall_number(machine: str | None = None) -> int:
    """The `kexec_file_load` syscall number for `machine` (default: this host)."""
    machine = machine or _machine()
    try:
        return SYS_KEXEC_FILE_LOAD[machine]
    except KeyError:
        raise KhotuiError(
            f"kexec_file_load is not supported on this architecture by khotui ({machine})",
            fix="use khotui on x86_64 or arm64 (KHO exists only there); kexec-tools `kexec -s` "
                "can still load on other architectures") from None


def reboot_syscall_number(machine: str | None = None) -> int:
    machine = machine or _machine()
    try:
        return SYS_REBOOT[machine]
    except KeyError:
        raise KhotuiError(
            f"reboot(LINUX_REBOOT_CMD_KEXEC) is not supported on this architecture by khotui "
            f"({machine})") from None


def flag_names(flags: int) -> list[str]:
    """`["NO_INITRAMFS", "DEBUG"]` for 0xc; unknown bits as hex."""
    names = [name for bit, name in FLAG_NAMES.items() if flags & bit]
    unknown = flags & ~KEXEC_FILE_FLAGS
    if unknown:
        names.append(hex(unknown))
    return names


def check_flags(flags: int) -> None:
    """Refuse bits the kernel does not define, before the syscall (which would cost a
    `kexec_load_limit_reboot` count and answer a bare EINVAL)."""
    if flags < 0 or flags & ~KEXEC_FILE_FLAGS:
        raise KhotuiError(
            f"unknown kexec_file_load flag bits {hex(flags & ~KEXEC_FILE_FLAGS) if flags >= 0 else flags}",
            fix="use only UNLOAD 0x1, ON_CRASH 0x2, NO_INITRAMFS 0x4, DEBUG 0x8, NO_CMA 0x10, "
                "FORCE_DTB 0x20")


def parse_release(release: str | None) -> tuple[int, int] | None:
    """`(7, 3)` from `7.3.4-amd64`; None if not a kernel release string."""
    if not release:
        return None
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def flags_unsupported_by(flags: int, release: str | None) -> list[str]:
    """Flag names the running kernel `release` predates (it would answer EINVAL)."""
    version = parse_release(release)
    if version is None:
        return []
    return [FLAG_NAMES[bit] for bit, since in FLAG_SINCE.items()
            if flags & bit and version < since]


# --------------------------------------------------------------------------------------------
# The seam


class RealSyscallForbidden(KhotuiError):
    """A real syscall was attempted in a process that promised not to make one (dry run)."""


DRY_RUN_ONLY = False
"""Kill switch. Once True (set by `forbid_real_syscalls()`), `real_syscalls()` and every
`LibcSyscalls` call raise `RealSyscallForbidden` before touching libc."""


def forbid_real_syscalls() -> None:
    """Called by every dry-run entry point: no kexec or reboot syscall from this process on."""
    global DRY_RUN_ONLY
    DRY_RUN_ONLY = True


def _guard(what: str) -> None:
    if DRY_RUN_ONLY:
        raise RealSyscallForbidden(
            f"refusing {what}: this khotui process runs in dry-run mode and must never reach "
            "the kernel", fix="run the load again without --dry-run")


def check_allowed(syscalls: object) -> None:
    """Refuse now, before anything is recorded, when `syscalls` is the libc path and this
    process is in dry-run mode (the call itself would refuse; the audit must not first say
    it was attempted)."""
    if isinstance(syscalls, LibcSyscalls):
        _guard("kexec_file_load")


class Syscalls(Protocol):
    """What khotui asks of the kernel. Tests pass a recorder; production `real_syscalls()`."""

    def kexec_file_load(self, kernel_fd: int, initrd_fd: int, cmdline: bytes,
                        flags: int) -> int:
        """`cmdline` without its NUL. Returns 0 or raises OSError carrying the errno."""
        ...

    def reboot_kexec(self) -> int:
        """`reboot(LINUX_REBOOT_CMD_KEXEC)`: returns only on failure (raises OSError)."""
        ...


class LibcSyscalls:
    """`Syscalls` through libc's `syscall(2)` via ctypes.

    `syscall_fn` / `reboot_fn` are ctypes function pointers (from `real_syscalls()`) or, in
    tests, any callable that records what it receives; both are called with ctypes values of the
    kernel's argument types and must return -1 with `ctypes.set_errno()` on failure.
    """

    def __init__(self, syscall_fn: Callable[..., int], *,
                 reboot_fn: Callable[..., int] | None = None,
                 machine: str | None = None,
                 get_errno: Callable[[], int] = ctypes.get_errno) -> None:
        self.machine = machine or _machine()
        self.nr = syscall_number(self.machine)
        self._syscall = syscall_fn
        self._reboot = reboot_fn
        self._get_errno = get_errno

    def kexec_file_load(self, kernel_fd: int, initrd_fd: int, cmdline: bytes,
                        flags: int) -> int:
        _guard("kexec_file_load")
        check_flags(flags)
        if b"\0" in cmdline:
            raise KhotuiError("the kernel command line contains a NUL byte",
                              fix="remove the NUL; the kernel would cut the cmdline there")
        if flags & KEXEC_FILE_UNLOAD:
            # kexec-tools passes (0, NULL) for unload; the kernel ignores the cmdline then
            cmdline_len, cmdline_ptr = 0, None
        else:
            # the kernel checks cmdline[cmdline_len - 1] == '\0' (kimage_file_prepare_segments())
            cmdline_len, cmdline_ptr = len(cmdline) + 1, cmdline + b"\0"
        if flags & KEXEC_FILE_NO_INITRAMFS:
            initrd_fd = -1
        # long syscall(long nr, int kernel_fd, int initrd_fd, unsigned long cmdline_len,
        #              const char *cmdline, unsigned long flags)
        ret = self._syscall(ctypes.c_long(self.nr), ctypes.c_int(kernel_fd),
                            ctypes.c_int(initrd_fd), ctypes.c_ulong(cmdline_len),
                            ctypes.c_char_p(cmdline_ptr), ctypes.c_ulong(flags))
        return self._check(ret)

    def reboot_kexec(self) -> int:
        _guard("reboot(LINUX_REBOOT_CMD_KEXEC)")
        if self._reboot is None:
            raise KhotuiError("no reboot function was given to this syscall wrapper")
        ret = self._reboot(ctypes.c_long(reboot_syscall_number(self.machine)),
                           ctypes.c_uint(LINUX_REBOOT_MAGIC1), ctypes.c_uint(LINUX_REBOOT_MAGIC2),
                           ctypes.c_uint(LINUX_REBOOT_CMD_KEXEC), ctypes.c_void_p(None))
        return self._check(ret)

    def _check(self, ret: int | ctypes.c_long) -> int:
        # a ctypes pointer with restype c_long answers an int; a bare CFUNCTYPE may not
        ret = ret.value if isinstance(ret, ctypes.c_long) else int(ret)
        if ret < 0:
            code = self._get_errno()
            raise OSError(code, os.strerror(code))
        return 0


def _open_libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def real_syscalls() -> LibcSyscalls:
    """The only way to the real kernel. Raises if dry-run mode is on or the arch is unknown."""
    _guard("kexec_file_load")
    machine = _machine()
    syscall_number(machine)
    libc = _open_libc()
    # libc["syscall"] returns a fresh function pointer each time, so the two argtypes differ
    load_fn = libc["syscall"]
    load_fn.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_int, ctypes.c_ulong,
                        ctypes.c_char_p, ctypes.c_ulong]
    load_fn.restype = ctypes.c_long
    reboot_fn = libc["syscall"]
    reboot_fn.argtypes = [ctypes.c_long, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                          ctypes.c_void_p]
    reboot_fn.restype = ctypes.c_long
    return LibcSyscalls(load_fn, reboot_fn=reboot_fn, machine=machine)

