"""What every top-level screen shares: the navigation bar, the key bar, help text, breakpoints."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen

from khotui.tui.widgets.keybar import KeyBar
from khotui.tui.widgets.navbar import NavBar


class KhotuiScreen(Screen):
    """A top-level screen (one per app mode). Subclasses define MODE, HELP and compose_body()."""

    MODE = ""
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    # Until its data is in, the screen sends nothing to the terminal (at most this long, s);
    # see KhotuiApp.hold_output. 0: draw at once.
    HOLD = 0.3

    def __init__(self) -> None:
        super().__init__()
        if self.HOLD:
            # from creation: switching to a new screen draws it before its on_mount runs
            self.hold_paint(self.HOLD)
        # A new screen counts as stale CSS, and Textual answers its first show with a full
        # reparse (a fresh Stylesheet, nothing cached) and a restyle of every node of every
        # screen. All of khotui's CSS came with the app, so this screen is as current as the app.
        self._css_update_count = self.app._css_update_count

    # -- one paint per screen's data, not a placeholder and then the data --------------------

    def hold_paint(self, timeout: float) -> None:
        """Send nothing to the terminal until `release_paint()` (the screen's data is in) or
        `timeout` seconds, whichever is first (KhotuiApp.hold_output)."""
        self.app.hold_output(self, timeout)  # type: ignore[attr-defined]

    def _compositor_refresh(self) -> None:
        # Textual renders every refresh and then hands the frame to App._display, which drops
        # it while output is held (KhotuiApp.hold_output): the render is wasted, 30-40 ms a
        # time for a full screen on 2 cores, on the very frames that mount a screen. The
        # release draws one full frame, so what is skipped here is never missing.
        # Likewise the first refresh after a release: it is drawn as one full frame, not as a
        # partial update that App._display would then throw away for the full one.
        app = self.app
        if self is app.screen and not app.is_inline:
            held = getattr(app, "_held_by", None) is not None
            if held or getattr(app, "_full_frame_due", False):
                self._dirty_widgets.clear()
                self._compositor._dirty_regions.clear()
                if not held:
                    app._draw_full_frame()  # type: ignore[attr-defined]
                return
        super()._compositor_refresh()

    def release_paint(self) -> None:
        self._shown = True
        # a few more ticks first: the layout settles (a scrollbar appears, text re-wraps) in
        # passes, each a frame of its own; held, they cost nothing
        self.set_timer(0.05, lambda: self.app.release_output(self))  # type: ignore[attr-defined]

    def after_full_frame(self) -> None:
        """Called once the released screen's full frame is out: what is drawn from here on
        goes as a partial update, a frame of its own."""

    def on_screen_suspend(self) -> None:
        self.app.release_output(self)  # type: ignore[attr-defined]

    _shown = False

    def on_screen_resume(self) -> None:
        # back to a screen already drawn: its frame, once, not a re-layout after it
        if self._shown:
            self.hold_paint(0.2)
            self.release_paint()

    def compose(self) -> ComposeResult:
        source = self.app.source  # type: ignore[attr-defined]
        yield NavBar(self.MODE, source.label, dry_run=source.dry_run)
        yield from self.compose_body()
        yield KeyBar()

    def compose_body(self) -> ComposeResult:
        yield from ()

