"""What every top-level screen shares: the navigation bar, the key bar, help text, breakpoints,
and one paint per screen's data (the output hold, khotui/tui/_hooks.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult

from khotui.tui._hooks import HeldPaintScreen
from khotui.tui.widgets.keybar import KeyBar
from khotui.tui.widgets.navbar import NavBar

if TYPE_CHECKING:
    from khotui.tui.app import KhotuiApp


class KhotuiScreen(HeldPaintScreen[None]):
    """A top-level screen (one per app mode). Subclasses define MODE, HELP and compose_body()."""

    MODE = ""
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    # Until its data is in, the screen sends nothing to the terminal (at most this long, s);
    # see HeldOutputApp.hold_output. 0: draw at once.
    HOLD = 0.3

    def __init__(self) -> None:
        super().__init__()
        if self.HOLD:
            # from creation: switching to a new screen draws it before its on_mount runs
            self.hold_paint(self.HOLD)

    @property
    def khotui(self) -> KhotuiApp:
        """The app, typed: a KhotuiScreen only ever runs in KhotuiApp (its MODES)."""
        return cast("KhotuiApp", self.app)

    # -- one paint per screen's data, not a placeholder and then the data --------------------

    def hold_paint(self, timeout: float) -> None:
        """Send nothing to the terminal until `release_paint()` (the screen's data is in) or
        `timeout` seconds, whichever is first (HeldOutputApp.hold_output)."""
        self.khotui.hold_output(self, timeout)

    def release_paint(self) -> None:
        self._shown = True
        # a few more ticks first: the layout settles (a scrollbar appears, text re-wraps) in
        # passes, each a frame of its own; held, they cost nothing
        self.set_timer(0.05, lambda: self.call_after_refresh(self.khotui.release_output, self))

    def on_screen_suspend(self) -> None:
        self.khotui.release_output(self)

    _shown = False

    def on_screen_resume(self) -> None:
        # back to a screen already drawn: its frame, once, not a re-layout after it
        if self._shown:
            self.hold_paint(0.2)
            self.release_paint()

    def compose(self) -> ComposeResult:
        source = self.khotui.source
        yield NavBar(self.MODE, source.label, dry_run=source.dry_run)
        yield from self.compose_body()
        yield KeyBar()

    def compose_body(self) -> ComposeResult:
        yield from ()
