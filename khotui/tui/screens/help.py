"""F1 / ?: the help of the screen the operator was on, and every key it answers to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Markdown, Static

from khotui.tui.screens.base import KhotuiScreen

GENERAL = """\
**Everywhere:** 1–5 switch screens, ctrl+p opens the command palette (every action is there),
tab moves between panes, q quits. Nothing is loaded without the confirmation on Plan.
"""


def bindings_of(screen: Screen[Any]) -> list[tuple[str, str, str]]:
    """(keys, description, id) for every binding active on `screen`, focused widget included;
    aliases of one action (f1 and ?) share a row. khotui's own (they carry an id) first; the
    focused widget's generic Textual keys (scrolling, ...) after, with an empty id."""
    rows: dict[tuple[str, str], list[str]] = {}
    ids: dict[tuple[str, str], str] = {}
    for key, active in screen.active_bindings.items():
        b = active.binding
        sig = (b.description or b.action, b.action)
        shown = screen.app.get_key_display(Binding(key, b.action, b.description))
        rows.setdefault(sig, [])
        if shown not in rows[sig]:
            rows[sig].append(shown)
        ids[sig] = b.id or b.action
    own = {b.id for b in _declared(screen)}
    out = [(", ".join(keys), sig[0], ids[sig] if ids[sig] in own else "") for sig, keys in rows.items()]
    return sorted(out, key=lambda r: not r[2])


def keys_table(rows: list[tuple[str, str, str]], width: int) -> Content:
    """The key table in `width` cells: columns as wide as their longest entry, so at 80
    columns a row stays one line (a fixed 44-cell description column wrapped every id onto a
    line of its own, doubling the list). Textual's own keys for the focused widget come under
    a heading of their own, not as khotui's."""
    own = [r for r in rows if r[2]]
    generic = [r for r in rows if not r[2]]
    kw = min(max((len(k) for k, _, _ in rows), default=3), 16)
    iw = max((len(i) for _, _, i in own), default=2)
    dw = max(min(max((len(d) for _, d, _ in rows), default=4), width - kw - iw - 2), 12)
    lines = [Content.from_markup("[b]$h[/]", h=f"{'key':<{kw}} {'what it does':<{dw}} id")]
    for keys, desc, bid in own:
        lines.append(Content.from_markup("[b $secondary]$k[/] $d [dim]$i[/]",
                                         k=f"{keys:<{kw}}", d=f"{desc:<{dw}}", i=bid))
    if generic:
        lines.append(Content.from_markup("\n[b]$h[/]", h="Textual's keys for the focused pane"))
        for keys, desc, _ in generic:
            lines.append(Content.from_markup("[$secondary]$k[/] $d", k=f"{keys:<{kw}}", d=desc))
    return Content("\n").join(lines)


def _declared(screen: Screen[Any]) -> Iterator[Binding]:
    nodes: list[DOMNode] = [screen, screen.app]
    if screen.focused is not None:
        nodes.append(screen.focused)
    for node in nodes:
        for b in node.BINDINGS:
            if isinstance(b, Binding) and b.id:
                yield b


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 90%; max-width: 100; height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    HelpScreen Markdown { margin: 0; padding: 0; }
    HelpScreen #keys { height: auto; margin-top: 1; }
    """
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close", id="help-close")]

    def __init__(self, for_screen: Screen[Any]) -> None:
        super().__init__()
        self.for_screen = for_screen
        self.rows = bindings_of(for_screen)

    def compose(self) -> ComposeResult:
        screen = self.for_screen
        title = (screen.MODE if isinstance(screen, KhotuiScreen) else "") or type(screen).__name__
        with Vertical() as v:
            v.border_title = f"Help: {title} — esc closes"
            with VerticalScroll(can_focus=True, id="help-body"):
                yield Markdown(screen.HELP or "")
                yield Markdown(GENERAL)
                # the dialog's inner width: 90% of the screen (at most 100), less the border,
                # padding and scrollbar
                inner = min(100, self.app.size.width * 9 // 10) - 6
                yield Static(keys_table(self.rows, inner), id="keys")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
