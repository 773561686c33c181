"""PNG plots for a model review: gains/lift, calibration, ROC and PR curves, feature importance."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # a long label or bar text is kept, not cut at the edge
    plt.close(fig)
    return path


def gains_plot(y, preds: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """Cumulative share of outcomes captured when contacting the top x% by score."""
    y = np.asarray(y)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    share = np.arange(1, len(y) + 1) / len(y)
    from models.evaluation import ranked_outcomes

    for name, p in preds.items():
        ranked = ranked_outcomes(y, p)  # a tie is a straight line, not its rows' order
        captured = np.cumsum(ranked) / max(1, y.sum())
        ax1.plot(share, captured, label=name)
        deciles = np.array_split(ranked, 10)
        ax2.plot(range(1, 11), [d.mean() / y.mean() for d in deciles], marker="o", label=name)
    ax1.plot([0, 1], [0, 1], "k--", lw=0.8, label="random")
    ax1.set(xlabel="share of customers contacted (by score)", ylabel="share of outcomes captured", title="Cumulative gains")
    ax2.axhline(1, color="k", ls="--", lw=0.8)
    ax2.set(xlabel="score decile (1 = highest)", ylabel="lift (rate / overall rate)", title="Lift by decile")
    ax1.legend()
    fig.suptitle(title)
    return _save(fig, path)


def calibration_plot(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Mean predicted against realized rate by decile, each with its 95 % Wilson interval (the
    decile's customers are the trials). When the deciles span more than 20 times from the lowest
    predicted to the highest, as a purchase model's do (0.002 to 0.36 in the demo), the low deciles
    sit in a heap at the origin on linear axes: a second panel shows them on log axes."""
    n = table.customers.to_numpy(float)
    r = table.realized.to_numpy(float)
    z = 1.959964
    centre = (r + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(r * (1 - r) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # (around the rate itself: at r = 0 the computed low came out a hair above 0, and matplotlib
    # refused the negative error bar, which stopped `train` on a 3,000-customer shop)
    low, high = np.minimum(np.clip(centre - half, 0, 1), r), np.maximum(np.clip(centre + half, 0, 1), r)
    lowest = float(table.predicted[table.predicted > 0].min()) if (table.predicted > 0).any() else 0.0
    wide = lowest > 0 and table.predicted.max() / lowest > 20
    fig, axes = plt.subplots(1, 2 if wide else 1, figsize=(11 if wide else 5.5, 5), squeeze=False)
    for ax, log in zip(axes[0], (False, True)):
        top = max(table.predicted.max(), high.max()) * 1.05
        bottom = min(lowest, float(r[r > 0].min()) if (r > 0).any() else lowest) / 1.5 if log else 0.0
        ax.plot([bottom, top], [bottom, top], "k--", lw=0.8, label="perfect")
        ax.errorbar(table.predicted, r, yerr=[r - low, high - r], marker="o", capsize=3,
                    label="model (deciles, 95 % interval)")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log", nonpositive="clip")
            ax.set_xlim(bottom, top)
            ax.set_ylim(bottom, top)
        ax.set(xlabel="mean predicted probability" + (" (log)" if log else ""),
               ylabel="realized rate" + (" (log)" if log else ""),
               title="the same, log axes: the low deciles" if log else "Calibration")
        ax.legend(loc="upper left")
    fig.suptitle(title)
    return _save(fig, path)


def roc_pr_plot(y, preds: dict[str, np.ndarray], path: Path, title: str) -> Path:
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, p in preds.items():
        fpr, tpr, _ = roc_curve(y, p)
        a.plot(fpr, tpr, label=name)
        prec, rec, _ = precision_recall_curve(y, p)
        # steps, not lines: a straight line between two points promises precisions no cut reaches
        # (a baseline with a large tie drew one from (0, 1) to its first real point)
        b.step(rec, prec, where="post", label=name)
    a.plot([0, 1], [0, 1], "k--", lw=0.8)
    a.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    b.axhline(np.mean(y), color="k", ls="--", lw=0.8)
    b.set(xlabel="recall", ylabel="precision", title="Precision–recall")
    a.legend()
    fig.suptitle(title)
    return _save(fig, path)


def importance_plot(importance: pd.DataFrame, path: Path, title: str, top: int = 20) -> Path:
    from models.explain import labelled  # words and the column, as the SHAP plots name features

    imp = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(imp) + 1.5))
    ax.barh([labelled(f) for f in imp.feature], imp.gain / imp.gain.sum())
    ax.set(xlabel="share of total split gain", title=f"Feature importance\n{title}")
    return _save(fig, path)


def waterfall_plot(table: pd.DataFrame, base: float, raw: float, base_p: float, p: float, path: Path,
                   title: str) -> Path:
    """One customer's score built up from the model's base value, feature by feature (log-odds,
    the scale SHAP values add up on), largest pushes first; the rest are pooled. Each bar is
    labelled with its push in probability points, the scale a marketer reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = table.iloc[::-1]
    rest = raw - base - rows.log_odds.sum()
    labels = ["other features"] + [f"{r.value}  [{r.feature}]" for r in rows.itertuples()]
    pushes = np.r_[rest, rows.log_odds.to_numpy()]
    points = np.r_[np.nan, rows.points.to_numpy()]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.8))
    start = base
    lefts = []
    for push in pushes:
        lefts.append(start)
        start += push
    for i, (left, push, pt) in enumerate(zip(lefts, pushes, points)):
        ax.barh(i, push, left=left, color="#c0392b" if push > 0 else "#2874a6", height=0.6)
        text = f"{push:+.2f}" + ("" if np.isnan(pt) else f"  ({pt:+.1f} pts)")
        # on a white box above the lines: a label crossing the score's line or the next bar was hard to read
        ax.text(left + push, i, " " + text if push >= 0 else text + " ", va="center",
                ha="left" if push >= 0 else "right", fontsize=8, zorder=5,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 0.5})
    ax.axvline(base, color="grey", lw=0.8, ls="--")
    ax.axvline(raw, color="black", lw=0.8)
    ends = np.r_[lefts, np.array(lefts) + pushes]
    span = max(ends.max() - ends.min(), 1e-6)
    ax.set_xlim(ends.min() - 0.5 * span, ends.max() + 0.5 * span)  # room for the labels (0.35 cut them)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel(f"SHAP value (log-odds): base {base:.2f} (p = {base_p:.1%})\n-> score {raw:.2f} (p = {p:.1%})\n"
                  "bar labels: push in log-odds (and in probability points)", fontsize=9)
    # wrapped: with an email as the customer id, the title ran past the figure's edge
    ax.set_title("\n".join(w for line in title.splitlines() for w in textwrap.wrap(line, 80, break_on_hyphens=False)),
                 fontsize=10)
    return _save(fig, path)
