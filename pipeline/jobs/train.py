"""``dynseg train``: training set -> LightGBM -> calibration -> evaluation -> MLflow run -> gated registration."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from features.asof import as_of_label, cutoff_label
from features.customer_features import DataProfile
from models import bands as band_rules
from models.calibration import seasonal_base_rate, shift_prior
from models.card import model_card
from models.estimator import KEY_COLUMNS, PropensityModel
from models.evaluation import Evaluation, calibrated_baselines, calibration_verdict, evaluate
from models.explain import global_artifacts
from models.plots import calibration_plot, gains_plot, importance_plot, roc_pr_plot
from pipeline.config import Config, Criterion
from pipeline.jobs.features import TrainingData, training_set_job
from pipeline.workspace import Workspace

_LOWER_IS_BETTER = {"brier", "log_loss"}
SHAP_SAMPLE_ROWS = 2000  # test-snapshot customers explained for the run's SHAP plots


@dataclass
class TrainResult:
    target: str
    model_name: str
    run_id: str
    version: str | None
    validated: bool
    criteria: list[dict]
    evaluation: Evaluation
    data: TrainingData
    model: PropensityModel
    base_rate_note: str
    warnings: list[str] = field(default_factory=list)
    #: inputs left out because another input equals them on every training row: left out -> kept
    repeats: dict[str, str] = field(default_factory=dict)


def customer_groups(ids: pd.Series) -> np.ndarray:
    """A stable integer per customer (for splitting validation rows into halves)."""
    return pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy() % 1_000_003


def check_criteria(table: pd.DataFrame, criteria: list[Criterion], differences: pd.DataFrame | None = None) -> list[dict]:
    """Each declared criterion against the test metrics; ``best baseline`` is per metric.
    ``differences``: the model-minus-baseline AUC gains with their intervals, for ``significant``."""
    model = table.set_index("scorer").loc["model"]
    base = table[table.scorer != "model"].set_index("scorer")
    out = []
    for c in criteria:
        value = float(model[c.metric])
        lower = c.metric in _LOWER_IS_BETTER
        best_name = base[c.metric].idxmin() if lower else base[c.metric].idxmax()
        best = float(base.loc[best_name, c.metric])
        if c.significant and differences is not None and best_name in set(differences.baseline):
            gain = differences.set_index("baseline").loc[best_name]
            passed = float(gain.ci_low) >= c.min_over_best_baseline
            text = (f"{c.metric} {value:.4f} over the best baseline ({best_name} {best:.4f}): gain {gain.auc_difference:+.4f}, "
                    f"95% CI [{gain.ci_low:+.4f}, {gain.ci_high:+.4f}], whose lower end must be >= {c.min_over_best_baseline}")
        elif c.min is not None:
            passed, text = value >= c.min, f"{c.metric} {value:.4f} >= {c.min}"
        elif c.max is not None:
            passed, text = value <= c.max, f"{c.metric} {value:.4f} <= {c.max}"
        elif c.min_over_best_baseline is not None:
            passed = value >= best + c.min_over_best_baseline
            text = f"{c.metric} {value:.4f} >= best baseline ({best_name} {best:.4f}) + {c.min_over_best_baseline}"
        else:
            passed = value <= best + c.max_over_best_baseline
            text = f"{c.metric} {value:.4f} <= best baseline ({best_name} {best:.4f}) + {c.max_over_best_baseline}"
        against = best_name if c.min is None and c.max is None else None
        # ahead: the model's value is better than the best baseline's, passed or not (a gain the
        # test snapshot cannot tell from noise is ahead and failed)
        out.append({"metric": c.metric, "passed": bool(passed), "text": text, "value": value, "baseline": against,
                    "ahead": bool(value < best if lower else value > best) if against else None})
    return out


def data_fingerprint(cfg: Config) -> dict[str, str]:
    """What the run read, to tell later whether the same data is still there: per source, its files'
    count and a digest of their names, sizes and modification times (a file rewritten in place, as
    `data generate` does, changes it); a DuckDB table source, the database file's."""
    from features.sources import SourceError, resolve_files

    out = {}
    for name, spec in cfg.source_specs().items():
        try:
            files = resolve_files(spec, cfg.project_dir, name)
        except SourceError:
            continue
        stats = sorted((str(f), st.st_size, st.st_mtime_ns) for f in files for st in [os.stat(f)])
        digest = hashlib.sha1(repr(stats).encode()).hexdigest()[:12]
        out[f"dynseg.data.{name}"] = f"{len(files)} file{'s' if len(files) != 1 else ''}, {sum(s[1] for s in stats):,} bytes, {digest}"
    return out


