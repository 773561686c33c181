"""``dynseg segments``: what each segment is, how big it is, who moved in and out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from features.asof import as_of_label
from pipeline.config import segment_outcome
from pipeline.cli.common import State, err, filled, handled, kv_table, out
from pipeline.cli.score import health_table
from pipeline.segments import excluded_by, same_definition
from pipeline.workspace import Workspace

app = typer.Typer(help="Review segments: sizes, movement, definitions, members.", no_args_is_help=True)


def _latest_run(db, as_of: str | None, run_id: str | None = None):
    """The run ``run_id``, or as of ``as_of``, or the latest; a miss names the runs there are."""
    from features.asof import parse_as_of
    from pipeline import runs

    return runs.find(db, run_id=run_id, as_of=parse_as_of(as_of) if as_of and not run_id else None)


def _one_run(as_of: str | None, run_id: str | None) -> None:
    if run_id and as_of:  # one of them would be ignored
        raise typer.BadParameter("give --run or --as-of, not both", param_hint="--as-of")


def _run_of(ctx: typer.Context, as_of: str | None, run_id: str | None = None):
    """(config, workspace database, the run ``run_id``, or as of ``as_of``, or the latest)."""
    _one_run(as_of, run_id)
    state: State = ctx.obj
    cfg = state.config()
    db = Workspace(cfg.workspace).db_path
    return cfg, db, _latest_run(db, as_of, run_id)


_RUN = typer.Option("--run", help="Or: the scoring run id.")


@app.command("list")
def list_(ctx: typer.Context,
          as_of: Annotated[Optional[str], typer.Option(callback=filled, help="The run as of this date (default: the latest run).")] = None,
          run_id: Annotated[Optional[str], _RUN] = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print the run and its segments as JSON, for a "
                                                               "script or a scheduler.")] = False) -> None:
    """Every segment of a run: size, sendable, holdout, entered/exited since the previous run, volatility, owner."""
    from pipeline import runs

    with handled():
        cfg, db, run = _run_of(ctx, as_of, run_id)
        health = runs.read(db, "SELECT * FROM segment_health WHERE run_id = ?", [run.run_id])
    order = {s.name: i for i, s in enumerate(cfg.segments.segments)}
    health = health.sort_values("segment", key=lambda s: s.map(order).fillna(len(order)), ignore_index=True)
    from pipeline.jobs.score import run_definition_changes, run_model_changes

    prev = run.previous_run_id or "none"
    changes = run_definition_changes(db, run.run_id, run.previous_run_id)
    models_changed = run_model_changes(db, run.run_id, run.previous_run_id)
    if as_json:
        import json

        rows = json.loads(health.drop(columns=["run_id", "as_of"]).to_json(orient="records"))
        for r in rows:
            r["definition_change"] = changes.get(r["segment"])  # new / redefined / None
        # as_of: the cutoff instant (UTC), as in manifest.json and the reports' summary.json; as_of_label: the date
        text = json.dumps({"run_id": run.run_id, "as_of": run.as_of.to_pydatetime().isoformat(),
                           "as_of_label": as_of_label(run.as_of), "previous_run_id": run.previous_run_id,
                           "segments": rows, "removed": [n for n, c in changes.items() if c == "removed"],
                           # a promotion or rollback between the runs: its segments moved with the model too
                           "model_changes": {t: {"before": b, "now": n} for t, (b, n) in models_changed.items()},
                           # which model scored each segment that night (an audit read it from the database)
                           "models": [{k: m.get(k) for k in ("target", "name", "version", "model_run_id")}
                                      for m in (json.loads(run.models) if isinstance(run.models, str) else [])]},
                          indent=2)
        out.print(text, soft_wrap=True, markup=False, highlight=False, emoji=False)  # as is: no wrapping, no markup
        return
    out.print(health_table(health, f"Segments as of {as_of_label(run.as_of)} (run {run.run_id}; "
                                   f"movement against run {prev})", changes))
    import json

    used = json.loads(run.models) if isinstance(run.models, str) else []
    if used:
        out.print("Scored by: " + "; ".join(f"{m['target']} {m['name']} version {m['version']}" for m in used),
                  highlight=False)
    for target, (before, now) in models_changed.items():
        out.print(f"Model changed since run {prev}: {target} was scored by {before}, now by {now}; entered/exited "
                  "count the change of model too.", highlight=False)
    gone = [name for name, change in changes.items() if change == "removed"]
    if gone:
        out.print(f"Removed since run {prev} (every member exited; `dynseg segments changes NAME` lists them): "
                  + ", ".join(gone), highlight=False)


def _run_by_id(db, run_id: str):
    from pipeline import runs

    return runs.read(db, "SELECT * FROM scoring_runs WHERE run_id = ?", [run_id]).iloc[0]


def _stored_definition(db, name: str, history, as_of):
    """The segment's definition (and the suppressions) stored with the newest run that had it, at or
    before ``as_of`` (else the first run after): ``((definition, suppress_always), run)``, or
    ``(None, None)`` when no run had it."""
    import json

    if history.empty:
        return None, None
    before = history[history.as_of <= as_of]
    run = _run_by_id(db, (before if len(before) else history).run_id.iloc[-1 if len(before) else 0])
    stored = json.loads(run.config)["segments"]
    definition = next(d for d in stored["segments"] if d["name"] == name)
    return (definition, stored["suppress_always"]), run


def _why_empty(db, run, name: str, where: str) -> list[str]:
    """What emptied a segment in ``run``, where the workspace knows: its exclusions took every
    customer its rule selected, or a band its rule reads could be reached by no score (a precision
    rule no threshold met: its cut is infinite)."""
    import json

    from pipeline import runs

    said = []
    # (a workspace from before the table: nothing known)
    taken = runs.read_optional(db, "SELECT excluded_by, count(*) AS n FROM segment_exclusions WHERE run_id = ? AND "
                                   "segment = ? GROUP BY 1 ORDER BY 2 DESC", [run.run_id, name])
    if not taken.empty:
        said.append(f"its rule selected {int(taken.n.sum()):,} customers, and its exclusions took them all ("
                    + ", ".join(f"{r.excluded_by}: {r.n:,}" for r in taken.itertuples()) + ")")
    for m in json.loads(run.models) if isinstance(run.models, str) else []:
        for b in m.get("bands") or []:
            # the rule asks for that band of that model: `churn_band = 'high'`, or among an IN list
            band, name = re.escape(f"{m['target']}_band"), re.escape(b["name"])
            asks = re.search(rf"\b{band}\s*(?:==?\s*['\"]{name}['\"]|IN\s*\([^)]*['\"]{name}['\"])", where,
                             re.IGNORECASE)
            if b.get("threshold") == float("inf") and asks:
                said.append(f"the {m['target']} model's {b['name']!r} band, which its rule reads, could hold no one "
                            f"in this run: no threshold met its rule on the test snapshot "
                            f"(`dynseg models show {m['target']}` says why)")
    return said


def _print_band_cuts(run) -> None:
    """The cut of each band in ``run``: a score_100 is rounded, so 25 can read high for one customer
    and medium for another (0.2474 against 0.2461, say, beside a 0.2469 threshold), and 50 read low
    beside a 0.5 cut (0.4991)."""
    import json

    from models.bands import cuts_text

    cuts = "; ".join(f"{m['target']} {cuts_text(m.get('bands') or [])}"
                     for m in (json.loads(run.models) if isinstance(run.models, str) else []))
    if cuts:
        out.print(f"Band cuts in this run (score_100 is the score rounded): {cuts}", highlight=False)


@app.command()
def show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Segment name.")],
         as_of: Annotated[Optional[str], typer.Option(callback=filled, help="The run as of this date (default: the latest run).")] = None,
         run_id: Annotated[Optional[str], _RUN] = None,
         sample: Annotated[int, typer.Option(help="Members to list.")] = 10,
         drivers: Annotated[bool, typer.Option(help="Compute the features that set the segment apart (SHAP).")] = True) -> None:
    """One segment: its definition, size across runs, band mix and sample members."""
    import pandas as pd

    from pipeline import runs

    state: State = ctx.obj
    _one_run(as_of, run_id)
    with handled():
        cfg = state.config()
        db = Workspace(cfg.workspace).db_path
        current = cfg.segments.by_name().get(name)
        history = runs.read(db, "SELECT run_id, as_of, size, sendable, holdout, entered, exited, volatility, "
                                "coverage FROM segment_health WHERE segment = ? ORDER BY as_of", [name])
        if current is None and history.empty:
            raise runs.unknown_segment(db, list(cfg.segments.by_name()), name)
        # a removed segment: its newest run, unless --as-of names one
        run = (_latest_run(db, as_of, run_id) if as_of or run_id or current is not None
               else _run_by_id(db, history.run_id.iloc[-1]))
        stored, stored_run = _stored_definition(db, name, history, run.as_of)
        members = runs.read(db, "SELECT * FROM segment_members WHERE run_id = ? AND segment = ?", [run.run_id, name])
    if current is None:
        err.print(f"Segment {name} is no longer in configs/segments.yaml: its last run was as of "
                  f"{as_of_label(history.as_of.iloc[-1])}. The definition shown is the one stored with run "
                  f"{stored_run.run_id} (as of {as_of_label(stored_run.as_of)}).", highlight=False)
        definition, suppress = stored
    else:
        definition, suppress = current.model_dump(), cfg.segments.suppress_always
        if stored is not None and not same_definition(stored, (definition, suppress)):
            was = stored[0]
            err.print(f"Segment {name}'s definition has changed since run {stored_run.run_id} (as of "
                      f"{as_of_label(stored_run.as_of)}), which used: where {was['where']}, excludes "
                      f"{', '.join(excluded_by(*stored)) or '—'}, holdout {was['holdout']:.0%}.", highlight=False)
    out.print(kv_table(f"Segment {name}", {
        "description": definition["description"], "owner": definition["owner"], "kind": definition["kind"],
        "where": definition["where"], "excludes": ", ".join(excluded_by(definition, suppress)) or "—",
        "holdout": f"{definition['holdout']:.0%}",
    } | ({"lift outcome": _outcome_line(definition)} if definition["holdout"] else {})))
    h = Table(title="Size across runs", title_justify="left")
    for c in ("as of", "size", "sendable", "holdout", "entered", "exited", "volatility", "coverage"):
        h.add_column(c, justify="left" if c == "as of" else "right")
    for r in history.itertuples():
        vol = "—" if r.volatility != r.volatility else f"{r.volatility:.1%}"
        h.add_row(as_of_label(r.as_of), f"{r.size:,}", f"{r.sendable:,}", f"{r.holdout:,}", f"{r.entered:,}",
                  f"{r.exited:,}", vol, f"{r.coverage:.1%}")
    out.print(h)
    gone = runs.pruned_note(db, run, "its members (band mix, sample, drivers)") if members.empty else None
    if gone is not None:  # its members are gone; its sizes above remain
        err.print(f"Note: {gone}.", highlight=False)
        return
    band_cols = [c for c in members.columns if c.endswith("_band")]
    if not members.empty and band_cols:
        mix = Table(title=f"Band mix in the run as of {as_of_label(run.as_of)}", title_justify="left")
        for c in ("target", "band", "members", "share"):
            mix.add_column(c, justify="right" if c in ("members", "share") else "left")
        import json

        levels = {m["target"]: [b["name"] for b in m.get("bands") or []]
                  for m in (json.loads(run.models) if isinstance(run.models, str) else [])}
        for c in band_cols:
            counts = members[c].fillna("(not scored)").value_counts()
            order = levels.get(c.removesuffix("_band"), [])  # the bands' own order (high first), not by count
            counts = counts.sort_index(key=lambda i: i.map(lambda b: order.index(b) if b in order else len(order)),
                                       kind="stable")
            for band, n in counts.items():
                mix.add_row(c.removesuffix("_band"), str(band), f"{n:,}", f"{n / len(members):.1%}")
        out.print(mix)
        _print_band_cuts(run)  # beside the sample's score_100 and band
    if members.empty:
        if run.run_id not in set(history.run_id):
            err.print(f"Segment {name} was not part of the run as of {as_of_label(run.as_of)} (run {run.run_id}): "
                      "it was not in configs/segments.yaml then"
                      + ("; the next `dynseg score` includes it." if history.empty else "."), highlight=False)
        else:
            err.print(f"Segment {name} has no members in the run as of {as_of_label(run.as_of)}"
                      + "".join(f"; {w}" for w in _why_empty(db, run, name, definition["where"])) + ".",
                      highlight=False)
        return
    if drivers:
        from models.explain import labelled
        from pipeline.jobs.explain import segment_drivers

        with handled():
            d = segment_drivers(cfg, name, run.run_id)
        if d.attrs.get("left_out"):
            out.print(f"[dim]{d.attrs['left_out']:,} sampled id(s) of this run are no customer as of its date in the "
                      "data as it is now (merged into another id by an identity link added since, or their events "
                      "gone): left out of the comparison below.[/dim]")
        if not d.empty:
            t = Table(title="What sets the segment apart: the feature's typical value (median; share of yes; most "
                            "common) and its mean push on the score (probability points, exact SHAP), segment vs "
                            "everyone the model scored", title_justify="left")
            for c in ("model", "feature", "typical: segment", "everyone", "push: segment", "everyone ", "difference"):
                t.add_column(c, justify="left" if c in ("model", "feature") else "right")
            for r in d.itertuples():
                t.add_row(r.target, labelled(r.feature), r.segment_typical, r.everyone_typical,
                          f"{r.segment_points:+.1f}", f"{r.everyone_points:+.1f}", f"{r.difference:+.1f}")
            out.print(t)
    if sample <= 0:
        return
    cols = ["customer_id", *[c for c in members.columns if c.endswith(("_score_100", "_band"))], "holdout", "sendable"]
    s = Table(title=f"Sample members ({min(sample, len(members))} of {len(members):,}, drawn at random, the same "
                    "in every call)", title_justify="left")
    for c in cols:
        s.add_column(c)
    # a random draw (the first ids in order were all alike: anna.*, or the oldest accounts)
    drawn = members.sample(n=min(sample, len(members)), random_state=0).sort_values("customer_id")
    for row in drawn[cols].itertuples(index=False):
        s.add_row(*("not scored" if v is None or pd.isna(v) else ("yes" if v else "no") if c in ("holdout", "sendable")
                    else str(v) for c, v in zip(cols, row)))  # nullable columns hold pd.NA; as `segments changes` shows them
    out.print(s)


def _rule_exits(moved, definition: dict | None, models_changed: dict[str, tuple[str, str]]):
    """An exit's "no longer matches the rule" said more exactly where the rule reads a model's band
    or score: the band's move (and that the score did not move, when only the band's cut did) and a
    change of model between the runs. It had blamed the customer for 130 of 132 exits whose score
    was the same, the band's cut having moved with a newly promoted model."""
    import re

    import pandas as pd

    where = (definition or {}).get("where") or ""
    targets = [t for t in dict.fromkeys(c.removesuffix("_band") for c in moved.columns
                                        if c.endswith("_band") and not c.startswith("previous_"))
               if re.search(rf"\b{t}_(band|score|score_100)\b", where)]
    if not targets or moved.empty:
        return moved

    def why(r) -> str:
        if r.why != "no longer matches the rule":
            return r.why
        said = []
        for t in targets:
            before, now = r[f"previous_{t}_band"], r[f"{t}_band"]
            was, score = r[f"previous_{t}_score_100"], r[f"{t}_score_100"]
            # the probabilities decide "the same score": two score_100 of 70 can be 0.7004 and 0.6996
            p_was, p_now = r.get(f"previous_{t}_score"), r.get(f"{t}_score")
            known = not pd.isna(was) and not pd.isna(score)
            if re.search(rf"\b{t}_band\b", where) and not pd.isna(before) and not pd.isna(now) and before != now:
                same = not pd.isna(p_was) and not pd.isna(p_now) and abs(float(p_was) - float(p_now)) < 1e-12
                change = (f" (score {int(was)} → {int(score)})" if known and int(was) != int(score) else
                          f" (score {float(p_was):.4f} → {float(p_now):.4f})" if known and not pd.isna(p_was) else "")
                said.append(f"{t} band {before} → {now}" + (f" at the same score ({int(score)}): the band's cut moved"
                                                             if same else change))
            elif known and int(was) != int(score):
                said.append(f"{t} score {int(was)} → {int(score)}")
            if t in models_changed:
                said.append(f"the {t} model changed: {models_changed[t][0]} → {models_changed[t][1]}")
        return "no longer matches the rule" + (": " + "; ".join(said) if said else "")

    moved = moved.copy()
    moved["why"] = [why(r) for _, r in moved.iterrows()]
    return moved


