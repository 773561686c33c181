"""``dynseg init``: start a project on the shop's own files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from features.contract import unguessed_because
from features.asof import BadValue
from pipeline.cli.common import State, handled, out


def init(
    ctx: typer.Context,
    folder: Annotated[Optional[Path], typer.Argument(help="Project folder to create configs/ in (default: --project, or here).")] = None,
    events: Annotated[Optional[list[str]], typer.Option(help="The event log: a Parquet or CSV file, a glob of files of one layout (data/events-*.parquet), or a table of a DuckDB database as FILE.duckdb:TABLE. Required but with --refit.")] = None,
    customers: Annotated[Optional[list[str]], typer.Option(help="Customer profiles (optional): as --events.")] = None,
    identities: Annotated[Optional[list[str]], typer.Option(help="Identity links (optional): as --events.")] = None,
    refit: Annotated[bool, typer.Option("--refit", help="In an existing project whose data now validates: fit the demo's segments and figures to it (vip threshold, segments the data cannot have, freshness lag), as init does when the data validates at once.")] = False,
) -> None:
    """Start a project on your own files: configs/ with the column mappings and event roles proposed from your names, to check before the first run.

    Writes configs/catalog.yaml (your files, with the `columns:` mapping proposed from names such as userId, timestamp and revenue), configs/roles.yaml (the event names whose words say their role, Placed Order a purchase; the others listed for you to place) and the other configs with the demo's settings. Never overwrites: an existing configs/ is refused. With --refit, in a project whose data now validates: fits the demo's segments, vip threshold and freshness lag to it (what init does when the data validates at once).
    """
    from pipeline.jobs.init import init_project, several_names, spellings

    state: State = ctx.obj
    if refit:  # the project as every other command finds it (--project, DYNSEG_PROJECT, a parent folder)
        from pipeline.config import find_project_dir

        with handled():
            where = folder or state.project or find_project_dir()
        _refit(where, bool(events or customers or identities))
        return
    with handled():
        if not events:
            raise BadValue("--events is required: the event log to start the project on (`dynseg init --events "
                           "exports/events.csv`); `--refit` fits an existing project's configs to its data")
        given = {"events": events, "customers": customers or [], "identities": identities or []}
        for name, paths in given.items():  # click keeps the last of an option given twice, in silence
            if len(paths) > 1:
                raise BadValue(f"--{name} is given {len(paths)} times ({', '.join(paths)}); dynseg reads one {name} "
                               "source. Files of one layout: give a glob ('exports/events-*.csv'). Exports of different "
                               "layouts (an orders export and an email platform's): put them into one file with the "
                               "contract's columns first (README, Data contract)")
        result = init_project(folder or state.project or Path.cwd(), events[0],
                              (customers or [None])[0], (identities or [None])[0])
    sources = Table(title="Sources", title_justify="left")
    for c in ("source", "path", "rows", "columns read as", "to map by hand"):
        sources.add_column(c, overflow="fold", justify="right" if c == "rows" else "left")
    for f in result.sources:
        files = f" in {f.files:,} files" if f.files > 1 else ""
        sources.add_row(f.name, escape(f.spec["path"]) + "".join(
                            f"\n{k}: {escape(repr(v) if k != 'table' else v)}" for k, v in f.spec.items()
                            if k in ("table", "delimiter", "encoding")),
                        "—" if f.rows is None else f"{f.rows:,}{files}",
                        "\n".join(escape(f"{k} ← {v}") for k, v in f.mapped.items()) or "—",
                        "[red]could not be read[/]" if f.error else ", ".join(f.unmapped) or "—")
    out.print(sources)
    if result.roles:
        roles = Table(title="Roles guessed (check each)", title_justify="left")
        for c, justify in (("role", "left"), ("event names", "left"), ("events", "right")):
            roles.add_column(c, justify=justify)
        for role, names in result.roles.items():
            roles.add_row(role, escape(", ".join(e if e == e.strip() else repr(e) for e, _ in names)), f"{sum(n for _, n in names):,}")
        out.print(roles)
        several = several_names(result.roles)
        if several:
            out.print(f"[yellow]Several names for {', '.join(several)}:[/] if two record the same thing (an order's "
                      "webhook and its page event, an email's sent and delivered), each counts; keep one.",
                      highlight=False)
        spelt = [g for names in result.roles.values() for g in spellings([e for e, _ in names])]
        if spelt:
            out.print("[yellow]One name spelt several ways[/] (case or spacing): "
                      + escape("; ".join(", ".join(map(repr, g)) for g in spelt))
                      + ". Each spelling is one event, not a second record of it: keep them all mapped.", highlight=False)
    if result.unplaced:
        shown = ", ".join(f"{e!r} ({n:,}" + (f"; {why}" if (why := unguessed_because(e)) else "") + ")"
                          for e, n in result.unplaced[:10])
        more = f" and {len(result.unplaced) - 10} more" if len(result.unplaced) > 10 else ""
        out.print(f"[yellow]Not placed[/] (no role in their words; listed in configs/roles.yaml): {escape(shown)}{more}",
                  highlight=False)
    for f in result.sources:
        for note in f.notes:
            out.print(f"[yellow]{f.name}:[/] {escape(note)}", highlight=False)
        if f.error:
            out.print(f"[red]{f.name} could not be read:[/] {escape(f.error)}", highlight=False)
    if result.currency:
        out.print(f"[green]Currency[/] {result.currency}, the events' currency column: explanations say "
                  f"\"spent 66 {result.currency}\" (currency: in configs/project.yaml).", highlight=False)
    if result.dropped_segments:
        left = "; ".join(f"{n} ({', '.join(cols)})" for n, cols in result.dropped_segments.items())
        out.print(f"[yellow]Segments of the demo left out[/] (this data has no column they read): {escape(left)}",
                  highlight=False)
    for line in result.fitted_values:
        out.print(f"[green]Fitted to this data:[/] {escape(line)}", highlight=False)
    project = result.folder
    flag = "" if project == Path.cwd().resolve() else f" --project {project}"
    out.print(f"[green]Wrote[/] {len(result.written)} files to {project / 'configs'}. Next:", highlight=False)
    for step in (f"check configs/catalog.yaml and configs/roles.yaml, then `dynseg{flag} data validate` (it proposes "
                 "what is still missing)",
                 f"`dynseg{flag} features build --as-of DATE`, then `dynseg{flag} train purchase` and `train churn`",
                 f"`dynseg{flag} models promote purchase VERSION` (and churn): a run scores with each target's champion",
                 f"`dynseg{flag} segments check`: configs/segments.yaml holds the demo's segments"
                 + (f", kept as they are ({result.segments_unchecked}); once the data validates, `dynseg{flag} init "
                    "--refit` fits them (and the vip threshold and freshness lag) to it" if result.segments_unchecked else
                    " less those your data cannot have: review them and make them your own"),
                 f"`dynseg{flag} score --as-of DATE`"):
        out.print(f"  - {step}", markup=False, highlight=False)


def _refit(folder: Path, sources_given: bool) -> None:
    """``dynseg init --refit``: the fits init makes when the data validates, on an existing project."""
    from pipeline.jobs.init import refit_project

    with handled():
        if sources_given:
            raise BadValue("--refit reads the sources configs/catalog.yaml names; give no --events, --customers or "
                           "--identities with it")
        dropped, fitted = refit_project(folder)
    if dropped:
        left = "; ".join(f"{n} ({', '.join(cols)})" for n, cols in dropped.items())
        out.print(f"[yellow]Segments of the demo left out[/] (this data has no column they read): {escape(left)}",
                  highlight=False)
    for line in fitted:
        out.print(f"[green]Fitted to this data:[/] {escape(line)}", highlight=False)
    if not dropped and not fitted:
        out.print("Nothing to fit: every segment's rule reads columns this data has, and the vip rule and freshness "
                  "lag are no longer the demo's (or need no change).", highlight=False)
