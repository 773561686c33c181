"""Rich renderings of job results shared by several commands."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from features.validation import Problem


def problems_table(problems: list[Problem]) -> Table:
    t = Table(title="Data problems", title_justify="left", show_lines=True)
    t.add_column("", no_wrap=True)
    t.add_column("where / check", overflow="fold")
    t.add_column("count", justify="right")
    t.add_column("problem, examples, fix", overflow="fold", ratio=1)
    for p in sorted(problems, key=lambda p: (p.severity != "error", p.source, p.column or "")):
        style = "red" if p.severity == "error" else "yellow"
        # escaped: a value, a path or an event name may hold brackets rich would take for markup
        detail = escape(p.message)
        if p.examples:
            detail += "\n[dim]e.g.[/] " + escape("; ".join(p.examples))
        detail += f"\n[dim]fix:[/] {escape(p.fix)}"
        t.add_row(f"[{style}]{p.severity}[/]", escape(f"{p.where()}\n{p.check}"), f"{p.count:,}", detail)
    return t