def code_version() -> str:
    """The git commit of the dynseg code that ran (``+dirty`` with uncommitted changes), or the
    package version when it is not a git checkout."""
    import subprocess

    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    if commit:
        return commit + ("+dirty" if dirty else "")
    try:
        return f"dynseg {version('dynseg')}"
    except PackageNotFoundError:
        return "unknown"


def feature_set_version(columns: list[str]) -> str:
    return "customer_features@" + hashlib.sha1(",".join(columns).encode()).hexdigest()[:10]


def model_inputs(cfg: Config, columns: list[str]) -> list[str]:
    """The columns of a training frame the model learns from: every feature but those in
    ``exclude_features`` (configs/training.yaml; its names are checked before the training set is
    built, see :func:`pipeline.jobs.features.check_excluded`)."""
    excluded = set(cfg.training.exclude_features)
    return [c for c in columns if c not in KEY_COLUMNS and c not in excluded]


def repeated_inputs(frame: pd.DataFrame, inputs: list[str]) -> dict[str, str]:
    """The inputs that equal another input on every row of ``frame`` (the stacked training set:
    train, valid and test), each mapped to the one kept. Two copies of one column split the trees'
    splits, and so the SHAP values and importances, between two names for one fact; in a log of
    purchases only ``days_since_last_action`` is ``recency_days`` and ``n_events`` is
    ``frequency``, and with a ``signup_at`` for every customer ``tenure_days`` is
    ``days_since_signup``. The first in the catalog's order is kept, except that the activity
    columns (over the whole log) give way to the narrower column they equal. Constant columns are
    left alone (no tree splits on them, so they take no SHAP value), and so are text columns."""
    from features.customer_features import catalog

    broad = {name for name, group, _ in catalog() if group == "activity"}
    order = sorted(inputs, key=lambda c: c in broad)  # stable: the catalog's order otherwise
    kept: dict[tuple, list[str]] = {}
    repeats: dict[str, str] = {}
    weights: np.ndarray | None = None

    def values(c: str) -> np.ndarray:
        return frame[c].to_numpy(dtype="float64", na_value=np.nan)

    for c in order:
        if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])):
            continue
        v = values(c)
        nulls = int(np.isnan(v).sum())
        if nulls == len(v) or (nulls == 0 and v.min() == v.max()):
            continue
        # a summary first (a few passes over the column), then the rows of the columns that share
        # it; a weighted sum in it sets apart columns alike in count, range and sum (sparse counts
        # shared one summary, and were compared pairwise: 70 s at 6M rows)
        if weights is None:
            weights = np.random.default_rng(0).random(len(v))
        key = (nulls, float(np.nanmin(v)), float(np.nanmax(v)), float(np.nansum(v)), float(np.nansum(v * weights)))
        same = next((k for k in kept.get(key, []) if np.array_equal(v, values(k), equal_nan=True)), None)
        if same is None:
            kept.setdefault(key, []).append(c)
        else:
            repeats[c] = same
    return repeats


