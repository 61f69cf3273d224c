"""`kexec_file_load(2)`: flags, syscall numbers, the ctypes seam, and errno explanations.

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
import errno as _errno
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from khotui.cmdline import MAX_ELFCOREHDR_STR_LEN
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

# Signature verification errnos (kexec_file.c kimage_validate_signature(); the same set
# kexec-tools treats as fatal rather than falling back to kexec_load).
SIGNATURE_ERRNOS = frozenset(
    getattr(_errno, name) for name in
    ("EKEYREJECTED", "ENOKEY", "EBADMSG", "ENODATA", "ENOPKG", "ELIBBAD", "EMSGSIZE",
     "EKEYEXPIRED", "EKEYREVOKED")
    if hasattr(_errno, name))


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

    def _check(self, ret: int) -> int:
        ret = int(getattr(ret, "value", ret))
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


# --------------------------------------------------------------------------------------------
# load / unload


@dataclass(frozen=True)
class LoadResult:
    """What one `kexec_file_load` call did. `ok` False carries the errno; see `explain()`."""

    action: str  # "load", "load-crash", "unload", "unload-crash"
    ok: bool
    flags: int
    cmdline: str = ""
    cmdline_len: int = 0  # bytes passed, NUL included (0 for unload)
    kernel_fd: int = -1
    initrd_fd: int = -1
    errno: int = 0
    errno_name: str = ""
    strerror: str = ""

    @property
    def result(self) -> str:
        """`ok` or the errno name, as the audit log records it."""
        return "ok" if self.ok else (self.errno_name or f"errno {self.errno}")

    def error(self, context: ExplainContext | None = None) -> KhotuiError:
        """The failure as the project's error, explained for this host."""
        ex = explain(self.errno, context)
        return KhotuiError(f"kexec_file_load ({self.action}) failed with {ex.errno_name}: "
                           f"{ex.summary}: {ex.cause}", fix=ex.fix)


def errno_name(code: int) -> str:
    return _errno.errorcode.get(code, f"errno {code}")


def _call(syscalls: Syscalls, action: str, kernel_fd: int, initrd_fd: int, cmdline: str,
          encoded: bytes, flags: int) -> LoadResult:
    cmdline_len = 0 if flags & KEXEC_FILE_UNLOAD else len(encoded) + 1
    common = dict(action=action, flags=flags, cmdline=cmdline, cmdline_len=cmdline_len,
                  kernel_fd=kernel_fd, initrd_fd=initrd_fd)
    try:
        syscalls.kexec_file_load(kernel_fd, initrd_fd, encoded, flags)
    except RealSyscallForbidden:
        raise
    except OSError as exc:
        code = exc.errno or 0
        return LoadResult(ok=False, errno=code, errno_name=errno_name(code),
                          strerror=os.strerror(code) if code else str(exc), **common)
    return LoadResult(ok=True, **common)


def load(kernel_fd: int, initrd_fd: int | None, cmdline: str, *, flags: int = 0,
         syscalls: Syscalls) -> LoadResult:
    """Load a kernel for the next kexec (or, with ON_CRASH, the crash kernel).

    `initrd_fd` None adds `KEXEC_FILE_NO_INITRAMFS` and passes -1. Bad input raises
    `KhotuiError` before the call: every call that reaches the kernel consumes one
    `kexec_load_limit_reboot` count, even one that fails (kexec_core.c kexec_load_permitted()).
    A kernel error is returned as `LoadResult(ok=False, errno=...)`, not raised.
    """
    check_flags(flags)
    if flags & KEXEC_FILE_UNLOAD:
        raise KhotuiError("KEXEC_FILE_UNLOAD passed to load()", fix="call unload() instead")
    if "\0" in cmdline:
        raise KhotuiError("the kernel command line contains a NUL byte",
                          fix="remove the NUL; the kernel would cut the cmdline there")
    if kernel_fd < 0:
        raise KhotuiError("no kernel file descriptor", fix="open the kernel image first")
    if initrd_fd is None:
        flags |= KEXEC_FILE_NO_INITRAMFS
        initrd_fd = -1
    elif flags & KEXEC_FILE_NO_INITRAMFS:
        raise KhotuiError("an initrd was given together with KEXEC_FILE_NO_INITRAMFS",
                          fix="drop the initrd, or drop NO_INITRAMFS")
    elif initrd_fd < 0:
        raise KhotuiError("invalid initrd file descriptor",
                          fix="open the initrd first, or load without one")
    encoded = cmdline.encode("utf-8")
    action = "load-crash" if flags & KEXEC_FILE_ON_CRASH else "load"
    return _call(syscalls, action, kernel_fd, initrd_fd, cmdline, encoded, flags)


