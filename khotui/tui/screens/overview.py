"""Overview: is KHO on, where is scratch, what is loaded, and what would stop a load."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from khotui.tui import fmt
from khotui.tui.messages import UnloadRequested
from khotui.tui.screens.base import KhotuiScreen
from khotui.tui.viewmodel import (
    KexecSummary,
    KhoSummary,
    LuoSummary,
    Overview,
    Problem,
    ScratchRegion,
    SystemSummary,
)
from khotui.tui.widgets.findings import findings_content, summary_content
from khotui.tui.widgets.panel import Panel, problem_content


class OverviewLoaded(Message):
    def __init__(self, overview: Overview) -> None:
        super().__init__()
        self.overview = overview


class MemoryChanged(Message):
    """A memory block came or went (pyudev, live host only)."""


class ScratchPanel(Vertical):
    """The scratch regions: a bordered box whose heading (a summary when there are many, and
    the column names) stays put while the regions scroll under it, so the box fits on the first
    80x24 screen with the verdict and the KHO state above it, however many nodes the host has."""

    def __init__(self, title: str, *, id: str) -> None:
        super().__init__(id=id)
        self.border_title = title

    def compose(self) -> ComposeResult:
        yield Static(Content.from_markup("[dim]reading…[/]"), id="scratch-head")
        with VerticalScroll(id="scratch-list"):
            yield Static(id="scratch-rows")

    def show(self, rows: list[ScratchRegion] | Problem) -> None:
        head, body = scratch_content(rows)
        self.set_class(isinstance(head, Problem), "-problem")
        self.query_one("#scratch-head", Static).update(
            problem_content(head) if isinstance(head, Problem) else head)
        self.query_one("#scratch-rows", Static).update(body)
        self.query_one("#scratch-list").display = bool(body)


class OverviewScreen(KhotuiScreen):
    MODE = "overview"
    HOLD = 1.0    # the first frame the operator sees is the complete one
    HELP = """\
## Overview

The state of this host as the next kexec would see it: whether **KHO** is on and which ABI it
speaks, the **scratch regions** the kernel will place the new kernel in, the **kexec** state
(loaded image, load limit, lockdown), the running kernel, and the **pre-flight findings** with
the fix for each warning or failure.

