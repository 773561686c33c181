"""Training sets: feature snapshots at several cutoffs, stacked, each with its labels.

Cutoffs step back from ``T_last``, the newest cutoff whose label window is complete (``T_last + H ≤``
the end of the data). Snapshot k = 0 is the **out-of-time test**, k = 1 **validates** (early
stopping, calibration), the rest **train**, ``step`` apart. Between test and validation, and
between validation and the newest training snapshot, the gap is ``max(step, H)``: each role's
label windows close by the next role's cutoff. So the validation labels are all known at the test
cutoff (nothing used to fit, stop or calibrate looks past it), and no training label looks into the
validation period. Without the second gap, with a 60-day churn horizon and a 30-day step, the
newest training labels covered half of the validation window: validation AUC read 0.77 against
0.71 on test, early stopping kept 578 trees instead of 69, and the calibration, fitted where the
model looked too good, was overconfident on test (slope 0.73). Customers are never split at random
across these roles for reported metrics.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from features.customer_features import DataProfile, FeatureSpec, count_if, customer_features, known_customers, utc
from features.engines import FeatureEngine
from features.labels import LabelSpec, labels


class TrainingSetError(ValueError):
    """The data cannot support the requested training set; the message says what to change."""


@dataclass(frozen=True)
class SnapshotPlan:
    cutoffs: tuple[datetime, ...]  # newest first: test, validation, train...

    def role(self, k: int) -> str:
        return "test" if k == 0 else "valid" if k == 1 else "train"


def plan_snapshots(
    data_start: datetime, data_end: datetime, horizon: timedelta, n_snapshots: int, step: timedelta,
    min_history: timedelta = timedelta(days=90), active_window: timedelta | None = None,
) -> SnapshotPlan:
    """Cutoffs at midnight UTC, newest first; refuse when history is too short. Aware instants
    are taken in UTC, like every cutoff. ``active_window``: a churn label's (its population is
    who bought within it before a cutoff), so that less history than it is not offered bare."""
    data_start, data_end = utc(data_start), utc(data_end)
    if n_snapshots < 3:
        raise TrainingSetError(f"training needs at least 3 snapshots (train, validation, test); got {n_snapshots}")
    reach = horizon + 2 * max(step, horizon) + (n_snapshots - 3) * step
    if reach >= data_end - datetime(1, 1, 2):  # the first cutoff would be before year 1: no date at all
        raise TrainingSetError(
            f"{n_snapshots} snapshots {step.days} days apart with a {horizon.days}-day label window reach "
            f"{reach.days:,} days back from the newest event ({_moment(data_end)}), before any date; the history "
            f"starts {_moment(data_start)}. Set training.snapshots in configs/training.yaml to fit it (6 is the default)")
    cutoffs = _cutoffs(data_end, horizon, n_snapshots, step)
    earliest_ok = data_start + min_history
    if cutoffs[-1] < earliest_ok:
        from features.asof import as_of_text

        fit = sum(1 for c in cutoffs if c >= earliest_ok)
        gap = max(step, horizon)
        fits = lambda n, st, h=horizon: _cutoffs(data_end, h, n, st)[-1] >= earliest_ok  # noqa: E731
        # only what can help: fewer snapshots, a shorter step (while it sets the gap), a shorter horizon
        helps = []
        if fits(3, step):
            low, high = 3, n_snapshots - 1  # fits(low), not fits(high + 1): the most that fit, by bisection
            while low < high:
                mid = (low + high + 1) // 2
                low, high = (mid, high) if fits(mid, step) else (low, mid - 1)
            most = low
            helps.append(f"fewer snapshots (training.snapshots: {most} fit)")
        if step > timedelta(days=1) and fits(n_snapshots, timedelta(days=1)):
            helps.append("a shorter step (training.step)")
        # with the snapshots asked for, else (when no fewer snapshots fit as they are) the fewest
        for n in dict.fromkeys((n_snapshots, n_snapshots if fits(3, step) else 3)):
            shorter = next((d for d in range(horizon.days - 1, 0, -1) if fits(n, step, timedelta(days=d))), None)
            if shorter:
                helps.append(f"a shorter horizon (--horizon {shorter}d or less"
                             + (f", together with training.snapshots: {n} in configs/training.yaml)"
                                if n != n_snapshots else ")"))
                break
        # less history per cutoff: with the snapshots asked for, else with the fewest (a shorter
        # horizon may then leave too few examples; a shorter min_history keeps the label window)
        fewest = _cutoffs(data_end, horizon, 3, step)[-1]

        def censored(days: int) -> str:
            # a churn model's population is who bought in the activity window before a cutoff: with
            # less history than that window, "active" is whoever bought in the days there are
            if active_window is None or days >= active_window.days:
                return ""
            return (f" (but a churn model's customers are those who bought in the {active_window.days} days before a "
                    f"cutoff, labels.churn.active_window: with {days} days of history that is whoever bought in them, "
                    "so shorten the activity window too only if it still says who is active in your shop; otherwise "
                    "the history is too short for a churn model yet)")
        if cutoffs[-1] < data_start <= fewest and not fits(3, step):
            days = (fewest - data_start).days
            helps.append(f"less history before each cutoff, on 3 snapshots (training.min_history: "
                         f"{days}d or less, with training.snapshots: 3){censored(days)}")
        days = (cutoffs[-1] - data_start).days
        helps.append(f"more history (events from {_moment(cutoffs[-1] - min_history)} on; the data starts "
                     f"{_moment(data_start)})" + (f", or less min_history (training.min_history: "
                                                  f"{days}d or less){censored(days)}"
                                                  if cutoffs[-1] >= data_start else ""))  # else even 0d cannot help
        raise TrainingSetError(
            f"history too short: the history used runs from {_moment(data_start)} to {_moment(data_end)} (the "
            f"newest event, before --as-of when given); {n_snapshots} snapshots "
            f"{step.days} days apart with a {horizon.days}-day label window ({gap.days} days between test, "
            f"validation and the newest training cutoff) need the first cutoff as of "
            f"{as_of_text(cutoffs[-1])}, but each cutoff needs {min_history.days} days of history before it, "
            f"so none can be before {as_of_text(earliest_ok)}. {f'Only {fit} fit' if fit else 'None fits'}. "
            f"What can help: {'; '.join(helps)}"
        )
    return SnapshotPlan(cutoffs)


def _moment(t: datetime) -> str:
    """A date, or a date and time when it is not a midnight: a history that misses by seconds must
    not read as one that fits (first event 2025-01-01 00:00:01, needed from 2025-01-01)."""
    return f"{t:%Y-%m-%d}" if t.time() == datetime.min.time() else f"{t:%Y-%m-%d %H:%M:%S} UTC"


def _cutoffs(data_end: datetime, horizon: timedelta, n_snapshots: int, step: timedelta) -> tuple[datetime, ...]:
    newest = data_end - horizon
    t_last = datetime(newest.year, newest.month, newest.day)
    # Each role's label windows close by the next role's cutoff (see the module's docstring): the
    # validation labels before the test cutoff, the training labels before the validation cutoff.
    gap = max(step, horizon)
    t_valid = t_last - gap
    return (t_last, t_valid, *(t_valid - gap - k * step for k in range(n_snapshots - 2)))


#: a customer's purchase history as of a cutoff, in the features: BG/NBD's (x, t_x, T)
HISTORY_COLUMNS = ("frequency", "recency_days", "days_since_first_purchase")


def build_training_set(
    engine: FeatureEngine, spec: FeatureSpec, profile: DataProfile, label: LabelSpec, plan: SnapshotPlan,
    min_class_examples: int = 50, progress: Callable[[int, int], None] | None = None,
    histories: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Features joined to labels for every snapshot, with ``snapshot`` (test/valid/train) and ``as_of``.

    ``histories``, when given, receives for the test and valid snapshots the purchase history
    (:data:`HISTORY_COLUMNS`) of every customer who bought before the cutoff, whatever the label's
    population: what BG/NBD is fitted on (a churn population of recent buyers alone leaves out
    everyone who dropped out, the very thing BG/NBD models)."""
    if "purchase" not in profile.roles:
        # both labels are read from purchases: no snapshot, customer or horizon could give one
        raise TrainingSetError(
            f"no event in the log has the purchase role, and '{label.target}' labels are read from purchases "
            f"({label.describe()}): every label would be {'0' if label.target == 'purchase' else 'empty'}. Map your "
            "order event to purchase under event_roles: in configs/roles.yaml (`dynseg data validate` names the "
            "event types that look like one)")
    events, customers, consents = engine.events(), engine.customers(), engine.consents()
    features_at = engine.at_cutoffs(lambda t: customer_features(events, customers, t, spec, profile, consents=consents))
    frames = []
    for k, cutoff in enumerate(plan.cutoffs):
        feats = features_at(cutoff)
        if histories is not None and plan.role(k) in ("test", "valid") and set(HISTORY_COLUMNS) <= set(feats.columns):
            histories[plan.role(k)] = feats.loc[feats["frequency"].fillna(0) > 0, list(HISTORY_COLUMNS)].reset_index(drop=True)
        lab = engine.execute(labels(known_customers(events, customers, cutoff, profile), events, cutoff, label))
        frame = feats.merge(lab, on="customer_id", how="inner", validate="one_to_one")
        del feats
        frame.insert(2, "snapshot", plan.role(k))
        # Engines return rows in no particular order; a fixed order keeps model fits reproducible:
        # newest snapshot first (the cutoffs' order), customers in order within each, sorted here
        # one snapshot at a time, so the stacked set is never held three times (the snapshots, their
        # stack, the sorted stack: 3.7 times the set at its peak, 12.5 GB for 6M rows)
        frames.append(frame.sort_values("customer_id", ignore_index=True))
        del frame
        if progress:
            progress(k + 1, len(plan.cutoffs))
    data = pd.concat(frames, ignore_index=True)
    del frames
    _check_classes(data, label, min_class_examples)
    return data


