"""Handover (FDT) explorer: the outgoing and incoming KHO trees side by side, decoded."""

from __future__ import annotations

import re
from typing import NamedTuple

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Static, Tree

from khotui.tui.screens.base import KhotuiScreen
from khotui.tui.viewmodel import FdtBlob, FdtNodeView, Handover, HandoverSide, Problem
from khotui.tui.widgets.lazytree import Group, TreeShape, add_children, expand_group
from khotui.tui.widgets.panel import problem_content
from khotui.tui.widgets.textview import TextView, terminal_lines

VIEWS = ("decoded", "dts", "hex")


class HandoverLoaded(Message):
    def __init__(self, handover: Handover) -> None:
        super().__init__()
        self.handover = handover


class TextReady(Message):
    def __init__(self, blob: FdtBlob, mode: str, lines: list[str], width: int) -> None:
        super().__init__()
        self.blob, self.mode, self.lines, self.width = blob, mode, lines, width


class Pick(NamedTuple):
    """What a tree node stands for: a blob, and one of its FDT nodes (None: not an FDT)."""

    blob: FdtBlob
    node: FdtNodeView | None


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
        # every warning is reachable: a count, and a box that scrolls (issue 13 item 5)
        with VerticalScroll(id="fdt-warnings"):
            yield Static("", id="fdt-warnings-text")
        yield Horizontal(id="fdt-trees")
        with Vertical(id="fdt-detail-box"):
            with VerticalScroll(id="fdt-detail-scroll"):
                yield Static(Content.from_markup("[dim]reading the handover state…[/]"),
                             id="fdt-detail")
            yield TextView(id="fdt-text")

    def on_mount(self) -> None:
        self.view_mode = "decoded"
        self.selected: Pick | None = None
        self.query_one("#fdt-text").display = False
        self.load_handover()

    def action_refresh(self) -> None:
        self.load_handover(refresh=True)

    def action_cycle_view(self) -> None:
        self.view_mode = VIEWS[(VIEWS.index(self.view_mode) + 1) % len(VIEWS)]
        self._show_detail()

    @work(thread=True, exclusive=True, group="handover", exit_on_error=False)
    def load_handover(self, refresh: bool = False) -> None:
        self.post_message(HandoverLoaded(self.khotui.source.handover(refresh=refresh)))

    @on(HandoverLoaded)
    async def _loaded(self, event: HandoverLoaded) -> None:
        ho = event.handover
        self.call_after_refresh(self.release_paint)
        trees = self.query_one("#fdt-trees", Horizontal)
        await trees.remove_children()
        warnings = self.query_one("#fdt-warnings", VerticalScroll)
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
        lines = [Content.from_markup("[b $warning]![/] $n", n=n) for n in notes]
        if len(notes) > 1:
            lines.insert(0, Content.from_markup("[b $warning]$c warnings[/]", c=str(len(notes))))
        self.query_one("#fdt-warnings-text", Static).update(Content("\n").join(lines))
        if not ho.sides:
            detail.update(Content.from_markup("[dim]no handover state on this host (KHO off)[/]"))
            return
        new = [self._side_tree(i, side) for i, side in enumerate(ho.sides)]
        await trees.mount_all(new)
        new[0].focus()
        first = ho.sides[0].blobs[0] if ho.sides[0].blobs else None
        self.selected = Pick(first, first.root) if first else None
        self._show_detail()

    def _side_tree(self, i: int, side: HandoverSide) -> Tree[object]:
        tree: Tree[object] = Tree(side.title, id=f"fdt-side-{i}", classes="fdt-tree")
        tree.root.expand()
        add_children(tree.root, side.blobs, BLOBS)
        first = side.blobs[0] if side.blobs else None
        if first and first.root and first.root.child_count < 50 and tree.root.children:
            node = tree.root.children[0]
            add_children(node, first.root.children, _nodes_of(first))  # the root FDT, open
            node.expand()
        return tree

    @on(Tree.NodeExpanded, ".fdt-tree")
    def _expand(self, event: Tree.NodeExpanded[object]) -> None:
        node = event.node
        data = node.data
        if isinstance(data, Group):
            items = data.items
            if items and isinstance(items[0], FdtBlob):
                expand_group(node, data, BLOBS)
            else:
                parent = node.parent
                while parent is not None and isinstance(parent.data, Group):
                    parent = parent.parent
                if parent is not None and isinstance(parent.data, Pick):
                    expand_group(node, data, _nodes_of(parent.data.blob))
            return
        if isinstance(data, Pick) and data.node is not None and not node.children:
            add_children(node, data.node.children, _nodes_of(data.blob))

    @on(Tree.NodeHighlighted, ".fdt-tree")
    def _highlight(self, event: Tree.NodeHighlighted[object]) -> None:
        if isinstance(event.node.data, Pick):
            self.selected = event.node.data
            self._show_detail()

    def _show_detail(self) -> None:
        if not self.selected:
            return
        blob, fnode = self.selected
        box = self.query_one("#fdt-detail-box")
        box.border_title = f"{blob.path} — {self.view_mode} (v)"
        text_view = self.query_one("#fdt-text", TextView)
        scroll = self.query_one("#fdt-detail-scroll")
        mode = self._text_mode(blob)
        if mode is None:
            text_view.display = False
            scroll.display = True
            self.query_one("#fdt-detail", Static).update(detail_content(blob, fnode))
            return
        scroll.display = False
        text_view.display = True
        text_view.set_lines([f"rendering the {mode}…"])
        # the cells the text gets (the box less the view's padding and scrollbar): the hex dump
        # is made to fit them (issue 13 item 5)
        width = box.content_region.width
        self.render_text(blob, mode, width - 4 if width else 0)

    def _text_mode(self, blob: FdtBlob) -> str | None:
        """None for the decoded view, else which text: raw blobs are only ever hex."""
        if blob.kind == "raw":
            return "hex"
        if self.view_mode == "decoded":
            return None
        return "dts" if self.view_mode == "dts" and blob.kind == "fdt" else "hex"

    @work(thread=True, exclusive=True, group="fdt-text", exit_on_error=False)
    def render_text(self, blob: FdtBlob, mode: str, width: int = 0) -> None:
        """DTS or hex lines off the event loop: 40,000 lines for a 10,000-node FDT."""
        if mode == "dts":
            lines = (blob.dts() or "(no DTS view for this blob)").splitlines()
        else:
            lines = hex_lines(blob, width)
        self.post_message(TextReady(blob, mode, *terminal_lines(lines)))

    @on(TextReady)
    def _text_ready(self, event: TextReady) -> None:
        if self.selected and self.selected.blob is event.blob and self._text_mode(event.blob) == event.mode:
            self.query_one("#fdt-text", TextView).set_lines(event.lines, event.width)


