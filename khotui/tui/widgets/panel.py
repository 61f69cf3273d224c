"""A bordered panel that shows its content, or the reason it has none."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from khotui.tui.viewmodel import Problem


def problem_content(problem: Problem) -> Content:
    text = Content.from_markup("[b $error]unavailable:[/] $msg", msg=problem.headline)
    if problem.fix:
        text = text + Content.from_markup("\n[$secondary]fix:[/] $fix", fix=problem.fix)
    return text


class Panel(Static):
    """A Static with a border title; `show()` takes content or a `Problem`."""

    DEFAULT_CSS = """
    Panel { border: round $primary 60%; padding: 0 1; height: auto; }
    Panel.-problem { border: round $error; }
    """

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(Content.from_markup("[dim]reading…[/]"), id=id, classes=classes)
        self.border_title = title

    def show(self, content: Content | str | Problem) -> None:
        if isinstance(content, Problem):
            self.add_class("-problem")
            self.update(problem_content(content))
        else:
            self.remove_class("-problem")
            self.update(content)