def _changes_of(db, run, name: str, config: dict, removed: bool, models_changed: dict | None = None):
    """Who entered and exited segment ``name`` in ``run``: scores and bands, an entered member's
    holdout and sendable, and for who exited, why."""
    import json

    from pipeline import runs

    definition = next((d for d in config.get("segments", []) if d["name"] == name), None)
    excluding = excluded_by(definition, config.get("suppress_always", [])) if definition else []
    if json.loads(run.config).get("exclusions") if isinstance(run.config, str) else False:
        # the run kept who each rule selected but an exclusion took away
        why, params = ("coalesce((SELECT 'excluded by ' || e.excluded_by FROM segment_exclusions e "
                       "WHERE e.run_id = d.run_id AND e.segment = d.segment AND e.customer_id = d.customer_id), "
                       "'no longer matches the rule')"), []
    else:  # a run scored before 2026-12-04 did not: in an excluding segment, the rule may have stopped holding too
        why, params = ("coalesce((SELECT 'in ' || string_agg(DISTINCT m.segment, ', ' ORDER BY m.segment) || "
                       "', which it excludes (this run did not record whether its rule still held)' "
                       "FROM segment_members m WHERE m.run_id = d.run_id AND m.customer_id = d.customer_id "
                       "AND list_contains(?, m.segment)), 'no longer matches the rule')"), [excluding]
    # an id this run's identity resolution folded into another (a link added since the previous run)
    # exited as "not scored": the run's own merges (run_identity_merges) name the id the person has
    mapped = not runs.read_optional(db, "SELECT 1 FROM run_identity_merges LIMIT 1").empty
    merged = ("WHEN s.run_id IS NULL AND im.canonical_id IS NOT NULL THEN 'merged into ' || im.canonical_id || "
              "' by an identity link (the person under that id)'" if mapped else "")
    merges = ("LEFT JOIN run_identity_merges im ON im.run_id = d.run_id AND im.customer_id = d.customer_id"
              if mapped else "")
    # beside this run's scores and bands, the previous run's: who entered moved from where (an entry
    # had no why at all), who exited to where. Null for a customer that run did not score (or pruned)
    targets = [c.removesuffix("_band") for c in runs.read(db, "SELECT * FROM customer_scores LIMIT 0").columns
               if c.endswith("_band")]
    before = "".join(f", p.{t}_score AS previous_{t}_score, p.{t}_score_100 AS previous_{t}_score_100, "
                     f"p.{t}_band AS previous_{t}_band" for t in targets)
    # why an entry: the previous run's exclusion that no longer holds, or a customer it did not score
    # (unless its rows were pruned); else the rule now holds, which the two runs' bands show
    pruned = run.previous_run_id is not None and runs.pruned(db, run.previous_run_id) is not None
    excluded_then = ("WHEN d.change = 'entered' AND x.excluded_by IS NOT NULL THEN 'no longer excluded by ' || "
                     "x.excluded_by" if not runs.read_optional(db, "SELECT 1 FROM segment_exclusions LIMIT 1").empty
                     else "")
    exclusions = ("LEFT JOIN segment_exclusions x ON x.run_id = ? AND x.segment = d.segment AND x.customer_id = "
                  "d.customer_id" if excluded_then else "")
    unscored_then = ("WHEN d.change = 'entered' AND p.customer_id IS NULL THEN 'not scored in the previous run'"
                     if run.previous_run_id is not None and not pruned else "")
    return _rule_exits(runs.read(db, f"""
        SELECT d.customer_id, d.change, m.holdout, m.sendable, s.* EXCLUDE (run_id, as_of, customer_id){before},
               CASE {excluded_then} {unscored_then}
                    WHEN d.change = 'entered' THEN NULL
                    WHEN ? THEN 'segment removed from configs/segments.yaml'
                    {merged}
                    WHEN s.run_id IS NULL THEN 'not scored in this run'
                    ELSE {why} END AS why
        FROM segment_deltas d LEFT JOIN customer_scores s ON s.run_id = d.run_id AND s.customer_id = d.customer_id
        LEFT JOIN customer_scores p ON p.run_id = ? AND p.customer_id = d.customer_id
        {exclusions}
        {merges}
        -- an entered member's side in this run (an exited one is no member: both null)
        LEFT JOIN segment_members m ON d.change = 'entered' AND m.run_id = d.run_id AND m.segment = d.segment
                                       AND m.customer_id = d.customer_id
        WHERE d.run_id = ? AND d.segment = ? ORDER BY d.change, d.customer_id""",
                     [removed, *params, run.previous_run_id, *([run.previous_run_id] if exclusions else []),
                      run.run_id, name]), definition, models_changed or {})


