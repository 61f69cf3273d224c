"""kexec state: what is loaded, the sysctls that gate a load, lockdown, and our privileges.

Sources (reference/kho-abi.md §4.3): `/sys/kernel/kexec_loaded`, `kexec_crash_loaded`,
`kexec_crash_size` (compat names; `/sys/kernel/kexec/*` on newer kernels),
`/proc/sys/kernel/kexec_load_disabled`, `kexec_load_limit_reboot`, `kexec_load_limit_panic`
(-1 = unlimited; every kexec_file_load call decrements it, kexec_core.c kexec_load_permitted()),
and `/sys/kernel/security/lockdown`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from khotui.host.sysroot import Sysroot

LOCKDOWN = "/sys/kernel/security/lockdown"
CAP_SYS_BOOT = 22  # include/uapi/linux/capability.h


@dataclass
class KexecState:
    loaded: bool | None
    crash_loaded: bool | None
    crash_size: int | None
    kexec_load_disabled: bool | None
    kexec_load_limit_reboot: int | None   # -1 = unlimited
    kexec_load_limit_panic: int | None
    lockdown: str | None                  # 'none' | 'integrity' | 'confidentiality'
    lockdown_modes: list[str]             # the modes this kernel offers
    lockdown_reason: str | None           # why lockdown is None
    euid: int | None                      # live host only; None for a snapshot
    cap_sys_boot: bool | None             # CAP_SYS_BOOT in CapEff; None for a snapshot
    privileges_reason: str | None         # why euid/cap_sys_boot are None

    @property
    def is_root(self) -> bool | None:
        return None if self.euid is None else self.euid == 0

    @property
    def loads_left(self) -> int | None:
        """kexec_file_load calls left before EPERM (None: unlimited or unknown)."""
        if self.kexec_load_limit_reboot is None or self.kexec_load_limit_reboot < 0:
            return None
        return self.kexec_load_limit_reboot

    def as_dict(self) -> dict[str, bool | int | str | list[str] | None]:
        return {
            "loaded": self.loaded, "crash_loaded": self.crash_loaded,
            "crash_size": self.crash_size, "kexec_load_disabled": self.kexec_load_disabled,
            "kexec_load_limit_reboot": self.kexec_load_limit_reboot,
            "kexec_load_limit_panic": self.kexec_load_limit_panic,
            "lockdown": self.lockdown, "lockdown_modes": list(self.lockdown_modes),
            "lockdown_reason": self.lockdown_reason,
            "euid": self.euid, "is_root": self.is_root, "cap_sys_boot": self.cap_sys_boot,
            "privileges_reason": self.privileges_reason,
        }


def _first_int(sysroot: Sysroot, *paths: str) -> int | None:
    for path in paths:
        value = sysroot.read_int(path, base=10)
        if value is not None:
            return value
    return None


def _bool(value: int | None) -> bool | None:
    return None if value is None else value != 0


def parse_lockdown(text: str) -> tuple[str | None, list[str]]:
    """'[none] integrity confidentiality' → ('none', [all three])."""
    # mirrors lockdown_read(), security/lockdown/lockdown.c
    modes, current = [], None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            word = word[1:-1]
            current = word
        modes.append(word)
    return current, modes


def parse_cap_eff(status: str) -> bool | None:
    """CAP_SYS_BOOT from the CapEff line of /proc/<pid>/status."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> CAP_SYS_BOOT & 1)
            except (IndexError, ValueError):
                return None
    return None


def read_kexec_state(sysroot: Sysroot) -> KexecState:
    loaded = _first_int(sysroot, "/sys/kernel/kexec_loaded", "/sys/kernel/kexec/loaded")
    crash_loaded = _first_int(sysroot, "/sys/kernel/kexec_crash_loaded",
                              "/sys/kernel/kexec/crash_loaded")
    crash_size = _first_int(sysroot, "/sys/kernel/kexec_crash_size", "/sys/kernel/kexec/crash_size")
    disabled = _first_int(sysroot, "/proc/sys/kernel/kexec_load_disabled")
    limit_reboot = _first_int(sysroot, "/proc/sys/kernel/kexec_load_limit_reboot")
    limit_panic = _first_int(sysroot, "/proc/sys/kernel/kexec_load_limit_panic")

    lockdown: str | None = None
    modes: list[str] = []
    reason: str | None = None
    text = sysroot.read_optional_text(LOCKDOWN)
    if text is None:
        if sysroot.is_live and not sysroot.is_dir("/sys/kernel/security"):
            reason = "securityfs is not mounted on /sys/kernel/security"
        else:
            reason = ("no /sys/kernel/security/lockdown: the lockdown LSM is not built in "
                      "(or securityfs was not mounted)")
    else:
        lockdown, modes = parse_lockdown(text)
        if lockdown is None:
            reason = f"unreadable lockdown state {text.strip()!r}"

    euid = cap = priv_reason = None
    if sysroot.is_live:
        euid = os.geteuid()
        status = sysroot.read_optional_text("/proc/self/status")
        cap = parse_cap_eff(status) if status is not None else None
    else:
        priv_reason = "not applicable to a snapshot: privileges are checked on the live host"
    return KexecState(
        loaded=_bool(loaded), crash_loaded=_bool(crash_loaded), crash_size=crash_size,
        kexec_load_disabled=_bool(disabled), kexec_load_limit_reboot=limit_reboot,
        kexec_load_limit_panic=limit_panic, lockdown=lockdown, lockdown_modes=modes,
        lockdown_reason=reason, euid=euid, cap_sys_boot=cap, privileges_reason=priv_reason,
    )
