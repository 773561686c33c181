"""Realized model quality: a past run's scores against what then happened.

Once a run's outcome window has passed, its scores can be graded like the out-of-time test
snapshot at training: the same metrics (``models.evaluation.metrics``: ROC AUC, PR AUC, Brier, log
loss, lift in the top decile, mean predicted vs realized rate), the same calibration table by
decile, plus calibration by band, and beside them the figures the model card promised. The AUC
carries a DeLong 95 % interval (exact variance of the Mann-Whitney statistic from its structural
components; no resampling, so the same inputs always give the same interval). The model has
*decayed* (an alarm, exit 3) when the realized AUC falls below the configured floor.

Customers a campaign treated after the run are left out of the grade: their outcomes carry the
campaign's effect, which the model never promised to predict (a retention campaign that works makes
a churn model look overconfident exactly where it was right). The calibration by band shows them
beside the untreated, so the effect stays visible.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from models.evaluation import calibration_table, delong_components, metrics


@dataclass
class QualityResult:
    """Realized metrics of one run's scores, compared with the promised ones."""

    n: int  # scored customers with an outcome
    n_positive: int
    n_unscored: int  # rows dropped because their score was missing (outside the model's population)
    n_treated: int  # scored rows left out because a campaign treated them
    #: roc_auc (+ roc_auc_low/high), pr_auc, brier, log_loss, lift_top_decile, mean_predicted, realized_rate
    metrics: dict[str, float]
    #: metric, promised, realized, difference (realized - promised)
    comparison: pd.DataFrame
    calibration_deciles: pd.DataFrame  # decile, customers, predicted, realized
    #: band, customers, predicted, realized, difference (untreated); with treated rows also
    #: treated, predicted_treated, realized_treated
    calibration_bands: pd.DataFrame | None
    auc_floor: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        auc = self.metrics["roc_auc"]
        if self.auc_floor is None or math.isnan(auc) or auc >= self.auc_floor:
            return []
        return [f"realized ROC AUC {auc:.3f} (95% CI {self.metrics['roc_auc_low']:.3f}-"
                f"{self.metrics['roc_auc_high']:.3f}) is below the floor {self.auc_floor:.3f}; "
                "retrain the model or lower auc_floor in configs/monitoring.yaml"]

    @property
    def alarm(self) -> bool:
        return bool(self.reasons)

    def summary(self) -> dict:
        """JSON-ready: metrics, comparison, calibration tables, the alarm and its reasons."""
        def records(df):  # to_json turns NaN into null and numpy scalars into plain numbers
            return None if df is None else json.loads(df.to_json(orient="records"))

        return {
            "alarm": self.alarm, "reasons": self.reasons, "auc_floor": self.auc_floor, "notes": self.notes,
            "n": self.n, "n_positive": self.n_positive, "n_unscored": self.n_unscored, "n_treated": self.n_treated,
            "metrics": {k: None if math.isnan(v) else float(v) for k, v in self.metrics.items()},
            "comparison": records(self.comparison), "calibration_deciles": records(self.calibration_deciles),
            "calibration_bands": records(self.calibration_bands),
        }