@app.command()
def changes(ctx: typer.Context,
            name: Annotated[Optional[str], typer.Argument(help="Segment name (default: every segment of the run, "
                                                               "with a segment column).")] = None,
            as_of: Annotated[Optional[str], typer.Option(callback=filled, help="The run as of this date (default: the latest run).")] = None,
            out_path: Annotated[Optional[Path], typer.Option("--out", help="Write every change to this Parquet or CSV file.")] = None,
            limit: Annotated[int, typer.Option(min=0, help="Changes to list on screen.")] = 20,
            run_id: Annotated[Optional[str], _RUN] = None,
            sendable_only: Annotated[bool, typer.Option(
                "--sendable-only", help="Leave out entered members who may not be sent to (held out, no consent, "
                                        "suppressed, and entries into suppression segments); every exit is kept "
                                        "(to stop its journey).")] = False) -> None:
    """Who entered and who exited a segment in a run, against the run before it, with their scores
    and bands in this run, whether an entered member is held out or sendable, and, for who exited,
    why: no longer matches the rule, excluded by another segment, no longer scored, or the segment
    removed. --out writes them all; to trigger a journey on entry, add --sendable-only (holdout
    members must not be contacted). Without a name: every segment's changes in one file."""
    import json

    import pandas as pd

    from pipeline import runs
    from pipeline.jobs.features import write_frame

    with handled():
        cfg, db, run = _run_of(ctx, as_of, run_id)
        if out_path is not None:
            from pipeline.jobs.features import check_out

            check_out(out_path, "changes.csv", cfg)  # before the work (an unwritable --out was found after it)
        runs.require_rows(db, run, "who entered and who exited")
        known = set(runs.read(db, "SELECT DISTINCT segment FROM segment_health WHERE run_id = ?", [run.run_id]).segment)
        moved_in = set(runs.read(db, "SELECT DISTINCT segment FROM segment_deltas WHERE run_id = ?", [run.run_id]).segment)
        config = json.loads(run.config).get("segments", {}) if isinstance(run.config, str) else {}
        if name is not None:
            runs.require_segment(db, run, name)
        order = {d["name"]: i for i, d in enumerate(config.get("segments", []))}
        names = [name] if name is not None else sorted(known | moved_in, key=lambda n: (order.get(n, len(order)), n))
        from pipeline.jobs.score import run_model_changes

        models_changed = run_model_changes(db, run.run_id, run.previous_run_id)
        parts = {n: _changes_of(db, run, n, config, removed=n not in known, models_changed=models_changed)
                 for n in names}
        moved = (parts[name] if name is not None else
                 pd.concat([p.assign(segment=n) for n, p in parts.items() if len(p)] or [parts[names[0]].assign(segment="")],
                           ignore_index=True))
        if name is None:
            moved = moved[["segment", *[c for c in moved.columns if c != "segment"]]]
        removed = name is not None and name not in known
        # entering a suppression segment is who to stop sending to: not counted among the entries "not
        # to be sent to" (they were: "35 without consent, suppressed, or in a suppression segment").
        # --sendable-only still leaves them out: a tool that starts a journey on every entered row of
        # that file must not start one for who unsubscribed (exports/<date>/suppressions/ lists them)
        kinds = {**{d["name"]: d.get("kind") for d in config.get("segments", [])},
                 **dict(runs.read(db, "SELECT segment, kind FROM segment_health WHERE run_id = ?",
                                  [run.run_id]).itertuples(index=False))}
        suppression = (moved.segment if name is None else pd.Series(name, index=moved.index)).map(kinds) == "suppression"
        entered = (moved.change == "entered") & ~suppression
        held, unsendable = int((entered & (moved.holdout == True)).sum()), int((entered & (moved.sendable != True)).sum())  # noqa: E712
        into_suppression = int(((moved.change == "entered") & suppression).sum())
        if sendable_only:
            moved = moved[(moved.change != "entered") | (moved.sendable == True)].reset_index(drop=True)  # noqa: E712
            if into_suppression:
                err.print(f"{into_suppression:,} entries into suppression segments left out too: they are who to stop "
                          "sending to, which exports/<date>/suppressions/ lists (and `segments changes` without "
                          "--sendable-only shows).", highlight=False)
        if out_path is not None:
            write_frame(moved, out_path, cfg)
    prev = run.previous_run_id
    # said for one segment and for all alike (the nightly form, for every segment, said neither)
    if prev is None:
        err.print(f"Run {run.run_id} is the first scoring run: every member counts as entered (hold a file of its "
                  "entries back, or journeys start for the whole base at once).", highlight=False)
    elif (gone := runs.pruned(db, prev)) is not None:
        err.print(f"The previous run, {prev}, was pruned on {gone[0]:%Y-%m-%d} (segments prune): its scores and "
                  "exclusions are gone, so the scores before and the reasons for entries are empty.", highlight=False)
    for target, (before, now) in models_changed.items():  # as `segments list` says it (this had not)
        err.print(f"Model changed since run {prev}: {target} was scored by {before}, now by {now}; entered/exited "
                  "count the change of model too.", highlight=False)
    if name is None:
        _all_changes(run, moved, unsendable, held, sendable_only, out_path)
        return
    title = (f"Segment {name} as of {as_of_label(run.as_of)} (run {run.run_id}) against "
             f"{f'run {prev}' if prev else 'no earlier run'}: "
             f"{(moved.change == 'entered').sum():,} entered{' and sendable' if sendable_only else ''}, "
             f"{(moved.change == 'exited').sum():,} exited")
    _say_unsendable(unsendable, held, sendable_only)
    if removed:
        err.print(f"Segment {name} is not in this run's configs/segments.yaml: it was removed since the run before, "
                  "and every member it had then counts as exited.", highlight=False)
    _print_band_cuts(run)
    sides = ("holdout", "sendable") if (moved.change == "entered").any() else ()  # an exit has no side
    targets = [c.removesuffix("_band") for c in moved.columns if c.endswith("_band") and not c.startswith("previous_")]
    cols = ["customer_id", "change", *sides, *targets] + (["why"] if moved.why.notna().any() else [])
    t = Table(title=title + (f" (first {limit} listed)" if len(moved) > limit else ""), title_justify="left",
              caption="Per model: score_100 and band in the previous run → in this one (—: not scored).")
    for c in cols:
        t.add_column(c if c not in targets else f"{c}: before → now", justify="left")

    def scored(r, prefix: str, tgt: str) -> str:
        score, band = getattr(r, f"{prefix}{tgt}_score_100"), getattr(r, f"{prefix}{tgt}_band")
        return "—" if score is None or pd.isna(score) else f"{int(score)} {band}"

    for r in moved.head(limit).itertuples(index=False):
        t.add_row(*(scored(r, "previous_", c) + " → " + scored(r, "", c) if c in targets
                    else "" if pd.isna(getattr(r, c)) else ("yes" if getattr(r, c) else "no") if c in ("holdout", "sendable")
                    else str(getattr(r, c)) for c in cols))
    out.print(t)
    if out_path is not None:
        out.print(f"Wrote {len(moved):,} changes to {out_path}")


