"""Rich renderings of job results shared by several commands."""

from __future__ import annotations

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
        detail = p.message
        if p.examples:
            detail += "\n[dim]e.g.[/] " + "; ".join(p.examples)
        detail += f"\n[dim]fix:[/] {p.fix}"
        t.add_row(f"[{style}]{p.severity}[/]", f"{p.where()}\n{p.check}", f"{p.count:,}", detail)
    return t
