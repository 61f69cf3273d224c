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
    aliases of one action (f1 and ?) share a row."""
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
    out = [(", ".join(keys), sig[0], ids[sig]) for sig, keys in rows.items()]
    # khotui's own bindings (they all carry an id) first; the focused widget's generic keys after
    own = {b.id for b in _declared(screen)}
    return sorted(out, key=lambda r: r[2] not in own)


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
                lines = [Content.from_markup("[b]$h[/]", h=f"{'key':<16} {'what it does':<44} id")]
                for keys, desc, bid in self.rows:
                    lines.append(Content.from_markup("[b $secondary]$k[/] $d [dim]$i[/]",
                                                     k=f"{keys:<16}", d=f"{desc:<44}", i=bid))
                yield Static(Content("\n").join(lines), id="keys")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
