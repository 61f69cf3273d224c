"""The top line: which screen, which host, and whether a load would only be a dry run."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

NAV = [("overview", "1", "Overview"), ("memory", "2", "Memory"), ("handover", "3", "Handover"),
       ("prepare", "4", "Prepare"), ("plan", "5", "Plan")]


class NavBar(Static):
    DEFAULT_CSS = """
    NavBar { height: 1; width: 1fr; background: $panel; color: $foreground; }
    """

    def __init__(self, current: str, source_label: str, *, dry_run: bool) -> None:
        super().__init__(self._content(current, source_label, dry_run))

    @staticmethod
    def _content(current: str, label: str, dry_run: bool) -> Content:
        parts = [Content.from_markup("[b]khotui[/b]")]
        if dry_run:
            # first, next to the name: the bar is cut at its right edge on a narrow terminal,
            # and this badge must survive at any width (60 columns and up)
            parts.append(Content.from_markup(" [b $warning]DRY RUN[/]"))
        for mode, key, title in NAV:
            if mode == current:
                parts.append(Content.from_markup(f" [reverse $primary] {key} {title} [/]"))
            else:
                parts.append(Content.from_markup(
                    f"[@click=app.goto('{mode}')] [$secondary]{key}[/] {title}[/]"))
        name = label.removeprefix("snapshot ").removesuffix(" snapshot")
        right = f" {name[:15]}"
        parts.append(Content(right))
        return Content("").join(parts)
