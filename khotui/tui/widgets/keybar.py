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

# the app's help binding (KhotuiApp.BINDINGS): kept last, whatever else has to go
HELP_KEYS = ("f1", "question_mark")


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
        """Whole entries only, never one cut mid-word (`/ Search iom…` at 80 columns): when
        they do not all fit, the palette entry drops its word, then entries drop from the
        end, and help, always last, says it lists the rest ("? All keys")."""
        width = self.size.width
        keys = [k for k in self._keys if k[0] not in HELP_KEYS]
        help_key = next((k for k in self._keys if k[0] in HELP_KEYS), None)
        palette = None
        if self._palette is not None:
            palette = Content("│") + self._entry(self._palette[0], self._palette[1], "palette", True)
            if self._width(keys, help_key) > width - palette.cell_length:
                palette = Content("│") + self._entry(self._palette[0], self._palette[1], "", True)
        room = width - (palette.cell_length if palette is not None else 0)
        shown = list(keys)
        all_keys = None if help_key is None else (help_key[0], help_key[1], "All keys", help_key[3])
        while shown and self._width(shown, help_key if len(shown) == len(keys) else all_keys) > room:
            shown.pop()
        if len(shown) < len(keys):
            help_key = all_keys
        parts = [self._entry(*k) for k in shown]
        if help_key is not None:
            parts.append(self._entry(*help_key))
        line = Content(" ").join(parts)
        if line.cell_length > room:         # a terminal too narrow even for help: cut
            line = line.truncate(max(room, 0), ellipsis=True)
        if palette is None:
            return line
        return line.pad_right(room - line.cell_length) + palette

    @classmethod
    def _width(cls, keys: list[tuple[str, str, str, bool]],
               help_key: tuple[str, str, str, bool] | None) -> int:
        entries = [*keys, *([help_key] if help_key else [])]
        return sum(cls._entry(*k).cell_length for k in entries) + max(len(entries) - 1, 0)

    @staticmethod
    def _entry(key: str, shown: str, what: str, enabled: bool) -> Content:
        dim = "" if enabled else " dim"
        # a click presses the key, as Footer does
        markup = (f"[@click=app.simulate_key({key!r})][b $footer-key-foreground{dim}] $k [/]"
                  + (f"[$footer-foreground{dim}]$w[/]" if what else "") + "[/]")
        return Content.from_markup(markup, k=shown, w=what)
