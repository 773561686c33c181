"""``dynseg models promote``: a candidate and the champion compared on one out-of-time test snapshot.

A version trained later has a later test snapshot than the champion it would replace (the normal
monthly retrain), so their stored test metrics are not comparable. Both are then scored on the
newer of the two snapshots: out of time for both, since neither version's fitting, early stopping
or calibration saw a label there (each one's labels close by its own test cutoff, which is not
later). Both get the base rate a scoring run at that cutoff would give them, so the Brier scores
differ only by what the models learned.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from features.asof import cutoff_label, parse_duration
from features.customer_features import customer_features, known_customers
from features.labels import labels
from features.training_set import label_rates
from models.evaluation import metrics
from pipeline.config import Config
from pipeline.jobs.data import load_for_run
from pipeline.jobs.features import check_model_inputs, data_profile, feature_spec, open_engine
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
    out = []
    for mv, bundle in ((candidate, cand), (champion, champ)):
        check_model_inputs(bundle.model, f"{name} version {mv.version}", target, frame.columns)
        model = bundle.model if base_rate is None else bundle.model.with_base_rate(base_rate)
        out.append(metrics(frame.label.to_numpy(), model.predict(frame)))
    return out[0], out[1], f"the test snapshot as of {cutoff_label(cutoff)} ({len(frame):,} customers)"


__all__ = ["compare_on_one_snapshot"]
