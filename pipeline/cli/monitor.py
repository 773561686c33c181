"""``dynseg monitor`` and ``dynseg lift``: is the run still trustworthy, and did the campaigns work?"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from features.asof import BadValue, as_of_label, parse_as_of
from pipeline.cli.common import EXIT_GATE, State, err, filled, handled, kv_table, on_duckdb_note, out, stages


def monitor(
    ctx: typer.Context,
    as_of: Annotated[Optional[str], typer.Option(callback=filled, help="The scoring run as of this date (default: the latest run).")] = None,
    run: Annotated[Optional[str], typer.Option(help="Or: the scoring run id.")] = None,
) -> None:
    """Drift of features and scores against each model's training reference, and segment-health alarms.

    Writes an Evidently HTML report and a JSON summary per model under .dynseg/reports/monitor/
    and logs them to MLflow. Exits 3 when an alarm trips (thresholds in configs/monitoring.yaml).
    """
    from pipeline.jobs.monitor import monitor_job

    state: State = ctx.obj
    if run and as_of:  # one of them would be ignored: a scheduler's wrong --run must not pass unseen
        raise typer.BadParameter("give --run or --as-of, not both", param_hint="--as-of")
    with handled():
        on_duckdb_note(state.config(), "monitor recomputes the run's features (the same definitions, the same values)")
        with stages(f"monitor {as_of or run or 'latest run'}") as say:  # a scheduler's log: a line per stage
            r = monitor_job(state.config(), parse_as_of(as_of) if as_of else None, run, progress=say)
    t = Table(title=f"Drift against the training reference, run {r.run_id} (as of {as_of_label(r.as_of)})",
              title_justify="left")
    for c in ("model", "columns", "drifted", "share", "drifted columns (first 8)", "alarm"):
        t.add_column(c, justify="right" if c in ("columns", "drifted", "share") else "left")
    for target, d in r.drift.items():
        t.add_row(target, str(len(d.columns)), str(len(d.drifted)), f"{d.drift_share:.0%}",
                  ", ".join(d.drifted[:8]) + (" …" if len(d.drifted) > 8 else ""), "[red]yes[/]" if d.alarm else "no")
    out.print(t)
    for note in r.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    _reports_and_alarms(r)
    out.print("[green]No alarm.[/]")


def lift(
    ctx: typer.Context,
    run: Annotated[Optional[str], typer.Option(help="The scoring run id.")] = None,
    as_of: Annotated[Optional[str], typer.Option(callback=filled, help="Or: the scoring run as of this date.")] = None,
) -> None:
    """Holdout lift per segment and realized model quality for a past run whose outcome window has passed.

    Treated = sendable members; holdout = held-out members who would have been sendable. Exits 3
    when a model's realized AUC is below its floor, or a campaign lowered conversion significantly
    (configs/monitoring.yaml).
    """
    from pipeline.jobs.monitor import lift_job

    state: State = ctx.obj
    if run and as_of:
        raise typer.BadParameter("give --run or --as-of, not both", param_hint="--as-of")
    with handled():
        if not (run or as_of):
            raise BadValue("name the scoring run: --run RUN_ID or --as-of DATE")
        on_duckdb_note(state.config(), "lift reads the outcomes")
        with err.status("measuring lift and realized quality"):
            r = lift_job(state.config(), run, parse_as_of(as_of) if as_of else None)
    for note in r.notes[:r.lead_notes]:  # a backfill: what every figure below means changes
        out.print(f"[yellow]Note:[/] {escape(note)}", highlight=False)
    window = ", ".join(f"{k} {as_of_label(a)} → {as_of_label(b)}" for k, (a, b) in r.windows.items())
    t = Table(title=f"Holdout lift, run {r.run_id} (as of {as_of_label(r.as_of)}; outcome windows: {window})",
              title_justify="left")
    for c in ("segment", "outcome", "treated", "holdout", "rate T", "rate H", "abs lift, points [95% CI]",
              "rel lift [95% CI]", "p", "p adjusted", "revenue/member T | H (no test)"):
        t.add_column(c, justify="left" if c in ("segment", "outcome") else "right", no_wrap=c == "segment")
    for x in r.lift.itertuples():
        t.add_row(x.segment, x.outcome, f"{x.n_treated:,}", f"{x.n_holdout:,}", f"{x.conversion_treated:.1%}",
                  f"{x.conversion_holdout:.1%}", f"{100 * x.abs_lift:+.1f} [{100 * x.abs_lift_low:+.1f}, {100 * x.abs_lift_high:+.1f}]",
                  (f"{x.rel_lift:+.0%} [{x.rel_lift_low:+.0%}, {x.rel_lift_high:+.0%}]" if x.rel_lift == x.rel_lift
                   and x.rel_lift_low == x.rel_lift_low else f"{x.rel_lift:+.0%}" if x.rel_lift == x.rel_lift else "—"),
                  f"{x.p_value:.3f}", "—" if x.p_adjusted != x.p_adjusted else f"{x.p_adjusted:.3f}",
                  f"{x.revenue_per_member_treated:.2f} | {x.revenue_per_member_holdout:.2f}")
    out.print(t)
    for x in r.lift.itertuples():
        out.print(f"  {x.segment}: {x.verdict}", highlight=False)
        if x.holdout_sendable_elsewhere:
            out.print(f"    {x.holdout_sendable_elsewhere:,} of its {x.n_holdout:,} holdout members "
                      f"{'was' if x.holdout_sendable_elsewhere == 1 else 'were'} sendable in "
                      f"{x.sendable_in}: if {'that campaign' if ',' not in x.sendable_in else 'those campaigns'} "
                      "reached them, this lift is understated", highlight=False)
    for note in r.notes[r.lead_notes:]:
        out.print(f"  [yellow]Note:[/] {escape(note)}", highlight=False)
    q = Table(title="Realized model quality vs the model card (graded on the customers not sendable in any segment "
                    "with a holdout)", title_justify="left")
    for c in ("model", "graded", "treated (left out)", "realized AUC (95% CI)", "promised AUC", "realized Brier",
              "promised Brier", "calibration slope", "mean predicted", "realized rate", "alarm"):
        q.add_column(c, justify="left" if c in ("model", "alarm") else "right")
    for target, res in r.quality.items():
        m, comp = res.metrics, res.comparison.set_index("metric") if len(res.comparison) else None

        def promised(k):
            return f"{comp.at[k, 'promised']:.4f}" if comp is not None and k in comp.index else "—"

        q.add_row(target, f"{res.n:,}", f"{res.n_treated:,}",
                  f"{m['roc_auc']:.4f} [{m['roc_auc_low']:.3f}, {m['roc_auc_high']:.3f}]", promised("roc_auc"),
                  f"{m['brier']:.4f}", promised("brier"), f"{m['calibration_slope']:.2f}", f"{m['mean_predicted']:.3f}",
                  f"{m['realized_rate']:.3f}",
                  "[red]yes[/]" if res.alarm else "no")
    out.print(q)
    out.print("  Graded as untreated: everyone not sendable in a segment with a holdout. dynseg does not know what was "
              "sent: a customer sent from a segment without one (active, lapsed, sunset, ...) counts as untreated. "
              "The treated are mostly the top bands, so the graded customers are a lower-risk group than the run's; "
              "read the calibration figures for them.", highlight=False)
    for target, res in r.quality.items():
        if res.calibration_bands is not None and len(res.calibration_bands):
            b = Table(title=f"{target}: calibration by band", title_justify="left")
            for c in res.calibration_bands.columns:
                b.add_column(BAND_COLUMNS.get(c, c), justify="left" if c == "band" else "right")
            for row in res.calibration_bands.itertuples(index=False):
                b.add_row(*(f"{v:,}" if isinstance(v, int) else "—" if v != v else f"{v:.3f}" if isinstance(v, float)
                            else str(v) for v in row))
            out.print(b)
        for note in res.notes:
            out.print(f"  {target}: {note}", highlight=False)
    _reports_and_alarms(r)


BAND_COLUMNS = {"customers": "untreated", "difference": "realized - predicted", "treated": "treated",
                "predicted_treated": "predicted (treated)", "realized_treated": "realized (treated)"}


def _reports_and_alarms(r) -> None:
    """Where the reports went; the alarms on stderr and exit 3 if any (for schedulers)."""
    out.print(kv_table("Reports", {k: str(v) for k, v in r.files.items()} | {"MLflow run": r.mlflow_run_id or "—"}))
    if r.alarm:
        err.print("[bold red]Alarm:[/]")
        for reason in r.reasons:
            err.print(f"  - {escape(reason)}", highlight=False)
        raise typer.Exit(EXIT_GATE)
