"""A picture of physical memory: one band per NUMA node (or the zoomed range), four layers each.

Layers, each one row, all on the same address axis:
  iomem    System RAM █, reserved ▒, ACPI/firmware ░, other ·, hole (blank)
  kernel   kernel code/data/bss K, crash kernel C
  scratch  KHO scratch regions S (their index in kho_scratch[])
  plan     the planned segments, by their first letter
Each band paints only the ranges that overlap it (an interval index per layer: ranges sorted by
start with a running maximum of their ends), and a band's painted rows are kept until the data,
the zoom or the width change: moving the cursor redraws nothing but the cursor. A 24 TiB host
(32 bands, 6,000 ranges) draws in milliseconds.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from textual.binding import Binding
from textual.content import Content, Span
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.visual import Visual
from textual.widget import Widget

from khotui.tui import fmt
from khotui.tui.viewmodel import MemRange

LAYERS = ("iomem", "kernel", "scratch", "plan")
LAYER_OF = {"ram": "iomem", "reserved": "iomem", "acpi": "iomem", "other": "iomem",
            "kernel": "kernel", "crash": "kernel", "scratch": "scratch", "segment": "plan"}
# kind -> (char, style, priority within its layer, legend)
KINDS = {
    "ram": ("█", "$primary 70%", 1, "System RAM"),
    "reserved": ("▒", "$warning 70%", 3, "reserved"),
    "acpi": ("░", "$foreground 60%", 2, "ACPI/firmware"),
    "other": ("·", "$foreground 50%", 0, "other"),
    "kernel": ("K", "b $error", 2, "kernel code/data"),
    "crash": ("C", "b $warning", 1, "crash kernel"),
    "scratch": ("S", "b $secondary", 1, "KHO scratch"),
    "segment": ("#", "b $accent", 1, "planned segment"),
}
LABEL_W = 8


def legend(width: int = 0) -> Content:
    """The key of the picture; with a `width`, packed into lines of at most that many cells so
    that a line never breaks between a mark and its label ("C" / "crash kernel")."""
    parts = [Content.from_markup(f"[{style}]$c[/] $n", c=ch, n=name)
             for ch, style, _, name in KINDS.values()]
    if width <= 0:
        return Content("  ").join(parts)
    lines: list[list[Content]] = [[]]
    used = 0
    for part in parts:
        need = part.cell_length + (2 if lines[-1] else 0)
        if lines[-1] and used + need > width:
            lines.append([])
            used, need = 0, part.cell_length
        lines[-1].append(part)
        used += need
    return Content("\n").join(Content("  ").join(line) for line in lines)


@dataclass(frozen=True)
class Band:
    label: str
    start: int
    end: int   # inclusive


class RangeIndex:
    """Ranges (possibly nested or overlapping) found by the bands they overlap."""

    def __init__(self, ranges: list[MemRange]) -> None:
        self.ranges = sorted(ranges, key=lambda r: r.start)
        self.starts = [r.start for r in self.ranges]

    def overlapping(self, lo: int, hi: int) -> list[MemRange]:
        """One interval: a scan of the ranges that start at or before `hi`."""
        j = bisect_right(self.starts, hi)
        return [r for r in self.ranges[:j] if r.end >= lo]

    def per_band(self, bands: list[Band]) -> list[list[MemRange]]:
        """Every band's ranges in one pass: each range finds its bands by bisection (bands are
        sorted and disjoint, a NUMA node each), so 32 bands cost one walk, not 32."""
        order = sorted(range(len(bands)), key=lambda i: bands[i].start)
        starts = [bands[i].start for i in order]
        ends = [bands[i].end for i in order]
        out: list[list[MemRange]] = [[] for _ in bands]
        for r in self.ranges:
            k = bisect_left(ends, r.start)
            while k < len(order) and starts[k] <= r.end:
                out[order[k]].append(r)
                k += 1
        return out


class MemoryBands(Widget, can_focus=True):
    """Bands of memory with a cursor; + zooms in around it, - zooms out, 0 resets."""

    DEFAULT_CSS = """
    MemoryBands { height: auto; min-height: 5; padding: 0 1; }
    MemoryBands:focus { background: $boost; }
    """
    BINDINGS = [
        Binding("left,h", "move(-1)", "Move the cursor left", show=False, id="map-left"),
        Binding("right,l", "move(1)", "Move the cursor right", show=False, id="map-right"),
        Binding("up,k", "band(-1)", "Cursor to the band above", show=False, id="map-up"),
        Binding("down,j", "band(1)", "Cursor to the band below", show=False, id="map-down"),
        Binding("plus,equals_sign,enter", "zoom_in", "Zoom in", id="map-zoom-in", key_display="+"),
        Binding("minus", "zoom_out", "Zoom out", id="map-zoom-out", key_display="-"),
        Binding("0", "zoom_reset", "All memory", id="map-zoom-reset", show=False),
        Binding("n", "next_mark", "Next scratch/segment", id="map-next"),
    ]

    class CursorMoved(Message):
        def __init__(self, address: int, under: list[MemRange]) -> None:
            super().__init__()
            self.address = address
            self.under = under

    cursor = reactive(0)
    band_index = reactive(0)

    def __init__(self, *, id: str | None = None, layers: tuple[str, ...] = LAYERS) -> None:
        super().__init__(id=id)
        self.rows = layers
        self.bands: list[Band] = []
        self.home: list[Band] = []
        self.ranges: list[MemRange] = []
        self._sorted: list[MemRange] = []
        self._index: dict[str, RangeIndex] = {}
        self._all = RangeIndex([])
        self._rows: dict[tuple[Band, str, int], tuple[str, list[Span]]] = {}
        self._hits: dict[tuple[Band, str], list[MemRange]] = {}

    # -- data --------------------------------------------------------------------------------

    def set_data(self, bands: list[tuple[str, int, int]], ranges: list[MemRange]) -> None:
        self.home = [Band(*b) for b in bands if b[2] >= b[1]]
        self.bands = list(self.home)
        self.ranges = ranges
        self._sorted = sorted(ranges, key=lambda r: r.start)
        self._all = RangeIndex([r for r in ranges if r.size > 0])
        self._index = {layer: RangeIndex([r for r in ranges if LAYER_OF.get(r.kind) == layer
                                          and r.size > 0]) for layer in LAYERS}
        self._rows = {}
        self._hits = {}
        self.band_index = 0
        self.cursor = 0
        self.refresh(layout=True)
        self._announce()

    def zoom_to(self, start: int, end: int, label: str | None = None) -> None:
        span = max(end - start + 1, 1)
        pad = span // 8
        lo, hi = max(0, start - pad), end + pad
        self.bands = [Band(label or "zoom", lo, hi)]
        self.band_index = 0
        self.cursor = self._col_of(self.bands[0], start + span // 2)
        self.refresh(layout=True)
        self._announce()

    # -- geometry ----------------------------------------------------------------------------

    @property
    def cells(self) -> int:
        return max(self.size.width - 2 - LABEL_W, 8)

    def _col_of(self, band: Band, address: int, cells: int | None = None) -> int:
        cells = cells or self.cells     # the size lookup is not free: loops pass it in
        span = band.end - band.start + 1
        return min(cells - 1, max(0, (address - band.start) * cells // span))

    def _cell_range(self, band: Band, col: int) -> tuple[int, int]:
        span = band.end - band.start + 1
        lo = band.start + col * span // self.cells
        hi = band.start + (col + 1) * span // self.cells - 1
        return lo, max(lo, hi)

    def under_cursor(self) -> tuple[int, list[MemRange]]:
        if not self.bands:
            return 0, []
        band = self.bands[min(self.band_index, len(self.bands) - 1)]
        lo, hi = self._cell_range(band, self.cursor)
        return lo, self._all.overlapping(lo, hi)

    def _announce(self) -> None:
        address, under = self.under_cursor()
        self.post_message(self.CursorMoved(address, under))
        self._scroll_to_band()

    def _scroll_to_band(self) -> None:
        """Keep the cursor's band in view when the bands are taller than the pane."""
        parent = self.parent
        if not self.bands or parent is None or not isinstance(parent, Widget):
            return
        rows = len(self.rows) + 1
        top = self.virtual_region.y + self.band_index * rows
        parent.scroll_to_region(Region(0, top, max(self.size.width, 1), rows), animate=False)

    # -- actions -----------------------------------------------------------------------------

    def action_move(self, delta: int) -> None:
        self.cursor = max(0, min(self.cells - 1, self.cursor + delta))
        self._announce()

    def action_band(self, delta: int) -> None:
        if self.bands:
            self.band_index = max(0, min(len(self.bands) - 1, self.band_index + delta))
            self._announce()

    def action_zoom_in(self) -> None:
        if not self.bands:
            return
        band = self.bands[self.band_index]
        span = band.end - band.start + 1
        if span <= self.cells * 4096:
            self.notify("zoomed in to one page per cell", timeout=2)
            return
        centre, _ = self._cell_range(band, self.cursor)
        new = max(span // 4, self.cells * 4096)
        lo = max(band.start, centre - new // 2)
        self.bands = [Band("zoom", lo, lo + new - 1)]
        self.band_index = 0
        self.cursor = self._col_of(self.bands[0], centre)
        # new bands: every line changes, and the band count (the height) may too; the cursor
        # watcher fires only when the column moved, so a zoom that keeps it redrew nothing
        self.refresh(layout=True)
        self._announce()

    def action_zoom_out(self) -> None:
        if not self.bands or self.bands == self.home:
            return
        band = self.bands[self.band_index]
        span = (band.end - band.start + 1) * 4
        total_lo = min(b.start for b in self.home)
        total_hi = max(b.end for b in self.home)
        if span >= total_hi - total_lo:
            self.action_zoom_reset()
            return
        centre = (band.start + band.end) // 2
        lo = max(total_lo, centre - span // 2)
        self.bands = [Band("zoom", lo, lo + span - 1)]
        self.band_index = 0
        self.cursor = self._col_of(self.bands[0], centre)
        self.refresh(layout=True)
        self._announce()

    def action_zoom_reset(self) -> None:
        self.bands = list(self.home)
        self.band_index = 0
        self.cursor = 0
        self.refresh(layout=True)
        self._announce()

    def action_next_mark(self) -> None:
        marks = [r for r in self._sorted if r.kind in ("scratch", "segment") and r.size > 0]
        if not marks:
            self.notify("no scratch regions or segments to jump to", timeout=2)
            return
        address, _ = self.under_cursor()
        band = self.bands[self.band_index] if self.bands else None
        current = address if band and band.label == "zoom" else -1
        after = [r for r in marks if r.start > current]
        target = (after or marks)[0]
        self.zoom_to(target.start, target.end, target.label)

    # -- drawing -----------------------------------------------------------------------------

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return max(1, len(self.bands) * (len(self.rows) + 1))

    def _layer_cells(self, band: Band, layer: str) -> list[str | None]:
        width = self.cells
        cells: list[str | None] = [None] * width
        prio = [-1] * width
        for r in self._ranges_in(band, layer):
            c0 = self._col_of(band, max(r.start, band.start), width)
            c1 = self._col_of(band, min(r.end, band.end), width)
            p = KINDS[r.kind][2]
            for c in range(c0, c1 + 1):
                if p > prio[c]:
                    prio[c] = p
                    cells[c] = r.kind
        return cells

    def _ranges_in(self, band: Band, layer: str) -> list[MemRange]:
        if (band, layer) not in self._hits:
            index = self._index.get(layer) or RangeIndex([])
            if len(self.bands) > 1 and band in self.bands:
                overlap = index.per_band(self.bands)   # all bands at once: overview of nodes
                for b, hits in zip(self.bands, overlap, strict=True):   # one entry per band
                    self._hits[(b, layer)] = hits
            else:
                self._hits[(band, layer)] = index.overlapping(band.start, band.end)
            if len(self._hits) > 1024:
                self._hits = {k: v for k, v in self._hits.items() if k[0] in self.bands}
        return self._hits[(band, layer)]

    def _row(self, band: Band, layer: str) -> tuple[str, list[Span]]:
        """One layer of one band, painted once per band, layer and width."""
        key = (band, layer, self.cells)
        row = self._rows.get(key)
        if row is None:
            kinds = self._layer_cells(band, layer)
            text = f"{layer:<{LABEL_W}}" + "".join(KINDS[k][0] if k else " " for k in kinds)
            spans = [Span(0, LABEL_W, "dim")]
            start = 0
            for c in range(1, len(kinds) + 1):
                if c == len(kinds) or kinds[c] != kinds[start]:
                    kind = kinds[start]
                    if kind:
                        spans.append(Span(LABEL_W + start, LABEL_W + c, KINDS[kind][1]))
                    start = c
            if len(self._rows) > 4096:
                self._rows.clear()
            row = self._rows[key] = (text, spans)
        return row

    def _line(self, y: int) -> Content | None:
        """Line `y` of the picture: a band's heading, or one layer with the cursor on it."""
        if not self.bands:
            return Content.from_markup("[dim]no memory ranges to draw[/]") if y == 0 else None
        per = len(self.rows) + 1
        bi, row = divmod(y, per)
        if bi >= len(self.bands):
            return None
        band = self.bands[bi]
        if row == 0:
            head = (f"{band.label}  {fmt.addr(band.start)}–{fmt.addr(band.end)}  "
                    f"{fmt.size(band.end - band.start + 1)}")
            return Content(head, spans=[Span(0, len(head), "b")])
        layer = self.rows[row - 1]
        text, spans = self._row(band, layer)
        if bi == self.band_index and (self.has_focus or layer == self.rows[0]):
            spans = [*spans, Span(LABEL_W + self.cursor, LABEL_W + self.cursor + 1, "reverse")]
        return Content(text, spans=spans)

    def render_line(self, y: int) -> Strip:
        """Only the lines in view are drawn (32 nodes make 160 lines, most scrolled away)."""
        width = self.content_size.width
        content = self._line(y)
        if content is None or width <= 0:
            return Strip.blank(width, self.rich_style)
        strips = Visual.to_strips(self, content, width, 1, self.visual_style, pad=True)
        return strips[0] if strips else Strip.blank(width, self.rich_style)

    def watch_cursor(self) -> None:
        self.refresh()

    def watch_band_index(self) -> None:
        self.refresh()
