"""``dynseg explain`` and segment drivers: why one customer got their score in a run, and what
sets a segment apart. Features are recomputed as of the run's as_of (point in time, so they are
the values the run scored) and explained with the exact model version and base rate the run used."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.asof import as_of_label
from models.bands import cuts_text
from pipeline import runs
from pipeline.config import Config
from pipeline.jobs.data import load_for_run
from pipeline.jobs.features import check_model_inputs, features_as_of
from pipeline.jobs.monitor import find_run
from pipeline.workspace import Workspace


@dataclass
class Explanation:
    customer_id: str
    target: str
    run_id: str
    as_of: datetime
    model: str  # name/version
    score: float  # recomputed now; equals the run's score
    stored_score: float | None  # what the run wrote
    band: str | None
    segments: list[str]
    base: float  # log-odds
    base_probability: float
    contributions: pd.DataFrame  # feature, value, log_odds, points, reason (sorted by |log_odds|)
    waterfall: Path | None = None
    of_run: bool = True  # the model is the version the run used (not one named with ``version``)
    #: the run's band cuts for this target ("high from 0.7012, medium from 0.5000"), when the run used this model
    cuts: str = ""
    #: segments whose rule selected the customer but another segment took them out of
    #: ("likely_buyers (excluded by recent_buyers)"): why they were not in it that night
    left_out: list[str] = field(default_factory=list)


def _run_models(cfg: Config, run: pd.Series, target: str | None = None,
                version: str | None = None) -> dict[str, tuple[Any, float | None, str, str]]:
    """target -> (PropensityModel at the run's base rate, base rate, "name/version", who it scores),
    for every model of the run or only ``target``'s; with ``version``, that version of ``target``'s
    model instead of the one the run used (a challenger under review), at the run's base rate."""
    from pipeline.jobs.score import _label_spec

    from models import registry

    used = json.loads(run.models)
    if target is not None and target not in {m["target"] for m in used}:
        raise ValueError(f"run {run.run_id} has no {target!r} model; it scored {sorted(m['target'] for m in used)}")
    registry.connect(Workspace(cfg.workspace).tracking_uri(cfg.settings.tracking_uri), create=False)
    out = {}
    for m in used:
        if target not in (None, m["target"]):
            continue
        chosen = registry.resolve_version(m["name"], version) if version is not None else m["version"]
        # the run's own model by the training run it recorded (the registry's name and number may since
        # hold another, or none); a version asked for by number is the registry's
        bundle = registry.bundle_of(registry.load_version(m["name"], chosen,
                                                          None if version is not None else m.get("model_run_id")))
        model = bundle.model
        rate = m.get("base_rate")
        # its population as trained (an active window of its own, not today's configs/labels.yaml)
        who = _label_spec(cfg, m["target"], bundle).describe().split("population: ", 1)[-1]
        out[m["target"]] = (model.with_base_rate(rate) if rate is not None else model, rate, f"{m['name']}/{chosen}", who)
    return out


def explain_customer(cfg: Config, customer_id: str, target: str | None = None, run_id: str | None = None,
                     top: int = 12, plot: bool = True, as_of: datetime | None = None,
                     version: str | None = None, outside: dict[str, str] | None = None) -> list[Explanation]:
    """The customer's score, band and segments in a run (by id, by ``as_of``, default: the latest),
    and every feature's push (exact TreeSHAP, log-odds and probability points), one Explanation per model.
    ``version`` (with ``target``): explain with that version of the model (say, a challenger before
    promotion) on the run's features, instead of the version the run used; its score is then not the
    run's (``stored_score`` still is) and it has no band in that run."""
    if version is not None and target is None:
        raise ValueError("explain with a model version: name the model too (target purchase or churn)")
    from models.explain import NO_CONTEXT, context_column, contributions, describe_value, probability_points, reason_codes
    from models.plots import waterfall_plot

    run = find_run(cfg, run_id, as_of)
    t = run.as_of.to_pydatetime()
    db = Workspace(cfg.workspace).db_path
    runs.require_rows(db, run, "its customers' scores")
    stored = runs.read(db, "SELECT * FROM customer_scores WHERE run_id = ? AND customer_id = ?", [run.run_id, customer_id])
    if stored.empty:
        # the id as typed in another case or with blanks (C0004341 for c0004341): named, as a segment's typo is
        near = runs.read(db, "SELECT customer_id FROM customer_scores WHERE run_id = ? AND lower(trim(customer_id)) = "
                             "lower(trim(?)) LIMIT 1", [run.run_id, customer_id])
        hint = (f"; did you mean {near.customer_id[0]!r}? (ids are matched exactly)" if not near.empty
                else _canonical_hint(cfg, customer_id, t))
        raise ValueError(f"customer {customer_id!r} was not scored in run {run.run_id} (as of {as_of_label(t)}){hint}")
    # a member held out, or not sendable, was not mailed: said beside the segment (it read as mailed)
    member_of = [s + (" (holdout)" if h else "" if snd or kind == "suppression" else
                      " (not sendable: no consent)" if not c else " (not sendable: suppressed)")
                 for s, kind, h, c, snd in runs.read(
                     db, "SELECT segment, kind, holdout, consented, sendable FROM segment_members WHERE run_id = ? "
                         "AND customer_id = ? ORDER BY segment", [run.run_id, customer_id]).itertuples(index=False)]
    left_out = [f"{s} (excluded by {by})" for s, by in runs.read_optional(
        db, "SELECT segment, excluded_by FROM segment_exclusions WHERE run_id = ? AND customer_id = ? ORDER BY segment",
        [run.run_id, customer_id]).itertuples(index=False)]
    models = _run_models(cfg, run, target, version)  # only the model asked for: another one's inputs do not matter here
    row = features_as_of(cfg, t, [customer_id])
    if row.empty:  # scored then, but not a customer under this id in today's data (an identity link since)
        raise ValueError(f"customer {customer_id!r} was scored in run {run.run_id} (as of {as_of_label(t)}), but the "
                         f"data as it is now has no customer {customer_id!r} at that date, so its features cannot be "
                         f"rebuilt{_canonical_hint(cfg, customer_id, t, since=True)}")
    for tgt, (model, _, label, _) in models.items():
        check_model_inputs(model, label.replace("/", " version "), tgt, row.columns)
    out = []
    for tgt, (model, _, label, who) in models.items():
        score = stored[f"{tgt}_score"].iloc[0]
        if pd.isna(score):
            if outside is not None:
                outside[tgt] = who
            continue  # outside this model's population
        values, base = contributions(model, row)
        v = values.iloc[0]
        raw = base + v.sum()
        p = float(model.probability_from_raw(np.array([raw]))[0])
        points = probability_points(model, values, base).iloc[0].to_numpy()
        words = reason_codes(model, row, tgt, k=len(v), currency=cfg.settings.currency)
        reason_of = {words[f"reason_{i}_feature"].iloc[0]: words[f"reason_{i}"].iloc[0]
                     for i in range(1, len(v) + 1) if f"reason_{i}_feature" in words and words[f"reason_{i}"].iloc[0]}
        def said(f: str) -> str:  # with the context column the stored reasons read too (a model input)
            c = context_column(f)
            return describe_value(f, row[f].iloc[0], row[c].iloc[0] if c in values.columns else NO_CONTEXT,
                                  cfg.settings.currency)

        table = pd.DataFrame({"feature": values.columns, "value": [said(f) for f in values.columns],
                              "log_odds": v.to_numpy(), "points": points})
        table["reason"] = table.feature.map(reason_of).fillna("")
        # largest push in points first, as the stored reasons are ranked (ties: log-odds)
        table = table.assign(_p=table.points.abs().round(9), _l=table.log_odds.abs()).sort_values(
            ["_p", "_l"], ascending=False, kind="stable").drop(columns=["_p", "_l"]).reset_index(drop=True)
        used_by_run = next(f"{m['name']}/{m['version']}" for m in json.loads(run.models) if m["target"] == tgt)
        band = stored[f"{tgt}_band"].iloc[0] if label == used_by_run else None  # another version has no band here
        e = Explanation(customer_id, tgt, run.run_id, t, label, p, float(score), band,
                        member_of, float(base), float(model.probability_from_raw(np.array([base]))[0]), table)
        e.of_run = label == used_by_run
        e.left_out = left_out
        if e.of_run:  # a score that rounds to a band's cut (49.97 % beside 0.5) reads against the cuts
            bands = next((m.get("bands") or [] for m in json.loads(run.models) if m["target"] == tgt), [])
            e.cuts = cuts_text(bands)
        if plot:
            # another version than the run's gets its own file: the run's explanation stays
            suffix = "" if e.of_run else f"_v{label.rsplit('/', 1)[-1]}"
            path = (Workspace(cfg.workspace).reports_dir / "explain" / run.run_id
                    / f"{file_safe(customer_id)}_{tgt}{suffix}.png")
            e.waterfall = waterfall_plot(table.head(top), e.base, raw, e.base_probability, p, path,
                                         f"{customer_id}\n{tgt} score {p:.1%} ({label}, as of {as_of_label(t)})")
        out.append(e)
    return out


def file_safe(customer_id: str) -> str:
    """``customer_id`` as one file name: an id is data, and Shopify's `gid://shopify/Customer/7`
    made folders, and `../../x` wrote outside the workspace. Any character but letters, digits,
    ``_ . @ -`` becomes ``_``, with a short hash of the id after it when one did (two ids that differ
    only there keep two files); a name cannot start with a dot, and a long one is cut (hash kept)."""
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", customer_id)
    if safe != customer_id or safe.startswith(".") or len(safe) > 80:  # (a file name has 255 bytes at most)
        safe = safe.lstrip(".")[:80] + "-" + hashlib.sha1(customer_id.encode()).hexdigest()[:8]
    return safe


def _canonical_hint(cfg: Config, customer_id: str, as_of: datetime, since: bool = False) -> str:
    """``since``: the id was a customer of the run, so a merge came after it (an identity link added)."""
    data = load_for_run(cfg, as_of)
    m = data.identity.mapping
    hit = m.loc[m["customer_id"] == customer_id, "canonical_id"] if len(m) else pd.Series(dtype=object)
    canonical = hit.iloc[0] if len(hit) else None
    if canonical and canonical != customer_id:
        if since:
            return (f": {customer_id!r} has been merged into {canonical!r} by an identity link added since the run. "
                    f"The run's stored score and segments stand; explain {canonical!r} in a run scored since")
        return f"; {customer_id!r} was merged into {canonical!r} by identity resolution: explain {canonical!r}"
    if since:
        return ": its events and profile are no longer in the sources (check the events source)"
    return "; check the id (see the run's exports or `dynseg segments show NAME`)"


DRIVER_COLUMNS = ["target", "feature", "segment_typical", "everyone_typical", "segment_points", "everyone_points",
                  "difference"]


def is_flag(column: pd.Series) -> bool:
    """Whether a feature column holds yes/no values (bool, or Python bools in an object column);
    decided on the whole column, by type: numbers that happen to be 0 and 1 are counts."""
    if pd.api.types.is_bool_dtype(column):
        return True
    if column.dtype != object:
        return False
    known = column.dropna()
    return len(known) > 0 and known.map(lambda v: isinstance(v, (bool, np.bool_))).all()


def typical_value(values: pd.Series, flag: bool | None = None) -> str:
    """A feature's typical value in a group, as a person reads it: the median of a number, the share
    of yes of a flag (``flag``: decided on the whole column, else on these values), the most common
    category; with the share that has none when it is over 10 % (no purchase yet: no recency)."""
    known = values.dropna()
    none = 1 - len(known) / len(values) if len(values) else 0.0
    if known.empty:
        return "none"
    if is_flag(values) if flag is None else flag:
        said = f"{known.astype(bool).mean():.0%} yes"
    elif pd.api.types.is_numeric_dtype(known):
        m = float(known.median())
        said = f"{m:,.0f}" if m == round(m) or abs(m) >= 100 else f"{m:,.3g}"
    else:
        said = str(known.astype(str).mode().iloc[0])
    return said + (f" ({none:.0%} none)" if none > 0.10 else "")


def segment_drivers(cfg: Config, segment: str, run_id: str | None = None, sample: int = 3000,
                    top: int = 6) -> pd.DataFrame:
    """Features that most set a segment apart: per model, the mean push (probability points) in the
    segment minus the mean over everyone the model scored, from samples of both (fixed seed)."""
    from models.explain import contributions, probability_points

    run = find_run(cfg, run_id)
    t = run.as_of.to_pydatetime()
    db = Workspace(cfg.workspace).db_path
    runs.require_rows(db, run, "its members")
    members = runs.read(db, "SELECT customer_id FROM segment_members WHERE run_id = ? AND segment = ?",
                        [run.run_id, segment]).customer_id
    if members.empty:
        runs.require_segment(db, run, segment)  # a name the run does not have is a typo, not an empty segment
        return pd.DataFrame(columns=DRIVER_COLUMNS)
    scores = runs.read(db, "SELECT * FROM customer_scores WHERE run_id = ?", [run.run_id])
    models = _run_models(cfg, run)
    samples = {}  # target -> (segment ids, everyone ids); features are computed for these only
    for tgt in models:
        scored = scores.customer_id[scores[f"{tgt}_score"].notna()]
        inside = members[members.isin(scored)]
        if not inside.empty:
            samples[tgt] = (inside.sample(min(sample, len(inside)), random_state=0),
                            scored.sample(min(sample, len(scored)), random_state=0))
    if not samples:
        return pd.DataFrame(columns=DRIVER_COLUMNS)
    ids = sorted({c for seg, pop in samples.values() for c in (*seg, *pop)})
    feats = features_as_of(cfg, t, ids).set_index("customer_id")
    # an id of the run merged since into another customer (an identity link added) has no features
    # as of the run in today's data: left out of both samples, and counted for the caller to say
    gone = len(set(ids) - set(feats.index))
    rows = []
    for tgt, (seg_ids, pop_ids) in samples.items():
        seg_ids, pop_ids = seg_ids[seg_ids.isin(feats.index)], pop_ids[pop_ids.isin(feats.index)]
        if seg_ids.empty or pop_ids.empty:
            continue
        model = models[tgt][0]
        means = {}
        for name, frame in (("segment", feats.loc[seg_ids]), ("everyone", feats.loc[pop_ids])):
            values, base = contributions(model, frame.reset_index())
            means[name] = probability_points(model, values, base).mean()
        diff = (means["segment"] - means["everyone"]).sort_values(key=np.abs, ascending=False).head(top)
        # beside each push, the feature's typical value on each side: "+2.6 points from page views"
        # did not say whether the segment has few of them or many
        for f, d in diff.items():
            flag = is_flag(feats[f])
            rows.append({"target": tgt, "feature": f, "segment_typical": typical_value(feats.loc[seg_ids, f], flag),
                         "everyone_typical": typical_value(feats.loc[pop_ids, f], flag),
                         "segment_points": means["segment"][f], "everyone_points": means["everyone"][f],
                         "difference": d})
    out = pd.DataFrame(rows, columns=DRIVER_COLUMNS)
    out.attrs["left_out"] = gone
    return out