def _blob_label(blob: FdtBlob) -> Text:
    return Text.assemble((blob.name, "bold"), (f" {blob.kind}, {blob.size} B", "dim"),
                         (" !" if blob.warnings else "", "bold"))


# how the tree shows blobs, and the nodes of one blob (widgets/lazytree.add_children)
BLOBS: TreeShape[FdtBlob] = TreeShape(
    label=_blob_label, data=lambda blob: Pick(blob, blob.root),
    expandable=lambda blob: bool(blob.root and blob.root.child_count),
    group_label=lambda blobs: f"{blobs[0].name} … {blobs[-1].name}")


def _nodes_of(blob: FdtBlob) -> TreeShape[FdtNodeView]:
    return TreeShape(label=lambda c: c.name, data=lambda c: Pick(blob, c),
                     expandable=lambda c: bool(c.child_count),
                     group_label=lambda cs: f"{cs[0].name} … {cs[-1].name}")


# one `hexdump -C` line of 16 bytes (khotui/fdt/render.py hexdump): offset, hex bytes, |ascii|
_HEX16 = re.compile(r"^([0-9a-f]{8})  (.{49}) \|(.*)\|$")
HEX16_WIDTH = 78


def hex_lines(blob: FdtBlob, width: int = 0) -> list[str]:
    """The hex dump, with 8 bytes a line when 16 do not fit `width` cells (0: any width), so
    the ASCII column stays on screen at 80 columns."""
    lines = blob.hex().splitlines()
    if 0 < width < HEX16_WIDTH:
        lines = [half for line in lines for half in _hex8(line)]
    return [f"{blob.path}, {blob.size} bytes", *lines]


def _hex8(line: str) -> list[str]:
    m = _HEX16.match(line)
    if m is None:                   # "… N more bytes", "(empty)"
        return [line]
    offset, text = int(m.group(1), 16), m.group(3)
    hexes = m.group(2).split()
    out = [f"{offset:08x}  {' '.join(hexes[:8]):<23} |{text[:8]}|"]
    if len(hexes) > 8:
        out.append(f"{offset + 8:08x}  {' '.join(hexes[8:]):<23} |{text[8:]}|")
    return out


def detail_content(blob: FdtBlob, fnode: FdtNodeView | None) -> Content:
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
    if fnode.child_count:
        lines.append(Content.from_markup("[dim]$n child node(s)[/]", n=str(fnode.child_count)))
    return Content("\n").join(lines)
