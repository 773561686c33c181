"""Honest evaluation on the out-of-time test snapshot: the model beside simple baselines.

Baselines are computed on the same rows and calibrated the same way (Platt on the validation
snapshot, then moved to the base rate expected at the test cutoff, as the model is), so ranking
(AUC) and calibration (Brier, log loss) compare like with like:

* **recency**: days since the last purchase (fewer days = more likely to buy, less likely to churn).
* **rfm**: the classic RFM score, the sum of recency, frequency and monetary quintiles (3–15).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from models.calibration import Calibrator

_NO_PURCHASE_DAYS = 10_000.0  # recency for customers who never bought: older than any real one


def lift_at(y: np.ndarray, p: np.ndarray, top: float = 0.1) -> float:
    """Outcome rate among the top ``top`` share by score, over the overall rate."""
    y, p = np.asarray(y), np.asarray(p)
    n = max(1, int(round(len(y) * top)))
    order = np.argsort(-p, kind="stable")[:n]
    base = y.mean()
    return float(y[order].mean() / base) if base > 0 else float("nan")


def metrics(y, p) -> dict[str, float]:
    y, p = np.asarray(y, int), np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "lift_top_decile": lift_at(y, p, 0.1),
        "mean_predicted": float(p.mean()),
        "realized_rate": float(y.mean()),
    }


def recency_score(frame: pd.DataFrame, target: str) -> np.ndarray:
    r = frame["recency_days"].astype("float64").fillna(_NO_PURCHASE_DAYS).to_numpy()
    return -r if target == "purchase" else r


def rfm_score(frame: pd.DataFrame, target: str) -> np.ndarray:
    """Sum of R, F, M quintiles (5 = best customer) within the frame."""
    def quintile(s: pd.Series) -> np.ndarray:
        return (np.ceil(s.rank(method="average", pct=True) * 5)).clip(1, 5).to_numpy()

    r = quintile(-frame["recency_days"].astype("float64").fillna(_NO_PURCHASE_DAYS))
    f = quintile(frame["frequency"].astype("float64"))
    m = quintile(frame["monetary_total"].astype("float64"))
    score = r + f + m
    return score if target == "purchase" else -score


BASELINES = {"recency": recency_score, "rfm": rfm_score}


@dataclass
class Evaluation:
    table: pd.DataFrame  # one row per scorer (model, baselines): metrics + AUC CI
    differences: pd.DataFrame  # model minus each baseline: AUC difference with CI
    calibration: pd.DataFrame  # deciles of predicted probability: predicted vs realized
    predictions: dict[str, np.ndarray]  # scorer -> calibrated probabilities on the test rows


def calibrated_baselines(valid: pd.DataFrame, test: pd.DataFrame, target: str) -> dict[str, np.ndarray]:
    out = {}
    for name, score in BASELINES.items():
        cal = Calibrator("platt").fit(score(valid, target), valid["label"].to_numpy())
        out[name] = cal.predict(score(test, target))
    return out


def evaluate(y_test, model_p: np.ndarray, baselines: dict[str, np.ndarray], n_boot: int = 200, seed: int = 0) -> Evaluation:
    """Metrics with bootstrap CIs for AUC and for the model-minus-baseline AUC difference."""
    y = np.asarray(y_test, int)
    preds = {"model": np.asarray(model_p, float), **baselines}
    rows = []
    boots = _bootstrap_aucs(y, preds, n_boot, seed)
    for name, p in preds.items():
        m = metrics(y, p)
        lo, hi = np.nanpercentile(boots[name], [2.5, 97.5])
        rows.append({"scorer": name, **m, "roc_auc_ci_low": lo, "roc_auc_ci_high": hi})
    diffs = []
    for name in baselines:
        d = boots["model"] - boots[name]
        lo, hi = np.nanpercentile(d, [2.5, 97.5])
        point = roc_auc_score(y, preds["model"]) - roc_auc_score(y, preds[name])
        diffs.append({"baseline": name, "auc_difference": point, "ci_low": lo, "ci_high": hi})
    return Evaluation(pd.DataFrame(rows), pd.DataFrame(diffs), calibration_table(y, preds["model"]), preds)


def _bootstrap_aucs(y: np.ndarray, preds: dict[str, np.ndarray], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Paired bootstrap: every scorer is evaluated on the same resampled rows."""
    rng = np.random.default_rng(seed)
    out = {k: np.full(n_boot, np.nan) for k in preds}
    n = len(y)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        yb = y[idx]
        if yb.min() == yb.max():
            continue
        for k, p in preds.items():
            out[k][b] = roc_auc_score(yb, p[idx])
    return out


def calibration_table(y, p, bins: int = 10) -> pd.DataFrame:
    """Deciles of predicted probability: mean predicted vs realized rate."""
    df = pd.DataFrame({"y": np.asarray(y, int), "p": np.asarray(p, float)})
    df["decile"] = pd.qcut(df.p.rank(method="first"), bins, labels=False) + 1
    return df.groupby("decile").agg(customers=("y", "size"), predicted=("p", "mean"), realized=("y", "mean")).reset_index()
