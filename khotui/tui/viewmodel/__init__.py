"""What the screens draw, as plain values, and the one package that maps the core onto them.

Widgets never import the core: they take the dataclasses below. `Source` is the only object
that calls `khotui.plan`, the host readers, the FDT decoders and the load flow; when the core
changes shape, this package changes and nothing else in the TUI does.

Where the core already has the one type for an idea (`khotui.types.Finding`, `ScratchRegion`,
`worst()`), the screens get that type, re-exported here (screens import only the TUI).

Every `Source` method blocks (it reads the host, hashes files, or calls the syscall seam): the
screens call them from `@work(thread=True)` workers. A part that cannot be read becomes a
`Problem` in its place (the panel shows the message), never an exception that reaches Textual.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from khotui.errors import KhotuiError, Problem
from khotui.load.interrupts import Deferred, defer
from khotui.types import Finding, ScratchRegion, Status, worst

if TYPE_CHECKING:
    from khotui.load.audit import AuditSink

    # re-exported for the screens' annotations: they reach the core only through here
    from khotui.load.session import LoadSession as LoadSession
    from khotui.load.syscall import Syscalls as Syscalls
    from khotui.placement.core import Segment
    from khotui.plan import PlanResult
    from khotui.plan.status import HostStatus

T = TypeVar("T")

# the core's types the screens draw, and the signal deferral the app wraps a load in
__all__ = ["Deferred", "Finding", "Problem", "ScratchRegion", "Status", "defer", "worst"]


# ---------------------------------------------------------------------------------------------
# Plain values the widgets draw


@dataclass
class KhoSummary:
    enabled: bool
    abi: str | None = None
    layout: str | None = None
    finalized: bool | None = None
    kho_booted: bool = False
    off_message: str | None = None
    fix: str | None = None
    notes: list[str] = field(default_factory=list)
    scratch_unknown: str | None = None    # KHO on, scratch regions unreadable: why
    scratch_fix: str | None = None
    # after a KHO boot with a load's receipt here: `khotui verify`'s verdict (ok, failed ids)
    receipt_ok: bool | None = None
    receipt_failed: tuple[str, ...] = ()


@dataclass
class KexecSummary:
    loaded: bool | None = None
    crash_loaded: bool | None = None
    crash_size: int | None = None
    load_limit_reboot: int | None = None
    load_disabled: bool | None = None
    lockdown: str | None = None


@dataclass
class LuoSummary:
    """The Live Update Orchestrator in a line or two (khotui.host.luo)."""

    enabled: bool | None
    off_message: str | None = None
    holder: str | None = None            # "luod (pid 900, luod.service)"
    sessions: list[str] = field(default_factory=list)   # session names, in holder order
    outgoing_number: int | None = None   # the LUO blob's live-update number, out and in
    incoming_number: int | None = None
    note: str | None = None              # an incomplete scan or a refused record


@dataclass
class SystemSummary:
    mem_total: int | None = None       # bytes
    mem_available: int | None = None
    uptime: float | None = None        # seconds
    load: tuple[float, float, float] | None = None
    cpus: int | None = None


@dataclass
class Overview:
    source: str                        # "live host", "snapshot /x", "demo snapshot"
    hostname: str
    arch: str | None = None
    release: str | None = None
    cmdline: str | None = None
    boot_problem: Problem | None = None
    kho: KhoSummary | Problem | None = None
    scratch: list[ScratchRegion] | Problem = field(default_factory=list)
    kexec: KexecSummary | Problem | None = None
    luo: LuoSummary | Problem | None = None
    system: SystemSummary | Problem | None = None
    findings: list[Finding] | Problem = field(default_factory=list)
    worst: Status = "ok"


@dataclass
class MemRange:
    """One range to draw on the memory map. `kind` picks the colour and the legend entry."""

    start: int
    end: int             # inclusive
    kind: str            # ram | reserved | kernel | crash | scratch | segment | acpi | other
    label: str

    @property
    def size(self) -> int:
        return self.end - self.start + 1


@dataclass
class IomemLine:
    start: int
    end: int
    name: str
    depth: int
    children: list[IomemLine] = field(default_factory=list)

    @property
    def has_children(self) -> bool:
        return bool(self.children)


@dataclass
class BlockRun:
    """Consecutive memory blocks of one node in one state (196,000 blocks become a few runs)."""

    node: int | None
    first: int
    last: int
    start: int
    end: int
    state: str


@dataclass
class MemoryMap:
    bands: list[tuple[str, int, int]]          # (label, start, end) per NUMA node or RAM span
    ranges: list[MemRange]
    iomem: list[IomemLine] | Problem
    blocks: list[BlockRun] | Problem
    block_size: int | None = None
    block_count: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def states_known(self) -> bool:
        return isinstance(self.blocks, list) and all(r.state for r in self.blocks)


@dataclass
class FdtProperty:
    name: str
    value: str           # decoded for the operator
    raw: bytes = b""


class FdtNodeView:
    """A node of a decoded FDT. Properties and children are decoded when first asked for, so a
    10,000-node tree costs only what the operator opens."""

    def __init__(self, name: str, path: str, *, child_count: int,
                 load_properties: Callable[[], list[FdtProperty]],
                 load_children: Callable[[], list[FdtNodeView]]) -> None:
        self.name = name
        self.path = path
        self.child_count = child_count
        self._load_properties = load_properties
        self._load_children = load_children
        self._properties: list[FdtProperty] | None = None
        self._children: list[FdtNodeView] | None = None

    @property
    def properties(self) -> list[FdtProperty]:
        if self._properties is None:
            self._properties = self._load_properties()
        return self._properties

    @property
    def children(self) -> list[FdtNodeView]:
        if self._children is None:
            self._children = self._load_children() if self.child_count else []
        return self._children

    @classmethod
    def plain(cls, name: str, path: str, properties: list[FdtProperty],
              children: list[FdtNodeView] | None = None) -> FdtNodeView:
        kids = children or []
        return cls(name, path, child_count=len(kids), load_properties=lambda: properties,
                   load_children=lambda: kids)


@dataclass
class FdtBlob:
    """One handover blob: the root FDT, a sub-FDT, or a packed struct (decoded or hex)."""

    name: str
    path: str
    size: int
    kind: str                        # fdt | struct | raw
    root: FdtNodeView | None = None  # for kind fdt
    fields: list[tuple[str, str]] = field(default_factory=list)  # for kind struct
    raw: bytes = b""
    warnings: list[str] = field(default_factory=list)
    dts_source: Callable[[], str] | None = None     # renders the DTS text (blocks: a worker's)
    hex_source: Callable[[], str] | None = None     # renders the hex dump
    _dts: str | None = field(default=None, repr=False)

    def hex(self) -> str:
        return self.hex_source() if self.hex_source else "(no bytes)"

    def dts(self) -> str:
        """The DTS-like text, rendered on first use (2.5 MB for a 10,000-node FDT)."""
        if self._dts is None:
            self._dts = self.dts_source() if self.dts_source else ""
        return self._dts


@dataclass
class HandoverSide:
    title: str                       # "outgoing (kho/out)" or "incoming (kho/in)"
    blobs: list[FdtBlob] = field(default_factory=list)


@dataclass
class Handover:
    sides: list[HandoverSide] | Problem
    notes: list[str] = field(default_factory=list)


@dataclass
class KernelChoice:
    path: str
    version: str | None
    size: int | None
    mtime: float | None
    running: bool = False
    initrd: str | None = None       # the initrd that goes with it (BLS entry or naming)
    source: str = "/boot"           # "/boot" or the BLS entry file
    title: str | None = None


@dataclass
class Choices:
    kernels: list[KernelChoice] | Problem
    current_cmdline: str
    suggested_cmdline: str
    browse_root: str                 # where the file picker starts (real path)


@dataclass
class CmdlinePreview:
    removed: list[str]
    boot_only_removed: list[str]
    added: list[str]
    duplicates: list[str]
    kho: str | None
    length: int                      # bytes with the trailing NUL
    limit: int | None                # what the image accepts (None: unknown)
    warnings: list[str] = field(default_factory=list)


@dataclass
class PlanInput:
    kernel: str
    initrd: str | None
    cmdline: str


@dataclass
class SegmentRow:
    name: str
    mem: int | None
    memsz: int
    bufsz: int
    region: str | None


@dataclass
class Plan:
    request: PlanInput
    would_succeed: bool
    verdict: str
    segments: list[SegmentRow]
    regions: list[ScratchRegion]
    findings: list[Finding]
    files: list[tuple[str, str, int | None]] = field(default_factory=list)  # (path, sha256, size)
    notes: list[str] = field(default_factory=list)         # how the plan was made: not guesses
    assumptions: list[str] = field(default_factory=list)   # guessed inputs
    exactness: str = ""               # "exact" or "not exact: ..." (khotui.cli.text.exactness)
    handle: PlanResult | None = None  # the core's plan, kept for the load


@dataclass
class SegmentDiffRow:
    """One segment: where the plan put it, where the kernel says it put it (its log)."""

    name: str
    predicted_mem: int | None
    predicted_memsz: int
    actual_mem: int | None
    actual_memsz: int | None
    same: bool


@dataclass
class LoadResult:
    ok: bool
    dry_run: bool
    title: str
    message: str
    fix: str | None = None
    cause: str | None = None         # why the kernel refused (kexec.explain)
    errno: str | None = None
    predicted: list[SegmentRow] = field(default_factory=list)
    diffs: list[SegmentDiffRow] = field(default_factory=list)   # actual vs predicted
    overridden: list[Finding] = field(default_factory=list)  # failing checks loaded anyway
    next_steps: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The adapter


def _guard(fn: Callable[[], T]) -> T | Problem:
    """Run one panel's read; its failure becomes that panel's message."""
    try:
        return fn()
    except KhotuiError as exc:
        return exc.problem
    except ImportError as exc:
        return Problem(f"this part of khotui is not installed: {exc}",
                       fix="update khotui; the other screens still work")
    except Exception as exc:  # a bug in a reader must not take the app down
        if os.environ.get("KHOTUI_DEBUG"):
            raise
        return Problem(f"internal error reading this panel ({type(exc).__name__}: {exc})",
                       fix="rerun with KHOTUI_DEBUG=1 and report it")


_gc_lock = threading.Lock()
_gc_readers = 0


def _quiet_gc(fn: Callable[..., T]) -> Callable[..., T]:
    """For the reads that build a host's model (a 24 TiB host: ~300,000 objects).

    Python's full collections scan every tracked object: 100-200 ms each on such a host, and a
    worker allocating that much triggers them in its own thread, where they hold the GIL and
    freeze the screen all the same. So the collector is off while a read runs, and what it
    built is then frozen (gc.freeze()) out of the collector's reach: the model is acyclic
    (trees without parent links), reference counting frees it after a refresh.
    """
    import functools
    import gc

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        global _gc_readers
        with _gc_lock:
            _gc_readers += 1
            gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            with _gc_lock:
                _gc_readers -= 1
                if not _gc_readers:
                    gc.freeze()
                    gc.enable()
    return run


class Source:
    """The host the app shows (live `/`, a snapshot, or the demo) and the syscall seam.

    `syscalls` is handed to the core's load session unchanged; tests pass a fake. `sink` is
    where each load and unload is recorded (khotui.load.audit; None: the production log and
    syslog). On anything but the live host the app never loads: `dry_run` is True and `load()`
    only plans.
    """

    def __init__(self, root: Path | str = "/", *, demo: bool = False,
                 syscalls: Syscalls | None = None, label: str | None = None,
                 dry_run: bool | None = None, sink: AuditSink | None = None) -> None:
        self.root = Path(root)
        self.demo = demo
        self.syscalls = syscalls
        self.sink = sink
        from khotui.host.sysroot import Sysroot
        self.sysroot = Sysroot(self.root)
        self.live = self.sysroot.is_live and not demo
        if label:
            self.label = label
        elif demo:
            self.label = "demo snapshot"
        elif self.live:
            self.label = "live host"
        else:
            name = self.root.name
            if name == "sysroot" and self.root.parent.name:
                name = self.root.parent.name
            self.label = f"snapshot {name}"
        self._status: HostStatus | None = None
        self._status_lock = threading.RLock()
        self._cache: dict[str, object] = {}   # each key always holds one type (see cached)
        # Only the live host loads. Tests pass dry_run=False with a fake `syscalls` to drive
        # the load flow on a capture; nothing else may.
        if dry_run is False and syscalls is None and not self.live:
            raise KhotuiError("refusing to load into a snapshot with the real syscalls",
                              fix="pass a fake syscalls object, or use the live host")
        self._dry_run = (not self.live) if dry_run is None else dry_run
        self._hostname: str | None = None

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    def shown(self, path: str) -> str:
        """How to name a file to the operator: its host path when it lies in the snapshot."""
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return path
        return "/" + str(rel) if not self.live else path

    # -- identity ------------------------------------------------------------------------------

    def hostname(self) -> str:
        """The name the operator types to confirm a load."""
        if self._hostname is None:
            self._hostname = self._read_hostname()
        return self._hostname

    def _read_hostname(self) -> str:
        try:
            from khotui.host.system import read_system
            name = read_system(self.sysroot).hostname
        except (ImportError, KhotuiError):
            name = None
        if name:
            return name
        if self.live:
            return socket.gethostname()
        if self.demo:
            return "demo"
        name = self.root.name
        if name == "sysroot" and self.root.parent.name:
            name = self.root.parent.name
        return name or "snapshot"

    # -- the host state, read once per refresh -------------------------------------------------

    def status(self, *, refresh: bool = False) -> HostStatus:
        """`khotui.plan.host_status()` of this host, read once and shared by every screen (KHO
        state, decoded FDTs, iomem, kexec state, findings) until a refresh reads it again."""
        with self._status_lock:
            if refresh or self._status is None:
                from khotui.plan import host_status
                self._status = host_status(self.root)
                self._cache = {}
            return self._status

    def cached(self, key: str, read: Callable[[], T]) -> T:
        """Another read of the host kept until the next refresh (e.g. the node topology)."""
        self.status()
        with self._status_lock:
            if key not in self._cache:
                self._cache[key] = read()
            # a key is only ever filled by one reader, so its value has that reader's type
            return cast(T, self._cache[key])

    @_quiet_gc
    def warm(self) -> None:
        """Read ahead what the next screens ask for (the node topology: one listing of 6,000+
        entries per node on a 24 TiB host, 250 ms), so opening the memory map does not wait
        on it. Run from a worker once the Overview is shown; errors wait for the screen."""
        from khotui.tui.viewmodel import memory as m
        _guard(lambda: m._topology(self))

    # -- overview ------------------------------------------------------------------------------

    @_quiet_gc
    def overview(self) -> Overview:
        """Each panel is read on its own, so one unreadable source costs one panel."""
        from khotui.tui.viewmodel import overview as o
        return o.overview(self)

    def _system(self) -> SystemSummary:
        from khotui.host.system import read_system
        s = read_system(self.sysroot)
        return SystemSummary(mem_total=s.mem_total, mem_available=s.mem_available,
                             uptime=s.uptime, load=s.loadavg, cpus=s.cpu_count)

    def memory_events(self, cancelled: Callable[[], bool]) -> Iterator[str]:
        """Memory blocks coming and going (live host only): khotui.host.memory."""
        from khotui.host.memory import watch_memory_blocks
        return watch_memory_blocks(self.sysroot, cancelled)

    # -- memory map ----------------------------------------------------------------------------

    @_quiet_gc
    def memory(self, plan: Plan | None = None, *, refresh: bool = False) -> MemoryMap:
        from khotui.tui.viewmodel import memory as m
        if refresh:
            self.status(refresh=True)
        return m.memory_map(self, plan)

    @_quiet_gc
    def block_states(self) -> list[BlockRun] | Problem:
        """Each memory block's state, as runs: one file per block, so only on request."""
        from khotui.tui.viewmodel import memory as m
        return _guard(lambda: m.block_states(self))

    def search_iomem(self, query: str, limit: int) -> list[IomemLine] | Problem:
        """/proc/iomem ranges named like `query` or containing the hex address `query`
        (khotui.host.iomem.Iomem.find): 20,000 lines on a big host, so off the event loop."""
        from khotui.tui.viewmodel import memory as m
        return _guard(lambda: m.search_iomem(self, query, limit))

    # -- handover ------------------------------------------------------------------------------

    @_quiet_gc
    def handover(self, *, refresh: bool = False) -> Handover:
        from khotui.tui.viewmodel import handover as f
        if refresh:
            _guard(lambda: self.status(refresh=True))
        return f.handover(self)

    # -- prepare / plan / load -----------------------------------------------------------------

    @_quiet_gc
    def choices(self) -> Choices:
        from khotui.tui.viewmodel import load as l
        return l.choices(self)

    def cmdline_preview(self, current: str, new: str, kernel: str | None) -> CmdlinePreview:
        from khotui.tui.viewmodel import load as l
        return l.cmdline_preview(self, current, new, kernel)

    @_quiet_gc
    def plan(self, request: PlanInput) -> Plan:
        from khotui.tui.viewmodel import load as l
        return l.plan(self, request)

    def open_files(self, plan: Plan) -> tuple[LoadSession, list[tuple[str, str, int | None]]]:
        from khotui.tui.viewmodel import load as l
        return l.open_files(self, plan)

    def load(self, plan: Plan, files: LoadSession | None = None, *,
             force: bool = False) -> LoadResult:
        from khotui.tui.viewmodel import load as l
        return l.load(self, plan, files, force=force)

    def unload(self) -> LoadResult:
        from khotui.tui.viewmodel import load as l
        return l.unload(self)

    def unload_refusal(self) -> LoadResult | None:
        """Why an unload would be refused before it is confirmed (an unusable audit log), or
        None: the app asks this before its confirmation dialog, as `khotui unload` does."""
        from khotui.tui.viewmodel import load as l
        return l.unload_refusal(self)

    def typed_path(self, typed: str) -> Path:
        """A path typed in the file picker, read as the CLI reads --kernel (khotui.host.choose):
        on a snapshot, an absolute path the snapshot has is the snapshot's file (beneath the
        root), a directory the snapshot has is browsed there; else a file on this machine."""
        if self.live or not typed.startswith("/"):
            return Path(typed).expanduser()
        from khotui.host.choose import resolve_file
        if self.sysroot.is_dir(typed):
            return Path(self.sysroot.path(typed))
        try:
            return Path(resolve_file(self.sysroot, typed).path)
        except KhotuiError:
            return Path(typed)


# ---------------------------------------------------------------------------------------------
# Mappings from the core's objects


def cmdline_length(cmdline: str) -> int:
    """The kernel's count of a command line (NUL included): khotui.cmdline.cmdline_len."""
    from khotui.cmdline import cmdline_len
    return cmdline_len(cmdline)


def length_words(length: int, limit: int | None) -> str:
    """The words every surface uses for a command-line length (khotui.cmdline.length_text)."""
    from khotui.cmdline import length_text
    return length_text(length, limit)


def segment_rows(segments: list[Segment]) -> list[SegmentRow]:
    return [SegmentRow(name=s.name, mem=s.mem, memsz=s.memsz, bufsz=s.bufsz, region=s.region)
            for s in segments]
