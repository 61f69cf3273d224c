"""RowTable: the Blocks tab's table (khotui.tui.widgets.rowtable), on more rows than fit."""

from __future__ import annotations

import pytest
from textual.app import App

from khotui.tui._hooks import screen_lines
from khotui.tui.widgets.rowtable import RowTable

pytestmark = pytest.mark.asyncio


class OneTable(App):
    def compose(self):
        yield RowTable(id="t")


async def test_the_cursor_row_stays_in_view_and_the_header_stays_on_top():
    app = OneTable()
    async with app.run_test(size=(40, 10)) as pilot:
        table = app.query_one(RowTable)
        table.set_rows(["n", "name"], [[str(i), f"row{i}"] for i in range(100)])
        table.focus()
        await pilot.press("pagedown", "pagedown", "down")
        await pilot.pause()
        lines = screen_lines(app.screen)
        assert lines[0].split()[:2] == ["n", "name"]             # the header, scrolled or not
        assert f"row{table.cursor}" in "\n".join(lines[1:]) and table.cursor > 10
        await pilot.press("end")
        await pilot.pause()
        lines = screen_lines(app.screen)
        assert table.cursor == 99 and "row99" in "\n".join(lines)
        await pilot.press("home")
        await pilot.pause()
        lines = screen_lines(app.screen)
        assert lines[1].split()[:2] == ["0", "row0"]


async def test_a_single_message_row_is_shown_whole():
    app = OneTable()
    async with app.run_test(size=(60, 6)) as pilot:
        table = app.query_one(RowTable)
        table.set_rows(["memory blocks"], [["unavailable: permission denied"], ["fix: run as root"]])
        await pilot.pause()
        text = "\n".join(screen_lines(app.screen))
        assert "unavailable: permission denied" in text and "fix: run as root" in text