def _bgnbd_params(fitted) -> dict[str, float]:
    """BG/NBD's parameters as run parameters (``bgnbd_r``...; lifetimes' names, α in days); none
    when it could not be fitted on the test snapshot."""
    return {} if fitted is None else {f"bgnbd_{k}": round(v, 6) for k, v in vars(fitted).items()}


def fit_and_evaluate(cfg: Config, td: TrainingData) -> tuple[PropensityModel, Evaluation, str, dict[str, str]]:
    """Fit on train, stop and calibrate on valid, evaluate on test with the base-rate correction
    that would have been applied at the test cutoff; also the inputs left out as repeats of
    another (:func:`repeated_inputs`)."""
    f = td.frame
    inputs = model_inputs(cfg, list(f.columns))
    repeats = repeated_inputs(f, inputs)
    inputs = [c for c in inputs if c not in repeats]
    train, valid, test = (f[f.snapshot == s] for s in ("train", "valid", "test"))
    model = PropensityModel(**cfg.training.model.model_dump()).fit(
        train[inputs], train.label, valid[inputs], valid.label, valid_groups=customer_groups(valid.customer_id)
    )
    expected, note = seasonal_base_rate(float(valid.label.mean()), td.rates_year_before.get("valid"),
                                        td.rates_year_before.get("test"), getattr(cfg.labels, td.label.target).base_rate)
    at_test = model.with_base_rate(expected)
    # The baselines get the same base-rate correction as the model: calibrated on the validation
    # snapshot like it, then moved to the rate expected at the test cutoff, so the gate compares
    # what each learned, not whether it was told about seasonality.
    fits: dict[str, dict] = {}
    baselines = {name: shift_prior(p, model.calibrated_base_rate_, expected)
                 for name, p in calibrated_baselines(valid, test, td.label.target,
                                                          td.label.horizon.total_seconds() / 86400, fits,
                                                          td.histories).items()}
    evaluation = evaluate(test.label, at_test.predict(test), baselines, n_boot=cfg.training.bootstrap_samples)
    evaluation.baseline_fits = fits
    return model, evaluation, note, repeats


#: What train does after its snapshots, each said as it starts (``stage``)
TRAIN_STAGES = ("fitting the model, its calibration and the baselines", "plots, SHAP and the model card",
                "logging to MLflow", "registering the version")


