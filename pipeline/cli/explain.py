"""``dynseg explain CUSTOMER_ID``: a customer's score, band, segments and why."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer
from rich.table import Table

from features.asof import BadValue, as_of_label, parse_as_of
from pipeline.cli.common import State, err, filled, handled, kv_table, on_duckdb_note, out


class Model(str, Enum):
    churn = "churn"
    purchase = "purchase"


def explain(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(help="Customer id (the canonical id after identity merging).")],
    model: Annotated[Optional[Model], typer.Option(help="Only this model (default: every model of the run).")] = None,
    run: Annotated[Optional[str], typer.Option(help="Scoring run id (default: the latest run).")] = None,
    as_of: Annotated[Optional[str], typer.Option(callback=filled, help="The run as of this date or instant, instead of --run.")] = None,
    top: Annotated[int, typer.Option(help="Features to list.")] = 12,
    version: Annotated[Optional[str], typer.Option(
        "--version", help="With --model: explain with this version of the model (a number, or an alias such as "
                          "champion: a challenger under review) instead of the one the run used.")] = None,
) -> None:
    """The customer's score, band and segments in a run, each feature's push (exact TreeSHAP) in
    probability points and log-odds, and a waterfall PNG under .dynseg/reports/explain/."""
    from pipeline.jobs.explain import explain_customer

    state: State = ctx.obj
    if run and as_of:
        raise typer.BadParameter("give --run or --as-of, not both", param_hint="--as-of")
    with handled():
        instant = parse_as_of(as_of) if as_of else None
        if version is not None and model is None:
            raise BadValue("--version needs --model (purchase or churn)")
        on_duckdb_note(state.config(), "explain recomputes the customer's features (the same definitions, the same values)")
        outside: dict[str, str] = {}
        found = explain_customer(state.config(), customer_id, model.value if model else None, run, top=top, as_of=instant,
                                 version=version, outside=outside)
    # who each model scores, as it was trained (churn: customers with a purchase in its active window)
    why = "; ".join(f"{t} scores {who}" for t, who in outside.items())
    if not found:
        out.print(f"{customer_id} is outside the population of the requested model(s) in this run ({why}).",
                  highlight=False)
        return
    if why:  # the other model left the customer out: said, not skipped in silence
        err.print(f"{customer_id} is outside the {', '.join(outside)} model's population in this run ({why}).",
                  highlight=False)
    e0 = found[0]
    out.print(kv_table(f"Customer {customer_id}", {
        "run": f"{e0.run_id} (as of {as_of_label(e0.as_of)})",
        "segments": ", ".join(e0.segments) or "—",
        # a rule that held, and another segment took them out: "why not in likely_buyers?" answered
        **({"left out of": ", ".join(e0.left_out)} if e0.left_out else {}),
    }))
    for e in found:
        # another version than the run's has no band in it: its cuts are drawn over a whole run
        band = e.band or ("— (not this run's model: `dynseg models compare` cuts its bands on the run)"
                          if not getattr(e, "of_run", True) else "—")
        t = Table(title=f"{e.target}: score {e.score:.2%} (score_100 {round(e.score * 100)}), band {band}"
                        + (f" (cuts: {e.cuts})" if e.cuts else "") + "; "
                        f"model {e.model}; starting point {e.base_probability:.1%} (the training rows' average log-odds, "
                        "calibrated; not the run's mean score)", title_justify="left")
        for c, j in (("feature", "left"), ("value", "left"), ("points", "right"), ("log-odds", "right"),
                     ("in words", "left")):
            t.add_column(c, justify=j)
        for r in e.contributions.head(top).itertuples():
            colour = "red" if r.log_odds > 0 else "blue"
            t.add_row(r.feature, str(r.value), f"[{colour}]{r.points:+.1f}[/]", f"{r.log_odds:+.3f}", r.reason)
        out.print(t)
        out.print(f"  points: change in the {e.target} probability if the feature were left out (calibrated scale), "
                  "each on its own: they do not add up to the score (a push counts for more where the probability is "
                  "near 50 % than near 0 or 100 %); "
                  f"log-odds: exact TreeSHAP values, base {e.base:+.3f} + all features = the raw score. "
                  + (f"Run's stored score {e.stored_score:.4f}, recomputed {e.score:.4f}." if e.of_run else
                     f"Version {e.model} is not the model the run used; the run's score was {e.stored_score:.4f}."),
                  highlight=False)
        if e.of_run and abs(e.score - e.stored_score) >= 0.005:
            err.print(f"[yellow]warning:[/] the run stored {e.stored_score:.2%} for this customer, and the features "
                      f"recomputed now give {e.score:.2%}: the data changed since the run (events rewritten or "
                      "arrived late for its as_of, or an identity link added since merged another id into this "
                      "customer), so this explanation is of the data as it is now, not of the "
                      "score the run sent", highlight=False)
        if e.waterfall:
            out.print(f"  waterfall: {e.waterfall}")