def unload(syscalls: Syscalls, *, on_crash: bool = False) -> LoadResult:
    """Unload the loaded kexec image (or the crash image). Also consumes a load-limit count."""
    flags = KEXEC_FILE_UNLOAD | (KEXEC_FILE_ON_CRASH if on_crash else 0)
    action = "unload-crash" if on_crash else "unload"
    return _call(syscalls, action, -1, -1, "", b"", flags)


# --------------------------------------------------------------------------------------------
# errno explanations


@dataclass
class ExplainContext:
    """What khotui knows about this host and this load, for naming the likely cause.

    Every field is optional: None means "not known" and the explanation then lists the
    possibilities instead of naming one. The readers (host/, image.py, the planner) fill it.
    """

    # who and what the kernel allows
    is_root: bool | None = None
    has_cap_sys_boot: bool | None = None
    in_container: bool | None = None
    kexec_load_disabled: bool | None = None
    load_limit_reboot: int | None = None  # -1 = unlimited
    load_limit_panic: int | None = None
    lockdown: str | None = None  # "none", "integrity", "confidentiality"
    secure_boot: bool | None = None
    sig_enforce: bool | None = None  # CONFIG_KEXEC_SIG_FORCE or IMA arch policy under SB
    # the kernel that runs
    kernel_release: str | None = None
    arch: str | None = None
    kho_enabled: bool | None = None
    kexec_loaded: bool | None = None
    # this load
    flags: int = 0
    kernel_path: str | None = None
    initrd_path: str | None = None
    kernel_size: int | None = None
    initrd_size: int | None = None
    kernel_format: str | None = None  # "bzImage", "arm64 Image", "PE/UKI", "gzip", "ELF", ...
    image_cmdline_size: int | None = None  # x86 setup header cmdline_size
    cmdline_len: int | None = None  # bytes passed, NUL included
    mem_total: int | None = None  # bytes of RAM (sanity_check_segment_list(): half of it)
    # the planner's prediction, when it found a segment that fits nowhere
    failing_segment: str | None = None  # "initrd"
    failing_segment_memsz: int | None = None
    regions_tried: Sequence[tuple[str, int]] = field(default_factory=tuple)  # ("lowmem", size)

    @property
    def on_crash(self) -> bool:
        return bool(self.flags & KEXEC_FILE_ON_CRASH)


@dataclass(frozen=True)
class Explanation:
    """An errno in the operator's words: what it means, why here, what to do."""

    errno_name: str
    summary: str
    cause: str
    fix: str
    errno: int = 0

    def __str__(self) -> str:
        return f"{self.errno_name}: {self.summary}\n  cause: {self.cause}\n  fix: {self.fix}"


def fmt_size(n: int) -> str:
    """`64 MiB`, `8.5 MiB`, `4 KiB`, `512 B`."""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift:
            value = n / (1 << shift)
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{n} B"


def _join(causes: list[str]) -> str:
    if len(causes) == 1:
        return causes[0]
    return "; or ".join(causes)


