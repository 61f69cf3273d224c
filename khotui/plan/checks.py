"""Pre-flight checks: what would stop the load, or the handover, before anything is called.

Each check is a `Finding` (ok / warn / fail / skip, one line, the fix). The checks read only a
`CheckContext` of plain values, filled by `khotui.plan` (status.py, dryrun.py) from the host
readers, the image inspection and the plan, so each rule is stated once here and is testable on its own.

A `fail` means the load would fail or the handover would be lost (`plan` exits 1); a `warn` is
something the operator should know but that does not stop a load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from khotui.cmdline import (
    MAX_ELFCOREHDR_STR_LEN,
    accepted_length,
    cmdline_len,
    cmdline_param,
    kho_requested,
    kstrtobool,
    length_text,
    liveupdate_requested,
    parse_scratch_size,
    scratch_param,
)
from khotui.errors import Problem
from khotui.host.luo import DEVICE as LUO_DEVICE
from khotui.host.luo import LuoProcess, LuoSession
from khotui.types import FAIL, OK, SKIP, WARN, Finding, ScratchRegion, Surface
from khotui.units import size

__all__ = ["FAIL", "OK", "SKIP", "WARN", "CheckContext", "Finding", "run_plan_checks",
           "run_status_checks"]


@dataclass
class CheckContext:
    """Everything the checks look at, as plain values (None: not known / not applicable)."""

    live: bool
    arch: str | None
    osrelease: str | None
    config: dict[str, str] = field(default_factory=dict)
    config_source: str | None = None
    kho_enabled: bool = False
    kho_off_reason: str | None = None
    kho_off_fix: str | None = None
    # KHO on but kho_scratch[] unreadable: why, and the fix (None: read, or KHO off)
    kho_scratch_unknown: str | None = None
    kho_scratch_unknown_fix: str | None = None
    kho_abi: str | None = None
    kho_layout: str | None = None
    kho_finalized: bool | None = None
    kho_scratch_count: int = 0
    # the scratch regions, and where they were read from
    kho_scratch: list[ScratchRegion] = field(default_factory=list)
    kho_scratch_source: str | None = None
    # top-level System RAM ranges (start, end inclusive) when /proc/iomem gave real addresses
    system_ram: list[tuple[int, int]] | None = None
    iomem_error: str | None = None    # one line: what went wrong reading /proc/iomem
    kho_error: str | None = None      # one line: what went wrong reading kho/
    is_root: bool | None = None
    has_cap_sys_boot: bool | None = None
    kexec_load_disabled: int | None = None
    load_limit_reboot: int | None = None
    lockdown: str | None = None
    secure_boot: bool | None = None   # the SecureBoot EFI variable, or the kernel log
    kho_booted: bool = False          # this kernel booted through KHO: its scratch is inherited
    kexec_loaded: bool | None = None
    iomem_all_zero: bool = False
    # the Live Update Orchestrator (khotui.host.luo): on (None: cannot be told), liveupdate= on
    # this kernel's command line, the /dev/liveupdate holder and the open sessions
    luo_enabled: bool | None = False
    luo_requested: bool | None = None
    luo_device_holder: LuoProcess | None = None
    luo_sessions: list[LuoSession] = field(default_factory=list)
    luo_scan_complete: bool = True    # every process's fds were read (else a holder may hide)
    # Only for `plan` / `load`:
    planning: bool = False
    kernel_path: str | None = None
    # (message, fix) for a kernel/initrd file someone other than root could rewrite
    file_warnings: list[Problem] = field(default_factory=list)
    kernel_error: str | None = None
    kernel_error_fix: str | None = None
    kernel_format: str | None = None
    kernel_arch: str | None = None
    kernel_loadable: bool | None = None
    kernel_why_not: str | None = None
    kernel_version: str | None = None
    kernel_signed: bool | None = None
    kernel_cmdline_size: int | None = None
    kernel_size: int | None = None
    kernel_expected_size: int | None = None      # setup + syssize paragraphs (bzImage header)
    next_config: dict[str, str] | None = None
    next_config_source: str | None = None
    # the `kho-v`N strings read from the new kernel's image (khotui.image.kho_abi); None when
    # not read, with next_abi_error saying why when it was tried
    next_kho_compatibles: tuple[str, ...] | None = None
    next_abi_how: str | None = None
    next_abi_error: str | None = None
    initrd_path: str | None = None
    initrd_error: str | None = None
    initrd_error_fix: str | None = None
    initrd_format: str | None = None
    cmdline: str | None = None
    plan_fits: bool | None = None
    plan_errno: str | None = None
    plan_failure: str | None = None
    plan_failure_fix: str | None = None


# KHO root `compatible` per release line (reference/kho-abi.md §0, §2.2). The root compatible is
# an opaque string: two kernels hand over only if theirs are equal
# (kho_populate() → fdt_node_check_compatible(), kernel/liveupdate/kexec_handover.c).
KHO_ABI_BY_RELEASE: list[tuple[tuple[int, int], tuple[int, int], str | None]] = [
    ((6, 16), (7, 0), "kho-v1"),
    ((7, 1), (7, 1), None),            # kho-v2 or kho-v3 depending on the exact 7.1 build
    ((7, 2), (7, 3), "kho-v4"),
]


def _release_tuple(release: str | None) -> tuple[int, int] | None:
    if not release:
        return None
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def kho_abi_for_release(release: str | None) -> str | None:
    """The KHO ABI string a release line is known to use, or None when it cannot be told."""
    rel = _release_tuple(release)
    if rel is None:
        return None
    for low, high, abi in KHO_ABI_BY_RELEASE:
        if low <= rel <= high:
            return abi
    return None


def _enabled(config: dict[str, str] | None, name: str) -> bool | None:
    if not config:
        return None
    return config.get(name) in ("y", "m")


def check_kho(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    if ctx.kho_error:
        out.append(Finding("kho-enabled", FAIL, ctx.kho_error, ctx.kho_off_fix))
    elif ctx.kho_enabled and ctx.kho_scratch_unknown:
        # the kernel confines every segment to scratch and adds the scratch array: a plan
        # without the regions would be wrong, so there is none, and this check fails
        out.append(Finding("kho-enabled", OK, "KHO is on: scratch regions unknown"))
        out.append(Finding("kho-scratch", FAIL,
                           f"KHO is on but its scratch regions cannot be read: "
                           f"{ctx.kho_scratch_unknown}. The kernel places every segment only in "
                           "them, so no placement can be previewed",
                           ctx.kho_scratch_unknown_fix))
    elif ctx.kho_enabled:
        abi = ctx.kho_abi or "ABI unknown (outgoing FDT not readable)"
        out.append(Finding("kho-enabled", OK,
                           f"KHO is on: {abi}, {ctx.kho_scratch_count} scratch regions"))
    else:
        out.append(Finding("kho-enabled", WARN,
                           f"KHO is off: {ctx.kho_off_reason or 'no kho/ in debugfs'}; "
                           "a kexec would hand over nothing",
                           ctx.kho_off_fix))
    if ctx.kho_layout == "6.16-7.0" and ctx.kho_enabled:
        rel = _release_tuple(ctx.osrelease)
        if ctx.kho_finalized:
            out.append(Finding("kho-finalize", OK, "KHO is finalized (out/finalize = 1)"))
        elif rel is not None and rel < (6, 19):
            out.append(Finding("kho-finalize", WARN,
                               "KHO is not finalized: on 6.16–6.18 no KHO data reaches the next "
                               "kernel unless /sys/kernel/debug/kho/out/finalize is 1 before the load",
                               "echo 1 > /sys/kernel/debug/kho/out/finalize, then load "
                               "(khotui never writes it for you)"))
        else:
            out.append(Finding("kho-finalize", WARN,
                               "KHO is not finalized: the next kernel will refuse the handover "
                               "(\"disabling KHO revival\") unless out/finalize is 1 before the exec",
                               "echo 1 > /sys/kernel/debug/kho/out/finalize before executing the kexec"))
    return out


def _scratch_name(region: ScratchRegion) -> str:
    return f"[{region.index}] {region.kind}"


def check_scratch(ctx: CheckContext) -> list[Finding]:
    """The scratch regions as read: the kernel never makes them overlap or leave RAM, so a
    file that says so was edited, mixed from two boots or misread; a plan on it is wrong."""
    regions = sorted(((r.addr, r.end, r) for r in ctx.kho_scratch if r.size > 0),
                     key=lambda t: (t[0], t[1], t[2].index))
    if not ctx.kho_enabled or not regions:
        return []
    src = ctx.kho_scratch_source or "/sys/kernel/debug/kho/out/scratch_phys"
    again = ("read scratch_phys and scratch_len again, as root, from the running kernel "
             "(or take the snapshot again); they come from the same boot as /proc/iomem")
    out: list[Finding] = []
    overlaps = []
    reach_end, reach = regions[0][1], regions[0]
    for r in regions[1:]:
        if r[0] <= reach_end:
            overlaps.append(f"{_scratch_name(reach[2])} {reach[0]:#x}-{reach[1]:#x} and "
                            f"{_scratch_name(r[2])} {r[0]:#x}-{r[1]:#x}")
        if r[1] > reach_end:
            reach_end, reach = r[1], r
    if overlaps:
        out.append(Finding("scratch-overlap", FAIL,
                           f"{src}: scratch regions overlap ({'; '.join(overlaps[:3])}"
                           f"{', ...' if len(overlaps) > 3 else ''}); the kernel never reserves "
                           "overlapping scratch, so these values are not the kernel's and the "
                           "placement preview would be wrong", again))
    if ctx.system_ram:
        outside = [r for r in regions
                   if not any(lo <= r[0] and r[1] <= hi for lo, hi in ctx.system_ram)]
        if outside:
            top = max(hi for _lo, hi in ctx.system_ram)
            what = "; ".join(f"{_scratch_name(r[2])} {r[0]:#x}-{r[1]:#x}" for r in outside[:3])
            past = all(r[1] > top for r in outside)
            where = (f"past the end of RAM ({top:#x}, the last System RAM byte in /proc/iomem)"
                     if past else "outside every System RAM range of /proc/iomem")
            out.append(Finding("scratch-ram", FAIL,
                               f"{src}: scratch region(s) {where}: {what}. Scratch is carved "
                               "from RAM at boot; the kernel could not place segments there",
                               again))
    if not out:
        out.append(Finding("scratch", OK, f"{len(regions)} non-empty scratch regions, disjoint"
                           + (", inside System RAM" if ctx.system_ram else "")))
    return out


def check_privileges(ctx: CheckContext) -> list[Finding]:
    if not ctx.live:
        return [Finding("privileges", SKIP, "snapshot: privileges are checked on the live host")]
    if ctx.is_root and ctx.has_cap_sys_boot:
        return [Finding("privileges", OK, "running as root with CAP_SYS_BOOT")]
    if not ctx.is_root:
        return [Finding("privileges", FAIL,
                        "not running as root: kexec_file_load needs CAP_SYS_BOOT and the KHO "
                        "debugfs files are root-only (mode 0400)",
                        "run khotui with sudo")]
    return [Finding("privileges", FAIL, "root without CAP_SYS_BOOT (a container or a capability "
                    "bounding set removed it): kexec_file_load returns EPERM",
                    "run khotui on the host itself, with CAP_SYS_BOOT")]


def check_kexec_state(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    if _enabled(ctx.config, "CONFIG_KEXEC_FILE") is False:
        out.append(Finding("kexec-file", FAIL,
                           "the running kernel is built without CONFIG_KEXEC_FILE: "
                           "kexec_file_load(2) does not exist here (ENOSYS), and KHO needs it",
                           "boot a kernel built with CONFIG_KEXEC_FILE=y"))
    if ctx.kexec_load_disabled:
        out.append(Finding("kexec-load-disabled", FAIL,
                           "kernel.kexec_load_disabled is 1: every kexec load returns EPERM",
                           "it cannot be set back to 0; reboot the host the normal way"))
    elif ctx.kexec_load_disabled == 0:
        out.append(Finding("kexec-load-disabled", OK, "kernel.kexec_load_disabled is 0"))
    limit = ctx.load_limit_reboot
    if limit == 0:
        out.append(Finding("load-limit", FAIL,
                           "kernel.kexec_load_limit_reboot is 0: no loads are left (EPERM)",
                           "the limit can only be lowered; reboot the host the normal way"))
    elif limit is not None and limit > 0:
        out.append(Finding("load-limit", WARN,
                           f"kernel.kexec_load_limit_reboot allows {limit} more load call(s); "
                           "every call counts, failed ones and unloads too"))
    elif limit is not None:
        out.append(Finding("load-limit", OK, "no kexec load limit (kexec_load_limit_reboot = -1)"))
    if ctx.kexec_loaded:
        out.append(Finding("image-loaded", WARN,
                           "a kexec image is already loaded; a new load replaces it. The kernel "
                           "cannot tell which syscall loaded it: one loaded by kexec_load(2) "
                           "(kexec -c) carries no KHO data",
                           "load again with khotui (or `khotui unload`) so the image carries the handover"))
    return out


def check_lockdown(ctx: CheckContext) -> list[Finding]:
    mode = ctx.lockdown
    sig_force = _enabled(ctx.config, "CONFIG_KEXEC_SIG_FORCE")
    # arch_get_ima_policy(), security/integrity/ima/ima_efi.c: under Secure Boot with
    # CONFIG_IMA_ARCH_POLICY the kernel calls set_kexec_sig_enforced() (kernel/kexec_file.c)
    # whatever the lockdown mode; without CONFIG_KEXEC_SIG it adds "appraise
    # func=KEXEC_KERNEL_CHECK appraise_type=imasig" instead (an IMA signature in security.ima)
    arch_policy = bool(ctx.secure_boot) and bool(_enabled(ctx.config, "CONFIG_IMA_ARCH_POLICY"))
    kexec_sig = _enabled(ctx.config, "CONFIG_KEXEC_SIG")
    if arch_policy and kexec_sig is False:
        return [Finding("lockdown", WARN,
                        "Secure Boot with the IMA arch policy and no CONFIG_KEXEC_SIG: the kernel "
                        "image must carry an IMA signature (security.ima), or the load fails "
                        "with EACCES", "sign the image with evmctl ima_sign, or load one that is")]
    needs_sig = (mode not in (None, "none")) or bool(sig_force) or arch_policy
    if mode is None and not needs_sig:
        return [Finding("lockdown", OK, "no lockdown LSM: no signature required")]
    if not needs_sig:
        return [Finding("lockdown", OK, "lockdown mode none: no signature required")]
    if arch_policy:
        why = (f"Secure Boot with the IMA arch policy (enforces kexec signatures even with "
               f"lockdown {mode or 'off'})")
    elif mode not in (None, "none"):
        why = f"lockdown mode {mode}"
    else:
        why = "CONFIG_KEXEC_SIG_FORCE"
    if not ctx.planning:
        return [Finding("lockdown", WARN, f"{why}: the image to load must carry a valid signature")]
    if ctx.kernel_signed:
        return [Finding("lockdown", OK, f"{why}: the image carries a signature (the kernel verifies it)")]
    if ctx.kernel_signed is None:
        return [Finding("lockdown", WARN,
                        f"{why}: khotui cannot tell whether this image is signed; the kernel "
                        "refuses an unsigned one (EKEYREJECTED)",
                        "check with sbverify --list <kernel>; load a signed kernel")]
    return [Finding("lockdown", FAIL,
                    f"{why}: this image carries no signature, so kexec_file_load will refuse it "
                    "(EPERM or EKEYREJECTED)",
                    "load a kernel signed with a key in the kernel's keyring (e.g. your "
                    "distribution's signed vmlinuz), or sign this one (sbsign) with an enrolled key")]


def check_iomem(ctx: CheckContext) -> list[Finding]:
    if ctx.iomem_error:
        return [Finding("iomem", WARN, ctx.iomem_error + "; without a memory map "
                        "a load with KHO off cannot be previewed",
                        "read /proc/iomem as root on the host (or take the snapshot again)")]
    if ctx.iomem_all_zero:
        return [Finding("iomem", WARN, "/proc/iomem shows every address as 0: it hides them from "
                        "non-root readers", "run khotui as root")]
    return []


def check_image(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    if ctx.kernel_error:
        out.append(Finding("kernel-image", FAIL, ctx.kernel_error, ctx.kernel_error_fix))
        return out
    if ctx.kernel_loadable:
        ver = f", {ctx.kernel_version}" if ctx.kernel_version else ""
        out.append(Finding("kernel-image", OK, f"{ctx.kernel_format}{ver}"))
    else:
        out.append(Finding("kernel-image", FAIL,
                           f"{ctx.kernel_path}: {ctx.kernel_why_not or 'not a kernel this kernel can load'}",
                           "give the kernel image the boot loader would boot (e.g. /boot/vmlinuz-*)"))
    for problem in ctx.file_warnings:
        # a failing check: whoever can write the file (owner, mode, ACL) or serve its bytes (a
        # remote or FUSE filesystem) decides what the kernel loads after the hash; --force can
        # override it once the operator has looked (khotui.host.ownership)
        out.append(Finding("file-writable", FAIL, problem.headline, problem.fix))
    if (ctx.kernel_expected_size and ctx.kernel_size is not None
            and ctx.kernel_size < ctx.kernel_expected_size):
        # bzImage64_load() only checks the setup part; a cut payload loads fine and the new
        # kernel dies decompressing itself, after the old one is gone
        out.append(Finding("kernel-truncated", FAIL,
                           f"{ctx.kernel_path} is truncated: {ctx.kernel_size} of the "
                           f"{ctx.kernel_expected_size} bytes its header declares. The kernel "
                           "would load it, and the new kernel would fail to decompress after the kexec",
                           "copy the kernel image again (compare its size and checksum with the package)"))
    if ctx.kernel_arch and ctx.arch and ctx.kernel_arch != ctx.arch:
        out.append(Finding("kernel-arch", FAIL,
                           f"the image is for {ctx.kernel_arch}, this host is {ctx.arch}",
                           f"pick an {ctx.arch} kernel"))
    if ctx.initrd_error:
        out.append(Finding("initrd", FAIL, ctx.initrd_error, ctx.initrd_error_fix))
    elif ctx.initrd_path:
        fmt = ctx.initrd_format or "unknown format"
        status = OK if ctx.initrd_format and ctx.initrd_format != "unknown" else WARN
        out.append(Finding("initrd", status, f"initrd: {fmt}",
                           None if status == OK
                           else "check that this is an initramfs (cpio, maybe compressed)"))
    return out


# How each surface adds a token to the next command line: the check says what to add, once.
def _add_token_how(token: str) -> tuple[tuple[Surface, str], ...]:
    return (("cli", f"--append {token}"),
            ("app", "on Prepare, press e to edit the command line"))


def check_cmdline(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    cmdline = ctx.cmdline or ""
    kho_value = cmdline_param(cmdline, "kho")
    kho_on = kho_requested(cmdline)
    default_on = _enabled(ctx.next_config, "CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT")
    if ctx.kho_enabled:
        if kho_on:
            out.append(Finding("cmdline-kho", OK, "the next command line keeps kho=on"))
        elif kho_on is None and default_on:
            out.append(Finding("cmdline-kho", OK, "no kho= on the next command line, but the next "
                               f"kernel enables KHO by default ({ctx.next_config_source})"))
        elif kho_value is not None and kstrtobool(kho_value) is False:
            # an explicit kho=off (or =0, =n): the operator's choice, stated back, not a missing
            # token to add; a load with it is allowed and says what it gives up
            out.append(Finding("cmdline-kho", WARN,
                               f"the next command line says kho={kho_value}: the new kernel will "
                               "not receive the handover, and what KHO preserves now is not "
                               "carried over",
                               "nothing, if that is intended; to hand over, remove "
                               f"kho={kho_value} from the command line"))
        else:
            said = ("no kho=on" if kho_value is None
                    # kho_parse_enable() leaves KHO off when kstrtobool() rejects the value
                    else f"kho={kho_value}, which the kernel does not read as on or off")
            out.append(Finding("cmdline-kho", FAIL,
                               f"the next command line has {said}: the new kernel would ignore "
                               "the handed-over memory and lose what was preserved",
                               "add kho=on to the next kernel's command line",
                               how=_add_token_how("kho=on")))
    out += _check_scratch_param(cmdline, ctx.kho_enabled)
    out.extend(_check_cmdline_length(ctx, cmdline))
    return out


# At most this many sessions get a finding of their own; the rest are counted in one more.
MAX_SESSION_FINDINGS = 8
# The units `systemctl kexec` leaves running: PID 1's own. kexec.target pulls in
# shutdown.target, which every unit with default dependencies conflicts with (user sessions'
# scopes included: logind stops them), and systemd-shutdown then sends SIGTERM and SIGKILL to
# every process left before reboot(LINUX_REBOOT_CMD_KEXEC) (systemd src/shutdown/shutdown.c).
# A session fd pushed into a unit's fd store with FileDescriptorStorePreserve= (systemd v261,
# Documentation/userspace-api/liveupdate.rst) is held by PID 1, in init.scope: not warned.
_SURVIVES_KEXEC = frozenset({"init.scope"})


def check_luo(ctx: CheckContext) -> list[Finding]:
    """LUO on the plan: the next kernel must have liveupdate=on to retrieve the sessions, and
    each session must still be held at reboot(KEXEC), when liveupdate_reboot() serialises them
    (kernel/liveupdate/luo_core.c; kernel_kexec() in kernel/kexec_core.c calls it)."""
    if ctx.luo_enabled is False or (ctx.luo_enabled is None and not ctx.luo_requested):
        return []
    out: list[Finding] = []
    cmdline = ctx.cmdline or ""
    nxt = liveupdate_requested(cmdline)
    count = len(ctx.luo_sessions)
    owner = "session's" if count == 1 else "sessions'"
    what = f"the {count} open LUO {owner} data" if count else "LUO's state"
    maybe = "" if ctx.luo_enabled else " (LUO is probably on here: liveupdate=on)"
    if nxt is True:
        out.append(Finding("cmdline-liveupdate", OK, "the next command line keeps liveupdate=on"))
    else:
        said = ("no liveupdate=on" if cmdline_param(cmdline, "liveupdate") is None
                else f"liveupdate={cmdline_param(cmdline, 'liveupdate')}")
        # luo_early_startup() restores the incoming LUO state whenever KHO is on, but
        # liveupdate_ioctl_init() creates /dev/liveupdate only with liveupdate=on: nothing can
        # then retrieve (LIVEUPDATE_IOCTL_RETRIEVE_SESSION) or finish the sessions
        out.append(Finding("cmdline-liveupdate", FAIL if ctx.luo_enabled else WARN,
                           f"LUO is on here{maybe} but the next command line has {said}: "
                           f"{what} would arrive in the new kernel with no {LUO_DEVICE} to "
                           "retrieve it",
                           "add liveupdate=on to the next kernel's command line",
                           how=_add_token_how("liveupdate=on")))
    for session in ctx.luo_sessions[:MAX_SESSION_FINDINGS]:
        holder = session.holder
        if holder.unit in _SURVIVES_KEXEC or holder.pid == 1:
            continue
        where = f"unit {holder.unit}" if holder.unit else "no systemd unit khotui could read"
        out.append(Finding("luo-session-holder", WARN,
                           f"LUO session \"{session.name}\" is held by pid {holder.pid} "
                           f"({holder.comm or '?'}, {where}): `systemctl kexec` stops it before "
                           "the reboot, and a session whose last fd closes is destroyed "
                           "(luo_session_release()), so it would not be handed over",
                           "keep it across the stop: push the session fd into the unit's fd "
                           "store (FileDescriptorStoreMax= and FileDescriptorStorePreserve=, "
                           "systemd v261+; PID 1 then holds it and hands it back after the "
                           "kexec), or run `kexec -e` yourself once the holder is ready instead "
                           "of `systemctl kexec`"))
    if count > MAX_SESSION_FINDINGS:
        out.append(Finding("luo-session-holder", WARN,
                           f"{count - MAX_SESSION_FINDINGS} more LUO sessions are open; "
                           "`khotui status` lists them all", "check each holder's unit as above"))
    if count and ctx.luo_device_holder is None and ctx.luo_scan_complete:
        out.append(Finding("luo-device-holder", WARN,
                           f"{count} LUO session{'s are' if count != 1 else ' is'} open but no "
                           f"process holds {LUO_DEVICE}: nothing is orchestrating this live "
                           "update, so no one is there to retrieve and finish the sessions in "
                           "the new kernel",
                           f"start the live-update agent that opens {LUO_DEVICE} (and retrieves "
                           "the sessions after the kexec) before loading"))
    return out


def _check_cmdline_length(ctx: CheckContext, cmdline: str) -> list[Finding]:
    """The one statement of the length rule and its words: `cmdline_len()` (what the syscall
    gets, NUL included) against `accepted_length()`; the placement refuses on the same rule and
    `check_plan` leaves the verdict to this finding."""
    room = accepted_length(ctx.kernel_cmdline_size)
    if room is None:
        return []
    length = cmdline_len(cmdline)
    if length > room:
        return [Finding("cmdline-length", FAIL,
                        f"the command line is {length_text(length, room)}: too long "
                        f"(cmdline_size {ctx.kernel_cmdline_size} minus "
                        f"{MAX_ELFCOREHDR_STR_LEN} kept for elfcorehdr=); the kernel "
                        "answers EINVAL",
                        f"shorten the command line by {length - room} bytes")]
    return [Finding("cmdline-length", OK, f"command line {length_text(length, room)}")]


def _check_scratch_param(cmdline: str, kho_enabled: bool) -> list[Finding]:
    """`kho_scratch=` (6.16-7.3) or `kho_bootmem=` (7.4's name for it) on the next command line,
    read as kho_parse_scratch_size() reads it."""
    found = scratch_param(cmdline)
    if found is None:
        return []
    name, value = found
    parsed = parse_scratch_size(name, value)
    if parsed is None:
        return [Finding("cmdline-scratch", WARN,
                        f"{name}={value} on the next command line is not a value the kernel reads "
                        "(N% or lowmem,global,per-node sizes, e.g. 256M,512M,256M): the next kernel "
                        "ignores it and sizes its scratch regions by the default 200% scale",
                        f"write it as {name}=256M,512M,256M or {name}=200%")]
    if parsed.sizes is not None:
        low, glob, node = (size(v) for v in parsed.sizes)
        what = f"lowmem {low}, global {glob}, per node {node}"
    else:
        what = f"{parsed.scale}% of the kernel's own boot allocations"
    # kho_memory_init(): a kernel that finds handed-over scratch reuses it and reserves none
    when = (": a kernel booted through this KHO kexec inherits the current scratch regions, so "
            "the sizes apply only from the next cold boot" if kho_enabled else "")
    return [Finding("cmdline-scratch", OK, f"{name}={value}: scratch {what}{when}")]


# 6.16-7.0 all write "kho-v1", yet "kho: increase metadata bitmap size to PAGE_SIZE" (Pasha
# Tatashin, Oct/Nov 2025; Fixes: fc33e4b44b27 "kexec: enable KHO support for memory
# preservation"; Cc: stable; https://lkml.kernel.org/r/20251021000852.2924827-3-pasha.tatashin@soleen.com)
# changed the preserved-memory bitmap from 512 bytes to PAGE_SIZE without a version bump, and
# went to the stable trees. Which stable releases carry it could not be pinned from here, so any
# pair of different releases that both write kho-v1 is warned about.
KHO_V1_BITMAP_FIX = ("\"kho: increase metadata bitmap size to PAGE_SIZE\" (Nov 2025, backported "
                     "to stable)")


def check_next_abi(ctx: CheckContext) -> list[Finding]:
    if not ctx.kho_enabled or ctx.kernel_error or not ctx.kernel_loadable:
        return []
    out: list[Finding] = []
    if ctx.next_config is not None and _enabled(ctx.next_config, "CONFIG_KEXEC_HANDOVER") is False:
        out.append(Finding("next-kho", FAIL,
                           "the new kernel is built without CONFIG_KEXEC_HANDOVER "
                           f"({ctx.next_config_source}): it cannot receive the handover",
                           "load a kernel built with CONFIG_KEXEC_HANDOVER=y"))
    release = _release_of(ctx.kernel_version)
    running = ctx.kho_abi
    compatibles = ctx.next_kho_compatibles
    if compatibles is not None:
        out += _next_abi_read(compatibles, running, release, ctx.next_abi_how)
    else:
        out += _next_abi_guessed(ctx, release, running)
    out += _kho_v1_pair(ctx.osrelease, release, running)
    return out


def _next_abi_read(compatibles: tuple[str, ...], running: str | None, release: str | None,
                   how: str | None) -> list[Finding]:
    """The new kernel's KHO_FDT_COMPATIBLE as read from its image, against this kernel's."""
    name = f"the new kernel {release}" if release else "the new kernel"
    where = f"read from its image ({how})" if how else "read from its image"
    if not compatibles:
        return [Finding("next-abi", FAIL,
                        f"{name} has no KHO compatible string (kho-vN) in its image ({how}): it "
                        "is built without KHO and will ignore the handover; everything "
                        "preserved is lost",
                        "load a kernel built with CONFIG_KEXEC_HANDOVER=y")]
    said = ", ".join(compatibles)
    if running is None:
        return [Finding("next-abi", WARN,
                        f"{name} accepts {said} ({where}); this kernel's ABI is unknown (its "
                        "outgoing FDT is not readable)",
                        "mount debugfs (mount -t debugfs none /sys/kernel/debug) so khotui can "
                        "read kho/out/fdt")]
    if running not in compatibles:
        return [Finding("next-abi", FAIL,
                        f"{name} accepts only {said} ({where}); this kernel writes {running}: "
                        "kho_populate() finds the compatible different and the new kernel boots "
                        "without the handover; everything preserved is lost",
                        f"load a kernel whose KHO_FDT_COMPATIBLE is \"{running}\" "
                        "(include/linux/kho/abi/kexec_handover.h), or update without KHO")]
    if len(compatibles) > 1:
        return [Finding("next-abi", WARN,
                        f"{name}'s image holds several KHO compatibles ({said}; {where}); "
                        f"which one it checks cannot be told from the image",
                        "check the new kernel's include/linux/kho/abi/kexec_handover.h "
                        "(KHO_FDT_COMPATIBLE) before executing")]
    return [Finding("next-abi", OK, f"{name} accepts {running} ({where}), as this kernel writes")]


def _next_abi_guessed(ctx: CheckContext, release: str | None,
                      running: str | None) -> list[Finding]:
    """The fallback when the image could not be decompressed: the ABI its release line used."""
    why = (f"its image could not be read inside ({ctx.next_abi_error}), so this is guessed "
           "from its release" if ctx.next_abi_error else "guessed from its release")
    if release and ctx.osrelease and release == ctx.osrelease:
        return [Finding("next-abi", OK, f"same kernel release {release}: same KHO ABI "
                                        f"({running}); {why}")]
    expected = kho_abi_for_release(release)
    if expected is None or running is None:
        return [Finding("next-abi", WARN,
                        f"cannot tell the KHO ABI of {release or 'the new kernel'} ({why}); "
                        f"this kernel speaks {running or 'an unknown ABI'}. Kernels with "
                        "different KHO compatible strings cannot hand over",
                        "check the new kernel's include/linux/kho/abi/kexec_handover.h "
                        "(KHO_FDT_COMPATIBLE) before executing")]
    if expected != running:
        return [Finding("next-abi", FAIL,
                        f"the new kernel {release} speaks {expected}, this kernel {running} "
                        f"({why}): the new kernel will refuse the handover (\"disabling KHO "
                        "revival\")",
                        "load a kernel with the same KHO ABI, or update without KHO")]
    return [Finding("next-abi", OK, f"the new kernel {release} speaks {expected}, as this one "
                                    f"does ({why})")]


def _kho_v1_pair(running_release: str | None, next_release: str | None,
                 running: str | None) -> list[Finding]:
    """Two different 6.16-7.0 releases both write kho-v1, but may disagree on the bitmap."""
    if running != "kho-v1" or not running_release or not next_release:
        return []
    if running_release == next_release:
        return []
    if kho_abi_for_release(next_release) != "kho-v1":
        return []
    return [Finding("next-abi-v1-bitmap", WARN,
                    f"{running_release} and {next_release} both write kho-v1, but the "
                    f"preserved-memory bitmap changed size within kho-v1 ({KHO_V1_BITMAP_FIX}); "
                    "if one has the fix and the other does not, the new kernel misreads what is "
                    "preserved. Which stable releases carry it is not known to khotui",
                    "check that both kernels have the same PRESERVE_BITS in "
                    "kernel/kexec_handover.c (PAGE_SIZE * 8 with the fix, 512 * 8 without), "
                    "or load the same release")]


def check_plan(ctx: CheckContext) -> list[Finding]:
    if ctx.plan_fits is None:
        return []
    if not ctx.plan_fits and _cmdline_too_long(ctx):
        # the placement stopped on the length rule check_cmdline() already states: one FAIL
        # line, one number
        return []
    if ctx.plan_fits:
        where = "the scratch regions" if ctx.kho_enabled else "System RAM"
        return [Finding("segments-fit", OK, f"every segment fits in {where}")]
    fix = ctx.plan_failure_fix
    if ctx.kho_enabled and ctx.plan_errno == "EADDRNOTAVAIL":
        fix = scratch_advice(ctx.kho_booted)
    return [Finding("segments-fit", FAIL,
                    f"{ctx.plan_errno}: {ctx.plan_failure}" if ctx.plan_errno
                    else (ctx.plan_failure or "the load would fail"), fix)]


def scratch_advice(kho_booted: bool) -> str:
    """What makes the segments fit in the scratch regions on this host. kho_memory_init(),
    kernel/liveupdate/kexec_handover.c: a kernel booted through KHO takes the previous
    kernel's scratch array (kho_in.scratch_phys) and never reads kho_scratch=; only a boot
    without a handover runs kho_reserve_scratch(), which sizes them from kho_scratch=."""
    now = "load a smaller initrd (or none) or a smaller kernel"
    if kho_booted:
        return (f"{now}. This kernel booted through KHO: its scratch regions are the ones set "
                "at the last cold boot, and every KHO kexec passes them on unchanged, so "
                "kho_scratch= on this or the next command line does nothing; only a cold boot "
                "(firmware reboot) with a larger kho_scratch= makes them larger")
    return (f"{now}; or make the scratch regions larger: kho_scratch= on the command line of "
            "a cold boot (firmware reboot, not a kexec with KHO: a KHO kexec keeps this "
            "kernel's scratch regions)")


_SIZE_SUFFIX = {"k": 10, "m": 20, "g": 30, "t": 40}


def _memparse(text: str) -> int | None:
    m = re.fullmatch(r"(\d+)([kKmMgGtT]?)", text.strip())
    if not m:
        return None
    return int(m.group(1)) << _SIZE_SUFFIX.get(m.group(2).lower(), 0)


def check_scratch_request(ctx: CheckContext) -> list[Finding]:
    """kho_scratch= on the next command line asking a lowmem size that cannot fit below 4 GiB:
    kho_reserve_scratch() allocates it below ARCH_LOW_ADDRESS_LIMIT (0xffffffff on x86,
    include/linux/memblock.h; the DMA limit on arm64), fails, and disables KHO ("Failed to
    reserve scratch area, disabling kexec handover")."""
    value = None
    for token in (ctx.cmdline or "").split():
        if token.startswith(("kho_scratch=", "kho_bootmem=")):
            value = token.split("=", 1)[1]
    if not value or "%" in value or not ctx.system_ram:
        return []
    lowmem = _memparse(value.split(",")[0])
    below = sum(min(end, 0xFFFFFFFF) - start + 1 for start, end in ctx.system_ram
                if start <= 0xFFFFFFFF)
    if lowmem is None or lowmem <= below:
        return []
    where = "below 4 GiB" if ctx.arch != "arm64" else "below 4 GiB (arm64: below its DMA limit)"
    return [Finding("scratch-lowmem", WARN,
                    f"kho_scratch={value} asks {lowmem >> 20} MiB of lowmem scratch, but this "
                    f"host has only {below >> 20} MiB of RAM {where}: the kernel that boots "
                    "with it without a handover cannot reserve it and disables KHO",
                    "give a lowmem size (the first kho_scratch= value) that fits below 4 GiB")]


def _cmdline_too_long(ctx: CheckContext) -> bool:
    room = accepted_length(ctx.kernel_cmdline_size)
    return room is not None and cmdline_len(ctx.cmdline or "") > room


def _release_of(kernel_version: str | None) -> str | None:
    """`7.3.4 (root@vm) #2 SMP ...` → `7.3.4` (the bzImage header's kernel_version string)."""
    if not kernel_version:
        return None
    return kernel_version.split()[0]


def run_status_checks(ctx: CheckContext) -> list[Finding]:
    return (check_kho(ctx) + check_scratch(ctx) + check_privileges(ctx) + check_kexec_state(ctx)
            + check_lockdown(ctx) + check_iomem(ctx))


def run_plan_checks(ctx: CheckContext) -> list[Finding]:
    return (run_status_checks(ctx) + check_image(ctx) + check_cmdline(ctx) + check_luo(ctx)
            + check_scratch_request(ctx) + check_next_abi(ctx) + check_plan(ctx))

