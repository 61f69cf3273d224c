"""Prepare load: pick the kernel and initrd, edit the next command line with a live diff."""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import DataTable, Static, TextArea

from khotui.tui import fmt
from khotui.tui.messages import PlanRequested
from khotui.tui.screens.base import KhotuiScreen
from khotui.tui.viewmodel import (
    Choices,
    CmdlinePreview,
    KernelChoice,
    PlanInput,
    Problem,
    length_words,
)
from khotui.tui.widgets.inputs import OrderedTextArea
from khotui.tui.widgets.panel import problem_content


class ChoicesLoaded(Message):
    def __init__(self, choices: Choices) -> None:
        super().__init__()
        self.choices = choices


class PreviewReady(Message):
    def __init__(self, preview: CmdlinePreview | Problem) -> None:
        super().__init__()
        self.preview = preview


class CmdlineEditor(OrderedTextArea):
    """The next kernel's command line. While it is being edited the key bar says how to
    finish (esc), which is the screen's own escape (back to the kernel list), shown here."""

    BINDINGS = [Binding("escape", "screen.focus_table", "Done editing", id="cmdline-done")]


class PrepareScreen(KhotuiScreen):
    MODE = "prepare"
    # styled by prepare.tcss, which the app loads (KhotuiApp.CSS_PATH)
    HELP = """\
## Prepare load

Choose what to load. The table lists the host's installed kernels (`/boot`) and Boot Loader
Specification entries with version, size, date and which one is **running**; **enter** picks
the kernel and its initrd. **o** opens a file picker for any kernel, **i** for any initrd,
**x** loads without an initrd.

The **command line** starts from the running one without `BOOT_IMAGE=` and `initrd=` (they
belong to this boot). Edit it (**e**); the diff below shows what was removed, dropped as
boot-only, added, and which keys are given twice, its length against the image's limit, and a
warning when `kho=on` is missing (the new kernel would ignore the handover).

**p** plans the load (a dry run: nothing is loaded) and opens **5 Plan**.
"""
    BINDINGS = [
        Binding("p", "plan", "Plan (dry run)", id="prepare-plan"),
        Binding("o", "browse", "Kernel file…", id="prepare-browse-kernel"),
        Binding("i", "browse_initrd", "Initrd file…", id="prepare-browse-initrd"),
        Binding("x", "no_initrd", "No initrd", id="prepare-no-initrd", show=False),
        Binding("e", "edit_cmdline", "Edit cmdline", id="prepare-edit"),
        Binding("ctrl+r", "reset_cmdline", "Reset cmdline", id="prepare-reset", show=False),
        Binding("escape", "focus_table", "Kernels", id="prepare-focus-table", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="prepare-body"):
            yield Static("Kernels — enter picks one; o: any file", classes="pane-title")
            yield DataTable(id="kernels", cursor_type="row")
            yield Static("", id="selection")
            yield Static("Next command line — e edits, ctrl+r resets", classes="pane-title")
            # CmdlineEditor is an OrderedTextArea: keys batched by a slow link keep their order
            yield CmdlineEditor("", id="cmdline", soft_wrap=True, show_line_numbers=False)
            yield Static("", id="cmdline-diff")
            with Horizontal(id="prepare-actions"):
                yield Static(Content.from_markup(
                    "[b $secondary]p[/] plan this load (dry run, nothing is loaded)"), id="plan-hint")

    def on_mount(self) -> None:
        self.choices: Choices | None = None
        self.kernel: str | None = None
        self.initrd: str | None = None
        self.query_one("#kernels", DataTable).focus()
        self.load_choices()

    @work(thread=True, exclusive=True, group="choices", exit_on_error=False)
    def load_choices(self) -> None:
        self.post_message(ChoicesLoaded(self.khotui.source.choices()))

    @on(ChoicesLoaded)
    def _choices(self, event: ChoicesLoaded) -> None:
        ch = self.choices = event.choices
        self.call_after_refresh(self.release_paint)
        table = self.query_one("#kernels", DataTable)
        table.clear(columns=True)
        if isinstance(ch.kernels, Problem):
            table.add_column("kernels")
            table.add_row(problem_content(ch.kernels))
        elif not ch.kernels:
            table.add_column("kernels")
            table.add_row("no kernels in /boot or loader entries: press o to pick a file")
        else:
            table.add_columns("now", "version", "size", "date", "initrd", "from")
            for i, k in enumerate(ch.kernels):
                table.add_row(Content.from_markup("[b $success]●[/]") if k.running else "",
                              k.version or "?", fmt.size(k.size),
                              time.strftime("%Y-%m-%d", time.localtime(k.mtime)) if k.mtime else "?",
                              _short(k.initrd) if k.initrd else "none", k.source, key=str(i))
        app = self.khotui
        previous = app.plan_input
        ta = self.query_one("#cmdline", TextArea)
        ta.text = previous.cmdline if previous else ch.suggested_cmdline
        if previous:
            self.kernel, self.initrd = previous.kernel, previous.initrd
        elif isinstance(ch.kernels, list) and ch.kernels:
            pick = next((k for k in ch.kernels if k.running), ch.kernels[0])
            self._pick(pick)
        self._show_selection()

    def _pick(self, k: KernelChoice) -> None:
        self.kernel = k.path
        self.initrd = k.initrd
        self._show_selection()
        self._preview()

    @on(DataTable.RowSelected, "#kernels")
    def _row(self, event: DataTable.RowSelected) -> None:
        ch = self.choices
        if ch is None or isinstance(ch.kernels, Problem) or event.row_key.value is None:
            return
        try:
            self._pick(ch.kernels[int(event.row_key.value)])
        except (ValueError, IndexError):
            return
        self.notify(f"kernel {self.kernel}", timeout=2)

    def _show_selection(self) -> None:
        shown = self.khotui.source.shown
        none_chosen = Content.from_markup("[$warning]none chosen[/]")
        rows = [("kernel", shown(self.kernel) if self.kernel else none_chosen),
                ("initrd", shown(self.initrd) if self.initrd else "none (KEXEC_FILE_NO_INITRAMFS)")]
        self.query_one("#selection", Static).update(fmt.kv(rows, 8))

    # -- files ---------------------------------------------------------------------------------

    def action_browse(self) -> None:
        self._browse("kernel")

    def action_browse_initrd(self) -> None:
        self._browse("initrd")

    def _browse(self, what: str) -> None:
        from khotui.tui.screens.filepicker import FilePicker
        start = self.choices.browse_root if self.choices else "/"

        def picked(path: str | None) -> None:
            if not path:
                return
            if what == "kernel":
                self.kernel = path
            else:
                self.initrd = path
            self._show_selection()
            self._preview()

        self.app.push_screen(FilePicker(start, f"Pick the {what}"), picked)

    def action_no_initrd(self) -> None:
        self.initrd = None
        self._show_selection()

    # -- command line --------------------------------------------------------------------------

    def action_edit_cmdline(self) -> None:
        ta = self.query_one("#cmdline", TextArea)
        ta.focus()
        ta.move_cursor(ta.document.end)   # most edits append a token

    def action_focus_table(self) -> None:
        self.query_one("#kernels", DataTable).focus()

    def action_reset_cmdline(self) -> None:
        if self.choices:
            self.query_one("#cmdline", TextArea).text = self.choices.suggested_cmdline

    @on(TextArea.Changed, "#cmdline")
    def _changed(self) -> None:
        self._preview()

    def _preview(self) -> None:
        if self.choices is None:
            return
        self.compute_preview(self.choices.current_cmdline, self.cmdline, self.kernel)

    @property
    def cmdline(self) -> str:
        # the kernel's command line is one line; a newline typed in the editor is a space
        return " ".join(self.query_one("#cmdline", TextArea).text.split("\n")).strip()

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def compute_preview(self, current: str, new: str, kernel: str | None) -> None:
        source = self.khotui.source
        from khotui.tui.viewmodel import _guard
        self.post_message(PreviewReady(_guard(lambda: source.cmdline_preview(current, new, kernel))))

    @on(PreviewReady)
    def _preview_ready(self, event: PreviewReady) -> None:
        out = self.query_one("#cmdline-diff", Static)
        p = event.preview
        out.update(problem_content(p) if isinstance(p, Problem) else diff_content(p))

    # -- plan ----------------------------------------------------------------------------------

    def action_plan(self) -> None:
        if not self.kernel:
            self.notify("choose a kernel first (enter on a row, or o for any file)", severity="warning")
            return
        self.post_message(PlanRequested(PlanInput(self.kernel, self.initrd, self.cmdline)))


def _short(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def diff_content(p: CmdlinePreview) -> Content:
    lines: list[Content] = []

    def tokens(label: str, style: str, items: list[str], sign: str) -> None:
        if items:
            lines.append(Content.from_markup(f"[{style}]$l[/] ", l=f"{sign} {label:<10}")
                         + Content(" ".join(items)))

    tokens("added", "b $success", p.added, "+")
    tokens("removed", "b $error", p.removed, "-")
    tokens("boot-only", "$foreground 60%", p.boot_only_removed, "-")
    if p.duplicates:
        lines.append(Content.from_markup("[b $warning]! duplicate [/] $d [dim](the last one wins)[/]",
                                         d=" ".join(p.duplicates)))
    if not (p.added or p.removed or p.boot_only_removed or p.duplicates):
        lines.append(Content.from_markup("[dim]= the running command line, unchanged[/]"))
    # the same count and words as the plan's cmdline-length check (khotui.cmdline.length_text)
    if p.limit:
        style = "$error" if p.length > p.limit else "$success"
        lines.append(Content.from_markup(f"[{style}]$t[/]", t=f"  length {length_words(p.length, p.limit)}"))
    else:
        lines.append(Content.from_markup(
            "[dim]$t[/]", t=f"  length {length_words(p.length, None)}; image limit unknown"))
    for w in p.warnings:
        lines.append(Content.from_markup("[b $warning]! $w[/]", w=w))
    return Content("\n").join(lines)