def train_job(
    cfg: Config, target: str, as_of: datetime | None = None, horizon: str | None = None, engine: str | None = None,
    allow_unvalidated: bool = False, progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
) -> TrainResult:
    from models import registry

    stage = stage or (lambda _: None)

    ws = Workspace(cfg.workspace)
    uri = ws.tracking_uri(cfg.settings.tracking_uri)
    registry.connect(uri)  # fail before the long work if the tracking server is unreachable
    name = cfg.training.registry.names[target]
    td = training_set_job(cfg, target, as_of, horizon, engine, progress)
    stage(TRAIN_STAGES[0])
    model, ev, note, repeats = fit_and_evaluate(cfg, td)
    criteria = check_criteria(ev.table, cfg.training.validation_criteria, ev.differences)
    validated = all(c["passed"] for c in criteria)
    f = td.frame
    scores = np.asarray(ev.predictions["model"], dtype=float)
    if len(scores) and np.ptp(scores) < 1e-12:  # a tiny shop: it trained, scored 0.5 AUC, and nothing said why
        n_train = int((f.snapshot == "train").sum())
        trees = model.booster_.booster_.dump_model()["tree_info"][:model.best_iteration_]
        if all(t.get("num_leaves", 1) <= 1 for t in trees):
            td.warnings.append(
                f"the model gives every customer the same score ({scores[0]:.3f}): its trees make no split, so it "
                f"ranks no one (test AUC 0.5). With {n_train:,} training rows against model.min_child_samples "
                f"{cfg.training.model.min_child_samples} (the fewest rows a leaf may hold), there is too little to "
                "split on: more customers or snapshots, or a smaller min_child_samples in configs/training.yaml")
        else:  # the trees split, but the calibrator pooled every score into one
            td.warnings.append(
                f"the model gives every customer the same score ({scores[0]:.3f}): its trees split, but "
                f"{model.calibration_method_} calibration on the validation snapshot found no order in their scores "
                "and pooled them into one, so it ranks no one (test AUC 0.5): the model learned nothing that holds "
                "on the validation snapshot")
    cut = [c.strftime("%Y-%m-%d") for c in td.plan.cutoffs]
    rows = f.snapshot.value_counts().reindex(["train", "valid", "test"]).fillna(0).astype(int).to_dict()
    window = {"first_event": str(td.first_event), "last_event": str(td.last_event), "cutoffs": cut,
              "test_cutoff": cut[0], "valid_cutoff": cut[1], "test_rows": rows["test"]}
    champion = registry.champion_metrics(name)
    test = f[f.snapshot == "test"]
    campaigns = campaign_overlap(ws.db_path, test.customer_id, td.plan.cutoffs[0], td.label.horizon)
    bgnbd_fit = ev.baseline_fits.get("bgnbd", {}).get("test")  # BG/NBD as fitted on the test snapshot, or None
    stage(TRAIN_STAGES[1])
    with tempfile.TemporaryDirectory() as tmp:
        # the plots first: the card lists the features SHAP ranks first on the test snapshot, as
        # plots/shap_bar.png and every explanation rank them (split gain ranked them otherwise)
        # titled with what a reader of a PNG alone needs: the model, and the snapshot it was tested on
        plots = _plots(Path(tmp), test, ev, model, f"{name}, test as of {cutoff_label(cut[0])}")
        plots[registry.REFERENCE_FILE] = reference_sample(Path(tmp), test, ev.predictions["model"], model, target)
        shap = pd.read_csv(plots["shap/mean_abs_shap.csv"])
        shap_top = shap[shap.mean_abs_shap_log_odds > 0].feature.head(8).tolist()  # none unused
        levels = band_rules.resolve_for_model(
            band_rules.levels_from_config([lv.model_dump() for lv in getattr(cfg.bands, target)]),
            ev.predictions["model"], test.label.to_numpy())
        td.warnings.extend(band_rules.shadowed(levels, ev.predictions["model"]))
        card = model_card(
            name=name, target=target, label_definition=td.label.describe(), data_window=window, rows=rows,
            evaluation_table=ev.table.drop(columns=["mean_predicted", "calibration_intercept", "calibration_slope_ci_low",
                                                    "calibration_slope_ci_high"]).round(4),
            differences=ev.differences.round(4), calibration=ev.calibration.round(4),
            calibration_note=calibration_verdict(*ev.table.set_index("scorer").loc[
                "model", ["calibration_slope", "calibration_slope_ci_low", "calibration_slope_ci_high", "mean_predicted",
                          "realized_rate"]]), criteria=criteria, champion=champion,
            model_info={"calibration": model.calibration_method_, "trees": model.trees_text(), "features": len(model.features_),
                        "excluded": [c for c in cfg.training.exclude_features if c in f.columns],
                        "repeats": repeats},
            base_rate_note=note, unavailable_groups=td.profile.missing_groups(),
            top_features=shap_top, bgnbd=bgnbd_fit, forced=allow_unvalidated and not validated,
            bands=band_table(levels, ev.predictions["model"], test.label.to_numpy()),
        )
        metrics = {f"{r.scorer}_{k}": float(getattr(r, k)) for r in ev.table.itertuples() for k in
                   ("roc_auc", "pr_auc", "brier", "log_loss", "lift_top_decile", "mean_predicted", "realized_rate",
                    "calibration_slope", "calibration_intercept")}
        metrics |= {f"model_minus_{r.baseline}_auc": float(r.auc_difference) for r in ev.differences.itertuples()}
        # the gate's deciding figures, as metrics a reviewer can sort and compare in MLflow (the
        # interval was in the card's text only), and the cross-fitted Brier behind the calibrator
        metrics |= {f"model_minus_{r.baseline}_auc_ci_{end}": float(getattr(r, f"ci_{end}"))
                    for r in ev.differences.itertuples() for end in ("low", "high")}
        metrics |= {f"calibration_cv_brier_{m}": float(b) for m, b in (model.calibration_briers_ or {}).items()}
        metrics |= {"rows_train": rows["train"], "rows_valid": rows["valid"], "rows_test": rows["test"],
                    "best_iteration": model.best_iteration_}
        bundle = registry.ModelBundle(
            target=target, model=model, label_definition=td.label.describe(),
            feature_set=feature_set_version(model.features_), data_window=window,
            metrics=_bundle_metrics(ev), bands=band_rules.to_dicts(levels),
            label={"target": target, "horizon_days": td.label.horizon.days, "population": td.label.population,
                   "active_window_days": td.label.active_window.days,
                   "base_rate": getattr(cfg.labels, target).base_rate},
        )
        tags = {"target": target, "label_definition": td.label.describe(), "data_window": f"{cut[-1]}..{cut[0]}",
                "test_cutoff": cut[0], "feature_set": bundle.feature_set,
                # the cutoffs above are instants (midnight UTC); the CLI and the card show each as the
                # as_of whose end it is, the day before: said here too, for a reader of the MLflow UI
                "test_snapshot_as_of": cutoff_label(cut[0]), "data_window_as_of": f"{cutoff_label(cut[-1])}..{cutoff_label(cut[0])}",
                "validation_status": "VALIDATED" if validated else "REJECTED",
                # to reproduce it: the code, the data it read, and where the labels' windows end
                "dynseg.code_version": code_version(), **data_fingerprint(cfg),
                "data_used_until": str(td.last_event)}
        if campaigns:
            tags["dynseg.test_window_campaigns"] = "; ".join(campaigns)[:4000]
        # the as_of as given to --as-of (2026-08-31 for the end of that day: its midnight, 2026-09-01,
        # passed back to --as-of means the end of the next day)
        params = {"target": target, "as_of": as_of_label(as_of) if as_of is not None else "all data",
                  "horizon_days": td.label.horizon.days, "population": td.label.population,
                  "engine": engine or cfg.settings.engine,  # --engine over the config's (config.yaml has the config's)
                  "snapshots": len(cut), "step": cfg.training.step, "calibration": model.calibration_method_,
                  # inputs left out as repeats of another on every training row (left out=kept)
                  "repeated_inputs": ", ".join(f"{c}={k}" for c, k in repeats.items()) or "none",
                  **{f"lgbm_{k}": v for k, v in cfg.training.model.model_dump().items()},
                  # BG/NBD as fitted on the test snapshot's histories (lifetimes' names; α in days)
                  **_bgnbd_params(bgnbd_fit)}
        stage(TRAIN_STAGES[2])
        run_id = registry.log_training_run(
            bundle, experiment=cfg.training.registry.experiment, params=params, config=cfg.resolved(),
            metrics=metrics, artifacts=plots, model_card=card, input_example=test[model.features_].head(5),
            tags=tags,
        )
    stage(TRAIN_STAGES[3])
    version = registry.register(run_id, name, validated=validated, allow_unvalidated=allow_unvalidated, tags=tags)
    return TrainResult(target, name, run_id, version.version if version else None, validated, criteria, ev, td,
                       model, note, td.warnings + campaigns, repeats)


