"""Tree children added on demand, in groups when there are many.

A Tree node with 6,000 children (the top of a big /proc/iomem) or 10,000 (the KHO FDT's root)
costs a few hundred milliseconds to add in one go, a frozen screen; the Tree then draws only
what is visible anyway. Above `LIMIT` children, a node gets one child per `GROUP` of them, and a
group adds its own children when it is expanded.

The trees carry `object` data (an item's own data, or a Group): screens narrow it with
isinstance, as a Tree mixing groups and items must.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from rich.text import Text
from textual.widgets.tree import TreeNode

LIMIT = 200
GROUP = 100

T = TypeVar("T")


@dataclass(frozen=True)
class Group(Generic[T]):
    """`items[first:first+len]` of some node's children, not yet added to the tree."""

    items: Sequence[T]
    first: int


@dataclass(frozen=True)
class TreeShape(Generic[T]):
    """How items of one kind show in a tree: label, node data, whether they open, and the
    label of a group of them."""

    label: Callable[[T], Text | str]
    data: Callable[[T], object]
    expandable: Callable[[T], bool]
    group_label: Callable[[Sequence[T]], str] | None = None


def add_children(node: TreeNode[object], items: Sequence[T], shape: TreeShape[T]) -> None:
    """Add `items` under the tree node `node` (grouped when there are more than LIMIT)."""
    if len(items) <= LIMIT:
        for item in items:
            if shape.expandable(item):
                node.add(shape.label(item), data=shape.data(item), allow_expand=True)
            else:
                node.add_leaf(shape.label(item), data=shape.data(item))
        return
    for first in range(0, len(items), GROUP):
        chunk = items[first:first + GROUP]
        what = shape.group_label(chunk) if shape.group_label else ""
        text = Text.assemble((f"[{first}–{first + len(chunk) - 1}]", "bold"),
                             (f" {what}" if what else "", "dim"))
        node.add(text, data=Group(chunk, first), allow_expand=True)


def expand_group(node: TreeNode[object], group: Group[T], shape: TreeShape[T]) -> None:
    """On NodeExpanded of a Group node: fill it with its items, once."""
    if not node.children:
        add_children(node, group.items, shape)
