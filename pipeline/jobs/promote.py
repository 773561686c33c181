"""``dynseg models promote``: a candidate and the champion compared on one out-of-time test snapshot.

A version trained later has a later test snapshot than the champion it would replace (the normal
monthly retrain), so their stored test metrics are not comparable. Both are then scored on the
newer of the two snapshots: out of time for both, since neither version's fitting, early stopping
or calibration saw a label there (each one's labels close by its own test cutoff, which is not
later). Both get the base rate a scoring run at that cutoff would give them, so the Brier scores
differ only by what the models learned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from features.asof import cutoff_label, parse_duration
from features.customer_features import customer_features, known_customers
from features.labels import labels
from features.training_set import label_rates
from models.evaluation import delong_difference, metrics
from pipeline.config import Config
from pipeline.jobs.data import load_for_run
from pipeline.jobs.features import check_model_inputs, data_profile, feature_spec, open_engine
from pipeline.jobs.train import campaign_summary
from pipeline.workspace import Workspace
from pipeline.jobs.score import _base_rate, _base_rate_cutoffs, _label_spec, base_rate_mode


def compare_on_one_snapshot(cfg: Config, name: str, candidate: Any, champion: Any) -> tuple[dict, dict, str]:
    """(candidate metrics, champion metrics, where) for two registry versions of ``name`` on the
    newer of their test snapshots. Raises ValueError when they cannot be compared there."""
    from models import registry

    cutoffs = [mv.tags.get("test_cutoff") for mv in (candidate, champion)]
    if None in cutoffs:
        raise ValueError("a version records no test cutoff (trained before dynseg recorded it)")
    definitions = [mv.tags.get("label_definition") for mv in (candidate, champion)]
    if definitions[0] != definitions[1]:  # checked on the tags, before any model is loaded
        raise ValueError(f"the two versions predict different outcomes ({definitions[0]!r} against "
                         f"{definitions[1]!r}); a comparison needs one label definition")
    bundles = {mv.version: registry.bundle_of(registry.load_version(name, mv.version)) for mv in (candidate, champion)}
    cand, champ = bundles[candidate.version], bundles[champion.version]
    cutoff = max(datetime.fromisoformat(c) for c in cutoffs)
    target = candidate.tags.get("target")
    spec = _label_spec(cfg, target, cand)
    data = load_for_run(cfg, None)
    try:
        profile = data_profile(cfg, data)
        eng = open_engine(cfg, data, "duckdb")
        try:
            events, customers = eng.events(), eng.customers()
            feats = eng.execute(customer_features(events, customers, cutoff, feature_spec(cfg), profile,
                                                  consents=eng.consents()))
            lab = eng.execute(labels(known_customers(events, customers, cutoff, profile), events, cutoff, spec))
            first = data.report.time_range(cfg.role_of)[0]
            wanted = [(spec, c) for c in _base_rate_cutoffs(spec, cutoff)]
            found = dict(zip(wanted, label_rates(eng, profile, wanted, first, parse_duration(cfg.training.min_history))))
        finally:
            eng.close()
    finally:
        data.con.close()
    frame = feats.merge(lab, on="customer_id", how="inner", validate="one_to_one")
    if frame.label.nunique() < 2:
        raise ValueError(f"the test snapshot as of {cutoff_label(cutoff)} holds only one class")
    base_rate, _ = _base_rate(spec, cutoff, lambda s, c: found[(s, c)], base_rate_mode(cand))
    out, scores = [], []
    y = frame.label.to_numpy()
    for mv, bundle in ((candidate, cand), (champion, champ)):
        check_model_inputs(bundle.model, f"{name} version {mv.version}", target, frame.columns)
        model = bundle.model if base_rate is None else bundle.model.with_base_rate(base_rate)
        scores.append(model.predict(frame))
        out.append(metrics(y, scores[-1]))
    # the AUC difference on the same customers, with its paired interval: a gain of 0.001 is
    # often noise, and the gate (point estimates) promotes on it; the text says which it is
    _, low, high = delong_difference(y, scores[0], scores[1])
    out[0]["auc_gain_ci"] = (low, high)
    sent = campaign_summary(Workspace(cfg.workspace).db_path, frame.customer_id, cutoff, spec.horizon)
    if sent:  # (said by the gate's text, see models.registry.default_comparison)
        out[0]["caveat"] = (f"a campaign may have moved this snapshot's labels: {sent}; if it was sent, the "
                            "head-to-head leans towards the version that chose who was sent")
    return out[0], out[1], f"the test snapshot as of {cutoff_label(cutoff)} ({len(frame):,} customers)"


@dataclass
class RunImpact:
    """What promoting one version over another would change in a scoring run's scores and bands."""

    run_id: str
    as_of: datetime
    customers: int
    spearman: float
    top_decile_overlap: float  # share of the reference's top 10 % also in the candidate's
    moved: pd.DataFrame  # from_band, to_band, customers: those whose band would change
    bigger_moves: int  # customers whose score moves by more than 5 points


def impact_on_run(cfg: Config, name: str, reference: str, candidate: str, run_id: str | None = None) -> RunImpact:
    """Both versions scored on the features of a scoring run (default: the latest) at that run's
    base rate, over the customers the run scored with this model: how their ranking and bands
    would differ, before a promotion decides it. Raises ValueError when the run cannot be used."""
    import numpy as np

    from models import bands as band_rules
    from models import registry
    from pipeline import runs
    from pipeline.jobs.explain import _run_models
    from pipeline.jobs.features import features_as_of
    from pipeline.jobs.monitor import find_run
    from pipeline.workspace import Workspace

    run = find_run(cfg, run_id)
    db = Workspace(cfg.workspace).db_path
    runs.require_rows(db, run, "its scores")
    target = registry.version_details(name, reference)["tags"].get("target")
    if target not in {m["target"] for m in json.loads(run.models)}:
        raise ValueError(f"run {run.run_id} scored no {target} model")
    scored = runs.read(db, f"SELECT customer_id FROM customer_scores WHERE run_id = ? AND {target}_score IS NOT NULL",
                       [run.run_id]).customer_id
    if scored.empty:
        raise ValueError(f"run {run.run_id} scored nobody with its {target} model")
    t = run.as_of.to_pydatetime()
    feats = features_as_of(cfg, t).set_index("customer_id").reindex(scored).reset_index()
    p, levels = [], []
    for v in (reference, candidate):
        model = _run_models(cfg, run, target, v)[target][0]
        check_model_inputs(model, f"{name} version {v}", target, feats.columns)
        p.append(model.predict(feats))
        levels.append(band_rules.thresholds_for_run(
            band_rules.from_dicts(registry.bundle_of(registry.load_version(name, v)).bands or []), p[-1]))
    a, b = p
    n = len(a)
    k = max(1, int(np.ceil(n * 0.10)))
    top_a, top_b = set(np.argsort(-a, kind="stable")[:k]), set(np.argsort(-b, kind="stable")[:k])
    spearman = float(pd.Series(a).corr(pd.Series(b), method="spearman"))
    frame = pd.DataFrame({"from_band": band_rules.assign(levels[0], a) if levels[0] else "—",
                          "to_band": band_rules.assign(levels[1], b) if levels[1] else "—"})
    moved = (frame[frame.from_band != frame.to_band].value_counts().rename("customers").reset_index()
             .sort_values("customers", ascending=False, ignore_index=True))
    return RunImpact(run.run_id, t, n, spearman, len(top_a & top_b) / k, moved, int((np.abs(b - a) > 0.05).sum()))


__all__ = ["RunImpact", "compare_on_one_snapshot", "impact_on_run"]
