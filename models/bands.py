"""Bands: a calibrated score cut into named levels.

A band list runs from the highest level down; each level but the last has exactly one rule:

- ``min_probability: p`` — a fixed threshold on the calibrated probability;
- ``top_percent: q`` — the top ``q`` % of the population scored in *this* run (the threshold
  moves with every run; the run records the value it resolved to);
- ``min_precision: p`` — the lowest threshold at which at least a share ``p`` of the customers
  above it had the outcome on the out-of-time test snapshot (resolved once, at training).

The last level has no rule: it takes everyone left. A customer gets the first level whose
threshold their score reaches. Definitions and their training-time resolution travel inside the
model bundle, so a scoring run reproduces the bands the model was reviewed with.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

RULES = ("min_probability", "top_percent", "min_precision")
MIN_PRECISION_SUPPORT = 30  # customers above a precision threshold, at least


@dataclass(frozen=True)
class BandLevel:
    name: str
    min_probability: float | None = None
    top_percent: float | None = None
    min_precision: float | None = None
    threshold: float | None = None  # resolved: fixed for min_probability / min_precision
    note: str = ""

    @property
    def rule(self) -> str | None:
        return next((r for r in RULES if getattr(self, r) is not None), None)

    def describe(self) -> str:
        if self.rule is None:
            return "everyone else"
        value = getattr(self, self.rule)
        text = {"min_probability": f"score >= {value:g}", "top_percent": f"top {value:g} % of the run",
                "min_precision": f"precision >= {value:g} on the test snapshot"}[self.rule]
        # a top share's threshold is taken again in every run: it is no part of the rule (the tables
        # show the threshold of the run, or of the test snapshot, in a column of its own)
        if self.threshold is not None and self.rule == "min_precision":
            text += f" (threshold {self.threshold:.4f})"
        return text


def levels_from_config(items: list[dict]) -> list[BandLevel]:
    """Band levels from plain config entries (checked by the config loader)."""
    return [BandLevel(**{k: v for k, v in item.items() if k in ("name", *RULES)}) for item in items]


def precision_threshold(scores: np.ndarray, labels: np.ndarray, target: float,
                        min_support: int = MIN_PRECISION_SUPPORT) -> float | None:
    """Lowest score threshold t with precision(score >= t) >= target and at least ``min_support``
    customers above it; None when no threshold reaches the target."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(float)
    hits, n = np.cumsum(y), np.arange(1, len(y) + 1)
    # Only cut between distinct scores: a threshold keeps every tie together.
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    ok = (hits / n >= target) & (n >= min_support) & last_of_tie
    if not ok.any():
        return None
    return float(s[np.flatnonzero(ok)[-1]])


def resolve_for_model(levels: list[BandLevel], test_scores: np.ndarray, test_labels: np.ndarray) -> list[BandLevel]:
    """Resolve fixed thresholds at training time. Percentile levels keep their rule (they resolve
    per run); their threshold on the test snapshot is noted for the model card."""
    out = []
    for lv in levels:
        if lv.rule == "min_probability":
            out.append(_with(lv, threshold=float(lv.min_probability)))
        elif lv.rule == "min_precision":
            t = precision_threshold(test_scores, test_labels, float(lv.min_precision))
            note = (f"no threshold reaches precision {lv.min_precision:g} with {MIN_PRECISION_SUPPORT}+ customers "
                    "on the test snapshot; this band stays empty") if t is None else \
                cross_fitted_precision_note(test_scores, test_labels, float(lv.min_precision))
            out.append(_with(lv, threshold=math.inf if t is None else t, note=note))
        elif lv.rule == "top_percent":
            t = percentile_threshold(test_scores, float(lv.top_percent))
            out.append(_with(lv, note=f"on the test snapshot the top {lv.top_percent:g} % starts at {t:.4f}"))
        else:
            out.append(lv)
    return out


def shadowed(levels: list[BandLevel], test_scores: np.ndarray) -> list[str]:
    """Levels that a higher one leaves empty on the test snapshot: rules of different kinds that the
    config check cannot compare (a medium band from probability 0.9 below a high one whose precision
    rule resolved to 0.73 holds no one). Percentile levels are read at their test-snapshot cut."""
    out, above = [], None  # the lowest cut so far, and whose
    for lv in levels:
        if lv.rule == "top_percent":
            cut = percentile_threshold(test_scores, float(lv.top_percent))
        elif lv.rule in ("min_probability", "min_precision") and lv.threshold is not None and math.isfinite(lv.threshold):
            cut = lv.threshold
        else:
            continue
        if above is not None and cut >= above[0]:
            out.append(f"band {lv.name!r} (from {cut:.4f}) lies at or above band {above[1]!r}'s cut ({above[0]:.4f}), "
                       f"which takes everyone above it: {lv.name!r} holds no one; lower its rule in configs/bands.yaml")
        if above is None or cut < above[0]:
            above = (cut, lv.name)
    return out