def _eperm(ctx: ExplainContext) -> tuple[str, str]:
    # mirrors kexec_load_permitted(), kernel/kexec_core.c: capable(CAP_SYS_BOOT), then
    # kexec_load_disabled, then the load_limit counter; lockdown last, only after the image was
    # read and its signature failed (kimage_validate_signature(), kernel/kexec_file.c).
    limit_name = "kexec_load_limit_panic" if ctx.on_crash else "kexec_load_limit_reboot"
    limit = ctx.load_limit_panic if ctx.on_crash else ctx.load_limit_reboot
    cap_cause = ("khotui lacks CAP_SYS_BOOT in the initial user namespace"
                 + (" (it does not run as root)" if ctx.is_root is False else "")
                 + (" (containers drop it; kexec is refused in any non-initial namespace)"
                    if ctx.in_container else ""))
    cap_fix = ("run khotui as root on the host itself (sudo khotui ...), not in a container "
               "or user namespace")
    disabled_cause = "kernel.kexec_load_disabled is 1: kexec loading was switched off"
    disabled_fix = ("kexec_load_disabled is one-way: nothing turns it back to 0 until a reboot. "
                    "Find what sets it (grep -r kexec_load_disabled /etc/sysctl.d /usr/lib/sysctl.d "
                    "/etc/sysctl.conf), remove that, then reboot the normal way")
    limit_cause = (f"kernel.{limit_name} is 0: the allowed number of kexec_file_load calls is "
                   "used up (every call counts, including failed loads and unloads)")
    limit_fix = (f"{limit_name} can only be lowered, never raised: only a reboot restores it. "
                 "Find what sets it in /etc/sysctl.d and reboot the normal way")
    lock_mode = ctx.lockdown or "integrity/confidentiality"
    lockdown_cause = (f"the kernel is locked down ({lock_mode}) and this image's signature did "
                      "not verify (and IMA does not appraise it)")
    lockdown_fix = ("load a kernel signed with a key the running kernel trusts (the distribution's "
                    "signed vmlinuz, or sign it with sbsign using a key in the MOK/platform "
                    "keyring), or boot without lockdown")

    known: list[tuple[str, str]] = []  # confirmed by the context
    maybe: list[tuple[str, str]] = []  # not ruled out
    cap = ctx.has_cap_sys_boot if ctx.has_cap_sys_boot is not None else (
        False if ctx.is_root is False else None)
    for state, pair in (
            (None if cap is None else not cap, (cap_cause, cap_fix)),
            (ctx.kexec_load_disabled, (disabled_cause, disabled_fix)),
            (None if limit is None else limit == 0, (limit_cause, limit_fix)),
            (None if ctx.lockdown is None else ctx.lockdown not in ("none", ""),
             (lockdown_cause, lockdown_fix))):
        if state:
            known.append(pair)
        elif state is None:
            maybe.append(pair)
    if ctx.is_root and cap is None and maybe and maybe[0][0] == cap_cause:
        # root without a known capability set almost always has CAP_SYS_BOOT (unless in a
        # container): list it last among the possibilities
        maybe.append(maybe.pop(0))
    if known:
        # The kernel checks them in this order and stops at the first, so the first one
        # confirmed here is the answer.
        cause, fix = known[0]
        if len(known) > 1:
            fix += ". Also: " + "; ".join(c for c, _ in known[1:])
        return cause, fix
    if len(maybe) == 1:
        return maybe[0]
    if maybe:
        return ("one of, most likely first: "
                + "; ".join(f"({i}) {c}" for i, (c, _) in enumerate(maybe, 1)),
                "depending on which: " + "; ".join(f"({i}) {f}" for i, (_, f) in
                                                   enumerate(maybe, 1)))
    return ("root with CAP_SYS_BOOT, kexec allowed, no load limit and no lockdown: a security "
            "module refused the file (LoadPin, IMA policy) or the CMA path refused internally",
            "check dmesg and the audit log for the denial (journalctl -k | grep -i -e loadpin "
            "-e ima -e kexec)")


