"""After a load or unload: what happened, actual vs predicted placement, what to do next."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from khotui.tui import fmt
from khotui.tui.viewmodel import LoadResult, SegmentDiffRow


class ResultScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    ResultScreen { align: center middle; }
    ResultScreen > Vertical { width: 94%; max-width: 110; height: auto; max-height: 96%;
                              background: $surface; padding: 0 1; border: thick $success; }
    ResultScreen.-failed > Vertical { border: thick $error; }
    ResultScreen VerticalScroll { height: auto; max-height: 20; }
    """
    BINDINGS = [Binding("escape,enter,q", "close", "Close", id="result-close")]

    def __init__(self, result: LoadResult) -> None:
        super().__init__()
        self.result = result
        if not result.ok:
            self.add_class("-failed")

    def compose(self) -> ComposeResult:
        r = self.result
        with Vertical() as v:
            dry = " — DRY RUN" if r.dry_run and "dry run" not in r.title.lower() else ""
            v.border_title = r.title + dry + " — enter closes"
            with VerticalScroll(can_focus=True, id="result-body"):
                yield Static(result_content(r), id="result-text")

    def on_mount(self) -> None:
        self.query_one("#result-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)


def result_content(r: LoadResult) -> Content:
    style = "$success" if r.ok else "$error"
    lines = [Content.from_markup(f"[b {style}]$s $m[/]", s="✓" if r.ok else "✗", m=r.message)]
    if r.cause:
        lines.append(Content.from_markup("[$secondary]cause →[/] $c", c=r.cause))
    if r.fix:
        lines.append(Content.from_markup("[$secondary]fix →[/] $f", f=r.fix))
    if r.diffs:
        lines.append(Content(""))
        lines.append(Content.from_markup("[b]$h[/]", h=f"{'segment':<14} {'predicted':>14} "
                                         f"{'actual':>14} {'memsz':>9}  kernel vs preview"))
        lines += [_diff_row(d) for d in r.diffs]
    elif r.predicted:
        lines.append(Content(""))
        lines.append(Content.from_markup("[b]$h[/]", h=f"{'segment':<14} {'predicted':>14} "
                                         f"{'memsz':>9}  region"))
        lines += [Content(f"{p.name:<14} {fmt.addr(p.mem):>14} {fmt.size(p.memsz):>9}  "
                          f"{p.region or '—'}") for p in r.predicted]
    if r.next_steps:
        lines.append(Content(""))
    for step in r.next_steps:
        lines.append(Content.from_markup("[b $secondary]→[/] $s", s=step))
    return Content("\n").join(lines)


def _diff_row(d: SegmentDiffRow) -> Content:
    size = d.actual_memsz if d.predicted_memsz == 0 and d.actual_memsz else d.predicted_memsz
    row = Content(f"{d.name:<14} {fmt.addr(d.predicted_mem):>14} {fmt.addr(d.actual_mem):>14} "
                  f"{fmt.size(size):>9}  ")
    if d.same:
        return row + Content.from_markup("[$success]✓ same[/]")
    if d.actual_mem is None:
        return row + Content.from_markup("[$warning]! not in the kernel log[/]")
    return row + Content.from_markup("[b $warning]! DIFFERS[/]")