Press **r** to read the host again; on a live host the screen also refreshes when memory blocks
come or go. **u** unloads a loaded kexec image after a confirmation. Go to **4 Prepare** to
choose the kernel to load.
"""

    BINDINGS = [
        Binding("r", "refresh", "Refresh", id="overview-refresh"),
        Binding("u", "unload", "Unload", id="overview-unload"),
        Binding("p", "app.goto('prepare')", "Prepare", id="overview-prepare"),
    ]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="overview-body", can_focus=True):
            yield Static(Content.from_markup("[dim]reading the host state…[/]"), id="verdict")
            # the first 80x24 screen holds the verdict, the KHO state and every scratch region
            # (with many nodes: a summary line and a scrolling list of its own)
            yield Panel("KHO", id="kho")
            yield ScratchPanel("Scratch regions (kho_scratch[], tried in this order)", id="scratch")
            with Grid(id="cards"):
                # below the scratch box: the first 80x24 screen keeps the verdict and scratch
                yield Panel("Live update", id="luo")
                yield Panel("kexec", id="kexec")
                yield Panel("Running kernel", id="boot")
                yield Panel("System", id="system")
            yield Panel("Pre-flight findings", id="findings")

    def on_mount(self) -> None:
        self.query_one("#overview-body").focus()
        self.refresh_overview()
        if self.khotui.source.live:
            self.watch_memory()

    def action_refresh(self) -> None:
        self.query_one("#verdict", Static).update(Content.from_markup("[dim]reading the host state…[/]"))
        self.refresh_overview()

    def _nothing_loaded(self) -> bool:
        """The host says no kexec image is loaded (/sys/kernel/kexec_loaded is 0)."""
        ov = getattr(self, "overview", None)
        kexec = None if ov is None else ov.kexec
        return isinstance(kexec, KexecSummary) and kexec.loaded is False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Unload is offered only when there is an image to unload: hidden from the key bar
        # otherwise (action_unload says why if it is reached another way)
        return not (action == "unload" and self._nothing_loaded())

    def action_unload(self) -> None:
        if self._nothing_loaded():
            self.notify("no kexec image is loaded (/sys/kernel/kexec_loaded is 0): nothing to "
                        "unload", severity="warning")
            return
        self.post_message(UnloadRequested())

    @work(thread=True, exclusive=True, group="overview", exit_on_error=False)
    def refresh_overview(self) -> None:
        self.post_message(OverviewLoaded(self.khotui.source.overview()))

    @work(thread=True, exclusive=True, group="udev", exit_on_error=False)
    def watch_memory(self) -> None:
        from textual.worker import get_current_worker
        worker = get_current_worker()
        source = self.khotui.source
        for _ in source.memory_events(lambda: worker.is_cancelled):
            self.post_message(MemoryChanged())

    @on(MemoryChanged)
    def _memory_changed(self) -> None:
        self.notify("memory blocks changed: reading the host again", timeout=3)
        self.refresh_overview()

    @on(OverviewLoaded)
    def _loaded(self, event: OverviewLoaded) -> None:
        ov = event.overview
        self.call_after_refresh(self.release_paint)
        # once this frame is out, not competing with it
        self.set_timer(0.3, self.khotui.warm_up)
        self.overview = ov
        self.refresh_bindings()   # Unload depends on whether an image is loaded
        verdict = self.query_one("#verdict", Static)
        if isinstance(ov.findings, list):
            verdict.update(Content.from_markup("[b]$h[/]  ", h=ov.hostname) + summary_content(ov.findings))
        else:
            verdict.update(Content.from_markup("[b]$h[/]  [$error]the host state could not be read[/]",
                                               h=ov.hostname))
        self.query_one("#kho", Panel).show(kho_content(ov.kho))
        self.query_one("#kexec", Panel).show(kexec_content(ov.kexec))
        self.query_one("#luo", Panel).show(luo_content(ov.luo))
        self.query_one("#boot", Panel).show(boot_content(ov))
        self.query_one("#system", Panel).show(system_content(ov.system))
        self.query_one("#scratch", ScratchPanel).show(ov.scratch)
        findings = ov.findings
        self.query_one("#findings", Panel).show(findings if isinstance(findings, Problem)
                                                else findings_content(findings))


def kho_content(kho: KhoSummary | Problem | None) -> Content | Problem:
    if kho is None:
        return Problem("not reported")
    if isinstance(kho, Problem):
        return kho
    if not kho.enabled:
        text = Content.from_markup("[b $warning]KHO off[/]\n$m", m=kho.off_message or "no kho/ in debugfs")
        if kho.fix:
            text += Content.from_markup("\n[$secondary]fix →[/] $f", f=kho.fix)
        return text
    if kho.scratch_unknown:
        text = Content.from_markup("[b $success]KHO on[/], [b $error]scratch regions unknown[/]\n$m",
                                   m=kho.scratch_unknown)
        if kho.scratch_fix:
            text += Content.from_markup("\n[$secondary]fix →[/] $f", f=kho.scratch_fix)
        return text
    rows: list[tuple[str, str | Content]] = [
        ("state", Content.from_markup("[b $success]on[/]")),
        ("ABI", kho.abi or "unknown (outgoing FDT unreadable)"),
    ]
    if kho.layout:
        rows.append(("debugfs layout", kho.layout))
    if kho.finalized is not None:
        rows.append(("finalize", "1 (finalized)" if kho.finalized else "0 (not finalized)"))
    rows.append(("booted via KHO", receipt_row(kho)))
    text = fmt.kv(rows, 15)
    for note in kho.notes:
        text += Content.from_markup("\n[$warning]![/] $n", n=note)
    return text


def receipt_row(kho: KhoSummary) -> str | Content:
    """The "booted via KHO" row, with `khotui verify`'s verdict when a receipt is here: the
    same one line, so the first 80x24 screen keeps the scratch regions and the verdict."""
    if kho.receipt_ok is None or not kho.kho_booted:
        return fmt.yesno(kho.kho_booted, "yes (kho/in present)", "no")
    if kho.receipt_ok:
        return Content.from_markup("yes, [b $success]receipt verified[/]")
    failed = ", ".join(kho.receipt_failed)
    if len(failed) > 28:
        failed = f"{kho.receipt_failed[0]} +{len(kho.receipt_failed) - 1}"
    return Content.from_markup("yes, [b $error]NOT verified[/]: $f (khotui verify)", f=failed)


def luo_content(luo: LuoSummary | Problem | None) -> Content | Problem:
    """One or two lines: on/off, who holds /dev/liveupdate, the sessions, the numbers."""
    if luo is None:
        return Problem("not reported")
    if isinstance(luo, Problem):
        return luo
    if luo.enabled is False:
        text = Content.from_markup("[dim]off:[/] $m", m=luo.off_message or "LUO is off")
        if luo.incoming_number is not None:
            # luo_early_startup() restores it whenever KHO is on; without liveupdate=on there
            # is no /dev/liveupdate to retrieve the sessions from
            text += Content.from_markup("\n[$warning]![/] live update #$n arrived, with no "
                                        "/dev/liveupdate to retrieve it", n=str(luo.incoming_number))
        return text
    state = ("[b $success]on[/]" if luo.enabled
             else "[b $warning]unknown[/]")
    holder = (Content.from_markup("/dev/liveupdate held by $h", h=luo.holder) if luo.holder
              else Content.from_markup("[$warning]/dev/liveupdate held by nothing[/]"))
    count = len(luo.sessions)
    names = ", ".join(luo.sessions[:3]) + (f", +{count - 3}" if count > 3 else "")
    text = (Content.from_markup(state + " · ") + holder
            + Content.from_markup(" · $n session$s", n=str(count), s="" if count == 1 else "s"))
    if count:
        text += Content.from_markup(": $names", names=names)
    numbers = []
    if luo.outgoing_number is not None:
        numbers.append(f"next live update #{luo.outgoing_number}")
    if luo.incoming_number is not None:
        numbers.append(f"arrived as #{luo.incoming_number}")
    if luo.enabled is None and luo.off_message:
        text += Content.from_markup("\n[$warning]![/] $m", m=luo.off_message)
    elif numbers or luo.note:
        text += Content.from_markup("\n$l", l=" · ".join(numbers))
        if luo.note:
            text += Content.from_markup("$sep[$warning]![/] $m", sep=" · " if numbers else "",
                                        m=luo.note)
    return text


def kexec_content(k: KexecSummary | Problem | None) -> Content | Problem:
    if k is None:
        return Problem("not reported")
    if isinstance(k, Problem):
        return k
    limit = k.load_limit_reboot
    rows: list[tuple[str, str | Content]] = [
        ("image loaded", Content.from_markup("[b $warning]yes[/]") if k.loaded else fmt.yesno(k.loaded)),
        ("crash loaded", fmt.yesno(k.crash_loaded)),
        ("crash size", fmt.size(k.crash_size) if k.crash_size else "0"),
        ("load limit", "unlimited (-1)" if limit == -1 else fmt.yesno(None) if limit is None else str(limit)),
        ("load disabled", fmt.yesno(k.load_disabled, "yes (kexec_load_disabled=1)", "no")),
        ("lockdown", k.lockdown or "no lockdown LSM"),
    ]
    return fmt.kv(rows, 15)


def boot_content(ov: Overview) -> Content | Problem:
    if ov.boot_problem is not None:
        return ov.boot_problem
    rows: list[tuple[str, str | Content]] = [
        ("release", ov.release or "unknown"),
        ("arch", ov.arch or "unknown"),
        ("cmdline", ov.cmdline if ov.cmdline is not None else "unknown"),
    ]
    return fmt.kv(rows, 9)


def system_content(s: SystemSummary | Problem | None) -> Content | Problem:
    if s is None:
        return Problem("not reported")
    if isinstance(s, Problem):
        return s
    rows: list[tuple[str, str | Content]] = [
        ("memory", f"{fmt.size(s.mem_total)} total, {fmt.size(s.mem_available)} available"),
    ]
    if s.uptime is not None:
        rows.append(("uptime", fmt.duration(s.uptime)))
    if s.load is not None:
        rows.append(("load", " ".join(f"{x:.2f}" for x in s.load)))
    if s.cpus:
        rows.append(("cpus", str(s.cpus)))
    if s.uptime is None and s.load is None:
        rows.append(("", Content.from_markup("[dim]snapshot: no uptime or load[/]")))
    return fmt.kv(rows, 8)


# more regions than this: a summary line above the list (the list scrolls inside its box)
SCRATCH_SUMMARY_AT = 6


def scratch_content(rows: list[ScratchRegion] | Problem) -> tuple[Content | Problem, Content]:
    """(the heading that stays put, the region lines that scroll)."""
    if isinstance(rows, Problem):
        return rows, Content()
    if not rows:
        return Content.from_markup("[dim]no scratch regions (KHO off): the kernel walks System RAM[/]"), \
            Content()
    head = Content.from_markup(
        "[b]$h[/]", h=f"{'#':>2} {'kind':<8} {'node':>4} {'address':>14} {'end':>14} {'size':>9}")
    heading = [head]
    lines: list[Content] = []
    if len(rows) > SCRATCH_SUMMARY_AT:
        nodes = sorted({r.node for r in rows if r.node is not None})
        span = f", nodes {nodes[0]}–{nodes[-1]}" if nodes else ""
        empty = sum(1 for r in rows if not r.size)
        heading.insert(0, Content.from_markup(
            "[b]$n regions[/], $t in all$s$e  [dim](scroll for all)[/]", n=str(len(rows)),
            t=fmt.size(sum(r.size for r in rows)), s=span, e=f", {empty} empty" if empty else ""))
    for r in rows:
        node = "" if r.node is None else str(r.node)
        end = "—" if not r.size else fmt.addr(r.addr + r.size - 1)
        line = Content.from_markup(
            "[$secondary]$l[/]",
            l=f"{r.index:>2} {r.kind:<8} {node:>4} {fmt.addr(r.addr):>14} {end:>14} {fmt.size(r.size):>9}")
        if not r.size:
            line += Content.from_markup("  [$warning]empty[/]")
        lines.append(line)
    return Content("\n").join(heading), Content("\n").join(lines)