def cross_fitted_precision_note(scores: np.ndarray, labels: np.ndarray, target: float) -> str:
    """The precision a ``min_precision`` threshold chosen on the test snapshot can be expected to
    keep: chosen on one half of the rows (alternate rows) and measured on the other, both ways.
    The precision on the rows it was chosen on flatters it: the threshold sits where they happen
    to reach the target."""
    halves = np.arange(len(scores)) % 2 == 0
    hits = above = 0
    for fit in (halves, ~halves):
        t = precision_threshold(scores[fit], labels[fit], target, max(1, MIN_PRECISION_SUPPORT // 2))
        if t is None:  # with enough rows, that is the finding: the threshold does not replicate
            return (f"on half the test rows (alternate rows) no threshold reaches precision {target:g}: the "
                    "threshold found on all of them does not replicate, so expect a lower precision out of sample")
        chosen = ~fit & (scores >= t)
        hits, above = hits + int(labels[chosen].sum()), above + int(chosen.sum())
    if not above:
        return "too few customers to estimate its precision out of sample"
    return (f"out of sample (threshold chosen on half the test rows, measured on the other half): "
            f"precision {hits / above:.3f}")


def percentile_threshold(scores: np.ndarray, top_percent: float) -> float:
    """The score of the customer at rank ceil(n * q / 100), best first (ties all get in)."""
    s = scores[~np.isnan(scores)]
    if len(s) == 0:
        return math.inf
    k = top_rank(len(s), top_percent)
    return float(np.partition(s, len(s) - k)[len(s) - k])


def top_rank(n: int, top_percent: float) -> int:
    """The rank, best first, whose score is the threshold of the top ``top_percent`` % of ``n`` scores."""
    return max(1, math.ceil(n * top_percent / 100))


def thresholds_for_run(levels: list[BandLevel], scores: np.ndarray) -> list[BandLevel]:
    """Every level with its threshold for this run's scores (percentile levels resolved here)."""
    out = []
    for lv in levels:
        if lv.rule == "top_percent":
            lv = _with(lv, threshold=percentile_threshold(scores, float(lv.top_percent)))
        elif lv.rule == "min_probability" and lv.threshold is None:
            lv = _with(lv, threshold=float(lv.min_probability))
        elif lv.rule == "min_precision" and lv.threshold is None:
            raise ValueError(f"band {lv.name!r} (min_precision) was never resolved on a test snapshot; "
                             "retrain the model so its bands are saved with it")
        out.append(lv)
    return out


def tie_warning(lv: BandLevel, n: int, inside: int, tied: int, target: str) -> str | None:
    """The warning for a ``top_percent`` level whose cut lets in far more than its share: customers
    tied at the cut score all get in (a model of few trees gives few distinct scores), and a "top
    10 %" band had held 18.6 % of a run, emptying the band below it, with no word. ``n`` customers
    scored, ``inside`` at or above the cut, ``tied`` at it. Far more: over 1.25 times the rank the
    share asks for and over one percentage point more, with ties at the cut (a rank rounded up in a
    small run is none)."""
    if lv.rule != "top_percent" or not n:
        return None
    k = top_rank(n, float(lv.top_percent))
    if not (inside > 1.25 * k and inside - k > 0.01 * n and tied > 1):
        return None
    return (f"band {lv.name} is the top {lv.top_percent:g} % of the run, but {inside:,} of {n:,} scored customers "
            f"({inside / n:.1%}) reach its cut, {lv.threshold:.4f}: {tied:,} share that very score, and ties all get "
            f"in. The model gives few distinct scores (few trees or leaves; `dynseg models show {target}`): retrain "
            f"it (bands are saved with the model; a min_probability cut in configs/bands.yaml reaches the next "
            f"version), or for tonight write the segment's rule on {target}_score_100")


def tie_levels(levels: list[BandLevel]) -> list[BandLevel]:
    """The ``top_percent`` levels with a cut in this run, whose ties :func:`tie_warning` weighs."""
    return [lv for lv in levels if lv.rule == "top_percent" and lv.threshold is not None and np.isfinite(lv.threshold)]


def tie_warnings(levels: list[BandLevel], scores: np.ndarray, target: str) -> list[str]:
    """:func:`tie_warning` of each level, on a run's scores (NaN: not scored)."""
    s = scores[~np.isnan(scores)]
    said = (tie_warning(lv, len(s), int((s >= lv.threshold).sum()), int((s == lv.threshold).sum()), target)
            for lv in tie_levels(levels))
    return [w for w in said if w]


def assign(levels: list[BandLevel], scores: np.ndarray) -> np.ndarray:
    """Band name per score (object array; None where the score is missing). ``levels`` must be
    resolved for the run (see :func:`thresholds_for_run`)."""
    out = np.full(len(scores), None, dtype=object)
    todo = ~np.isnan(scores)
    for lv in levels:
        hit = todo if lv.rule is None else todo & (scores >= lv.threshold)
        out[hit] = lv.name
        todo &= ~hit
    return out


def to_dicts(levels: list[BandLevel]) -> list[dict]:
    return [{k: v for k, v in asdict(lv).items() if v is not None and v != ""} for lv in levels]


def cuts_text(items: list[dict]) -> str:
    """The cut of each band of a run (its :func:`to_dicts` form): ``high from 0.7012, medium from
    0.5000``; a band that takes everyone left has none."""
    return ", ".join(f"{b['name']} from {b['threshold']:.4f}" for b in items
                     if b.get("threshold") is not None and b["threshold"] != float("inf"))


RULE_WORDS = {"top_percent": "top {:g} %", "min_probability": "probability >= {:g}", "min_precision": "precision >= {:g}"}


def rules_text(items: list[dict]) -> str:
    """The rule of each band (a config's or a model's saved levels, as dicts): ``high top 10 %,
    medium probability >= 0.5, low the rest``."""
    def rule(b: dict) -> str:
        found = [RULE_WORDS[k].format(b[k]) for k in RULE_WORDS if b.get(k) is not None]
        return found[0] if found else "the rest"
    return ", ".join(f"{b['name']} {rule(b)}" for b in items)


def from_dicts(items: list[dict]) -> list[BandLevel]:
    return [BandLevel(**item) for item in items]


def _with(lv: BandLevel, **changes) -> BandLevel:
    return BandLevel(**(asdict(lv) | changes))