def _check_classes(data: pd.DataFrame, label: LabelSpec, minimum: int) -> None:
    counts = data.groupby("snapshot")["label"].agg(positives="sum", rows="size")
    for snap in ("train", "valid", "test"):
        pos = int(counts.loc[snap, "positives"]) if snap in counts.index else 0
        neg = int(counts.loc[snap, "rows"]) - pos if snap in counts.index else 0
        if min(pos, neg) < minimum:
            # More snapshots add train snapshots only. A longer horizon holds more purchases: more
            # purchase positives, fewer churn positives (no purchase in it); a shorter one the reverse.
            more = "more snapshots or customers" if snap == "train" else \
                "more customers (more snapshots add only train snapshots)"
            longer = (pos < neg) == (label.target == "purchase")
            horizon = "a longer horizon" if longer else "a shorter horizon"
            raise TrainingSetError(
                f"too few examples for '{label.target}' in the {snap} snapshot(s): {pos:,} positives and "
                f"{neg:,} negatives; at least {minimum:,} of each are needed ({label.describe()}). Use "
                f"{more}, {horizon}" + (", or lower training.min_class_examples" if minimum > 1 else
                                        " (a class with no example cannot be learned, whatever the settings)")
            )


def label_rates(engine: FeatureEngine, profile: DataProfile, requests: list[tuple[LabelSpec, datetime]],
                data_start: datetime, min_history: timedelta) -> list[float | None]:
    """Realized label rate over the eligible population at each (label, cutoff) pair, in one scan of
    the log; None for a cutoff without ``min_history`` of data before it (or, for an active
    population, its activity window, when longer), or with nobody eligible.

    The same definitions as :func:`features.labels.labels` over :func:`known_customers`, folded
    into per-customer flags: known at T (an event or a signup before T), active at T (a purchase
    in ``[T - A, T)``), bought in ``[T, T + H)``. A scoring run needs six of these rates (two
    models, three cutoffs each); one query instead of six keeps them cheap at scale.
    """
    out: list[float | None] = [None] * len(requests)
    data_start = utc(data_start)
    # An "active" population needs its whole activity window in the log: with less, customers active
    # only before the log starts are left out, and the rate (a churn rate most) reads too high.
    def enough(spec: LabelSpec, c: datetime) -> bool:
        needed = max(min_history, spec.active_window) if spec.population == "active" else min_history
        return utc(c) - needed >= data_start

    todo = [(i, spec, utc(c)) for i, (spec, c) in enumerate(requests) if enough(spec, c)]
    if not todo:
        return out
    ev = engine.events()

    def at(moment: datetime) -> ir.Value:
        return ibis.literal(moment, type="timestamp")

    is_p = ev.role == "purchase"
    aggs: dict[str, ir.Value] = {"first_ts": ev.ts.min()}
    for i, spec, c in todo:
        aggs[f"bought_{i}"] = count_if(is_p & (ev.ts >= at(c)) & (ev.ts < at(c + spec.horizon)))
        if spec.population == "active":
            aggs[f"active_{i}"] = count_if(is_p & (ev.ts >= at(c - spec.active_window)) & (ev.ts < at(c)))
    per = ev.group_by("customer_id").aggregate(**aggs)
    signup = None
    if profile.has_signup:
        cu = engine.customers()
        cu = cu.select(cid=cu.customer_id, signup_at=cu.signup_at)
        per = per.outer_join(cu, per.customer_id == cu.cid)
        signup = per.signup_at
    sums: dict[str, ir.Value] = {}
    for i, spec, c in todo:
        known = per.first_ts < at(c)
        if signup is not None:
            known = known.fill_null(False) | (signup < at(c)).fill_null(False)
        eligible = known.fill_null(False)
        if spec.population == "active":
            eligible &= (per[f"active_{i}"] > 0).fill_null(False)
        bought = (per[f"bought_{i}"] > 0).fill_null(False)
        label = bought if spec.target == "purchase" else ~bought
        sums[f"n_{i}"] = count_if(eligible)
        sums[f"pos_{i}"] = count_if(eligible & label)
    row = engine.execute(per.aggregate(**sums)).iloc[0]
    for i, _, _ in todo:
        n = int(row[f"n_{i}"])
        out[i] = int(row[f"pos_{i}"]) / n if n > 0 else None
    return out