@app.command()
def export(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Segment name.")],
           out_path: Annotated[Path, typer.Option("--out", help="The file to write: .parquet or .csv.")],
           as_of: Annotated[Optional[str], typer.Option(callback=filled, help="The run as of this date (default: the latest run).")] = None,
           run_id: Annotated[Optional[str], _RUN] = None,
           everyone: Annotated[bool, typer.Option("--all", help="Every member, with holdout, consented and sendable "
                                                                "columns (default: the sendable members only, as the "
                                                                "run's own export).")] = False) -> None:
    """One segment's members in a run, written to a file of your choosing: the sendable members
    (consented, not held out, not suppressed) with their scores and bands, as `exports/<date>/` has
    them; --all adds the others with the columns that say why they are not sendable."""
    from pipeline import runs
    from pipeline.jobs.features import check_out, write_frame

    with handled():
        cfg, db, run = _run_of(ctx, as_of, run_id)
        check_out(out_path, f"{name}.csv", cfg)  # before the work
        runs.require_rows(db, run, "its members")
        runs.require_segment(db, run, name)
        members = runs.read(db, "SELECT * EXCLUDE (run_id, as_of, segment) FROM segment_members WHERE run_id = ? AND "
                                "segment = ? ORDER BY customer_id", [run.run_id, name])
        kind = members["kind"].iloc[0] if len(members) else None
        if not everyone and kind != "suppression":  # a suppression list's members are whom not to send to, all of them
            members = members[members["sendable"] == True]  # noqa: E712 - a nullable column
        members = members.drop(columns=["kind"] + ([] if everyone else ["holdout", "consented", "sendable"]))
        write_frame(members.reset_index(drop=True), out_path, cfg)
    out.print(f"Wrote {len(members):,} {'members' if everyone or kind == 'suppression' else 'sendable members'} of "
              f"{name} as of {as_of_label(run.as_of)} (run {run.run_id}) to {out_path}", highlight=False)


