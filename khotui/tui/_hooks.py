"""Every use of a private Textual name in khotui, in one module (Textual is pinned at 8.2.8).

Textual promises nothing about names that start with `_`; khotui leans on a few of them to
write fewer bytes to the terminal (a slow SSH link pays for every frame) and to skip work the
operator would never see. Nothing else in khotui/ or tests/ touches a private Textual name
(tests/tui/test_private_textual.py enforces it), so a Textual bump means reading this module:
each hook's docstring says what it does, why, and what to re-check; `broken_assumptions()`
checks those things mechanically (tests/tui/test_hygiene.py runs it).

The hooks are an optimisation only. `KHOTUI_TEXTUAL_HOOKS=0` in the environment (read once, at
import) or `KhotuiApp(..., textual_hooks=False)` turns them all off: the app then behaves the
same for the operator and only writes more bytes (the placeholder and intermediate frames
that the hooks hold back), and spends more time on each screen's first visit (a CSS reparse).

Public surface (all khotui's own names):
  HeldOutputApp     app mixin: hold_output(screen, timeout), release_output(screen)
  HeldPaintScreen   screen mixin: skips renders while held, after_full_frame(), CSS bookkeeping
  screen_lines()    what the terminal shows, as text lines (for tests)
  hooks_from_env(), ENABLED, broken_assumptions(), TEXTUAL_PIN
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any, Final, Generic, TypeVar

from rich.console import RenderableType
from textual.app import App
from textual.screen import Screen

TEXTUAL_PIN: Final = "8.2.8"
ENV: Final = "KHOTUI_TEXTUAL_HOOKS"

ReturnT = TypeVar("ReturnT")
ResultT = TypeVar("ResultT")


def hooks_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """The hooks are on unless `KHOTUI_TEXTUAL_HOOKS` says 0/no/off/false."""
    return environ.get(ENV, "1").strip().lower() not in ("0", "no", "off", "false")


# read once: a running app never changes how it writes
ENABLED: Final[bool] = hooks_from_env()


class HeldOutputApp(App[ReturnT], Generic[ReturnT]):
    """Holds terminal output while a screen's data is coming in, then draws it as one frame.

    Hook: overrides `App._display(screen, renderable)`, the one place Textual hands a rendered
    update to the driver; while output is held it drops the update, and the first update after
    the release is replaced by a full frame rendered with
    `screen._compositor.render_update(full=True, screen_stack=app._background_screens)` (what
    `App.export_screenshot` renders), so what was dropped is in it.

    Why: a placeholder frame costs as many bytes as the real one (6-8 KB at 80x24), and the
    layout then settles in two or three more full frames (panels fill, a scrollbar appears,
    text re-wraps): on a slow SSH link each delays the complete one (bench/tui_startup.py).

    Re-check on a Textual bump: `App._display` still takes (screen, renderable) and is still
    the only path to the driver for a non-inline app (`Screen._compositor_refresh` and
    `App._refresh_layout`/`refresh` call it); `Compositor.render_update` still takes `full` and
    `screen_stack`; `App._background_screens` still exists.
    """

    def __init__(self, *, textual_hooks: bool | None = None) -> None:
        super().__init__()
        self.textual_hooks: bool = ENABLED if textual_hooks is None else textual_hooks
        self._held_by: Screen[Any] | None = None
        self._full_frame_due = False

    @property
    def output_held(self) -> bool:
        return self._held_by is not None

    @property
    def full_frame_due(self) -> bool:
        return self._full_frame_due

    def hold_output(self, screen: Screen[Any], timeout: float) -> None:
        """Write nothing to the terminal while `screen` waits for its data (at most `timeout`
        seconds). Everything runs as usual meanwhile (layout, workers, keys); only the writes
        are dropped, and the release draws the settled screen once. With the hooks off,
        nothing is held."""
        if self.textual_hooks and self._held_by is None:
            self._held_by = screen
            self.set_timer(timeout, lambda: self.release_output(screen), name="hold-output")

    def release_output(self, screen: Screen[Any]) -> None:
        """`screen`'s data is in: the next update becomes one full frame of the settled screen
        (what was dropped included); if none comes by itself, one is drawn after the next
        refresh. With the hooks off every update went out already: the screen is told its
        frame is out after the next refresh."""
        if not self.textual_hooks:
            if screen is self.screen and isinstance(screen, HeldPaintScreen):
                self.call_after_refresh(screen.after_full_frame)
            return
        if self._held_by is screen:
            self._held_by = None
            self._full_frame_due = True
            self.call_after_refresh(self._draw_full_frame)

    def _draw_full_frame(self) -> None:
        if self._full_frame_due:
            self._display(self.screen, None)

    def _display(self, screen: Screen[Any], renderable: RenderableType | None) -> None:
        if not self.textual_hooks:
            super()._display(screen, renderable)
            return
        if self._held_by is not None:
            return
        if self._full_frame_due and screen is self.screen:
            self._full_frame_due = False
            renderable = screen._compositor.render_update(
                full=True, screen_stack=self._background_screens)
            super()._display(screen, renderable)
            if isinstance(screen, HeldPaintScreen):
                self.call_later(screen.after_full_frame)
            return
        super()._display(screen, renderable)


class HeldPaintScreen(Screen[ResultT], Generic[ResultT]):
    """A screen that renders nothing while its app holds output, and whose CSS is current.

    Hook 1: overrides `Screen._compositor_refresh`, where Textual renders the dirty regions
    and hands the update to `App._display`. While output is held, that render is thrown away:
    30-40 ms a time for a full screen on 2 cores, on the very frames that mount a screen. So
    while held, and on the first refresh after a release (which `HeldOutputApp` draws as one
    full frame, not as a partial update it would then discard), it clears what Textual would
    have cleared after drawing (`self._dirty_widgets`, `self._compositor._dirty_regions`) and
    renders nothing; the full frame after the release draws everything, so nothing is lost.
    Re-check: `Screen._compositor_refresh` for a non-inline top screen still amounts to
    `render_update` + `app._display` + `_dirty_widgets.clear()`, and the compositor's dirty
    regions are still `Compositor._dirty_regions`.

    Hook 2: sets `screen._css_update_count` to `app._css_update_count` when the screen is
    made. Textual counts CSS changes on the app and on each screen; a new screen starts at -1,
    so its first show triggers a full reparse (a fresh Stylesheet, nothing cached) and a
    restyle of every node of every screen: 100-300 ms on each screen's first visit
    (bench/tui_scale.py). All of khotui's CSS is loaded with the app (KhotuiApp.CSS_PATH), so
    a new screen is as current as the app. Re-check: `Screen.__init__` still sets
    `_css_update_count = -1`, `App.switch_mode`/`_init_mode` still compare the two counts, and
    screens still have no CSS of their own (no CSS_PATH/DEFAULT_CSS on a KhotuiScreen).
    """

    def __init__(self) -> None:
        super().__init__()
        app = self.app
        if isinstance(app, HeldOutputApp) and app.textual_hooks:
            self._css_update_count = app._css_update_count

    def after_full_frame(self) -> None:
        """Called once the screen's frame after `release_output` is out: what is drawn from
        here on goes as a partial update, a frame of its own."""

    def _compositor_refresh(self) -> None:
        app = self.app
        if isinstance(app, HeldOutputApp) and app.textual_hooks and self is app.screen \
                and not app.is_inline:
            held = app.output_held
            if held or app.full_frame_due:
                self._dirty_widgets.clear()
                self._compositor._dirty_regions.clear()
                if not held:
                    app._draw_full_frame()
                return
        super()._compositor_refresh()


def screen_lines(screen: Screen[Any]) -> list[str]:
    """What the terminal shows for `screen` now, one string per line (modals included when
    `screen` is the top one). For tests: Textual has no public way to read the screen as text.
    Hook: `screen._compositor.render_strips()` (what the compositor would draw).
    Re-check: `Compositor.render_strips()` still renders the whole screen to strips."""
    return [strip.text for strip in screen._compositor.render_strips()]


def broken_assumptions() -> list[str]:
    """What the hooks above assume of Textual and no longer holds (empty: all is well).
    tests/tui/test_hygiene.py runs this; on a Textual bump, read each failing line's hook."""
    import textual
    from textual._compositor import Compositor

    broken: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            broken.append(what)

    need(textual.__version__ == TEXTUAL_PIN,
         f"Textual is {textual.__version__}, the hooks were checked against {TEXTUAL_PIN}")
    need(list(inspect.signature(App._display).parameters) == ["self", "screen", "renderable"],
         "HeldOutputApp: App._display(screen, renderable) changed")
    need({"full", "screen_stack"} <= set(inspect.signature(Compositor.render_update).parameters),
         "HeldOutputApp: Compositor.render_update(full, screen_stack) changed")
    need(isinstance(inspect.getattr_static(App, "_background_screens", None), property),
         "HeldOutputApp: App._background_screens is gone")
    refresh = inspect.getsource(Screen._compositor_refresh)
    need("render_update" in refresh and "app._display(self, update)" in refresh
         and "_dirty_widgets.clear()" in refresh and "_compositor._dirty_regions" in refresh,
         "HeldPaintScreen: Screen._compositor_refresh no longer renders and displays as assumed")
    need("_css_update_count" in inspect.getsource(App.__init__)
         and "self._css_update_count = -1" in inspect.getsource(Screen.__init__),
         "HeldPaintScreen: the CSS update counts moved")
    need("screen._css_update_count != self._css_update_count"
         in inspect.getsource(App.switch_mode) + inspect.getsource(App._init_mode),
         "HeldPaintScreen: switch_mode no longer compares CSS update counts")
    need("bindings_updated_signal" in inspect.getsource(Screen.__init__),
         "KeyBar: Screen.bindings_updated_signal is gone")
    need(callable(getattr(Compositor, "render_strips", None)),
         "screen_lines: Compositor.render_strips is gone")
    return broken
