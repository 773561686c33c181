"""``dynseg monitor`` (drift and segment health of a run) and ``dynseg lift`` (holdout lift and
realized model quality of a past run whose outcome window has passed)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats

from features.asof import as_of_file_label, as_of_label, cutoff_label, parse_duration
from pipeline import runs
from pipeline.config import Config, segment_outcome
from pipeline.jobs.data import load_for_run
from pipeline.jobs.features import check_model_inputs, features_as_of
from pipeline.jobs.score import in_sample_cutoff
from pipeline.monitoring.drift import DriftResult, DriftThresholds, drift_report
from pipeline.monitoring.lift import segment_lift
from pipeline.monitoring.quality import QualityResult, realized_quality
from pipeline.workspace import Workspace, swap_in_folder, temp_sibling, write_atomic

OUTCOME_TEXT = {"purchase": "purchased", "retention": "retained (a purchase)"}


def find_run(cfg: Config, run_id: str | None = None, as_of: datetime | None = None) -> pd.Series:
    """A scoring run by id, by as_of, or the latest (see :func:`pipeline.runs.find`)."""
    return runs.find(Workspace(cfg.workspace).db_path, run_id, as_of)


class OutcomeWindowOpen(ValueError):
    """Lift asked of a run whose outcome window has not passed: the CLI exits 75 (try again later)."""

    try_later = True


# -- monitor ----------------------------------------------------------------------------------------
@dataclass
class MonitorResult:
    run_id: str
    as_of: datetime
    drift: dict[str, DriftResult]  # target -> report
    health_alarms: list[str]
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    notes: list[str] = field(default_factory=list)  # key columns no model of the run takes

    @property
    def reasons(self) -> list[str]:
        return [f"{t} drift: {r}" for t, d in self.drift.items() for r in d.reasons] + self.health_alarms

    @property
    def alarm(self) -> bool:
        return bool(self.reasons)


def monitor_job(cfg: Config, as_of: datetime | None = None, run_id: str | None = None,
                log_to_mlflow: bool = True, progress: Callable[[str], None] | None = None) -> MonitorResult:
    """Drift of each model's features and score (the run's customers in the model's population
    against the reference logged at training), and segment-health alarms against the previous run.
    ``progress(stage)`` is told each stage as it starts."""
    from models import registry

    say = progress or (lambda _: None)
    ws = Workspace(cfg.workspace)
    run = find_run(cfg, run_id, as_of)  # a run not found (or pruned) said first: the registry is no matter then
    t = run.as_of.to_pydatetime()
    runs.require_rows(ws.db_path, run, "its scores, which drift compares with the training reference,")
    registry.connect(ws.tracking_uri(cfg.settings.tracking_uri), create=False)
    say("features")
    feats = features_as_of(cfg, t)
    scores = runs.read(ws.db_path, "SELECT * FROM customer_scores WHERE run_id = ?", [run.run_id])
    current = feats.merge(scores.drop(columns=["run_id", "as_of"]), on="customer_id", how="inner")
    d = cfg.monitoring.drift
    thresholds = DriftThresholds(d.max_drift_share, d.method, d.column_threshold)
    folder = ws.reports_dir / "monitor" / as_of_file_label(t)
    reports, files = {}, {}
    used = [(m, registry.bundle_of(registry.load_version(m["name"], m["version"], m.get("model_run_id"))).model)
            for m in json.loads(run.models)]
    # before the reports: a misspelt one was dropped, its alarm never to fire
    from pipeline.jobs.features import project_columns

    notes = _check_key_columns(d.key_columns, used, cfg.origin("monitoring.yaml", "drift", "key_columns"),
                               lambda: {c.name for c in project_columns(cfg)})
    # The reports are written to a temp folder put in place whole: a run stopped half-way (SIGTERM)
    # left one model's report and no summary in the date's folder, which looked complete.
    folder.parent.mkdir(parents=True, exist_ok=True)
    final, folder = folder, temp_sibling(folder)
    try:
        result = _monitor_reports(cfg, run, t, used, feats, current, thresholds, folder, reports, files, say)
        swap_in_folder(folder, final)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    result.folder = final
    result.notes = notes
    files = result.files = {k: final / p.relative_to(folder) for k, p in files.items()}
    if log_to_mlflow:
        say("MLflow record")
        metrics = {f"drift_share_{k}": v.drift_share for k, v in reports.items()}
        metrics |= {f"drifted_columns_{k}": len(v.drifted) for k, v in reports.items()}
        metrics["alarms"] = len(result.reasons)
        result.mlflow_run_id = registry.log_run(
            experiment=cfg.monitoring.experiment, run_name=f"monitor-{as_of_label(t)}",
            params={"scoring_run_id": run.run_id, "as_of": str(t), **thresholds.__dict__},
            metrics=metrics, tags={"dynseg.kind": "monitor", "alarm": str(result.alarm)},
            artifacts={f"monitor/{p.name}": p for p in files.values()})
    return result


def _monitor_reports(cfg: Config, run, t: datetime, used, feats, current, thresholds, folder: Path,
                     reports: dict, files: dict, say: Callable[[str], None] = lambda _: None) -> MonitorResult:
    """Each model's drift report and the summary, written into ``folder``."""
    from models import registry

    folder.mkdir(parents=True, exist_ok=True)
    d = cfg.monitoring.drift
    for m, model in used:
        target = m["target"]
        check_model_inputs(model, f"{m['name']} version {m['version']}", target, feats.columns)
        say(f"{target} drift report")
        reference = registry.reference_sample(m["name"], m["version"], m.get("model_run_id"))
        score = f"{target}_score"
        cur = current[current[score].notna()]
        categorical = [c for c in model.features_ if c in model.categories_]
        numeric = [c for c in model.features_ if c not in model.categories_] + [score]
        key = [c for c in d.key_columns if c in numeric or c in categorical]
        reports[target] = drift_report(reference, cur, numeric, categorical, key, thresholds, max_rows=d.max_rows)
        for kind, path in reports[target].save(folder, stem=f"drift_{target}").items():
            files[f"drift_{target}_{kind}"] = path
    compared = {m["target"]: m for m, _ in used}
    say("segment health")
    health = health_alarms(cfg, run)
    result = MonitorResult(run.run_id, t, reports, health, folder, files)
    summary = {"run_id": run.run_id, "as_of": t.isoformat(), "as_of_label": as_of_label(t), "alarm": result.alarm,
               "reasons": result.reasons,
               # the model version each report compared with: its training reference is the baseline
               "drift": {k: {"model": compared[k]["name"], "version": str(compared[k]["version"]),
                             "drift_share": v.drift_share, "drifted": v.drifted, "alarm": v.alarm}
                         for k, v in reports.items()},
               "segment_health_alarms": health}
    files["summary"] = write_atomic(folder / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    return result


def _check_key_columns(key_columns: list[str], used: list[tuple[dict, Any]],
                       origin: str = "configs/monitoring.yaml",
                       project: Callable[[], set[str]] | None = None) -> list[str]:
    """Refuse a key column that no model of the run compares and that is no column of the feature
    set (a misspelt name: each model's drift report takes the key columns among its own, so it was
    dropped in silence and its alarm could never fire). A column of the feature set that no model
    of the run takes (`n_email_open_30d` in a shop without email events: `init` copies the demo's
    list) is left out with a note, returned: it refused every monitor run of such a shop.
    ``project``: gives the columns a build of this project can make (:func:`project_columns`),
    asked only when a key column is no model's."""
    import difflib

    known = {c for _, model in used for c in model.features_} | {f"{m['target']}_score" for m, _ in used}
    other = [c for c in key_columns if c not in known]
    buildable = project() if other and project is not None else set()
    unused = [c for c in other if c in buildable]
    bad = [(i, c) for i, c in enumerate(key_columns) if c not in known and c not in unused]
    if bad:
        def hint(c: str) -> str:
            close = difflib.get_close_matches(c, sorted(known), n=1)
            return f" (did you mean {close[0]!r}?)" if close else ""

        raise ValueError("; ".join(f"{origin}: drift.key_columns[{i}]: {c!r} is compared by no model of "
                                   f"this run{hint(c)}" for i, c in bad)
                         + ". A key column is an input of a model ("
                         + ", ".join(f"{m['name']} version {m['version']}" for m, _ in used)
                         + ": `dynseg models show` lists them) or a score ("
                         + ", ".join(f"{m['target']}_score" for m, _ in used) + "); fix the name or remove it")
    if not unused:
        return []
    return [f"{origin}: drift.key_columns {', '.join(map(repr, unused))}: no model of this run takes "
            f"{'it' if len(unused) == 1 else 'them'} (the data has no such events, or training left "
            f"{'it' if len(unused) == 1 else 'them'} out), so no alarm can come from "
            f"{'it' if len(unused) == 1 else 'them'}; remove {'it' if len(unused) == 1 else 'them'} from the list, or "
            "name the model inputs to watch (`dynseg models show` lists them)"]


def health_alarms(cfg: Config, run: pd.Series) -> list[str]:
    """Segments whose size moved more than allowed since the previous run, or whose coverage fell."""
    if not run.previous_run_id:
        return []
    db = Workspace(cfg.workspace).db_path
    h = runs.read(db, "SELECT segment, size, coverage FROM segment_health WHERE run_id = ?", [run.run_id])
    p = runs.read(db, "SELECT segment, size, coverage FROM segment_health WHERE run_id = ?", [run.previous_run_id])
    both = h.merge(p, on="segment", suffixes=("", "_prev"))
    c = cfg.monitoring.segment_health
    from pipeline.jobs.score import run_definition_changes, run_model_changes

    # a size jump the run's own changes explain says so (the alarm stands: the audience did change)
    redefined = {name for name, change in run_definition_changes(db, run.run_id, run.previous_run_id).items()
                 if change == "redefined"}
    models = run_model_changes(db, run.run_id, run.previous_run_id)
    model_note = "; ".join(f"{t} now scored by {now}, before by {before}" for t, (before, now) in models.items())
    out = []
    for r in both.itertuples():
        if max(r.size, r.size_prev) >= c.min_size_for_change:
            change = r.size / r.size_prev - 1 if r.size_prev else float("inf")
            if abs(change) > c.max_size_change:
                why = ("; its definition changed in this run" if r.segment in redefined else "") + (
                    f"; the models changed ({model_note})" if model_note else "")
                out.append(f"segment {r.segment!r} changed size by {change:+.0%} since the previous run "
                           f"({r.size_prev:,} -> {r.size:,}; max_size_change {c.max_size_change:.0%}{why})")
        if r.coverage_prev - r.coverage > c.max_coverage_drop:
            out.append(f"segment {r.segment!r} coverage fell from {r.coverage_prev:.1%} to {r.coverage:.1%} "
                       f"(max_coverage_drop {c.max_coverage_drop:.0%}): its rule inputs are missing for more customers")
    kept = customers_kept_alarm(cfg, db, run.run_id, run.previous_run_id)
    return out + ([kept] if kept else [])


def customers_kept_alarm(cfg: Config, db: Path, run_id: str, previous_run_id: str | None) -> str | None:
    """When fewer than ``min_customers_kept`` of the previous run's customers are scored in this run
    (at least ``min_size_for_change`` of them): ids that changed form upstream (emails, then
    Shopify's gid://... ids) made every member exit and enter again, holdouts drawn anew, with no
    word from score or monitor. None otherwise, or when the previous run's rows were pruned."""
    if not previous_run_id:
        return None
    c = cfg.monitoring.segment_health
    found = runs.read(db, "SELECT count(*) AS n, count(k.customer_id) AS kept FROM (SELECT customer_id FROM "
                          "customer_scores WHERE run_id = ?) p LEFT JOIN (SELECT customer_id FROM customer_scores "
                          "WHERE run_id = ?) k USING (customer_id)", [previous_run_id, run_id])
    n, kept = (int(found.n[0]), int(found.kept[0])) if len(found) else (0, 0)
    if n < max(c.min_size_for_change, 1) or kept / n >= c.min_customers_kept:
        return None
    return (f"only {kept:,} of the previous run's {n:,} customers ({kept / n:.1%}) are scored in this run "
            f"(min_customers_kept {c.min_customers_kept:.0%}): if the customer ids changed form upstream (emails "
            "for ids, a new export), every member exited and entered again and the holdouts were drawn anew, so a "
            "journey on entry would start for everyone. Check the sources' customer_id; to undo this run: "
            f"dynseg segments drop-run {run_id} --reason ...")


# -- lift and realized quality ----------------------------------------------------------------------------
@dataclass
class LiftResult:
    run_id: str
    as_of: datetime
    lift: pd.DataFrame  # per segment
    quality: dict[str, QualityResult]
    windows: dict[str, tuple[datetime, datetime]]
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    notes: list[str] = field(default_factory=list)  # about the whole measurement (merged ids, ratio mismatch, ...)
    #: how many of ``notes`` (the first) to read before the figures: that the run's exports could not
    #: have been sent in its window (a backfill), which changes what every figure means
    lead_notes: int = 0
    alarm_on_harm: bool = True
    alpha: float = 0.05

    @property
    def reasons(self) -> list[str]:
        harmed = [] if not self.alarm_on_harm or self.lift.empty else [
            f"{r.segment}: the campaign lowered conversion: {100 * r.abs_lift:+.1f} points "
            f"[{100 * r.abs_lift_low:+.1f}, {100 * r.abs_lift_high:+.1f}] against its holdout (p {r.p_value:.3f}, "
            f"{r.p_adjusted:.3f} adjusted for every segment tested); "
            "`alarm_on_harm: false` under lift in configs/monitoring.yaml to only report it"
            for r in self.lift.itertuples()
            # harm that holds across every segment tested (Holm), not one of many chances
            if r.abs_lift_high < 0 and r.p_adjusted < self.alpha]
        return harmed + [f"{t}: {r}" for t, q in self.quality.items() for r in q.reasons]

    @property
    def alarm(self) -> bool:
        return bool(self.reasons)


def label_horizons(cfg: Config) -> dict[str, timedelta]:
    """Each label's horizon (configs/labels.yaml): the outcome window lift grades a run's segments on."""
    return {k: parse_duration(getattr(cfg.labels, k).horizon) for k in ("purchase", "churn")}


def model_horizon(m: dict, ask_mlflow: bool = True) -> timedelta | None:
    """The label horizon a run's model (a record of its ``models``) was trained on: stored with the
    run since it was recorded, else (``ask_mlflow``) the training run's ``horizon_days`` parameter in
    MLflow (runs scored before), else None."""
    days = m.get("horizon_days")
    if days is None and ask_mlflow and m.get("model_run_id"):
        from mlflow import MlflowClient

        try:
            days = MlflowClient().get_run(m["model_run_id"]).data.params.get("horizon_days")
        except Exception:  # the training run is gone from the store: the config's horizon, as before
            days = None
    return timedelta(days=float(days)) if days not in (None, "") else None


def _outcomes(con, start: datetime, horizon: timedelta) -> pd.DataFrame:
    """Per customer with a purchase in [start, start + horizon): converted = 1 and revenue."""
    return con.execute(
        "SELECT customer_id, 1 AS converted, coalesce(sum(amount), 0) AS revenue FROM events "
        "WHERE role = 'purchase' AND ts >= ? AND ts < ? GROUP BY customer_id", [start, start + horizon]).df()


def lift_job(cfg: Config, run_id: str | None = None, as_of: datetime | None = None,
             log_to_mlflow: bool = True) -> LiftResult:
    """Treated vs holdout conversion per segment, and each model's realized quality, for a past run."""
    from models import registry

    ws = Workspace(cfg.workspace)
    run = find_run(cfg, run_id, as_of)  # a run not found (or pruned) said first: the registry is no matter then
    runs.require_rows(ws.db_path, run, "its members and their holdout sides, which lift compares,")
    registry.connect(ws.tracking_uri(cfg.settings.tracking_uri), create=False)
    t = run.as_of.to_pydatetime()
    horizons = label_horizons(cfg)
    models = json.loads(run.models)
    # Each model is graded on the outcome it predicts: the horizon its version was trained on
    # (`train churn --horizon 8w`), not labels.yaml's, and its campaigns on the same window
    own = {}
    for m in models:
        h = model_horizon(m)
        if h is not None and h != horizons[m["target"]]:
            own[m["target"]] = (h, horizons[m["target"]])
            horizons[m["target"]] = h
    data = load_for_run(cfg)
    newest = data.report.time_range(cfg.role_of)[1]
    # each outcome (a purchase within the purchase horizon; retention within the churn horizon) is
    # measured once its whole window is in the data; the others wait, each said
    # (the data reaching the window's end, an event at or after it: a log whose newest event was a
    # day short of it, 02:00 with 22 hours of the window missing, counted as closed)
    closed = {k: newest >= t + h for k, h in horizons.items()}
    if not any(closed[m["target"]] for m in models) and not closed["purchase"]:
        needed = min(horizons[m["target"]] for m in models) if models else horizons["purchase"]
        raise OutcomeWindowOpen(f"the outcome window of run {run.run_id} (as of {as_of_label(t)}) runs to the end of "
                         f"{as_of_label(t + needed)}; lift and realized quality need the whole window, which the data shows "
                         f"by an event at or after {t + needed:%Y-%m-%d %H:%M} UTC, and it ends {newest:%Y-%m-%d %H:%M}: "
                         "run this after the next load, or pick an older run")
    outcome = {k: _outcomes(data.con, t, h).set_index("customer_id") for k, h in horizons.items()}
    # The run stored each customer under the canonical id of its day; identities linked since may
    # have merged it into a group whose smallest id (today's canonical id) is another: its outcomes
    # are read under that id, or they would be lost (a treated buyer counted as not converted)
    now = dict(zip(data.identity.mapping.customer_id, data.identity.mapping.canonical_id))

    def today(ids: pd.Series) -> pd.Series:
        return ids.map(now).fillna(ids) if now else ids

    notes = [f"the {k} outcome window is the model's own, {h.days} days (the horizon its version was trained on), "
             f"not configs/labels.yaml's {c.days} days" for k, (h, c) in own.items()]
    members = runs.read(ws.db_path, "SELECT segment, kind, customer_id, holdout, sendable, consented "
                                    "FROM segment_members WHERE run_id = ?", [run.run_id])
    waiting = {k: f"the {k} window runs to {as_of_label(t + h)}, after the data's end ({newest:%Y-%m-%d %H:%M})"
               for k, h in horizons.items() if not closed[k]}
    # A run scored after its outcome window (a backfill) exported nothing anyone could send in it,
    # unless the date was scored in time before (a run it replaced) or a campaign was simulated from it
    scored = run.started_at.to_pydatetime() if not pd.isna(run.started_at) else None
    sent_later = scored is not None and scored > t + timedelta(days=1)
    sent_too_late = (sent_later and not runs.replaced_in_time(ws.db_path, t) and not runs.simulated(ws.db_path, run.run_id))
    for r in runs.replaced_sides(ws.db_path, run.run_id).itertuples():
        notes.append(f"{r.segment}: {r.flipped:,} members are on the other side of the holdout than in run {r.replaced}, "
                     f"which this run replaced ({r.sent_now_held:,} of them sendable then, held out now): if that "
                     "run's exports were sent, this lift compares the wrong groups (its sides: replaced_members)")
    ids = members.customer_id.drop_duplicates()
    merged = int((today(ids) != ids).sum())
    if merged:
        notes.append(f"{merged:,} of the run's members were merged since into another customer (identities linked "
                     "after the run): their outcomes are read under today's id. A holdout is drawn on the id, so "
                     "a later run may put such a customer on the other side")
    config = json.loads(run.config)["segments"]
    rules = {s["name"]: s for s in config["segments"]}
    # what lift counts is a choice of measurement, not of membership: an `outcome` set in the config
    # since the run applies to it (the run's own definition stays as stored otherwise)
    for name, current in cfg.segments.by_name().items():
        if name in rules and current.outcome:
            rules[name] = rules[name] | {"outcome": current.outcome}
    # The campaigns: segments with a holdout (what lift can measure). Their sendable members were
    # treated; realized quality leaves them out (see pipeline.monitoring.quality).
    campaign = members[(members.kind != "suppression")
                       & members.segment.map(lambda n: rules.get(n, {}).get("holdout", 0) > 0)]
    sent_in = campaign[campaign.sendable].groupby("customer_id").segment.agg(frozenset)  # customer -> campaigns
    reached = set(sent_in.index)
    frames, crossed = [], {}
    for name, g in campaign.groupby("segment"):
        which = "churn" if segment_outcome(rules[name])[0] == "retention" else "purchase"
        if not closed[which]:
            notes.append(f"{name}: not measured yet: {waiting[which]}")
            continue
        # sample ratio: the hash puts each member in the holdout with the segment's fraction; a share
        # far from it means the draw is not what it claims (a filter applied to one side, say)
        fraction, held = rules[name]["holdout"], int(g.holdout.sum())
        srm = stats.binomtest(held, len(g), fraction).pvalue if len(g) else 1.0
        if srm < 0.001:
            notes.append(f"{name}: sample ratio mismatch: {held:,} of {len(g):,} members held out ({held / len(g):.1%}), "
                         f"against the configured {fraction:.0%} (binomial p {srm:.1g}); its lift is not to be trusted")
        treated = g[g.sendable]
        control = g[g.holdout & g.consented]  # held out but would have been sendable
        if treated.empty and control.empty:  # it left the table without a word (exit 0, an empty lift.csv)
            notes.append(f"{name}: not measured: none of its {len(g):,} members was sendable or a held-out member who "
                         "would have been (" + ("no member had consent as of the run: `dynseg score` said why"
                                                 if not g.consented.any() else "every consented member was "
                                                 "suppressed or excluded") + "), so no campaign reached anyone")
            continue
        # held out here, but sendable in another campaign's export: if it was sent, this lift is understated
        elsewhere = sent_in.reindex(control.customer_id).dropna()
        crossed[name] = (len(elsewhere), sorted(set().union(*elsewhere)) if len(elsewhere) else [])
        both = pd.concat([treated.assign(holdout=False), control.assign(holdout=True)])
        o = outcome[which].reindex(today(both.customer_id))
        frames.append(pd.DataFrame({"segment": name, "holdout": both.holdout.to_numpy(),
                                    "converted": o.converted.fillna(0).astype(int).to_numpy(),
                                    "revenue": o.revenue.fillna(0.0).to_numpy()}))
    lc = cfg.monitoring.lift
    lift = (segment_lift(pd.concat(frames, ignore_index=True), alpha=lc.alpha, power=lc.power,
                         min_holdout=lc.min_holdout, min_expected_conversions=lc.min_expected_conversions,
                         max_mde=lc.max_mde) if frames else pd.DataFrame())
    if not lift.empty:
        lift.insert(1, "outcome", [OUTCOME_TEXT[segment_outcome(rules[s])[0]] for s in lift.segment])
        lift["holdout_sendable_elsewhere"] = [crossed[s][0] for s in lift.segment]
        lift["sendable_in"] = [", ".join(crossed[s][1]) for s in lift.segment]
    scores = runs.read(ws.db_path, "SELECT * FROM customer_scores WHERE run_id = ?", [run.run_id])
    quality = {}
    for m in models:
        target = m["target"]
        if not closed[target]:
            notes.append(f"realized quality of the {target} model: not measured yet: {waiting[target]}")
            continue
        s = scores[scores[f"{target}_score"].notna()]
        bought = today(s.customer_id).isin(outcome[target].index).to_numpy()
        y = bought.astype(int) if target == "purchase" else (~bought).astype(int)
        details = registry.version_details(m["name"], m["version"])
        promised = details["metrics"].get("model", {})
        quality[target] = realized_quality(s[f"{target}_score"].to_numpy(), y, s[f"{target}_band"].to_numpy(),
                                           promised={k: promised[k] for k in ("roc_auc", "brier") if k in promised},
                                           auc_floor=cfg.monitoring.quality.auc_floor.get(target),
                                           treated=s.customer_id.isin(reached).to_numpy())
        cutoff = in_sample_cutoff(details["tags"], t)
        if cutoff:
            quality[target].notes.insert(0, f"in sample: the model was fitted on outcomes up to its test snapshot "
                                            f"as of {cutoff_label(cutoff)}, after this run's as_of; these figures "
                                            "overstate its quality")
    folder = ws.reports_dir / "lift" / as_of_file_label(t)
    if not lift.empty and len(lift) > 1:
        notes.append(f"{len(lift)} segments are tested, each at alpha {lc.alpha:g}: with no effect anywhere, the chance "
                     f"that at least one reads significant is up to {1 - (1 - lc.alpha) ** len(lift):.0%}; the harm "
                     "alarm therefore takes the p-values adjusted for all of them (Holm: p_adjusted)")
    alarm_on_harm, lead_notes = lc.alarm_on_harm, int(sent_too_late)
    if sent_too_late and scored >= t + max(h for k, h in horizons.items() if closed[k]) - timedelta(days=1):
        notes.insert(0, f"run {run.run_id} was scored on {scored:%Y-%m-%d %H:%M}, after its outcome window had passed "
                        "(a backfill): nothing it exported could have been sent in that window, so its lift compares "
                        "two groups nobody contacted from this run: differences are chance, or the effect of campaigns "
                        "sent from other runs in the window (a customer's holdout side is the same in every run). "
                        "No harm alarm is raised. Lift measures a run whose exports were sent (score nightly, send, "
                        "then run lift)")
        alarm_on_harm = False
    elif sent_too_late:
        notes.insert(0, f"run {run.run_id} was scored on {scored:%Y-%m-%d %H:%M}, "
                        f"{(scored - t).days} days into its outcome window: its exports could not have been sent "
                        "before then, so the lift measures a campaign in what was left of the window at most")
    result = LiftResult(run.run_id, t, lift, quality, {k: (t, t + h) for k, h in horizons.items() if closed[k]},
                        folder, notes=notes, lead_notes=lead_notes, alarm_on_harm=alarm_on_harm, alpha=lc.alpha)
    result.files["lift"] = write_atomic(folder / "lift.csv", lift.to_csv(index=False).encode())
    summary = {"run_id": run.run_id, "as_of": t.isoformat(), "as_of_label": as_of_label(t), "alarm": result.alarm,
               "reasons": result.reasons,
               "lift": json.loads(lift.to_json(orient="records")) if not lift.empty else [],
               "quality": {k: q.summary() for k, q in quality.items()}, "notes": notes}
    result.files["summary"] = write_atomic(folder / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    if log_to_mlflow:
        metrics = {f"realized_auc_{k}": q.metrics.get("roc_auc", np.nan) for k, q in quality.items()}
        for r in lift.itertuples() if not lift.empty else []:  # each lift with its interval and sizes, not bare
            metrics |= {f"{k}_{r.segment}": float(getattr(r, k)) for k in
                        ("abs_lift", "abs_lift_low", "abs_lift_high", "rel_lift", "rel_lift_low", "rel_lift_high",
                         "p_value", "n_treated", "n_holdout")}
        result.mlflow_run_id = registry.log_run(
            experiment=cfg.monitoring.experiment, run_name=f"lift-{as_of_label(t)}",
            params={"scoring_run_id": run.run_id, "as_of": str(t)}, metrics=metrics,
            tags={"dynseg.kind": "lift", "alarm": str(result.alarm)},
            artifacts={f"lift/{p.name}": p for p in result.files.values()})
    return result
