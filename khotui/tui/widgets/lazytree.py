"""Tree children added on demand, in groups when there are many.

A Tree node with 6,000 children (the top of a big /proc/iomem) or 10,000 (the KHO FDT's root)
costs a few hundred milliseconds to add in one go, a frozen screen; the Tree then draws only
what is visible anyway. Above `LIMIT` children, a node gets one child per `GROUP` of them, and a
group adds its own children when it is expanded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rich.text import Text

LIMIT = 200
GROUP = 100


@dataclass
class Group:
    """`items[first:first+len]` of some node's children, not yet added to the tree."""

    items: Sequence[Any]
    first: int


def add_children(node: Any, items: Sequence[Any], *, label: Callable[[Any], Text | str],
                 data: Callable[[Any], Any], expandable: Callable[[Any], bool],
                 group_label: Callable[[Sequence[Any]], str] | None = None) -> None:
    """Add `items` under the tree node `node` (grouped when there are more than LIMIT)."""
    if len(items) <= LIMIT:
        for item in items:
            if expandable(item):
                node.add(label(item), data=data(item), allow_expand=True)
            else:
                node.add_leaf(label(item), data=data(item))
        return
    for first in range(0, len(items), GROUP):
        chunk = items[first:first + GROUP]
        what = group_label(chunk) if group_label else ""
        text = Text.assemble((f"[{first}–{first + len(chunk) - 1}]", "bold"),
                             (f" {what}" if what else "", "dim"))
        node.add(text, data=Group(chunk, first), allow_expand=True)


def expand_group(node: Any, **how: Any) -> bool:
    """On NodeExpanded: fill a Group node with its items. False when `node` is not a Group."""
    if not isinstance(node.data, Group):
        return False
    if not node.children:
        add_children(node, node.data.items, **how)
    return True