@app.command()
def check(ctx: typer.Context) -> None:
    """Check configs/segments.yaml against the current data's columns without scoring."""
    from pipeline.jobs.score import band_names, segment_columns
    from pipeline.segments import compile_segments

    state: State = ctx.obj
    with handled():
        cfg = state.config()
        if not cfg.segments.segments:  # "0 segments are valid", exit 0, for a file deleted or emptied
            from pipeline.segments import no_segments_problem

            raise ValueError(no_segments_problem(cfg.project_dir))
        levels, source, notes = band_names(cfg)
        compiled = compile_segments(cfg.segments, segment_columns(cfg), values=levels, features=cfg.features,
                                    file=cfg.origin("segments.yaml", "segments"))
    t = Table(title=f"{len(compiled)} segments are valid (evaluation order)", title_justify="left")
    for c in ("segment", "kind", "reads", "excludes", "holdout"):
        t.add_column(c)
    for s in compiled:
        t.add_row(s.name, s.definition.kind, ", ".join(sorted(s.rule.columns)), ", ".join(s.excluded) or "—",
                  f"{s.definition.holdout:.0%}")
    out.print(t)
    out.print("Band levels as a scoring run would see them: " + "; ".join(
        f"{t} {', '.join(levels[f'{t}_band'])}, highest first ({where})" for t, where in source.items()), highlight=False)
    for note in notes:
        err.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)


