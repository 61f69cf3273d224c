"""What every top-level screen shares: the navigation bar, the footer, help text, breakpoints."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from khotui.tui.widgets.navbar import NavBar


class KhotuiScreen(Screen):
    """A top-level screen (one per app mode). Subclasses define MODE, HELP and compose_body()."""

    MODE = ""
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    def __init__(self) -> None:
        super().__init__()
        # A new screen counts as stale CSS, and Textual answers its first show with a full
        # reparse (a fresh Stylesheet, nothing cached) and a restyle of every node of every
        # screen. All of khotui's CSS came with the app, so this screen is as current as the app.
        self._css_update_count = self.app._css_update_count

    def compose(self) -> ComposeResult:
        source = self.app.source  # type: ignore[attr-defined]
        yield NavBar(self.MODE, source.label, dry_run=source.dry_run)
        yield from self.compose_body()
        yield Footer(compact=True)

    def compose_body(self) -> ComposeResult:
        yield from ()

