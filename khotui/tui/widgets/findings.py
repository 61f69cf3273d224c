"""Pre-flight findings: one line each with its mark, and the fix under it."""

from __future__ import annotations

from textual.content import Content

from khotui.tui import fmt
from khotui.tui.viewmodel import Finding


def findings_content(findings: list[Finding], *, only_problems: bool = False) -> Content:
    rows = [f for f in findings if not only_problems or f.status in ("fail", "warn")]
    if not rows:
        return Content.from_markup("[$success]✓ nothing to report[/]")
    order = {"fail": 0, "warn": 1, "ok": 2, "skip": 3}
    lines: list[Content] = []
    for f in sorted(rows, key=lambda f: order.get(f.status, 4)):
        lines.append(fmt.mark(f.status) + Content(" ")
                     + Content.from_markup("[b]$id[/]: ", id=f.id) + Content(f.message))
        if f.fix and f.status != "ok":
            lines.append(Content.from_markup("        [$secondary]fix →[/] $fix", fix=f.fix_for("app")))
    return Content("\n").join(lines)


def summary_content(findings: list[Finding]) -> Content:
    counts = {s: sum(1 for f in findings if f.status == s) for s in ("fail", "warn", "ok")}
    if counts["fail"]:
        head = Content.from_markup("[b $error]✗ a load would fail or lose the handover[/]")
    elif counts["warn"]:
        head = Content.from_markup("[b $warning]! ready, with warnings[/]")
    else:
        head = Content.from_markup("[b $success]✓ ready[/]")
    tail = Content(f"  ({counts['fail']} fail, {counts['warn']} warn, {counts['ok']} ok)")
    return head + tail
