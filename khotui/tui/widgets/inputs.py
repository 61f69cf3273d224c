"""khotui's text inputs: Textual's, with their editing keys applied in the order they arrive.

Textual 8.2.8 bug (README, "Known Textual bug"): when a backspace and characters arrive in the
same read (a laggy SSH link batches keys so), TextArea inserts the characters first and deletes
after: "Kernel", BSpace, "XYZ" gives "KernelXY". The cause: TextArea._on_key inserts a
printable character on the widget's own message queue, while an editing key such as backspace
is a binding, resolved only when its Key event has bubbled up to the App, whose queue runs
after the characters already queued on the widget. The workaround, public API only: the widget
runs its own bindings' actions in `on_key`, on its own queue, in arrival order, and stops the
event so the App does not run the action a second time.
"""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.widgets import Input, TextArea

from khotui.tui.widgets.steady import SteadyTextArea


def _own_action(widget: Input | TextArea, key: str) -> str | None:
    """The action the widget's own BINDINGS give `key` (None: not one of its editing keys)."""
    for cls in type(widget).__mro__:
        for binding in getattr(cls, "BINDINGS", ()) or ():
            if isinstance(binding, Binding) and key in (k.strip() for k in binding.key.split(",")):
                return binding.action
    return None


class OrderedTextArea(SteadyTextArea):
    """A steady TextArea whose editing keys are applied in arrival order (the Textual 8.2.8
    bug above). Input in 8.2.8 keeps the order, so it needs no such class."""

    async def on_key(self, event: events.Key) -> None:
        if self.read_only:
            return
        action = _own_action(self, event.key)
        if action is not None:
            event.stop()
            event.prevent_default()
            await self.run_action(action)
