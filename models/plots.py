"""PNG plots for a model review: gains/lift, calibration, ROC and PR curves, feature importance."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def gains_plot(y, preds: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """Cumulative share of outcomes captured when contacting the top x% by score."""
    y = np.asarray(y)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    share = np.arange(1, len(y) + 1) / len(y)
    for name, p in preds.items():
        order = np.argsort(-np.asarray(p), kind="stable")
        captured = np.cumsum(y[order]) / max(1, y.sum())
        ax1.plot(share, captured, label=name)
        deciles = np.array_split(y[order], 10)
        ax2.plot(range(1, 11), [d.mean() / y.mean() for d in deciles], marker="o", label=name)
    ax1.plot([0, 1], [0, 1], "k--", lw=0.8, label="random")
    ax1.set(xlabel="share of customers contacted (by score)", ylabel="share of outcomes captured", title="Cumulative gains")
    ax2.axhline(1, color="k", ls="--", lw=0.8)
    ax2.set(xlabel="score decile (1 = highest)", ylabel="lift (rate / overall rate)", title="Lift by decile")
    ax1.legend()
    fig.suptitle(title)
    return _save(fig, path)


def calibration_plot(table: pd.DataFrame, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    top = max(table.predicted.max(), table.realized.max()) * 1.05
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="perfect")
    ax.plot(table.predicted, table.realized, marker="o", label="model (deciles)")
    ax.set(xlabel="mean predicted probability", ylabel="realized rate", title=f"Calibration — {title}")
    ax.legend()
    return _save(fig, path)


def roc_pr_plot(y, preds: dict[str, np.ndarray], path: Path, title: str) -> Path:
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, p in preds.items():
        fpr, tpr, _ = roc_curve(y, p)
        a.plot(fpr, tpr, label=name)
        prec, rec, _ = precision_recall_curve(y, p)
        b.plot(rec, prec, label=name)
    a.plot([0, 1], [0, 1], "k--", lw=0.8)
    a.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    b.axhline(np.mean(y), color="k", ls="--", lw=0.8)
    b.set(xlabel="recall", ylabel="precision", title="Precision–recall")
    a.legend()
    fig.suptitle(title)
    return _save(fig, path)


def importance_plot(importance: pd.DataFrame, path: Path, title: str, top: int = 20) -> Path:
    imp = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(imp) + 1.5))
    ax.barh(imp.feature, imp.gain / imp.gain.sum())
    ax.set(xlabel="share of total split gain", title=f"Feature importance — {title}")
    return _save(fig, path)