def _einval(ctx: ExplainContext) -> tuple[str, str]:
    causes: list[tuple[str, str]] = []
    too_new = flags_unsupported_by(ctx.flags, ctx.kernel_release)
    if too_new:
        since = ", ".join(f"{name} needs {'.'.join(map(str, FLAG_SINCE[bit]))}"
                          for bit, name in FLAG_NAMES.items() if name in too_new)
        causes.append((f"the running kernel {ctx.kernel_release} does not know the flag(s) "
                       f"{', '.join(too_new)} ({since})",
                       f"load without {', '.join(too_new)} (e.g. drop --no-cma)"))
    if ctx.flags & ~KEXEC_FILE_FLAGS:
        causes.append((f"unknown flag bits {hex(ctx.flags & ~KEXEC_FILE_FLAGS)}",
                       "pass only the documented KEXEC_FILE_* flags"))
    if ctx.image_cmdline_size is not None and ctx.cmdline_len is not None:
        limit = ctx.image_cmdline_size - MAX_ELFCOREHDR_STR_LEN
        if ctx.cmdline_len > limit:
            # mirrors bzImage64_load(), arch/x86/kernel/kexec-bzimage64.c
            causes.append((f"the command line is too long for this kernel image: "
                           f"{ctx.cmdline_len} bytes with its NUL, the image's cmdline_size is "
                           f"{ctx.image_cmdline_size} and the loader keeps "
                           f"{MAX_ELFCOREHDR_STR_LEN} bytes for elfcorehdr=, so at most {limit}",
                           f"shorten the command line by {ctx.cmdline_len - limit} bytes"))
    arch = ctx.arch or ""
    if arch in ("aarch64", "arm64") and ctx.kernel_format and ctx.kernel_format != "arm64 Image":
        # image_probe(), arch/arm64/kernel/kexec_image.c: wrong magic is -EINVAL
        causes.append((f"arm64 kexec_file_load loads only an uncompressed arm64 Image; "
                       f"{ctx.kernel_path or 'the kernel'} is {ctx.kernel_format}",
                       "decompress it (zcat vmlinuz > Image), or take the Image out of the "
                       "EFI zboot/UKI wrapper"))
    for what, size, path in (("kernel", ctx.kernel_size, ctx.kernel_path),
                             ("initrd", ctx.initrd_size, ctx.initrd_path)):
        if size == 0:
            # kernel_read_file(), fs/kernel_read_file.c: i_size <= 0 is -EINVAL
            causes.append((f"the {what} {path or ''} is empty".replace("  ", " "),
                           f"point at the real {what} file"))
    if ctx.mem_total:
        for what, size in (("kernel", ctx.kernel_size), ("initrd", ctx.initrd_size)):
            if size and size > ctx.mem_total // 2:
                # sanity_check_segment_list(), kernel/kexec_core.c: a segment over half of RAM
                causes.append((f"the {what} ({fmt_size(size)}) is more than half of RAM "
                               f"({fmt_size(ctx.mem_total)})",
                               f"use a smaller {what} or a host with more memory"))
    if causes:
        cause = _join([c for c, _ in causes])
        fix = "; ".join(f for _, f in causes)
        return cause, fix
    generic = ["an unknown flag", "a command line longer than the image allows",
               "a kernel or initrd that is not a regular, non-empty file"]
    if arch in ("aarch64", "arm64"):
        generic.insert(0, "the kernel is not an arm64 Image (arm64 answers EINVAL, x86 ENOEXEC)")
    generic += ["more than 16 segments, or a segment larger than half of RAM",
                "a purgatory problem in the running kernel"]
    return ("the kernel rejected an argument: " + ", ".join(generic),
            "check dmesg for the loader's message (journalctl -k | tail), and the image type "
            "khotui reports for the kernel")