def realized_quality(
    scores: np.ndarray, outcomes: np.ndarray, bands: np.ndarray | None = None, promised: dict | None = None,
    auc_floor: float | None = None, alpha: float = 0.05, treated: np.ndarray | None = None,
) -> QualityResult:
    """Grade probabilities ``scores`` against 0/1 ``outcomes``. Rows with a missing score are left
    out, and so are rows ``treated`` marks (a campaign reached them); the bands still show those."""
    scores, outcomes = np.asarray(scores, dtype=float), np.asarray(outcomes)
    if scores.shape != outcomes.shape or scores.ndim != 1:
        raise ValueError(f"realized quality: scores {scores.shape} and outcomes {outcomes.shape} must be 1-d "
                         "arrays of the same length, one entry per scored customer")
    if bands is not None and len(bands) != len(scores):
        raise ValueError(f"realized quality: {len(bands)} bands for {len(scores)} scores; give one band per score")
    treated = np.zeros(scores.shape, dtype=bool) if treated is None else np.asarray(treated, dtype=bool)
    if treated.shape != scores.shape:
        raise ValueError(f"realized quality: {treated.size} treated flags for {scores.size} scores; "
                         "give one flag per score")
    y = pd.Series(outcomes)
    if y.isna().any() or not y.isin([0, 1, True, False]).all():
        bad = y[y.isna() | ~y.isin([0, 1, True, False])]
        raise ValueError(f"realized quality: outcomes must be 0/1; found {len(bad)} other values "
                         f"(first: {bad.iloc[0]!r} at row {bad.index[0]})")
    scored = ~np.isnan(scores)
    graded = scored & ~treated
    y_all = y.to_numpy().astype(int)
    p, y = scores[graded], y_all[graded]
    if p.size == 0:
        raise ValueError("realized quality: no customer has a score" if not scored.any() else
                         f"realized quality: all {int(scored.sum()):,} scored customers were treated by a "
                         "campaign, so none shows what the model predicted; nothing to grade")
    notes = []
    n_treated = int((scored & treated).sum())
    if n_treated:
        notes.append(f"{n_treated:,} customers a campaign treated are left out: their outcomes include its effect. "
                     "They are chosen by score (a segment's top band, with consent), so the rest is harder to rank: "
                     "the realized AUC can read below the promised one (measured on the whole test snapshot) with no "
                     "campaign effect at all; a small gap is no decay")
    if y.min() == y.max():
        m = {"roc_auc": math.nan, "pr_auc": math.nan, "brier": float(np.mean((p - y) ** 2)), "log_loss": math.nan,
             "lift_top_decile": math.nan, "mean_predicted": float(p.mean()), "realized_rate": float(y.mean()),
             "calibration_slope": math.nan, "calibration_intercept": math.nan}
        notes.append(f"every outcome is {y[0]}: ranking metrics (AUC) are undefined")
        low = high = math.nan
    else:
        m = metrics(y, p)
        low, high = delong_interval(y, p, alpha)
    m = {**m, "roc_auc_low": low, "roc_auc_high": high}
    by_band = None
    if bands is not None:
        bands = np.asarray(bands, dtype=object)
        by_band = calibration_by_band(y, p, bands[graded])
        if n_treated:
            hit = scored & treated
            t = calibration_by_band(y_all[hit], scores[hit], bands[hit]).drop(columns="difference")
            t = t.rename(columns={"customers": "treated", "predicted": "predicted_treated",
                                  "realized": "realized_treated"})
            by_band = by_band.merge(t, on="band", how="outer").sort_values(
                "predicted", ascending=False, na_position="last", ignore_index=True)
            by_band["customers"] = by_band["customers"].fillna(0).astype(int)
            by_band["treated"] = by_band["treated"].fillna(0).astype(int)
    deciles = calibration_table(y, p, bins=min(10, p.size))
    return QualityResult(int(p.size), int(y.sum()), int((~scored).sum()), n_treated, m,
                         _comparison(m, promised or {}), deciles, by_band, auc_floor, notes)


def delong_interval(y: np.ndarray, p: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """(1 - alpha) interval for ROC AUC from DeLong's variance, clipped to [0, 1]."""
    v10, v01 = delong_components(y, p)  # per positive / per negative (ties count one half)
    m, n = v10.size, v01.size
    auc = v10.mean()
    var = (np.var(v10, ddof=1) / m if m > 1 else 0.0) + (np.var(v01, ddof=1) / n if n > 1 else 0.0)
    half = stats.norm.ppf(1 - alpha / 2) * math.sqrt(var)
    return float(max(0.0, auc - half)), float(min(1.0, auc + half))


def calibration_by_band(y: np.ndarray, p: np.ndarray, bands: np.ndarray) -> pd.DataFrame:
    """Per band (highest mean score first): customers, mean predicted, realized rate, realized - predicted."""
    df = pd.DataFrame({"band": bands, "y": y, "p": p})
    df["band"] = df["band"].where(pd.notna(df["band"]), "(none)")
    t = df.groupby("band").agg(customers=("y", "size"), predicted=("p", "mean"), realized=("y", "mean"))
    t["difference"] = t["realized"] - t["predicted"]
    return t.sort_values("predicted", ascending=False).reset_index()


def _comparison(realized: dict, promised: dict) -> pd.DataFrame:
    unknown = sorted(set(promised) - set(realized))
    if unknown:
        raise ValueError(f"realized quality: promised metrics {unknown} are not computed; "
                         f"expected some of {sorted(k for k in realized if not k.startswith('roc_auc_'))}")
    rows = [(k, float(v), realized[k], realized[k] - float(v)) for k, v in promised.items()]
    return pd.DataFrame(rows, columns=["metric", "promised", "realized", "difference"])

