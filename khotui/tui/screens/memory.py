"""Memory map: a picture of physical memory, the /proc/iomem tree with search, memory blocks."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import ContentSwitcher, Input, OptionList, Static, Tree
from textual.widgets.option_list import Option

from khotui.tui import fmt
from khotui.tui.screens.base import KhotuiScreen
from khotui.tui.viewmodel import BlockRun, IomemLine, MemoryMap, Plan, Problem
from khotui.tui.widgets.lazytree import Group, TreeShape, add_children, expand_group
from khotui.tui.widgets.memory_bands import MemoryBands, legend
from khotui.tui.widgets.panel import problem_content
from khotui.tui.widgets.rowtable import RowTable
from khotui.tui.widgets.steady import SteadyInput

MAX_RESULTS = 200
DEFER_TREE = 40       # top-level /proc/iomem lines: more than a pane shows


class MemoryLoaded(Message):
    def __init__(self, memory: MemoryMap) -> None:
        super().__init__()
        self.memory = memory


class BlockStatesRead(Message):
    def __init__(self, runs: list[BlockRun] | Problem) -> None:
        super().__init__()
        self.runs = runs


class SearchDone(Message):
    def __init__(self, query: str, matches: list[IomemLine] | Problem) -> None:
        super().__init__()
        self.query, self.matches = query, matches


def _iomem_label(line: IomemLine) -> Text:
    # Tree labels are Rich Text; the address column is dimmed, the name never parsed as markup
    return Text.assemble((f"{line.start:08x}-{line.end:08x}", "dim"), " ", line.name)


# how the /proc/iomem tree shows its lines (widgets/lazytree.add_children)
IOMEM: TreeShape[IomemLine] = TreeShape(
    label=_iomem_label, data=lambda line: line, expandable=lambda line: line.has_children,
    group_label=lambda ls: f"{ls[0].start:08x}-{ls[-1].end:08x}")


class MemoryScreen(KhotuiScreen):
    MODE = "memory"
    HOLD = 0.5    # two frames of mounting, then the read
    # styled by memory.tcss, which the app loads (KhotuiApp.CSS_PATH)
    HELP = """\
## Memory map