def _eaddrnotavail(ctx: ExplainContext) -> tuple[str, str]:
    if ctx.on_crash:
        return ("a crash-kernel segment does not fit in the crashkernel= reservation",
                "reserve more with crashkernel= on the running kernel's command line and reboot, "
                "or use a smaller crash initrd")
    if ctx.kho_enabled:
        # mirrors kho_locate_mem_hole(), kernel/liveupdate/kexec_handover.c: -EADDRNOTAVAIL
        if ctx.failing_segment:
            size = (f" ({fmt_size(ctx.failing_segment_memsz)})"
                    if ctx.failing_segment_memsz is not None else "")
            tried = ", ".join(f"{name} {fmt_size(sz)}" for name, sz in ctx.regions_tried)
            cause = (f"{ctx.failing_segment}{size} fits in no scratch region"
                     + (f": {tried}" if tried else ""))
        else:
            cause = ("a segment fits in no KHO scratch region: with KHO on, the kernel places "
                     "every segment only inside the scratch regions (lowmem, global, one per "
                     "node), never elsewhere")
        cause += ("; segments already placed (the scratch array, purgatory, boot params, "
                  "kernel) also use scratch space")
        # kho_reserve_scratch() runs on a cold boot only; a KHO boot reuses the old array
        return cause, ("use a smaller initrd (or none), or reboot with a larger kho_scratch= "
                       "(lowmem,global,per-node, e.g. kho_scratch=256M,512M,256M, or a "
                       "percentage such as kho_scratch=400%) so the scratch regions can hold "
                       "kernel + initrd; it must be a cold reboot: a kexec'd KHO kernel keeps "
                       "the previous kernel's scratch regions")
    return ("no free range of System RAM can hold a segment (or a destination is misaligned)",
            "use a smaller kernel/initrd, free memory, or check /proc/iomem for the RAM layout")


def _signature(ctx: ExplainContext, code: int) -> tuple[str, str, str]:
    name = errno_name(code)
    detail = {
        "EKEYREJECTED": "the signature was rejected, or this image format has no signature "
                        "verifier (a non-PE kernel)",
        "ENOKEY": "the image is signed with a key none of the kernel's keyrings holds",
        "EBADMSG": "the signature data is malformed",
        "ENODATA": "the image carries no signature at all",
        "ENOPKG": "the kernel lacks the crypto algorithm the signature uses",
        "EKEYEXPIRED": "the signing key has expired",
        "EKEYREVOKED": "the signing key was revoked",
    }.get(name, "signature verification failed")
    why = []
    if ctx.sig_enforce:
        why.append("this kernel enforces kexec signatures"
                   + (" (Secure Boot with the IMA arch policy)" if ctx.secure_boot else ""))
    elif ctx.secure_boot:
        why.append("Secure Boot is on, so the kernel likely enforces kexec signatures")
    else:
        why.append("the kernel enforces kexec signatures (CONFIG_KEXEC_SIG_FORCE, or Secure "
                   "Boot with the IMA arch policy)")
    cause = (f"{detail}; {why[0]} (kimage_validate_signature(), kernel/kexec_file.c: "
             "\"Enforced kernel signature verification failed\" in dmesg)")
    fix = ("load a kernel signed by your distribution or with a key enrolled in MOK/the "
           "platform keyring (check: sbverify --list <kernel>; keyctl show %:.platform)")
    return "kernel signature verification failed", cause, fix


