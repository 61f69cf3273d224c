"""KHO as the running kernel shows it: /sys/kernel/debug/kho, and why it is off when it is.

`read_kho(sysroot)` reads the debugfs tree (kernel/liveupdate/kexec_handover_debugfs.c):
the scratch regions (`out/scratch_phys`, `out/scratch_len`), the outgoing root FDT and
sub-blobs as raw bytes, and after a KHO boot the incoming ones (`in/`). Decoding the blobs is
khotui/fdt.py's job.

Whether KHO is on is decided from everything visible, as the kernel decides it (7.3,
kernel/liveupdate/kexec_handover.c): the build config (CONFIG_KEXEC_HANDOVER,
_ENABLE_DEFAULT, _DEBUGFS; CONFIG_DEBUG_FS_ALLOW_*), the command line (`kho=`, `debugfs=`,
`elfcorehdr=`), the kernel log (what KHO logs when it turns itself off) and the debugfs tree.
A `kho/` directory that is not visible does not make KHO off: when the kernel has KHO on but
debugfs is not mounted, not readable or not built for KHO, `enabled` is True and the scratch
regions are unknown (`scratch_reason`, `scratch_message`, `scratch_fix`), never guessed.

Two debugfs layouts exist (reference/kho-abi.md §1.2), told apart by the `out/finalize` file:

* ``"6.16-7.0"`` — Linux 6.16 to 7.0: `out/finalize` (0600, reads `0\\n`/`1\\n`). In 6.16-6.18
  the KHO data reaches the next kernel only once `1` was written; 6.19/7.0 still have the file
  (writing `0` fails with EINVAL). Root FDT `kho-v1`.
* ``"7.1+"`` — Linux 7.1 and later (7.3 included): no `finalize`, KHO is stateless; the root
  FDT is `kho-v2` or later.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace

from khotui.cmdline import cmdline_param, debugfs_requested, kho_requested
from khotui.errors import KhotuiError
from khotui.host.boot import cmdline_tokens, read_config
from khotui.host.kernellog import read_kernel_log
from khotui.host.memory import memory_node_ids
from khotui.host.sysroot import Sysroot
from khotui.types import JsonDict, ScratchKind, ScratchRegion

DEBUGFS = "/sys/kernel/debug"
KHO_DIR = "/sys/kernel/debug/kho"
SETUP_DATA_DIR = "/sys/kernel/boot_params/setup_data"
CHOSEN_DIR = "/sys/firmware/devicetree/base/chosen"
SETUP_KEXEC_KHO = 0xA  # arch/x86/include/uapi/asm/setup_data.h
# debugfs blobs are FDTs of a few pages; anything this large is not one.
MAX_BLOB_BYTES = 64 << 20

LAYOUT_LEGACY = "6.16-7.0"
LAYOUT_STATELESS = "7.1+"

# off_reason codes
OFF_CMDLINE = "cmdline-off"
OFF_DEFAULT = "default-off"
OFF_NOT_BUILT = "not-built"
OFF_NO_DEBUGFS_CONFIG = "no-debugfs-config"
OFF_DEBUGFS_NOT_MOUNTED = "debugfs-not-mounted"
OFF_PERMISSION = "permission-denied"
OFF_KDUMP = "kdump-kernel"
OFF_UNKNOWN = "unknown"
OFF_DEBUGFS_OFF = "debugfs-off"
OFF_SCRATCH_FAILED = "scratch-reserve-failed"
# scratch_reason codes: KHO is on but kho_scratch[] cannot be read (the first three used to be
# off_reason codes: KHO was wrongly reported off in those cases)
UNREAD_DEBUGFS_NOT_MOUNTED = OFF_DEBUGFS_NOT_MOUNTED
UNREAD_NO_DEBUGFS_CONFIG = OFF_NO_DEBUGFS_CONFIG
UNREAD_PERMISSION = OFF_PERMISSION
UNREAD_UNKNOWN_LAYOUT = "unknown-layout"

# The debugfs files khotui knows (kernel/liveupdate/kexec_handover_debugfs.c, 6.16-7.3;
# `finalize` in 6.16-7.0 only): anything else is a layout khotui does not know.
KNOWN_LAYOUTS = "6.16–7.3"
_KNOWN_TOP = frozenset({"out", "in"})
_KNOWN_OUT = frozenset({"finalize", "fdt", "scratch_phys", "scratch_len", "sub_fdts"})
_KNOWN_IN = frozenset({"fdt", "sub_fdts"})

# What KHO (and the subsystems that depend on it) log when KHO ends up off, 7.3:
# kho_reserve_scratch() and kho_memory_init(), kernel/liveupdate/kexec_handover.c;
# luo_early_startup(), kernel/liveupdate/luo_core.c (early_initcall: before kho_init(), so it
# sees only what the command line, config and scratch reservation decided).
LOG_SCRATCH_FAILED = "KHO: Failed to reserve scratch area, disabling kexec handover"
LOG_KDUMP = "KHO: disabled in the kdump kernel"
LOG_LUO_OFF = "Disabling liveupdate because KHO is disabled"
_LOG_SCRATCH_DETAIL = re.compile(r"KHO: (Failed to reserve (?:lowmem|global|nid \d+) scratch "
                                 r"buffer|Failed to reserve scratch array)")

_KINDS: tuple[ScratchKind, ScratchKind] = ("lowmem", "global")


@dataclass
class SetupData:
    """One x86 /sys/kernel/boot_params/setup_data/<N> entry."""

    index: int
    type: int
    data_size: int | None

    def as_dict(self) -> dict[str, int | None]:
        return {"index": self.index, "type": self.type, "data_size": self.data_size}


def _blob_dict(data: bytes | None) -> dict[str, int | str] | None:
    if data is None:
        return None
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@dataclass
class KhoState:
    enabled: bool                               # KHO is on in the running kernel
    off_reason: str | None = None               # one of the OFF_* codes when not enabled
    off_message: str | None = None
    fix: str | None = None
    # KHO on but kho_scratch[] not readable: one of the UNREAD_* codes, why, and the fix
    scratch_reason: str | None = None
    scratch_message: str | None = None
    scratch_fix: str | None = None
    evidence: list[str] = field(default_factory=list)   # what the on/off decision rests on
    kernel_enabled: bool | None = None          # what cmdline + config say (None: unknown)
    layout: str | None = None                   # LAYOUT_LEGACY | LAYOUT_STATELESS
    finalized: bool | None = None               # out/finalize, legacy layout only
    scratch: list[ScratchRegion] = field(default_factory=list)
    scratch_notes: list[str] = field(default_factory=list)
    out_fdt: bytes | None = None
    out_sub_fdts: dict[str, bytes] = field(default_factory=dict)
    in_fdt: bytes | None = None
    in_sub_fdts: dict[str, bytes] = field(default_factory=dict)
    debugfs_path: str | None = None             # host paths (sysroot.display() them to show)
    out_fdt_path: str | None = None
    in_fdt_path: str | None = None
    setup_data: list[SetupData] = field(default_factory=list)
    dt_kho_fdt: tuple[int, int] | None = None   # arm64 /chosen/linux,kho-fdt (addr, size)
    dt_kho_scratch: tuple[int, int] | None = None

    @property
    def scratch_known(self) -> bool:
        """KHO is on and kho_scratch[] was read (the placement preview needs it)."""
        return self.enabled and self.scratch_reason is None

    @property
    def kho_booted(self) -> bool:
        """This kernel itself booted through a KHO kexec (any evidence of it)."""
        return (self.in_fdt is not None
                or any(s.type == SETUP_KEXEC_KHO for s in self.setup_data)
                or self.dt_kho_fdt is not None)

    def as_dict(self) -> JsonDict:
        return {
            "enabled": self.enabled, "off_reason": self.off_reason,
            "off_message": self.off_message, "fix": self.fix,
            "kernel_enabled": self.kernel_enabled,
            "scratch_reason": self.scratch_reason, "scratch_message": self.scratch_message,
            "scratch_fix": self.scratch_fix, "evidence": list(self.evidence),
            "layout": self.layout, "finalized": self.finalized,
            "scratch": [s.as_dict() for s in self.scratch],
            "scratch_notes": list(self.scratch_notes),
            "out_fdt": _blob_dict(self.out_fdt),
            "out_sub_fdts": {k: _blob_dict(v) for k, v in sorted(self.out_sub_fdts.items())},
            "in_fdt": _blob_dict(self.in_fdt),
            "in_sub_fdts": {k: _blob_dict(v) for k, v in sorted(self.in_sub_fdts.items())},
            "debugfs_path": self.debugfs_path, "out_fdt_path": self.out_fdt_path,
            "in_fdt_path": self.in_fdt_path,
            "kho_booted": self.kho_booted,
            "setup_data": [s.as_dict() for s in self.setup_data],
            "dt_kho_fdt": list(self.dt_kho_fdt) if self.dt_kho_fdt else None,
            "dt_kho_scratch": list(self.dt_kho_scratch) if self.dt_kho_scratch else None,
        }


def parse_scratch_lines(text: str, *, path: str) -> list[int]:
    """The `0x%llx` lines of scratch_phys or scratch_len."""
    # mirrors scratch_phys_show()/scratch_len_show(), kernel/liveupdate/kexec_handover_debugfs.c
    values: list[int] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if not re.fullmatch(r"0x[0-9a-fA-F]+", line):
            raise KhotuiError(f"line {lineno} is not a 0x-prefixed hex number: {line!r}", path=path,
                              fix="read this file from the KHO debugfs unchanged (as root)")
        values.append(int(line, 16))
    return values


def read_scratch(sysroot: Sysroot, out_dir: str = f"{KHO_DIR}/out") -> tuple[list[ScratchRegion], list[str]]:
    """kho_scratch[] from scratch_phys + scratch_len, with kinds and node ids, and any notes."""
    phys_host, len_host = f"{out_dir}/scratch_phys", f"{out_dir}/scratch_len"
    if not sysroot.exists(phys_host) and not sysroot.exists(len_host):
        return [], ["no scratch_phys/scratch_len in kho/out"]
    for host in (phys_host, len_host):
        if not sysroot.exists(host):
            raise KhotuiError("missing while its companion file is there", path=sysroot.display(host),
                              fix="copy the whole /sys/kernel/debug/kho tree again")
    addrs = parse_scratch_lines(sysroot.read_text(phys_host), path=sysroot.display(phys_host))
    sizes = parse_scratch_lines(sysroot.read_text(len_host), path=sysroot.display(len_host))
    if len(addrs) != len(sizes):
        raise KhotuiError(f"has {len(sizes)} lines but scratch_phys has {len(addrs)}; "
                          "both list kho_scratch[] in the same order",
                          path=sysroot.display(len_host),
                          fix="copy scratch_phys and scratch_len again from the same boot")
    notes: list[str] = []
    # kho_scratch_cnt = nodes_weight(node_states[N_MEMORY]) + 2, kho_reserve_scratch()
    node_ids = memory_node_ids(sysroot)
    node_regions = max(len(addrs) - 2, 0)
    if len(addrs) < 3:
        notes.append(f"{len(addrs)} scratch regions; a KHO kernel has lowmem, global and at "
                     "least one node region")
    if node_ids and len(node_ids) != node_regions:
        notes.append(f"{node_regions} node scratch regions but {len(node_ids)} nodes with memory "
                     f"({','.join(map(str, node_ids))}); node ids left unknown")
        node_ids = []
    if not node_ids and node_regions and not any("node ids left unknown" in n for n in notes):
        notes.append("node ids of the per-node scratch regions are unknown "
                     "(no /sys/devices/system/node)")
    regions: list[ScratchRegion] = []
    # same length: checked above (one kho_scratch[] entry per line of each file)
    for i, (addr, size) in enumerate(zip(addrs, sizes, strict=True)):
        if i < 2:
            regions.append(ScratchRegion(i, _KINDS[i], None, addr, size))
        else:
            nid = node_ids[i - 2] if node_ids else None
            regions.append(ScratchRegion(i, "node", nid, addr, size))
    return regions, notes


def _read_blob(sysroot: Sysroot, host: str) -> bytes | None:
    if not sysroot.exists(host):
        return None
    return sysroot.read_bytes(host, limit=MAX_BLOB_BYTES)


def _read_blobs(sysroot: Sysroot, host_dir: str) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    for name in sysroot.listdir(host_dir):
        host = f"{host_dir}/{name}"
        if sysroot.is_dir(host):
            continue
        blobs[name] = sysroot.read_bytes(host, limit=MAX_BLOB_BYTES)
    return blobs


def read_setup_data(sysroot: Sysroot) -> list[SetupData]:
    """x86 setup_data entries (arch/x86/kernel/ksysfs.c); [] when absent."""
    entries: list[SetupData] = []
    for name in sysroot.listdir(SETUP_DATA_DIR):
        if not (name.isascii() and name.isdigit()):   # int() refuses '²'
            continue
        host = f"{SETUP_DATA_DIR}/{name}"
        text = sysroot.read_optional_text(f"{host}/type")
        if text is None:
            continue
        try:
            kind = int(text.strip(), 16)  # type_show(): "0x%x\n"
        except ValueError:
            raise KhotuiError(f"not a hex setup_data type: {text.strip()!r}",
                              path=sysroot.display(f"{host}/type"),
                              fix="this file should be read from sysfs unchanged") from None
        size = None
        st = sysroot.stat(f"{host}/data")   # a link out of a snapshot: refused, said why
        if st is not None:
            size = st.st_size
        entries.append(SetupData(int(name), kind, size))
    entries.sort(key=lambda e: e.index)
    return entries


def _dt_cells(sysroot: Sysroot, name: str) -> int:
    host = f"/sys/firmware/devicetree/base/{name}"
    if not sysroot.exists(host):
        return 2  # the DT spec default for the root node
    raw = sysroot.read_bytes(host, limit=64)
    return int.from_bytes(raw[:4], "big") if len(raw) >= 4 else 2


def read_dt_range(sysroot: Sysroot, prop: str) -> tuple[int, int] | None:
    """An (addr, size) property of /chosen such as linux,kho-fdt (drivers/of/kexec.c)."""
    host = f"{CHOSEN_DIR}/{prop}"
    if not sysroot.exists(host):
        return None
    raw = sysroot.read_bytes(host, limit=4096)
    ac, sc = _dt_cells(sysroot, "#address-cells"), _dt_cells(sysroot, "#size-cells")
    if len(raw) < 4 * (ac + sc) or ac == 0 or sc == 0:
        raise KhotuiError(f"{len(raw)} bytes, expected {4 * (ac + sc)} (address and size cells)",
                          path=sysroot.display(host),
                          fix="copy /sys/firmware/devicetree/base/chosen again")
    addr = int.from_bytes(raw[:4 * ac], "big")
    size = int.from_bytes(raw[4 * ac:4 * (ac + sc)], "big")
    return addr, size


@dataclass(frozen=True)
class _Why:
    """One outcome of the decision: a code, what to tell the operator, and the fix."""

    code: str
    message: str
    fix: str


def kernel_turns_kho_off(cmdline: str, config: dict[str, str], config_source: str | None,
                         evidence: list[str]) -> _Why | None:
    """Why the running kernel has KHO off by its command line and build alone, or None when
    these say it is on. `evidence` gets what was looked at, in words."""
    cfg = f" ({config_source})" if config_source else ""
    if config_source is None:
        evidence.append("no build config readable (/proc/config.gz, /boot/config-<release>)")
    elif config.get("CONFIG_KEXEC_HANDOVER") != "y":
        return _Why(OFF_NOT_BUILT, f"this kernel is built without KHO: CONFIG_KEXEC_HANDOVER is not set{cfg}",
                    "boot a kernel built with CONFIG_KEXEC_HANDOVER=y and kho=on")
    else:
        evidence.append(f"CONFIG_KEXEC_HANDOVER=y{cfg}")
    # kho_enable starts at CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT; kho_parse_enable() sets it
    value = cmdline_param(cmdline, "kho")
    requested = kho_requested(cmdline)
    default_on = config.get("CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT") == "y"
    if requested is False:
        return _Why(OFF_CMDLINE, f"KHO is disabled on the kernel command line (kho={value})",
                    "boot with kho=on on the kernel command line (and without kho=off)")
    if requested is None and not default_on:
        what = "has no kho=on" if value is None else f"has an unreadable kho={value}"
        default = ("CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT is not set" if config_source
                   else "KHO is off by default unless CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=y")
        return _Why(OFF_DEFAULT, f"the command line {what} and {default}",
                    "add kho=on to the kernel command line and reboot")
    evidence.append("kho= on /proc/cmdline turns it on (the last value kstrtobool accepts)"
                    if requested
                    else "CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=y and no kho= that turns it off")
    # kho_memory_init(): is_kdump_kernel() turns KHO off (and logs it)
    if "elfcorehdr" in cmdline_param_names(cmdline):
        return _Why(OFF_KDUMP, "this is a kdump (crash) kernel: KHO is disabled in it",
                    "run khotui on the production kernel, not in the crash kernel")
    # kho_init() -> kho_debugfs_init(): with CONFIG_KEXEC_HANDOVER_DEBUGFS the "kho" directory
    # must be created, and debugfs_start_creating() (fs/debugfs/inode.c) refuses with -EPERM
    # when debugfs is off; kho_init() then frees the scratch and sets kho_enable = false
    # without a log line. Without CONFIG_KEXEC_HANDOVER_DEBUGFS kho_debugfs_init() is a stub
    # that succeeds (kexec_handover_internal.h): debugfs=off leaves KHO on.
    debugfs_on = debugfs_requested(cmdline)
    if debugfs_on is None and config.get("CONFIG_DEBUG_FS_ALLOW_NONE") == "y":
        debugfs_on = False
        why_off = f"CONFIG_DEBUG_FS_ALLOW_NONE=y{cfg} (and no debugfs=on)"
    else:
        param = cmdline_param(cmdline, "debugfs")
        why_off = f"debugfs={param} on the command line"
    if debugfs_on is False and (config_source is None
                                or config.get("CONFIG_KEXEC_HANDOVER_DEBUGFS") == "y"
                                or "CONFIG_KEXEC_HANDOVER_DEBUG" not in config):
        unsure = (" (no build config readable: CONFIG_KEXEC_HANDOVER_DEBUGFS, the default with "
                  "KHO, is assumed)" if config_source is None else "")
        return _Why(OFF_DEBUGFS_OFF,
                    f"{why_off} makes kho_init() fail to create "
                    f"{KHO_DIR}, and the kernel then turns KHO off without logging it{unsure}",
                    "reboot without debugfs=off (or with debugfs=on) and with kho=on: KHO "
                    "needs debugfs on this build; mounting debugfs now does not help")
    return None


def _log_says_off(log: str | None) -> _Why | None:
    """What the kernel log says about KHO being turned off at boot, when it says anything."""
    if not log:
        return None
    if LOG_KDUMP in log:
        return _Why(OFF_KDUMP, f"the kernel log says \"{LOG_KDUMP}\"",
                    "run khotui on the production kernel, not in the crash kernel")
    if LOG_SCRATCH_FAILED in log:
        detail = _LOG_SCRATCH_DETAIL.search(log)
        first = f" after \"{detail.group(0)}\"" if detail else ""
        return _Why(OFF_SCRATCH_FAILED,
                    f"the kernel could not reserve its scratch regions at boot "
                    f"(\"{LOG_SCRATCH_FAILED}\"{first})",
                    "reboot with smaller scratch sizes (kho_scratch=, kho_bootmem= from 7.4), "
                    "e.g. a lowmem size that fits below 4 GiB on x86_64")
    if LOG_LUO_OFF in log:
        return _Why(OFF_UNKNOWN, f"the kernel log says \"{LOG_LUO_OFF}\"",
                    "check dmesg | grep -i kho; reboot with kho=on")
    return None


def _boot_log(sysroot: Sysroot) -> str | None:
    """The kernel log, when it can be read (None otherwise: absence of a line then proves nothing)."""
    try:
        return read_kernel_log(sysroot)
    except KhotuiError:
        return None


def _debugfs_mounted(sysroot: Sysroot) -> bool | None:
    """Live host: is a debugfs mounted on /sys/kernel/debug (from /proc/self/mounts)? None when
    that cannot be read or this is a snapshot."""
    if not sysroot.is_live:
        return None
    try:
        text = sysroot.read_optional_text("/proc/self/mounts")
    except KhotuiError:
        return None
    if text is None:
        return None
    return any(len(f) >= 3 and f[1] == DEBUGFS and f[2] == "debugfs"
               for f in (line.split() for line in text.splitlines()))


def _scratch_unreadable(sysroot: Sysroot, config: dict[str, str],
                        config_source: str | None) -> _Why | None:
    """Why kho/ is not visible on a kernel that has KHO on, or None when it should be visible
    (then its absence means the kernel turned KHO off)."""
    cfg = f" ({config_source})" if config_source else ""
    if config_source is not None:
        if config.get("CONFIG_DEBUG_FS") != "y":
            return _Why(UNREAD_NO_DEBUGFS_CONFIG,
                        f"this kernel has no debugfs (CONFIG_DEBUG_FS is not set{cfg}): KHO is on "
                        "but khotui cannot read the scratch regions on this build",
                        "the load itself works, but its placement cannot be previewed: load with "
                        "--force (the kernel's own placement is shown after the load), or boot a "
                        "build with CONFIG_KEXEC_HANDOVER_DEBUGFS=y for a preview")
        if ("CONFIG_KEXEC_HANDOVER_DEBUG" in config
                and config.get("CONFIG_KEXEC_HANDOVER_DEBUGFS") != "y"):
            # the option exists from 6.19 on (it came with CONFIG_KEXEC_HANDOVER_DEBUG)
            return _Why(UNREAD_NO_DEBUGFS_CONFIG,
                        f"CONFIG_KEXEC_HANDOVER_DEBUGFS is not set{cfg}: KHO is on but has no "
                        "debugfs view, so khotui cannot read the scratch regions on this build",
                        "the load itself works, but its placement cannot be previewed: load with "
                        "--force (the kernel's own placement is shown after the load), or boot a "
                        "build with CONFIG_KEXEC_HANDOVER_DEBUGFS=y for a preview")
    mount = f"mount -t debugfs none {DEBUGFS}"
    if sysroot.is_live:
        mounted = _debugfs_mounted(sysroot)
        if mounted is False or (mounted is None and not sysroot.listdir(DEBUGFS)):
            return _Why(UNREAD_DEBUGFS_NOT_MOUNTED,
                        f"debugfs is not mounted on {DEBUGFS}", mount)
        return None
    if not sysroot.is_dir(DEBUGFS) or not sysroot.listdir(DEBUGFS):
        return _Why(UNREAD_DEBUGFS_NOT_MOUNTED,
                    "the snapshot has no /sys/kernel/debug (debugfs was not mounted or not "
                    "readable when it was taken)",
                    f"on the host: {mount}, then take the snapshot again as root")
    return None


def _tree_names(sysroot: Sysroot, host_dir: str, prefix: str = "", depth: int = 0) -> list[str]:
    """Relative names under kho/ (sub_fdts contents left out: any name is valid there)."""
    names: list[str] = []
    for name in sysroot.listdir(host_dir):
        rel = f"{prefix}{name}"
        host = f"{host_dir}/{name}"
        if sysroot.is_dir(host):
            if name != "sub_fdts" and depth < 3:
                names += _tree_names(sysroot, host, f"{rel}/", depth + 1)
            else:
                names.append(f"{rel}/")
        else:
            names.append(rel)
    return names


def unknown_layout(sysroot: Sysroot) -> str | None:
    """The refusal for a kho/ tree khotui does not know, or None. Without both scratch files
    the tree is not one khotui can read, whatever else is there: it is named, never guessed at."""
    top = set(sysroot.listdir(KHO_DIR))
    out = set(sysroot.listdir(f"{KHO_DIR}/out")) if "out" in top else set()
    if "out" in top and {"scratch_phys", "scratch_len"} & out:
        return None
    names = _tree_names(sysroot, KHO_DIR)
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    return (f"unknown KHO debugfs layout: files {shown or '(none)'} in {sysroot.display(KHO_DIR)}; "
            f"khotui knows {KNOWN_LAYOUTS}")


def _unknown_names(sysroot: Sysroot) -> list[str]:
    """Files of a known layout khotui does not know (a newer kernel adding some): a note."""
    extra = [n for n in sysroot.listdir(KHO_DIR) if n not in _KNOWN_TOP]
    extra += [f"out/{n}" for n in sysroot.listdir(f"{KHO_DIR}/out") if n not in _KNOWN_OUT]
    extra += [f"in/{n}" for n in sysroot.listdir(f"{KHO_DIR}/in") if n not in _KNOWN_IN]
    return extra


def cmdline_param_names(cmdline: str) -> set[str]:
    return {t.partition("=")[0] for t in cmdline_tokens(cmdline)}


def read_kho(sysroot: Sysroot) -> KhoState:
    cmdline = (sysroot.read_optional_text("/proc/cmdline") or "").rstrip("\n")
    osrelease = (sysroot.read_optional_text("/proc/sys/kernel/osrelease") or "").strip() or None
    setup_data = read_setup_data(sysroot)
    dt_fdt = read_dt_range(sysroot, "linux,kho-fdt")
    dt_scratch = read_dt_range(sysroot, "linux,kho-scratch")
    try:
        present = sysroot.is_dir(KHO_DIR) and bool(sysroot.listdir(KHO_DIR))
        denied = False
    except KhotuiError:
        present, denied = False, True
    except PermissionError:
        present, denied = False, True
    if not present and not denied and sysroot.is_live:
        # /sys/kernel/debug is 0700: is_dir() is False for a non-root reader
        try:
            sysroot.listdir(DEBUGFS)
        except KhotuiError:
            denied = True
    if denied or not present:
        return _without_kho_dir(sysroot, cmdline, osrelease, denied=denied,
                                setup_data=setup_data, dt_fdt=dt_fdt, dt_scratch=dt_scratch)
    refusal = unknown_layout(sysroot)
    if refusal is not None:
        return KhoState(enabled=True, kernel_enabled=True,
                        scratch_reason=UNREAD_UNKNOWN_LAYOUT, scratch_message=refusal,
                        scratch_fix="use a khotui that knows this kernel's KHO debugfs files; "
                                    "until then the placement cannot be previewed",
                        evidence=[f"{KHO_DIR} exists"], debugfs_path=KHO_DIR,
                        setup_data=setup_data, dt_kho_fdt=dt_fdt, dt_kho_scratch=dt_scratch)

    out_dir, in_dir = f"{KHO_DIR}/out", f"{KHO_DIR}/in"
    finalize_host = f"{out_dir}/finalize"
    layout, finalized = LAYOUT_STATELESS, None
    if sysroot.exists(finalize_host):
        layout = LAYOUT_LEGACY
        text = sysroot.read_text(finalize_host).strip()
        if text not in ("0", "1"):
            raise KhotuiError(f"expected 0 or 1, read {text!r}", path=sysroot.display(finalize_host),
                              fix="read this file from the KHO debugfs unchanged (as root)")
        finalized = text == "1"  # finalize_get(), "%llu\n"
    scratch, notes = read_scratch(sysroot, out_dir)
    extra = _unknown_names(sysroot)
    if extra:
        notes.append(f"files khotui does not know in {KHO_DIR} (ignored): {', '.join(extra[:8])}")
    out_fdt_host, in_fdt_host = f"{out_dir}/fdt", f"{in_dir}/fdt"
    out_fdt = _read_blob(sysroot, out_fdt_host)
    in_fdt = _read_blob(sysroot, in_fdt_host)
    return KhoState(
        enabled=True, kernel_enabled=True, layout=layout, finalized=finalized,
        scratch=scratch, scratch_notes=notes, evidence=[f"{KHO_DIR} exists"],
        out_fdt=out_fdt, out_sub_fdts=_read_blobs(sysroot, f"{out_dir}/sub_fdts"),
        in_fdt=in_fdt, in_sub_fdts=_read_blobs(sysroot, f"{in_dir}/sub_fdts"),
        debugfs_path=KHO_DIR,
        out_fdt_path=out_fdt_host if out_fdt is not None else None,
        in_fdt_path=in_fdt_host if in_fdt is not None else None,
        setup_data=setup_data, dt_kho_fdt=dt_fdt, dt_kho_scratch=dt_scratch,
    )


def _without_kho_dir(sysroot: Sysroot, cmdline: str, osrelease: str | None, *, denied: bool,
                     setup_data: list[SetupData], dt_fdt: tuple[int, int] | None,
                     dt_scratch: tuple[int, int] | None) -> KhoState:
    """No readable kho/: KHO off (and why), or on with its scratch regions unknown (and why)."""
    config, config_source = read_config(sysroot, osrelease)
    evidence: list[str] = []
    base = KhoState(enabled=False, setup_data=setup_data, dt_kho_fdt=dt_fdt,
                    dt_kho_scratch=dt_scratch, evidence=evidence)
    off = kernel_turns_kho_off(cmdline, config, config_source, evidence)
    if off is None:
        log = _boot_log(sysroot)
        off = _log_says_off(log)
        evidence.append("the kernel log: " + ("not readable" if log is None
                                              else "no line saying KHO was turned off"))
    if off is not None:
        return replace(base, off_reason=off.code, off_message=off.message, fix=off.fix,
                       kernel_enabled=False)
    if denied:
        unread: _Why | None = _Why(UNREAD_PERMISSION,
                                   f"cannot read {DEBUGFS}: permission denied",
                                   "run khotui as root (sudo khotui ...), or review a snapshot "
                                   "taken as root")
    else:
        unread = _scratch_unreadable(sysroot, config, config_source)
    if unread is not None:
        return replace(base, enabled=True, kernel_enabled=True, scratch_reason=unread.code,
                       scratch_message=unread.message, scratch_fix=unread.fix)
    # debugfs is there and KHO's directory is not: kho_init() failed (it turns KHO off)
    return replace(base, off_reason=OFF_UNKNOWN,
                   off_message=f"no {KHO_DIR} although the command line and build ask for KHO: "
                                "the kernel turned KHO off at boot (kho_init() failed; the kernel "
                                "log says why when it logged it, e.g. 'Failed to reserve scratch "
                                "area, disabling kexec handover')",
                   fix="check dmesg | grep KHO; a failed scratch reservation needs a smaller "
                       "kho_scratch= (kho_bootmem= from 7.4)",
                   kernel_enabled=False)