A picture of physical memory: one band per NUMA node, each with four layers on the same
address axis — **iomem** (System RAM █, reserved ▒, firmware ░), **kernel** (K code/data,
C crash kernel), **scratch** (S, the KHO scratch regions the next kernel is placed in) and
**plan** (# the segments of the last plan).

Move the cursor with ←/→ (↑/↓ between nodes); **+** or enter zooms in around it, **-** zooms
out, **0** shows everything, **n** jumps to the next scratch region or segment. The line under
the map names what is under the cursor.

Beside it (**/** and **b** switch), **/proc/iomem** as a tree (expanded on demand; long
lists come in groups of 100) with **/** to search by name or hex address, and the **memory
blocks** per node, in runs of consecutive blocks; **esc** goes back to the map. On a large
host each block's state is read only when asked (**s**): it is one file per block, 196,608
of them on a 24 TiB host.
"""
    BINDINGS = [
        Binding("slash", "search", "Search iomem", id="memory-search", key_display="/"),
        Binding("b", "blocks", "Blocks", id="memory-blocks", show=False),
        Binding("s", "block_states", "Block states", id="memory-block-states", show=False),
        Binding("r", "refresh", "Refresh", id="memory-refresh"),
        Binding("0", "zoom_reset", "All memory", id="memory-zoom-reset", show=False),
        # out of the search box (or the results, the tree, the table) and back to the map
        Binding("escape", "focus_map", "Map", id="memory-focus-map"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="mem-main"):
            with Vertical(id="map-pane"):
                with VerticalScroll(id="bands-scroll"):   # 32 nodes: taller than the screen
                    yield MemoryBands(id="bands")
                yield Static(Content.from_markup("[dim]reading the memory map…[/]"),
                             id="cursor-info")
                yield Static(legend(max(self.app.size.width // 2 - 2, 20)), id="legend")
            with Vertical(id="mem-tabs"):
                yield Static(self._tab_bar("tab-iomem"), id="mem-tab-bar")

    def on_mount(self) -> None:
        self.query_one(MemoryBands).focus()
        # The first frame is the picture; the iomem and blocks panes (five heavy widgets, as
        # long again to mount) come in the next one, then the read starts.
        self.call_after_refresh(self._mount_panes)

    async def _mount_panes(self) -> None:
        switcher = ContentSwitcher(
            Vertical(SteadyInput(placeholder="/ search name or address (enter)", id="iomem-search"),
                     OptionList(id="iomem-results"), Tree("/proc/iomem", id="iomem-tree"),
                     id="tab-iomem"),
            Vertical(RowTable(id="blocks"), id="tab-blocks"),
            initial="tab-iomem", id="mem-switcher")
        await self.query_one("#mem-tabs").mount(switcher)
        self.query_one("#iomem-results").display = False
        self.load_memory()

    @staticmethod
    def _tab_bar(active: str) -> Content:
        parts = []
        for tab, key, title in (("tab-iomem", "/", "/proc/iomem"), ("tab-blocks", "b", "Memory blocks")):
            style = "b reverse $primary" if tab == active else "$foreground 70%"
            parts.append(Content.from_markup(f"[@click=screen.show_tab('{tab}')][{style}] $t [/][/]",
                                             t=f"{title} ({key})"))
        return Content(" ").join(parts)

    def action_show_tab(self, tab: str) -> None:
        switchers = self.query("#mem-switcher")
        if switchers:
            switchers.first(ContentSwitcher).current = tab
            self.query_one("#mem-tab-bar", Static).update(self._tab_bar(tab))

    def action_blocks(self) -> None:
        self.action_show_tab("tab-blocks")
        if self.query("#blocks"):
            self.query_one("#blocks", RowTable).focus()

    def action_refresh(self) -> None:
        self.load_memory(refresh=True)

    def action_block_states(self) -> None:
        mm = self.memory
        if mm is None or not isinstance(mm.blocks, list):
            return
        self.action_show_tab("tab-blocks")
        self.notify(f"reading the state of {mm.block_count:,} memory blocks…", timeout=3)
        self.read_block_states()

    @work(thread=True, exclusive=True, group="block-states", exit_on_error=False)
    def read_block_states(self) -> None:
        self.post_message(BlockStatesRead(self.khotui.source.block_states()))

    @on(BlockStatesRead)
    def _states(self, event: BlockStatesRead) -> None:
        mm = self.memory
        if mm is not None and isinstance(event.runs, list):
            mm.blocks = event.runs
        self._fill_blocks(event.runs, mm.block_size if mm else None)

    def action_search(self) -> None:
        if not self.query("#iomem-search"):
            return
        self.action_show_tab("tab-iomem")
        self.query_one("#iomem-search", Input).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "focus_map":       # shown only where it leads somewhere
            return not self.query_one(MemoryBands).has_focus
        return True

    def action_focus_map(self) -> None:
        self.query_one(MemoryBands).focus()

    def action_zoom_reset(self) -> None:
        self.query_one(MemoryBands).action_zoom_reset()

    @work(thread=True, exclusive=True, group="memory", exit_on_error=False)
    def load_memory(self, refresh: bool = False) -> None:
        app = self.khotui
        self.post_message(MemoryLoaded(app.source.memory(app.plan, refresh=refresh)))

    def on_screen_resume(self) -> None:
        # a plan made since the last visit adds its segments to the picture
        plan = self.khotui.plan
        if plan is not None and self.memory is not None and self._plan_shown is not plan:
            self.load_memory()

    memory: MemoryMap | None = None      # the last map read, and the plan it showed
    _plan_shown: Plan | None = None
    _matches: Sequence[IomemLine] = ()   # the search results listed, by option id

    @on(MemoryLoaded)
    def _loaded(self, event: MemoryLoaded) -> None:
        mm = event.memory
        self.call_after_refresh(self.release_paint)
        self._plan_shown = self.khotui.plan
        self.memory = mm
        self.query_one(MemoryBands).set_data(mm.bands, mm.ranges)
        if not self._panes_shown and isinstance(mm.iomem, list) and len(mm.iomem) > DEFER_TREE:
            # The tree fills its pane: drawing it with the picture made the slowest frame on a
            # big host (60-100 ms on 100x at 120x40). The picture goes first, the tree in the
            # next frame. A short tree costs little and is drawn at once: a frame of its own
            # costs ~3 KB more over a slow link.
            self.query_one("#mem-switcher").display = False
            # shown after the full frame; this if no full frame comes (output never held)
            self.set_timer(1.0, self.after_full_frame)
        self._fill_tree(mm.iomem)
        self._fill_blocks(mm.blocks, mm.block_size, mm.block_count)
        if mm.notes:
            self.query_one("#legend", Static).update(
                legend(self.query_one("#legend", Static).content_size.width or 40)
                + Content("\n") + Content("\n").join(
                    Content.from_markup("[$warning]![/] $n", n=n) for n in mm.notes))

    _panes_shown = False

    def after_full_frame(self) -> None:
        if not self._panes_shown and self.query("#mem-switcher"):
            self._panes_shown = True
            switcher = self.query_one("#mem-switcher")
            if not switcher.display:
                switcher.display = True

    @on(MemoryBands.CursorMoved)
    def _cursor(self, event: MemoryBands.CursorMoved) -> None:
        names = ", ".join(f"{r.label} ({fmt.addr(r.start)}–{fmt.addr(r.end)})"
                          for r in event.under[:3]) or "hole"
        more = f" +{len(event.under) - 3}" if len(event.under) > 3 else ""
        self.query_one("#cursor-info", Static).update(
            Content.from_markup("[b $secondary]$a[/] $n", a=fmt.addr(event.address), n=names + more))

    # -- iomem tree: top level now, children when a node is expanded --------------------------

    def _fill_tree(self, iomem: list[IomemLine] | Problem) -> None:
        tree: Tree[object] = self.query_one("#iomem-tree", Tree)
        tree.clear()
        if isinstance(iomem, Problem):
            tree.root.set_label(Text(f"/proc/iomem unavailable: {iomem}"))
            return
        tree.root.set_label("/proc/iomem")
        add_children(tree.root, iomem, IOMEM)
        tree.root.expand()

    @on(Tree.NodeExpanded, "#iomem-tree")
    def _expand(self, event: Tree.NodeExpanded[object]) -> None:
        node = event.node
        data = node.data
        if isinstance(data, Group):
            expand_group(node, data, IOMEM)
        elif isinstance(data, IomemLine) and not node.children and data.has_children:
            add_children(node, data.children, IOMEM)

    @on(Tree.NodeSelected, "#iomem-tree")
    def _tree_selected(self, event: Tree.NodeSelected[object]) -> None:
        line = event.node.data
        if isinstance(line, IomemLine):
            self.query_one(MemoryBands).zoom_to(line.start, line.end, line.name)

    # -- search ------------------------------------------------------------------------------

    @on(Input.Submitted, "#iomem-search")
    def _search(self, event: Input.Submitted) -> None:
        query = event.value.strip()
        if not query:
            results = self.query_one("#iomem-results", OptionList)
            results.clear_options()
            results.display = False
            return
        self.search(query)

    @work(thread=True, exclusive=True, group="iomem-search", exit_on_error=False)
    def search(self, query: str) -> None:
        self.post_message(SearchDone(query, self.khotui.source.search_iomem(query, MAX_RESULTS)))

    @on(SearchDone)
    def _search_done(self, event: SearchDone) -> None:
        results = self.query_one("#iomem-results", OptionList)
        results.clear_options()
        if isinstance(event.matches, Problem):
            self._matches = []
            results.add_option(Option(problem_content(event.matches), disabled=True))
        elif not event.matches:
            self._matches = []
            results.add_option(Option(f"no range matches {event.query!r}", disabled=True))
        else:
            self._matches = event.matches
        results.add_options([Option(_iomem_label(line), id=str(i))
                             for i, line in enumerate(self._matches)])
        results.display = True
        results.highlighted = 0
        results.focus()

    @on(OptionList.OptionSelected, "#iomem-results")
    def _result_selected(self, event: OptionList.OptionSelected) -> None:
        line = self._matches[int(event.option.id or 0)]
        self.query_one(MemoryBands).zoom_to(line.start, line.end, line.name)
        self.query_one(MemoryBands).focus()

    # -- memory blocks -----------------------------------------------------------------------

    def _fill_blocks(self, blocks: list[BlockRun] | Problem, block_size: int | None,
                     count: int | None = None) -> None:
        table = self.query_one("#blocks", RowTable)
        if isinstance(blocks, Problem):
            rows = [[f"unavailable: {blocks.headline}"]] + ([[f"fix: {blocks.fix}"]] if blocks.fix else [])
            table.set_rows(["memory blocks"], rows)
            return
        known = all(run.state for run in blocks)
        rows = []
        for run in blocks:
            n = run.last - run.first + 1
            rows.append(["?" if run.node is None else str(run.node),
                         f"memory{run.first}" + (f"–{run.last} ({n})" if n > 1 else ""),
                         fmt.addr(run.start), fmt.addr(run.end), fmt.size(run.end - run.start + 1),
                         run.state or "—"])
        table.set_rows(["node", "blocks", "start", "end", "size",
                        "state" if known else "state (s reads)"], rows)
        if block_size:
            self.query_one("#tab-blocks").border_title = f"block size {fmt.size(block_size)}"