def campaign_runs(db: Path, customers: pd.Series, cutoff: datetime,
                  horizon: timedelta) -> list[tuple[tuple[str, datetime, int, bool], set[str]]]:
    """Each scoring run of this workspace whose sendable members (of segments that are no
    suppression) include some of ``customers`` (a test snapshot's) and whose exports fall within its
    label window: (run id, as_of, how many of them, whether a campaign was simulated from it), with
    the ids it counted."""
    from pipeline import runs

    found = _window_runs(db, cutoff, horizon)
    out = []
    ids = pd.DataFrame({"customer_id": customers.drop_duplicates().astype(str)})
    for r in found.itertuples():
        if runs.pruned(db, r.run_id) is not None:
            continue
        members = runs.read(db, "SELECT DISTINCT customer_id FROM segment_members WHERE run_id = ? AND sendable "
                                "AND kind <> 'suppression'", [r.run_id])
        hit = set(ids.customer_id[ids.customer_id.isin(members.customer_id)]) if not members.empty else set()
        if hit:
            out.append(((r.run_id, r.as_of.to_pydatetime(), len(hit), runs.simulated(db, r.run_id)), hit))
    return out


def campaign_text(run: tuple[str, datetime, int, bool], total: int, cutoff: datetime, horizon: timedelta) -> str:
    """One :func:`campaign_runs` row in words: who was sendable when, within which window."""
    run_id, when, n, simulated = run
    return (f"{n:,} of the test snapshot's {total:,} customers were sendable in scoring run {run_id} (as of "
            f"{as_of_label(when)}), {_when_said(when, cutoff, horizon)}"
            + ("; a campaign was simulated from that run (dynseg data simulate-campaign)" if simulated else ""))