def _outcome_line(definition: dict) -> str:
    outcome, inferred = segment_outcome(definition)
    line = ("a purchase within the churn label's horizon (retention)" if outcome == "retention"
            else "a purchase within the purchase label's horizon")
    return line + (" — from the rule (set `outcome:` to choose)" if inferred else "")


def _all_changes(run, moved, unsendable: int, held: int, sendable_only: bool, out_path) -> None:
    """``segments changes`` without a name: entered and exited per segment, and the file written."""
    prev = run.previous_run_id
    t = Table(title=f"Changes as of {as_of_label(run.as_of)} (run {run.run_id}) against "
                    f"{f'run {prev}' if prev else 'no earlier run'}", title_justify="left")
    for c in ("segment", "entered" + (" and sendable" if sendable_only else ""), "exited"):
        t.add_column(c, justify="left" if c == "segment" else "right")
    for seg, g in moved.groupby("segment", sort=False):
        t.add_row(seg, f"{(g.change == 'entered').sum():,}", f"{(g.change == 'exited').sum():,}")
    t.caption = ("Segments with no sendable entry and no exit are not listed." if sendable_only else
                 "Segments where nobody entered or exited are not listed.")
    out.print(t)
    _say_unsendable(unsendable, held, sendable_only)
    if out_path is not None:
        out.print(f"Wrote {len(moved):,} changes to {out_path}")


