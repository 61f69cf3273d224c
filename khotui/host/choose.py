"""Which file a kernel or initrd path names on a host: the rule the CLI and the app share.

On the live host a path is the path. Below a snapshot root (`--root DIR`, `--demo`) the app
lists the snapshot's own /boot; so that what it shows can be typed on the CLI, an absolute path
the snapshot has is the snapshot's file (resolved beneath DIR with `Sysroot`, never following a
link out of it), and a path it lacks is a file on this machine (a kernel to try against the
snapshot). Relative paths are always this machine's, from the current directory.

`default_kernel()` is what `--kernel default` means: the entry the host would boot next, picked
as `systemctl kexec` picks it (load_kexec_kernel(), src/systemctl/systemctl-start-special.c,
calls boot_entries_select_default(), src/shared/bootspec.c): the LoaderEntryOneShot EFI
variable, then LoaderEntryDefault, then loader.conf's `default` glob, then the first entry in
its sort order (newest version first); without Boot Loader Specification entries, the newest
installed /boot kernel.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

from khotui.errors import KhotuiError
from khotui.host.kernels import BLS_ROOTS, InstalledKernel, find_kernels
from khotui.host.sysroot import Sysroot

# systemd-boot's vendor GUID for its Loader* variables (the Boot Loader Interface)
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
EFIVARS = "/sys/firmware/efi/efivars"


@dataclass(frozen=True)
class ChosenFile:
    """A path as typed, the file that will be read for it, and where that file is."""

    typed: str
    path: str            # what to open (inside the snapshot directory when `in_root`)
    in_root: bool

    @property
    def note(self) -> str:
        where = "the snapshot" if self.in_root else "this machine"
        return f"{self.typed}: read from {where}" + (f" ({self.path})" if self.in_root else "")


def resolve_file(sysroot: Sysroot, typed: str) -> ChosenFile:
    """The file `typed` names on this host (the rule in the module docstring)."""
    if sysroot.is_live or not typed.startswith("/"):
        return ChosenFile(typed, typed, in_root=False)
    try:
        fd = sysroot.open_file(typed)
    except FileNotFoundError:
        return ChosenFile(typed, typed, in_root=False)
    except NotADirectoryError:
        return ChosenFile(typed, typed, in_root=False)
    except OSError:
        # present but unreadable: the snapshot's file, whose open will say why
        return ChosenFile(typed, str(sysroot.path(typed)), in_root=True)
    try:
        # the real path of the descriptor opened beneath the root: a link inside the snapshot
        # is followed once here, and what the plan opens next is that file, not the link
        real = os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ChosenFile(typed, real, in_root=True)


def _efi_entry(sysroot: Sysroot, name: str) -> str | None:
    """A Loader* EFI variable's string: 4 bytes of attributes, then UTF-16LE up to a NUL."""
    try:
        raw = sysroot.read_bytes(f"{EFIVARS}/{name}-{LOADER_GUID}", limit=4096)
    except (OSError, KhotuiError):
        return None
    text = raw[4:].decode("utf-16-le", errors="replace").split("\0", 1)[0].strip()
    return text or None


def _loader_conf_default(sysroot: Sysroot) -> tuple[str, str] | None:
    for base in BLS_ROOTS:
        conf = f"{base}/loader/loader.conf"
        try:
            text = sysroot.read_optional_text(conf)
        except KhotuiError:
            continue
        if not text:
            continue
        for line in text.splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "default" and value.strip():
                return value.strip(), conf
    return None


def _entry_id(k: InstalledKernel) -> str | None:
    return None if k.entry_path is None else k.entry_path.rsplit("/", 1)[-1]


def _find(entries: list[InstalledKernel], pattern: str) -> InstalledKernel | None:
    # boot_config_find(): fnmatch(pattern, id, FNM_CASEFOLD); ids keep their ".conf"
    pat = pattern.lower()
    for k in entries:
        ident = (_entry_id(k) or "").lower()
        if fnmatch.fnmatchcase(ident, pat) or fnmatch.fnmatchcase(ident.removesuffix(".conf"), pat):
            return k
    return None


def default_kernel(sysroot: Sysroot) -> tuple[InstalledKernel, str]:
    """The kernel the host would boot next, and why that one (one line for the operator)."""
    kernels = find_kernels(sysroot)
    entries = [k for k in kernels if k.source == "bls"]
    if entries:
        for var in ("LoaderEntryOneShot", "LoaderEntryDefault"):
            ident = _efi_entry(sysroot, var)
            found = _find(entries, ident) if ident else None
            if found is not None:
                return found, f"the boot loader entry {ident} (EFI variable {var})"
        conf = _loader_conf_default(sysroot)
        if conf is not None:
            found = _find(entries, conf[0])
            if found is not None:
                return found, f"the boot loader entry matching `default {conf[0]}` in {conf[1]}"
        return entries[0], (f"the first boot loader entry, {_entry_id(entries[0])} (newest "
                            "version first; no default set)")
    if kernels:
        return kernels[0], f"the newest installed kernel, {kernels[0].version} (no boot loader entries)"
    raise KhotuiError("no installed kernel found: /boot has no vmlinuz-* and there are no boot "
                      "loader entries", path=sysroot.display("/boot"),
                      fix="give the kernel with --kernel FILE (`khotui kernels` lists what is found)")