def explain(errno_value: int, context: ExplainContext | None = None) -> Explanation:
    """`errno_value` from `kexec_file_load`, in the operator's words, for this host."""
    ctx = context or ExplainContext()
    name = errno_name(errno_value)
    kernel = ctx.kernel_path or "the kernel"

    def ex(summary: str, cause: str, fix: str) -> Explanation:
        return Explanation(name, summary, cause, fix, errno_value)

    if errno_value == _errno.EPERM:
        cause, fix = _eperm(ctx)
        return ex("the kernel does not allow this process to load a kexec image", cause, fix)
    if errno_value == _errno.EINVAL:
        cause, fix = _einval(ctx)
        return ex("the kernel rejected the load arguments", cause, fix)
    if errno_value == _errno.EBUSY:
        # kexec_trylock(), kernel/kexec_file.c
        return ex("another kexec load or kexec reboot is in progress",
                  "a concurrent kexec_file_load/kexec_load (kdump service, systemctl kexec, "
                  "another khotui or kexec run) holds the kernel's kexec lock",
                  "wait for it to finish and retry; check: systemctl list-jobs, pgrep -a kexec")
    if errno_value == _errno.ENOEXEC:
        fmt = f" (khotui sees {ctx.kernel_format})" if ctx.kernel_format else ""
        # bzImage64_probe(), arch/x86/kernel/kexec-bzimage64.c; no loader accepted the image:
        # kexec_image_probe_default(), kernel/kexec_file.c
        return ex("the running kernel cannot load this kernel image format",
                  f"{kernel} is not a bzImage64 this kernel can load{fmt}: needs boot protocol "
                  "2.12+, XLF_KERNEL_64 and XLF_CAN_BE_LOADED_ABOVE_4G, a 64-bit EFI if EFI, "
                  "and not truncated; dmesg names the check (kexec-bzImage64: ...)",
                  "use the distribution's x86_64 vmlinuz; a compressed, ELF (vmlinux) or UKI "
                  "file must be unwrapped to the bzImage first")
    if errno_value in SIGNATURE_ERRNOS:
        summary, cause, fix = _signature(ctx, errno_value)
        return ex(summary, cause, fix)
    if errno_value == _errno.EADDRNOTAVAIL:
        cause, fix = _eaddrnotavail(ctx)
        return ex("no memory the kernel may use could hold a segment", cause, fix)
    if errno_value == _errno.ENOMEM:
        return ex("the kernel ran out of memory while preparing the image",
                  "allocating the kernel/initrd copies, the boot params, or the control pages "
                  "failed (\"Could not allocate control_code_buffer\" in dmesg)",
                  "free memory (drop caches, stop large services) or use a smaller initrd, "
                  "and retry")
    if errno_value == _errno.EFBIG:
        big = [f"{what} {path or ''} is {fmt_size(size)}".replace("  ", " ")
               for what, size, path in (("kernel", ctx.kernel_size, ctx.kernel_path),
                                        ("initrd", ctx.initrd_size, ctx.initrd_path))
               if size is not None and size > KEXEC_FILE_SIZE_MAX]
        cause = ("; ".join(big) + "; " if big else "the kernel or initrd is ") + \
            "over the 4 GiB limit (KEXEC_FILE_SIZE_MAX, kernel/kexec_file.c)"
        return ex("a file is too large for kexec_file_load", cause,
                  "use a smaller initrd (drop firmware/modules you do not need, e.g. "
                  "dracut --hostonly, update-initramfs with MODULES=dep)")
    if errno_value == _errno.EIO:
        return ex("reading the kernel or initrd failed",
                  "an I/O error, or the file changed size while the kernel read it "
                  "(kernel_read_file(), fs/kernel_read_file.c)",
                  "check dmesg for disk errors; copy the files to a local filesystem and retry")
    if errno_value == _errno.EBADF:
        return ex("a file descriptor passed to the kernel is not open for reading",
                  "the kernel or initrd fd was closed or opened without read access "
                  "(kernel_read_file_from_fd(), fs/kernel_read_file.c)",
                  "this is a khotui bug: report it with the command you ran")
    if errno_value == _errno.EACCES:
        return ex("a security policy refused the kernel reading this file",
                  f"an IMA appraisal rule (KEXEC_KERNEL_CHECK / KEXEC_INITRAMFS_CHECK) or an LSM "
                  f"(SELinux, AppArmor) denied reading {kernel} or the initrd for kexec "
                  "(security_kernel_read_file())",
                  "check dmesg and the audit log for the denial (ausearch -m AVC,INTEGRITY_DATA; "
                  "journalctl -k | grep -i ima) and use a file the policy allows (signed/appraised)")
    if errno_value == _errno.ETXTBSY:
        # deny_write_access() in kernel_read_file(), fs/kernel_read_file.c
        return ex("the kernel or initrd is open for writing by another process",
                  "the kernel refuses to read a file someone is writing (e.g. an initramfs "
                  "being regenerated right now)",
                  "wait for the writer (update-initramfs, dracut, a package manager) to finish, "
                  "then retry")
    if errno_value == _errno.ENOSYS:
        return ex("this kernel has no kexec_file_load",
                  "the running kernel is built without CONFIG_KEXEC_FILE (or a seccomp filter "
                  "blocks the syscall)",
                  "KHO needs kexec_file_load: boot a kernel built with CONFIG_KEXEC_FILE")
    strerror = os.strerror(errno_value) if errno_value else "no errno"
    return ex(strerror, f"kexec_file_load failed with {name} ({strerror}), which khotui has no "
              "specific explanation for", "check dmesg (journalctl -k | tail) for the kernel's "
              "message about this load")
