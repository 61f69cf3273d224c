"""The app stays responsive on a big host (issue #5): the operator's walk through every screen
on the 10x synthetic host (3 nodes, 19,661 memory blocks, 2,000 iomem lines, a 1,000-node KHO
FDT, 50 sub-blobs), with no frame slower than a budget relative to a bare Textual app measured
in the same run (bench/tui_scale.py; the 100x numbers are in tests/README.md).

A frame here is the longest time the event loop was blocked (nothing can be drawn meanwhile):
message handlers, layout and the compositor all count; worker threads reading the host do not,
unless they hold the GIL long enough to block it, which counts too.
"""

from __future__ import annotations

import pytest

from bench.gen_sysroot import cached
from bench.tui_scale import walk_baseline, walk_khotui

pytestmark = pytest.mark.asyncio

# On the 2-core development VM the bare app's slowest frame (switching between two screens with
# a Static and a Footer) is 35-55 ms and khotui's is 35-60 ms on 10x (below 100 ms on 100x).
# A loaded machine slows both alike: the budget scales with the baseline, never below 100 ms.
RATIO = 3.0
FLOOR = 0.100


async def test_no_screen_has_a_frame_slower_than_the_budget_on_a_10x_host():
    root = cached("10x")
    base = await walk_baseline()
    times = await walk_khotui(root)
    budget = max(FLOOR, RATIO * base.stall)
    report = "\n".join(f"{name:<9} {t.row()}" for name, t in times.items())
    assert set(times) == {"overview", "memory", "handover", "prepare", "plan"}, report
    slow = {name: t for name, t in times.items() if t.stall > budget}
    assert not slow, (f"budget {budget * 1000:.0f} ms (baseline {base.stall * 1000:.0f} ms "
                      f"× {RATIO:g}):\n{report}")
