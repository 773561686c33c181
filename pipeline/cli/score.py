"""``dynseg score --as-of D``: score every customer with the champion models, refresh the segments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from features.asof import as_of_label, as_of_text, now_utc, parse_as_of
from pipeline.cli.common import Engine, State, engine_name, err, filled, handled, kv_table, out, stages

if TYPE_CHECKING:  # the job (and scikit-learn behind it) is imported when the command runs
    from pipeline.jobs.score import ScoreRun


def score(
    ctx: typer.Context,
    as_of: Annotated[Optional[str], typer.Option(callback=filled, help="Score as of this date (end of day, UTC) or instant; default: now.")] = None,
    engine: Annotated[Optional[Engine], typer.Option(help="duckdb or spark (default from config).")] = None,
    reasons: Annotated[Optional[bool], typer.Option("--reasons/--no-reasons", help="Reason codes for sendable customers (default: reason_codes in configs/scoring.yaml).")] = None,
    allow_dead_inputs: Annotated[bool, typer.Option("--allow-dead-inputs", help="Score even when an input a champion learned from holds one value (or none) for every customer (refused by default: a column renamed upstream, such as the amount, would score a different shop).")] = False,
    allow_fewer_events: Annotated[bool, typer.Option("--allow-fewer-events", help="Replace a run of the same as_of even when the log now holds fewer events before it than that run read (refused by default: a day's file missing from the log would replace a good run with one from less data).")] = False,
    allow_short_history: Annotated[bool, typer.Option("--allow-short-history", help="Score even when the event log holds less history than the longest feature window and than the champion was tested with (refused by default: a log of recent events only makes every customer look new).")] = False,
) -> None:
    """Score customers as of a date and refresh every segment: bands, rules, holdouts, enter/exit.

    Writes the run, memberships, deltas and segment health to the workspace in one transaction
    (re-running a date replaces that run), exports each segment to Parquet/CSV and records the run
    in MLflow.
    """
    state: State = ctx.obj
    with handled():
        cfg = state.config()
        instant = parse_as_of(as_of) if as_of else now_utc()
        with stages("scoring") as say:
            from pipeline.jobs.score import score_job

            run = score_job(cfg, instant, engine_name(engine), progress=say, reasons=reasons,
                            allow_short_history=allow_short_history, allow_dead_inputs=allow_dead_inputs,
                            allow_fewer_events=allow_fewer_events)
    for w in run.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    print_run(run)


def print_run(run: ScoreRun) -> None:
    out.print(kv_table(f"Scoring run {run.run_id}", {
        "as of": as_of_text(run.as_of),  # as features build and validate say it: the date, and the instant it ends
        "customers scored": run.n_customers,
        "engine": run.engine,
        "models": "; ".join(f"{m.target}: {m.name} v{m.version} ({m.scored:,} in population)" for m in run.models),
        # the rate used first (to pass as base_rate outside dynseg; the note's product was not printed)
        "base rates": "; ".join(f"{m.target}: " + (f"{m.base_rate:.6f} = " if m.base_rate is not None else "")
                                + m.base_rate_note for m in run.models),
        "compared with run": run.previous_run_id or "— (first run: everyone entered)",
        "exports": str(run.export_dir),
        "MLflow run": run.mlflow_run_id or "—",
        "time": ", ".join(f"{k} {v:.1f}s" for k, v in run.timings.items()),
    }))
    bands = Table(title="Bands used in this run", title_justify="left")
    for c in ("target", "band", "rule", "threshold"):
        bands.add_column(c)
    for m in run.models:
        for lv in m.bands:
            th = lv.get("threshold")
            bands.add_row(m.target, lv["name"], _rule(lv), "" if th is None else f"{th:.4f}")
    out.print(bands)
    out.print(health_table(run.health, "Segments", run.changes))


def _rule(lv: dict) -> str:
    from models.bands import BandLevel

    return BandLevel(**lv).describe()


def health_table(health, title: str, changes: dict[str, str] | None = None) -> Table:
    """Segment health; ``changes`` marks segments new or redefined since the previous run, whose
    entered/exited count the change of definition, not only customers who moved."""
    changes = changes or {}
    t = Table(title=title, title_justify="left")
    for c, j in (("segment", "left"), ("kind", "left"), ("size", "right"), ("sendable", "right"), ("holdout", "right"),
                 ("entered", "right"), ("exited", "right"), ("volatility", "right"), ("coverage", "right"),
                 ("owner", "left")):
        t.add_column(c, justify=j)
    for r in health.itertuples():
        vol = "—" if r.volatility != r.volatility or r.volatility is None else f"{r.volatility:.1%}"
        name = f"{r.segment} ({changes[r.segment]})" if r.segment in changes else r.segment
        t.add_row(name, r.kind, f"{r.size:,}", f"{r.sendable:,}", f"{r.holdout:,}", f"{r.entered:+,}",
                  f"{-r.exited:+,}" if r.exited else "0", vol, f"{r.coverage:.1%}", r.owner)
    shown = {changes[s] for s in set(changes) & set(health.segment)}
    # coverage under 100 % read as a data problem: it is who the rule can be decided for (churn is
    # scored only for recent buyers, recency is unknown for who never bought)
    notes = [note for kind, note in _CHANGE_NOTES.items() if kind in shown]
    notes.append("coverage: share of customers for whom every input of the rule is known (a churn score only "
                 "for recent buyers, a recency only for who bought); the others cannot match it")
    t.caption = "; ".join(notes)
    t.caption_justify = "left"
    return t


#: What a health table's marks mean (see :func:`health_table`)
_CHANGE_NOTES = {
    "new": "(new): not in the previous run, every member counts as entered",
    "redefined": "(redefined): its rule, exclusions, holdout or kind changed since the previous run, "
                 "so entered/exited count that change too",
}