def _say_unsendable(unsendable: int, held: int, sendable_only: bool) -> None:
    """How many of those who entered may not be contacted, and why."""
    if not unsendable:
        return
    why = [f"{held:,} held out, to measure lift"] if held else []
    if unsendable > held:
        why.append(f"{unsendable - held:,} without consent or suppressed")
    err.print(f"Of those who entered, {unsendable:,} may not be sent to ({'; '.join(why)}): "
              + ("left out, as --sendable-only asks." if sendable_only else
                 "see the holdout and sendable columns; to start journeys on entry, use --sendable-only."),
              highlight=False)


@app.command()
def prune(ctx: typer.Context,
          keep_days: Annotated[int, typer.Option("--keep-days", min=1, help=(
              "Keep every run of the last N days (before the latest run) in full; older runs keep their record "
              "and segment sizes only."))],
          dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be dropped; drop nothing.")] = False) -> None:
    """Drop the per-customer rows (scores, reason codes, members, entered/exited) of scoring runs
    older than --keep-days, for a workspace scored every night: each run holds a row per customer
    and model. The runs' records and every segment's size history stay; the latest run is always
    kept whole. Refused under the labels' longest horizon, while `dynseg lift` may still grade those runs."""
    import json
    from datetime import timedelta

    from pipeline import runs
    from pipeline.jobs.monitor import label_horizons, model_horizon

    state: State = ctx.obj
    with handled():
        cfg = state.config()
        horizons = {k: (h, "configs/labels.yaml") for k, h in label_horizons(cfg).items()}
        # lift grades each run's models on their own horizons (`train churn --horizon 120d`)
        stored = runs.read_optional(Workspace(cfg.workspace).db_path, "SELECT DISTINCT models FROM scoring_runs")
        for models in stored.get("models", []):
            for m in json.loads(models or "[]"):
                h = model_horizon(m, ask_mlflow=False)
                if h is not None and h > horizons.get(m["target"], (timedelta(0),))[0]:
                    horizons[m["target"]] = (h, f"{m['name']} version {m['version']}'s, in a stored run")
        longest = max(horizons, key=lambda k: horizons[k][0])
        span, source = horizons[longest]
        if timedelta(days=keep_days) < span:
            raise ValueError(f"--keep-days {keep_days} is shorter than the {longest} label's horizon "
                             f"({span.days} days, {source}): `dynseg lift` grades a run once "
                             "that window has passed, from its members and holdout sides, which a prune drops. "
                             f"Keep at least --keep-days {span.days}")
        result = runs.prune(Workspace(cfg.workspace).db_path, keep_days, dry_run=dry_run)
    if result.runs.empty:
        out.print(f"Nothing to prune: no scoring run is more than {keep_days} days older than the latest one "
                  "(or they were pruned already).", highlight=False)
        return
    dates = [as_of_label(t.to_pydatetime()) for t in result.runs.as_of]
    verb = "Would drop" if dry_run else "Dropped"
    out.print(f"{verb} the per-customer rows of {len(result.runs):,} scoring run{'s' if len(result.runs) > 1 else ''}, "
              f"as of {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else "") + ":", highlight=False)
    t = Table()
    t.add_column("table")
    t.add_column("rows", justify="right")
    for table, n in result.rows.items():
        t.add_row(table, f"{n:,}")
    out.print(t)
    if not dry_run:
        mb = 1024 * 1024
        out.print(f"The workspace database went from {result.bytes_before / mb:,.1f} MB to {result.bytes_after / mb:,.1f} MB. "
                  "These runs keep their record and segment sizes (`dynseg segments list --run ID`); commands that need "
                  "their members or scores say they were pruned. Export folders are files: remove old ones yourself.",
                  highlight=False)


def _said_why(value: str) -> str:
    """``--reason``: a run's rows are deleted for good, so the record says why (blank is refused)."""
    if not value.strip():
        raise typer.BadParameter("is empty: say why the run is dropped (--reason \"wrong date\"); it is kept "
                                 "with the record of the drop")
    return value


@app.command("drop-run")
def drop_run(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="The scoring run to delete.")],
             reason: Annotated[str, typer.Option(help="Why (required), kept with the record of the drop: an audit "
                                                      "of the segments reads it.", callback=_said_why)]) -> None:
    """Delete a scoring run scored by mistake (a wrong date, a stray run without --as-of): its scores,
    members, entered/exited and health, in one transaction, and its exports folder. The run after
    it then follows the one before it, its entered/exited taken again. A date scored twice keeps one
    run anyway (a re-run replaces it): this is for a run that should not exist at all."""
    from features.asof import as_of_file_label
    from pipeline import runs
    from pipeline.jobs.score import _manifest_run, recover_exports, remove_exports

    state: State = ctx.obj
    with handled():
        cfg = state.config()
        ws = Workspace(cfg.workspace)
        # what a stopped score or drop left in exports/ first: a run's finished folder is moved in,
        # not swept as a killed writer's temp, and a dropped run's folder goes (also a retried drop's)
        for w in recover_exports(ws):
            err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
        gone = runs.drop_run(ws.db_path, run_id, reason)
        # said at once: a stop from here on lands in handled(), which says the drop stands (exit 143;
        # it printed "Interrupted." and 130, and the drop's line never came)
        out.print(f"Dropped scoring run {run_id} (as of {as_of_label(gone.as_of)})."
                  + (f" Run {gone.next} now follows run {gone.previous}: its entered/exited were taken again."
                     if gone.next and gone.previous else
                     f" Run {gone.next} is the first run now: everyone in it counts as entered." if gone.next else ""),
                  highlight=False)
        # its exports folder in this workspace, where `score` puts it (the stored path is absolute: in
        # a copied workspace it named the original's folder), and only if its manifest names this run.
        # Stopped before it is gone, the next score or drop removes it (recover_exports).
        folder = ws.root / "exports" / as_of_file_label(gone.as_of)
        if folder.is_dir() and _manifest_run(folder) == run_id:
            remove_exports(folder)
            out.print(f"Removed its exports, {folder}.", highlight=False)
        if not runs.pending_mlflow(ws.db_path).empty:  # the dropped run's MLflow record, the next run's movement
            try:
                from models import registry
                from pipeline.jobs.score import flush_mlflow

                registry.connect(ws.tracking_uri(cfg.settings.tracking_uri), create=False)
                problems = flush_mlflow(registry, ws.db_path)
            except Exception as e:  # noqa: BLE001 - the drop stands; MLflow is told by the next score
                problems = [f"the MLflow records could not be updated (the next `dynseg score` does it): "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"]
            for w in problems:
                err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