def _when_said(when: datetime, cutoff: datetime, horizon: timedelta) -> str:
    """Where a run's as_of falls against a test snapshot's label window: in it, or before it (a run
    a month before the window was said to be "within" it)."""
    window = f"the test labels' window (the {horizon.days} days after the test snapshot as of {cutoff_label(cutoff)})"
    if when > cutoff:
        return f"within {window}"
    days = (cutoff - when).days
    return (f"{days} day{'s' if days != 1 else ''} before {window}, which a campaign sent from it can still reach"
            if days else f"at the start of {window}")


def campaign_summary(db: Path, customers: pd.Series, cutoff: datetime, horizon: timedelta) -> str | None:
    """Every :func:`campaign_runs` row in one sentence (None when there is none). Nightly runs put
    about thirty in one label window, and each was a warning of its own, naming its run; the
    sentence gives the customers sendable in any of them, how many runs, and the largest."""
    found = campaign_runs(db, customers, cutoff, horizon)
    if not found:
        return None
    total = customers.nunique()
    if len(found) == 1:
        return campaign_text(found[0][0], total, cutoff, horizon)
    rows = [row for row, _ in found]
    largest = max(rows, key=lambda r: r[2])
    simulated = [r[0] for r in rows if r[3]]
    anyone = len(set().union(*(hit for _, hit in found)))
    return (f"{anyone:,} of the test snapshot's {total:,} customers were sendable in some of {len(rows)} scoring runs "
            f"(as of {as_of_label(rows[0][1])} to {as_of_label(rows[-1][1])}; the most, {largest[2]:,}, in run "
            f"{largest[0]} as of {as_of_label(largest[1])}), the first {_when_said(rows[0][1], cutoff, horizon)}"
            + (f"; a campaign was simulated from run {', '.join(simulated)} (dynseg data simulate-campaign)"
               if simulated else ""))


def campaign_overlap(db: Path, customers: pd.Series, cutoff: datetime, horizon: timedelta) -> list[str]:
    """The warning of :func:`campaign_summary`, if any: if they were sent, a campaign moved the
    labels the model is graded on (dynseg's own campaigns, which the card would otherwise blame on
    the base rate)."""
    said = campaign_summary(db, customers, cutoff, horizon)
    out = [] if said is None else [
        said + ": if their exports were sent, a campaign moved the labels this model is tested on, so its test "
        "metrics and calibration partly measure the campaign (a level off the realized rate, say). A test "
        "snapshot whose window holds no campaign (train --as-of another date) measures the model alone"]
    gone = pruned_in_window(db, cutoff, horizon)
    if gone:  # their members are gone: the check above could not see them (it said nothing at all)
        out.append(f"{len(gone)} scoring run{'s' if len(gone) != 1 else ''} within or just before the test labels' "
                   f"window (as of {as_of_label(gone[0])}" + (f" to {as_of_label(gone[-1])}" if len(gone) > 1 else "")
                   + f") {'were' if len(gone) != 1 else 'was'} pruned (segments prune): who they made sendable is gone, "
                   "so whether their campaigns "
                   "reached the test snapshot's customers cannot be checked. If they were sent, the test metrics "
                   "partly measure those campaigns")
    return out


