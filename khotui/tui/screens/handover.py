"""Handover (FDT) explorer: the outgoing and incoming KHO trees side by side, decoded."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Static, Tree

from khotui.tui.screens.base import KhotuiScreen
from khotui.tui.viewmodel import FdtBlob, FdtNodeView, Handover, HandoverSide, Problem
from khotui.tui.widgets.hexview import hexdump
from khotui.tui.widgets.panel import problem_content

VIEWS = ("decoded", "dts", "hex")


class HandoverLoaded(Message):
    def __init__(self, handover: Handover) -> None:
        super().__init__()
        self.handover = handover


class HandoverScreen(KhotuiScreen):
    MODE = "handover"
    # styled by handover.tcss, which the app loads (KhotuiApp.CSS_PATH)
    HELP = """\
## Handover (FDT) explorer

What this kernel will hand to the next one (**outgoing**, `kho/out`) and, after a KHO boot,
what it received (**incoming**, `kho/in`), side by side when both exist.

Each blob is listed: the root KHO FDT, its sub-FDTs, and packed structs such as
`kexec-metadata` (decoded field by field). Select a node to see its properties decoded:
`preserved-data`, `preserved-memory-map` and `blob-size` are native-endian u64 (addresses and
sizes), not FDT big-endian cells. **v** cycles the detail between *decoded*, the raw
*DTS-like* text and a *hex* dump; unknown blobs are shown in hex.

A warning at the top says when debugfs shows fewer bytes than the FDT header's `totalsize`
(the blob keeps its boot-time size): what parses is shown.
"""
    BINDINGS = [
        Binding("v", "cycle_view", "Decoded/DTS/hex", id="handover-view"),
        Binding("r", "refresh", "Refresh", id="handover-refresh"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("", id="fdt-warnings")
        yield Horizontal(id="fdt-trees")
        with VerticalScroll(id="fdt-detail-scroll"):
            yield Static(Content.from_markup("[dim]reading the handover state…[/]"), id="fdt-detail")

    def on_mount(self) -> None:
        self.view_mode = "decoded"
        self.selected: tuple[FdtBlob, FdtNodeView | None] | None = None
        self.load_handover()

    def action_refresh(self) -> None:
        self.load_handover()

    def action_cycle_view(self) -> None:
        self.view_mode = VIEWS[(VIEWS.index(self.view_mode) + 1) % len(VIEWS)]
        self._show_detail()

    @work(thread=True, exclusive=True, group="handover", exit_on_error=False)
    def load_handover(self) -> None:
        self.post_message(HandoverLoaded(self.app.source.handover()))  # type: ignore[attr-defined]

    @on(HandoverLoaded)
    async def _loaded(self, event: HandoverLoaded) -> None:
        ho = event.handover
        trees = self.query_one("#fdt-trees", Horizontal)
        await trees.remove_children()
        warnings = self.query_one("#fdt-warnings", Static)
        detail = self.query_one("#fdt-detail", Static)
        if isinstance(ho.sides, Problem):
            warnings.display = False
            detail.update(problem_content(ho.sides))
            return
        notes = list(ho.notes)
        for side in ho.sides:
            for blob in side.blobs:
                notes += [f"{blob.name}: {w}" for w in blob.warnings]
        warnings.display = bool(notes)
        warnings.update(Content("\n").join(Content.from_markup("[b $warning]![/] $n", n=n) for n in notes))
        if not ho.sides:
            detail.update(Content.from_markup("[dim]no handover state on this host (KHO off)[/]"))
            return
        new = [self._side_tree(i, side) for i, side in enumerate(ho.sides)]
        await trees.mount_all(new)
        new[0].focus()
        first = ho.sides[0].blobs[0] if ho.sides[0].blobs else None
        self.selected = (first, first.root if first else None) if first else None
        self._show_detail()

    def _side_tree(self, i: int, side: HandoverSide) -> Tree:
        tree: Tree = Tree(side.title, id=f"fdt-side-{i}", classes="fdt-tree")
        tree.root.expand()
        for blob in side.blobs:
            label = Text.assemble((blob.name, "bold"), (f" {blob.kind}, {blob.size} B", "dim"),
                                  (" !" if blob.warnings else "", "bold"))
            node = tree.root.add(label, data=(blob, blob.root),
                                 allow_expand=bool(blob.root and blob.root.children))
            if blob is side.blobs[0] and blob.root and len(blob.root.children) < 50:
                self._add_children(node, blob, blob.root)   # the root FDT opens expanded
                node.expand()
        return tree

    def _add_children(self, node, blob: FdtBlob, fnode: FdtNodeView) -> None:  # noqa: ANN001
        for child in fnode.children:
            node.add(child.name, data=(blob, child), allow_expand=bool(child.children))

    @on(Tree.NodeExpanded, ".fdt-tree")
    def _expand(self, event: Tree.NodeExpanded) -> None:
        data = event.node.data
        if data and data[1] is not None and not event.node.children:
            self._add_children(event.node, data[0], data[1])

    @on(Tree.NodeHighlighted, ".fdt-tree")
    def _highlight(self, event: Tree.NodeHighlighted) -> None:
        if event.node.data:
            self.selected = event.node.data
            self._show_detail()

    def _show_detail(self) -> None:
        detail = self.query_one("#fdt-detail", Static)
        if not self.selected:
            return
        blob, fnode = self.selected
        scroll = self.query_one("#fdt-detail-scroll")
        scroll.border_title = f"{blob.path} — {self.view_mode} (v)"
        detail.update(detail_content(blob, fnode, self.view_mode))


def detail_content(blob: FdtBlob, fnode: FdtNodeView | None, view: str) -> Content:
    if view == "hex" or blob.kind == "raw":
        head = Content.from_markup("[dim]$p, $n bytes[/]\n", p=blob.path, n=str(blob.size))
        return head + hexdump(blob.raw)
    if view == "dts":
        return Content(blob.dts or "(no DTS view for this blob)")
    if blob.kind == "struct":
        lines = [Content.from_markup("[b]$n[/] [dim](packed struct, not an FDT)[/]", n=blob.name)]
        for k, v in blob.fields:
            lines.append(Content.from_markup("[$secondary]$k[/] $v", k=f"{k:<16}", v=v))
        return Content("\n").join(lines)
    if fnode is None:
        return Content("(empty)")
    lines = [Content.from_markup("[b]$p[/]", p=fnode.path or "/")]
    if not fnode.properties:
        lines.append(Content.from_markup("[dim]no properties[/]"))
    width = max((len(p.name) for p in fnode.properties), default=8)
    for prop in fnode.properties:
        lines.append(Content.from_markup("[$secondary]$k[/] $v", k=f"{prop.name:<{width}}", v=prop.value))
    if fnode.children:
        lines.append(Content.from_markup("[dim]$n child node(s)[/]", n=str(len(fnode.children))))
    return Content("\n").join(lines)
