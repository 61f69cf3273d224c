"""The shared types: one frozen dataclass per idea, from the reader to the JSON and the screen.

A scratch region, a finding and a status word mean the same thing to the host reader, the
placement simulator, the checks, `--json` and the TUI, so each is defined once, here; so are
the two placement inputs the host and the FDT layers compute for the simulator (`Purgatory`,
`DtbSize`), since placement may import neither. This
module imports nothing from khotui but `errors`; every layer may import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

# A finding's status, worst last: a `fail` means the load would fail or the handover would be
# lost (`plan` exits 1); a `warn` is something the operator should know that does not stop it.
Status = Literal["ok", "warn", "fail", "skip"]
OK: Status = "ok"
WARN: Status = "warn"
FAIL: Status = "fail"
SKIP: Status = "skip"

ScratchKind = Literal["lowmem", "global", "node"]

# What a nested `as_dict()` returns: JSON-ready (str keys; values str, int, float, bool, None,
# lists and dicts of these). `object`, not Any: a caller that reads a value must narrow it.
JsonDict = dict[str, object]


def worst(statuses: Iterable[Status]) -> Status:
    """The status a list of findings shows as a whole: fail, else warn, else ok."""
    seen = set(statuses)
    for status in (FAIL, WARN):
        if status in seen:
            return status
    return OK


# Where a fix is shown: the command line (and its JSON) or the interactive app.
Surface = Literal["cli", "app"]


@dataclass(frozen=True)
class Finding:
    """One pre-flight check's answer: what it found, in one line, and the fix."""

    id: str
    status: Status
    message: str
    fix: str | None = None
    # How each surface carries the fix out, when that differs between them: ("cli", "--append
    # kho=on"), ("app", "on Prepare, e edits the command line"). The check states the fix once
    # (`fix`); the CLI and the app each append their own way of doing it (`fix_for`), so a CLI
    # flag never shows in the app and an app key never in the CLI.
    how: tuple[tuple[Surface, str], ...] = ()

    def fix_for(self, surface: Surface) -> str | None:
        """The fix in `surface`'s own words: `fix`, then how to do it there."""
        way = next((w for s, w in self.how if s == surface), None)
        if self.fix is None or way is None:
            return self.fix
        return f"{self.fix} ({way})"

    def as_dict(self) -> dict[str, str | None]:
        # JSON is read by scripts: the CLI's wording
        return {"id": self.id, "status": self.status, "message": self.message,
                "fix": self.fix_for("cli")}


@dataclass(frozen=True)
class ScratchRegion:
    """One `kho_scratch[]` entry: index 0 lowmem (below 4 GiB on x86_64), 1 global, 2.. one per
    node with memory, in the order of `scratch_phys`/`scratch_len`
    (kho_reserve_scratch(), kernel/liveupdate/kexec_handover.c). A region may have size 0."""

    index: int
    kind: ScratchKind
    node: int | None          # kind 'node': the node id, None when it could not be matched
    addr: int
    size: int

    @property
    def end(self) -> int:
        """Last byte (inclusive); addr - 1 for an empty region."""
        return self.addr + self.size - 1

    @property
    def name(self) -> str:
        """`lowmem`, `global`, `node1`; `scratch[3]` for a node region whose node is unknown
        (the kernel's own array index: a node id would be a guess)."""
        if self.kind != "node":
            return self.kind
        return f"node{self.node}" if self.node is not None else f"scratch[{self.index}]"

    @property
    def label(self) -> str:
        """`scratch[2] node0`: the array index and the name, where regions are drawn."""
        name = self.name
        return name if name.startswith("scratch[") else f"scratch[{self.index}] {name}"

    def as_dict(self) -> dict[str, int | str | None]:
        return {"index": self.index, "kind": self.kind, "node": self.node,
                "addr": self.addr, "size": self.size}


@dataclass(frozen=True)
class Purgatory:
    """The purgatory segment an x86_64 load adds: only the running kernel knows it (its
    built-in ELF, kexec_load_purgatory(), kernel/kexec_file.c). The host layer reads it from the
    running kernel's image, a snapshot's record or /proc/kcore (khotui.host.running_image),
    else learns it from the kernel log (khotui.host.kernellog.purgatory_from_log); the x86_64
    placement uses it."""

    bufsz: int
    memsz: int
    align: int
    source: str               # where these numbers come from, for the plan's assumptions
    # read from the running kernel's own purgatory ELF (its image, a snapshot's record of it,
    # /proc/kcore): not an assumption
    exact: bool = False

    def as_dict(self) -> dict[str, int | str | bool]:
        return {"bufsz": self.bufsz, "memsz": self.memsz, "align": self.align,
                "source": self.source, "exact": self.exact}


# The Linux 7.3.4 x86_64 build's purgatory, as logged by every x86 capture (shared/kho/*/load).
DEFAULT_PURGATORY = Purgatory(
    bufsz=0x4000, memsz=0x5000, align=0x1000,
    source="assumed: the purgatory of the Linux 7.3.4 x86_64 build (bufsz 0x4000, memsz "
           "0x5000, align 4096); no earlier KEXEC_FILE_DEBUG load in the kernel log to learn "
           "the running kernel's from")


@dataclass
class DtbSize:
    """The arm64 DTB segment's size and how each step of the /chosen rewrite changed it:
    computed from the running FDT by khotui.fdt.kexec_dtb, placed by khotui.placement.arm64."""

    totalsize: int                   # fdt_totalsize() after fdt_pack(): the segment's bufsz
    boot_totalsize: int              # the running kernel's FDT header totalsize
    steps: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)   # guessed inputs only
    notes: list[str] = field(default_factory=list)         # facts about the result

    def as_dict(self) -> dict[str, int | list[str]]:
        return {"totalsize": self.totalsize, "boot_totalsize": self.boot_totalsize,
                "steps": list(self.steps), "assumptions": list(self.assumptions),
                "notes": list(self.notes)}
