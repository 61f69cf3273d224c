"""Why `kexec_file_load(2)` failed, in the operator's words: each errno's summary, the likely
cause on this host, and the fix.

`ExplainContext` carries what khotui knows about the host and the load (every field optional);
`explain()` names the one cause the context confirms, or lists the possibilities in the order
the kernel checks them. Imports only `syscall` (the flags) and the base.

Kernel references are Linux 7.3.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from khotui import units
from khotui.cmdline import accepted_length
from khotui.load.syscall import (
    FLAG_NAMES,
    FLAG_SINCE,
    KEXEC_FILE_FLAGS,
    KEXEC_FILE_ON_CRASH,
    KEXEC_FILE_SIZE_MAX,
    flags_unsupported_by,
)
from khotui.plan.checks import scratch_advice

# Signature verification errnos (kexec_file.c kimage_validate_signature(); the same set
# kexec-tools treats as fatal rather than falling back to kexec_load).
SIGNATURE_ERRNOS = frozenset(
    getattr(_errno, name) for name in
    ("EKEYREJECTED", "ENOKEY", "EBADMSG", "ENODATA", "ENOPKG", "ELIBBAD", "EMSGSIZE",
     "EKEYEXPIRED", "EKEYREVOKED")
    if hasattr(_errno, name))


def errno_name(code: int) -> str:
    return _errno.errorcode.get(code, f"errno {code}")


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
    kho_booted: bool = False  # booted through KHO: the scratch regions are inherited
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
    limit = accepted_length(ctx.image_cmdline_size)
    if limit is not None and ctx.cmdline_len is not None and ctx.cmdline_len > limit:
        # mirrors bzImage64_load(), arch/x86/kernel/kexec-bzimage64.c
        causes.append((f"the command line is too long for this kernel image: "
                       f"{ctx.cmdline_len} bytes with its NUL, the image's cmdline_size is "
                       f"{ctx.image_cmdline_size} and the loader keeps room for elfcorehdr= "
                       f"after it, so at most {limit}",
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
                causes.append((f"the {what} ({units.size(size)}) is more than half of RAM "
                               f"({units.size(ctx.mem_total)})",
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
            size = (f" ({units.size(ctx.failing_segment_memsz)})"
                    if ctx.failing_segment_memsz is not None else "")
            tried = ", ".join(f"{name} {units.size(sz)}" for name, sz in ctx.regions_tried)
            cause = (f"{ctx.failing_segment}{size} fits in no scratch region"
                     + (f": {tried}" if tried else ""))
        else:
            cause = ("a segment fits in no KHO scratch region: with KHO on, the kernel places "
                     "every segment only inside the scratch regions (lowmem, global, one per "
                     "node), never elsewhere")
        cause += ("; segments already placed (the scratch array, purgatory, boot params, "
                  "kernel) also use scratch space")
        # kho_memory_init(), kernel/liveupdate/kexec_handover.c: a KHO boot reuses the old
        # array and never reads kho_scratch=; kho_reserve_scratch() runs only without a handover
        return cause, scratch_advice(ctx.kho_booted)
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
        big = [f"{what} {path or ''} is {units.size(size)}".replace("  ", " ")
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