#: A feature this strong alone (``|AUC − 0.5| · 2`` on train: AUC >= 0.95 or <= 0.05) is suspect of
#: knowing the label: real behavioural features rank a future purchase far less well.
SUSPICIOUS_STRENGTH = 0.9


def feature_signal(training_set: pd.DataFrame, max_rows: int | None = None) -> pd.DataFrame:
    """How well each numeric feature alone ranks the label, per snapshot role: ROC AUC of the
    feature's values against ``label`` on the ``train`` and on the out-of-time ``test`` rows of a
    training set (``dynseg features training-set``, ``Project.training_set``), and the share of
    train rows where it is known (columns ``feature``, ``strength``, ``non_null``, ``auc_train``,
    ``auc_test``). A null value ranks below every known one (a customer who never opened an email
    has the lowest ``days_since_last_open`` rank, not the highest). An AUC below 0.5 means a higher
    value goes with a lower rate; ``strength`` is ``|auc_train − 0.5| · 2``,
    and rows come strongest first. A feature whose train and test AUC part is one whose relation
    to the label changed over time; one that ranks the label almost perfectly on its own
    (``strength`` >= :data:`SUSPICIOUS_STRENGTH`) should be checked for leakage. Flags count as
    numbers (0/1), with nulls too (``email_consent`` before a cutoff where everyone's is known);
    text attributes are left out. A role whose rows hold one class only gets NaN, with a warning. ``max_rows``: each role's AUC on a seeded random
    sample of at most that many of its rows, for large sets (an AUC on 200,000 rows is within
    about 0.002 of the full one)."""
    missing = {"label", "snapshot"} - set(training_set.columns)
    if missing:
        raise ValueError(f"feature_signal needs a training set (dynseg features training-set, Project.training_set): "
                         f"no column {sorted(missing)}; "
                         f"found {list(training_set.columns)[:8]}...")
    keys = {"customer_id", "as_of", "snapshot", "label"}
    rows = []
    parts = {role: training_set[training_set.snapshot == role] for role in ("train", "test")}
    if max_rows is not None:
        parts = {role: p.sample(max_rows, random_state=0) if len(p) > max_rows else p for role, p in parts.items()}
    for col in training_set.columns:
        if col in keys:
            continue
        s = training_set[col]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) or _is_flag(s)):
            continue
        row = {"feature": col, "non_null": float(parts["train"][col].notna().mean()) if len(parts["train"]) else np.nan}
        for role, part in parts.items():
            row[f"auc_{role}"] = _auc(part[col], part["label"])
        rows.append(row)
    one_class = [f"{role} ({sorted(p['label'].unique().tolist())})" for role, p in parts.items() if p["label"].nunique() < 2]
    if one_class:
        warnings.warn(f"feature_signal: the {' and '.join(one_class)} rows hold one class of label only; "
                      "their AUCs are NaN", stacklevel=2)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    # rounded: (0.95 - 0.5) * 2 is 0.8999... in floating point, and an AUC of 0.95 is to be flagged
    out.insert(1, "strength", ((out.auc_train - 0.5).abs() * 2).round(12))
    return out.sort_values("strength", ascending=False, ignore_index=True)


def _is_flag(s: pd.Series) -> bool:
    """A flag with nulls, as pandas holds one: object values that are all True or False."""
    known = s.dropna()
    return s.dtype == object and len(known) > 0 and known.map(lambda v: isinstance(v, (bool, np.bool_))).all()


def _auc(values: pd.Series, label: pd.Series) -> float:
    """ROC AUC of ``values`` (nulls lowest) against ``label``; NaN where a class is absent."""
    from sklearn.metrics import roc_auc_score

    if label.nunique() < 2:
        return np.nan
    x = values.astype("boolean" if values.dtype == object else values.dtype).astype("Float64").to_numpy(
        dtype="float64", na_value=np.nan)
    known = ~np.isnan(x)
    x[~known] = x[known].min() - 1 if known.any() else 0.0
    return float(roc_auc_score(label.to_numpy(dtype="int64"), x))