def pruned_in_window(db: Path, cutoff: datetime, horizon: timedelta) -> list[datetime]:
    """The as_of of each pruned scoring run that :func:`campaign_runs` would have checked."""
    from pipeline import runs

    return [r.as_of.to_pydatetime() for r in _window_runs(db, cutoff, horizon).itertuples()
            if runs.pruned(db, r.run_id) is not None]


def _window_runs(db: Path, cutoff: datetime, horizon: timedelta) -> pd.DataFrame:
    """The scoring runs whose exports can reach a test snapshot's label window: as of less than a
    horizon before its cutoff, up to the window's end (empty in a workspace without runs)."""
    from pipeline import runs

    return runs.read(db, "SELECT run_id, as_of FROM scoring_runs WHERE as_of < ? AND as_of > ? ORDER BY as_of",
                     [cutoff + horizon, cutoff - horizon])


def band_table(levels: list[band_rules.BandLevel], scores: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """How the bands cut the out-of-time test snapshot: share of customers, realized rate."""
    resolved = band_rules.thresholds_for_run(levels, scores)
    names = band_rules.assign(resolved, scores)
    rows = []
    for lv in resolved:
        hit = names == lv.name
        rows.append({"band": lv.name, "rule": lv.describe(), "threshold": lv.threshold if lv.threshold is not None else "",
                     "test_share": float(hit.mean()), "test_rate": float(labels[hit].mean()) if hit.any() else float("nan"),
                     "note": lv.note})
    return pd.DataFrame(rows)


REFERENCE_ROWS = 20_000


def reference_sample(folder: Path, test: pd.DataFrame, scores: np.ndarray, model: PropensityModel,
                     target: str) -> Path:
    """The drift reference saved with the model: test-snapshot features and the model's score
    (``<target>_score``), at most ``REFERENCE_ROWS`` customers (fixed seed)."""
    ref = test[["customer_id", *model.features_]].assign(**{f"{target}_score": scores})
    if len(ref) > REFERENCE_ROWS:
        ref = ref.sample(REFERENCE_ROWS, random_state=0)
    path = folder / "reference.parquet"
    ref.to_parquet(path, index=False)
    return path


def _bundle_metrics(ev: Evaluation) -> dict:
    by = ev.table.set_index("scorer").to_dict("index")
    return {"model": by.pop("model"), "baselines": by,
            "model_minus_baseline_auc": ev.differences.set_index("baseline").to_dict("index")}


def _plots(folder: Path, test: pd.DataFrame, ev: Evaluation, model: PropensityModel, title: str) -> dict[str, Path]:
    """Run artifact path -> file: evaluation plots, and SHAP plots and table on a sample of the
    out-of-time test snapshot."""
    y = test.label.to_numpy()
    return {
        "plots/gains_lift.png": gains_plot(y, ev.predictions, folder / "gains_lift.png", title),
        "plots/calibration.png": calibration_plot(ev.calibration, folder / "calibration.png", title),
        "plots/roc_pr.png": roc_pr_plot(y, ev.predictions, folder / "roc_pr.png", title),
        "plots/feature_importance.png": importance_plot(model.feature_importance(), folder / "feature_importance.png", title),
    } | global_artifacts(model, test, folder, title, sample=SHAP_SAMPLE_ROWS)
