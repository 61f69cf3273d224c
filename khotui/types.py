"""The shared types: one frozen dataclass per idea, from the reader to the JSON and the screen.

A scratch region, a finding and a status word mean the same thing to the host reader, the
placement simulator, the checks, `--json` and the TUI, so each is defined once, here. This
module imports nothing from khotui but `errors`; every layer may import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# A finding's status, worst last: a `fail` means the load would fail or the handover would be
# lost (`plan` exits 1); a `warn` is something the operator should know that does not stop it.
Status = Literal["ok", "warn", "fail", "skip"]
OK: Status = "ok"
WARN: Status = "warn"
FAIL: Status = "fail"
SKIP: Status = "skip"

ScratchKind = Literal["lowmem", "global", "node"]


def worst(statuses: Iterable[Status]) -> Status:
    """The status a list of findings shows as a whole: fail, else warn, else ok."""
    seen = set(statuses)
    for status in (FAIL, WARN):
        if status in seen:
            return status
    return OK


@dataclass(frozen=True)
class Finding:
    """One pre-flight check's answer: what it found, in one line, and the fix."""

    id: str
    status: Status
    message: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "status": self.status, "message": self.message, "fix": self.fix}


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

    def as_dict(self) -> dict[str, int | str | None]:
        return {"index": self.index, "kind": self.kind, "node": self.node,
                "addr": self.addr, "size": self.size}
