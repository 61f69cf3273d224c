"""Pick any file: a directory tree (Textual reads it in a thread) and a path you can type."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Static

from khotui.tui import fmt
from khotui.tui.widgets.steady import SteadyInput


class _Tree(DirectoryTree):
    """DirectoryTree with plain icons on a terminal that cannot draw its emoji (fmt.PLAIN)."""

    if fmt.PLAIN:
        ICON_NODE_EXPANDED = "- "
        ICON_NODE = "+ "
        ICON_FILE = "  "


class FilePicker(ModalScreen[str | None]):
    """Returns the chosen file's path, or None on escape."""

    DEFAULT_CSS = """
    FilePicker { align: center middle; }
    FilePicker > Vertical { width: 90%; max-width: 110; height: 90%; border: thick $primary;
                            background: $surface; padding: 0 1; }
    FilePicker DirectoryTree { height: 1fr; }
    FilePicker #picker-error { height: auto; color: $error; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="picker-cancel")]

    def __init__(self, start: str, title: str) -> None:
        super().__init__()
        self.start = start
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical() as v:
            v.border_title = f"{self.title_text} — type a path or tab to browse; esc cancels"
            yield SteadyInput(placeholder="type a path and press enter", id="picker-path")
            yield Static("", id="picker-error")
            yield _Tree(self.start, id="picker-tree")

    def on_mount(self) -> None:
        # typing a path is the quickest over SSH; tab moves to the tree
        self.query_one("#picker-path", Input).focus()

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(str(event.path))

    def _resolve(self, typed: str) -> Path:
        """A typed path read as the CLI reads --kernel (khotui.host.choose): on a snapshot, an
        absolute path the snapshot has is the snapshot's file, as the tree shows it."""
        source = getattr(self.app, "source", None)
        if source is None:
            return Path(typed).expanduser()
        return cast("Path", source.typed_path(typed))

    @on(Input.Submitted, "#picker-path")
    def _typed(self, event: Input.Submitted) -> None:
        path = self._resolve(event.value.strip())
        if path.is_file():
            self.dismiss(str(path))
        elif path.is_dir():
            self.query_one(DirectoryTree).path = path
            self.query_one(DirectoryTree).focus()
        else:
            self.query_one("#picker-error", Static).update(
                Content.from_markup("$p: no such file", p=str(path)))

    def action_cancel(self) -> None:
        self.dismiss(None)
