"""The Overview's "Live update" panel and the Handover's decoded LUO blob (issue #12 item 1), on
the synthetic LUO trees of tests/test_luo.py (a SYNTHETIC `struct luo_ser` blob)."""

from __future__ import annotations

import pytest

from khotui.tui.app import KhotuiApp
from khotui.tui.viewmodel import Source
from tests.conftest import CAPTURES
from tests.test_luo import luo_tree
from tests.tui.helpers import press, screen_text, settle

pytestmark = pytest.mark.asyncio


async def test_the_overview_shows_the_live_update_panel(tmp_path):
    app = KhotuiApp(Source(luo_tree(tmp_path, incoming=True)), theme="khotui")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        text = screen_text(app)
        assert "Live update" in text
        # the card is half the width at 120 columns: its line wraps after "pid 900,"
        assert "on · /dev/liveupdate held by luod (pid 900," in text
        assert "luod.service) · 3 sessions: vm 43, vm-42, agent" in text
        assert "next live update #3 · arrived as #2" in text


async def test_verdict_and_scratch_stay_on_the_first_80x24_screen(tmp_path):
    app = KhotuiApp(Source(luo_tree(tmp_path)), theme="khotui")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        for selector in ("#verdict", "#scratch"):
            region = app.screen.query_one(selector).region
            assert region.height and region.y >= 0 and region.bottom <= 24, (selector, region)
        assert "0x76c00000" in screen_text(app) or "lowmem" in screen_text(app)


async def test_the_panel_says_off_and_why(tmp_path):
    app = KhotuiApp(Source(CAPTURES / "two-nodes" / "sysroot"), theme="khotui")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        assert "off: the kernel command line has no liveupdate=on" in screen_text(app)


async def test_the_panel_names_a_device_held_by_nothing(tmp_path):
    app = KhotuiApp(Source(luo_tree(tmp_path, holder=False)), theme="khotui")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        assert "/dev/liveupdate held by nothing · 3 sessions" in screen_text(app)


async def test_handover_decodes_the_luo_blob(tmp_path):
    app = KhotuiApp(Source(luo_tree(tmp_path)), theme="khotui")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        # the outgoing tree: kho/out, fdt (open, two children), then LUO
        await press(pilot, app, "3", "down", "down", "down", "down", "enter")
        text = screen_text(app)
        assert "sub_fdts/LUO — decoded" in text and "LUO (packed struct, not an FDT)" in text
        lines = text.splitlines()
        assert any("compatible" in ln and "luo-v5" in ln for ln in lines)
        assert any("liveupdate_num" in ln and " 3 " in ln for ln in lines)
