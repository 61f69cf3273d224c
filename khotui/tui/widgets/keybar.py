"""The bottom line: the keys that work here and now, drawn as one line of text.

Textual's Footer is a container with one widget per key, and it rebuilds them all on every
focus change and screen switch: a dozen widgets mounted, styled and laid out again, 30-50 ms on
a 2-core host (bench/tui_scale.py), paid on the very keypresses an operator makes most. This
bar reads the same `Screen.active_bindings` on the same signal and repaints one line.
"""

from __future__ import annotations

from typing import Any

from textual.content import Content
from textual.screen import Screen
from textual.widget import Widget


class KeyBar(Widget):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom; height: 1; width: 1fr;
        background: $footer-background; color: $footer-foreground;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self._keys: list[tuple[str, str, str, bool]] = []   # (key, shown as, what, enabled)
        self._palette: tuple[str, str] | None = None

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[Any]) -> None:
        if not self.is_attached or screen is not self.screen:
            return
        app = self.app
        keys: list[tuple[str, str, str, bool]] = []
        actions: set[str] = set()
        palette = None
        for _node, binding, enabled, _tooltip in screen.active_bindings.values():
            if app.ENABLE_COMMAND_PALETTE and binding.key == app.COMMAND_PALETTE_BINDING:
                palette = (binding.key, app.get_key_display(binding))
                continue
            # one entry per action, as Footer: `q` and `ctrl+c` both quitting show once
            if not binding.show or binding.action in actions:
                continue
            actions.add(binding.action)
            keys.append((binding.key, app.get_key_display(binding), binding.description, enabled))
        if keys != self._keys or palette != self._palette:
            self._keys, self._palette = keys, palette
            self.refresh()

    def render(self) -> Content:
        parts = [self._entry(key, shown, what, enabled) for key, shown, what, enabled in self._keys]
        line = Content(" ").join(parts)
        if self._palette is None:
            return line
        palette = Content("│") + self._entry(self._palette[0], self._palette[1], "palette", True)
        room = self.size.width - palette.cell_length
        if line.cell_length > room:
            line = line.truncate(max(room, 0), ellipsis=True)
        return line.pad_right(room - line.cell_length) + palette

    @staticmethod
    def _entry(key: str, shown: str, what: str, enabled: bool) -> Content:
        dim = "" if enabled else " dim"
        # a click presses the key, as Footer does
        markup = (f"[@click=app.simulate_key({key!r})][b $footer-key-foreground{dim}] $k [/]"
                  + (f"[$footer-foreground{dim}]$w[/]" if what else "") + "[/]")
        return Content.from_markup(markup, k=shown, w=what)
