"""Plan: the predicted segments drawn on the scratch regions, the verdict, every failing check."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import DataTable, Static

from khotui.tui import fmt
from khotui.tui.screens.base import KhotuiScreen
from khotui.tui.viewmodel import MemRange, Plan, Source, cmdline_length, length_words
from khotui.tui.widgets.findings import findings_content
from khotui.tui.widgets.memory_bands import MemoryBands
from khotui.tui.widgets.panel import Panel


class PlanScreen(KhotuiScreen):
    MODE = "plan"
    HOLD = 0.0    # held below only while a plan is being made
    # styled by plan.tcss, which the app loads (KhotuiApp.CSS_PATH)
    HELP = """\
## Plan

The dry run of the load chosen on **4 Prepare**: where the kernel will place each segment
(name, address, size, region), drawn on the scratch regions, the verdict in one line, and every
failing or warning check with its fix. Nothing has been loaded: **dry run is the default state
of the app**.

**l** opens the confirmation, which shows exactly what would be loaded (paths, sha256,
command line) and asks you to type the host name. On a snapshot or the demo, the load is a dry
run only and says so. **4** goes back to change the choice.
"""
    BINDINGS = [
        Binding("l", "app.confirm_load", "Load…", id="plan-load"),
        Binding("4", "app.goto('prepare')", "Change", id="plan-change", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="plan-body", can_focus=True):
            yield Static(Content.from_markup(
                "[dim]nothing planned yet: choose a kernel on [b]4 Prepare[/b] and press [b]p[/b][/]"),
                id="plan-verdict")
            yield DataTable(id="segments", cursor_type="row", show_cursor=False)
            yield MemoryBands(id="plan-bands", layers=("scratch", "plan"))
            yield Panel("Checks that fail or warn", id="plan-findings")
            yield Panel("Assumptions and notes", id="plan-notes")

    def on_mount(self) -> None:
        self.query_one("#segments").display = False
        self.query_one("#plan-bands").display = False
        self.query_one("#plan-findings").display = False
        self.query_one("#plan-notes").display = False
        self.query_one("#plan-body").focus()
        plan = self.khotui.plan
        if plan is not None:
            self.show_plan(plan)
        elif self.khotui.plan_input is not None:
            self.hold_paint(0.3)   # planning: one frame with the plan, not 'planning…' first
            self.query_one("#plan-verdict", Static).update(Content.from_markup("[dim]planning…[/]"))

    def show_plan(self, plan: Plan) -> None:
        self.call_after_refresh(self.release_paint)
        verdict = self.query_one("#plan-verdict", Static)
        style = "$success" if plan.would_succeed else "$error"
        sign = "✓" if plan.would_succeed else "✗"
        text = (Content.from_markup(f"[b {style}]$s $v[/]", s=sign, v=plan.verdict)
                + Content.from_markup("\n[dim]$k[/]", k=_request_line(self.khotui.source, plan)))
        if plan.exactness:
            style = "$success" if plan.exactness.startswith("exact") else "$warning"
            text += Content.from_markup(f"\n[{style}]prediction: $e[/]", e=plan.exactness)
        verdict.update(text)
        notes = self.query_one("#plan-notes", Panel)
        notes.show(Content("\n").join(
            [Content.from_markup("[b $warning]assumed[/] $a", a=a) for a in plan.assumptions]
            + [Content.from_markup("[dim]note[/] $n", n=n) for n in plan.notes]))
        notes.display = bool(plan.notes or plan.assumptions)
        table = self.query_one("#segments", DataTable)
        table.clear(columns=True)
        table.add_columns("#", "segment", "mem", "end", "memsz", "bufsz", "region")
        for i, s in enumerate(plan.segments):
            table.add_row(str(i), s.name, fmt.addr(s.mem) if s.mem is not None else
                          Text("✗ fits nowhere", style="bold"),
                          fmt.addr(s.mem + s.memsz - 1) if s.mem is not None else "",
                          fmt.size(s.memsz), f"0x{s.bufsz:x}", s.region or "—")
        table.display = bool(plan.segments)
        bands = self.query_one("#plan-bands", MemoryBands)
        regions = [r for r in plan.regions if r.size]
        ranges = [MemRange(r.addr, r.addr + r.size - 1, "scratch", r.label)
                  for r in regions]
        ranges += [MemRange(s.mem, s.mem + s.memsz - 1, "segment", s.name)
                   for s in plan.segments if s.mem is not None]
        bands.set_data([(r.label, r.addr, r.addr + r.size - 1) for r in regions],
                       ranges)
        bands.display = bool(regions)
        findings = self.query_one("#plan-findings", Panel)
        findings.show(findings_content(plan.findings, only_problems=True))
        findings.display = True


def _request_line(source: Source, plan: Plan) -> str:
    r = plan.request
    initrd = source.shown(r.initrd) if r.initrd else "none"
    # the kernel's count (cmdline_len(), NUL included): the number Prepare shows for this line
    return (f"kernel {source.shown(r.kernel)} · initrd {initrd} · cmdline "
            f"{length_words(cmdline_length(r.cmdline), None)}")
