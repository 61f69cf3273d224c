"""The app stays responsive on big hosts (issue #5): the operator's walk through every screen
on the 10x synthetic host (3 nodes, 19,661 memory blocks, 2,000 iomem lines, a 1,000-node KHO
FDT, 50 sub-blobs) and on the 100x one (32 nodes, 196,608 blocks, 20,000 iomem lines, a
10,000-node FDT, 500 sub-blobs), with no frame slower than a budget relative to a bare Textual
app measured in the same run (bench/tui_scale.py); and the first complete Overview on 100x,
in a real pseudo-terminal, within 1.5 s (or 3x the bare app's first frame on a slower machine).

A frame here is the longest time the event loop was blocked (nothing can be drawn meanwhile):
message handlers, layout and the compositor all count; worker threads reading the host do not,
unless they hold the GIL long enough to block it, which counts too.
"""

from __future__ import annotations

import re
import statistics
import sys

import pytest

from bench.gen_sysroot import cached
from bench.tui_scale import BASELINE_APP, VERDICT, first_overview, walk_baseline, walk_khotui

# On the 2-core development VM the bare app's slowest frame (switching between two screens with
# a Static and a Footer) is 35-55 ms and khotui's is 35-60 ms on 10x (below 100 ms on 100x).
# A loaded machine slows both alike: the budget scales with the baseline, never below 100 ms.
RATIO = 3.0
FLOOR = 0.100


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["10x", "100x"])
async def test_no_screen_has_a_frame_slower_than_the_budget(host):
    # 100x is the largest host (32 nodes, 196,608 blocks, 20,000 iomem lines, a
    # 10,000-node FDT) in the form `khotui snapshot` writes: a second to generate, where the
    # sysfs form is 1.6M files. The TUI's work is the same; only the block read differs.
    root = cached(host) if host == "10x" else cached(host, snapshot=True)
    base = await walk_baseline()
    times = await walk_khotui(root)
    budget = max(FLOOR, RATIO * base.stall)
    report = "\n".join(f"{name:<9} {t.row()}" for name, t in times.items())
    assert set(times) == {"overview", "memory", "handover", "prepare", "plan"}, report
    slow = {name: t for name, t in times.items() if t.stall > budget}
    assert not slow, (f"budget {budget * 1000:.0f} ms (baseline {base.stall * 1000:.0f} ms "
                      f"× {RATIO:g}):\n{report}")


# Issue #5: the first complete Overview within 1.5 s on the largest host (this 2-core VM:
# 0.7-1.1 s, a bare Textual app 0.3-0.45 s). A loaded machine slows both alike.
START_RATIO = 3.0
START_FLOOR = 1.5


def test_first_complete_overview_on_the_largest_host_is_within_the_budget():
    root = cached("100x", snapshot=True)
    bare = statistics.median(first_overview([sys.executable, "-c", BASELINE_APP], (80, 24),
                                            re.compile(rb"baseline-ready")) for _ in range(3))
    ours = statistics.median(first_overview([sys.executable, "-m", "khotui", "--root", str(root)],
                                            (80, 24), VERDICT) for _ in range(3))
    budget = max(START_FLOOR, START_RATIO * bare)
    assert ours <= budget, (f"first Overview {ours * 1000:.0f} ms, budget {budget * 1000:.0f} ms "
                            f"(bare Textual app {bare * 1000:.0f} ms)")
