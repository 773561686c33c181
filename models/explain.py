"""Why a customer got their score: exact TreeSHAP contributions, reason codes in plain words, and
global plots for the model review.

**Two scales.** A contribution (SHAP value) is in *log-odds*, the scale of the model's raw score:
``base + sum of a customer's contributions == model.decision_function`` exactly. Marketers see
*probability points* instead: a feature's push in points is ``100 × (p(raw) − p(raw − its
contribution))``, both through the model's calibrated mapping (calibrator and base-rate shift,
``PropensityModel.probability_from_raw``) — "leave one out on the calibrated scale". The mapping
is increasing, so points have the sign of the contribution, or are 0 where an isotonic calibrator
is flat; they are not additive: the points of a customer's top reasons need not add up to the
score's distance from the average.

**Speed.** ``contributions`` uses :mod:`models.treeshap` (the same values as LightGBM's
``pred_contrib``, 15-18× faster, on all cores; ``bench/explain.py``) and falls back to
``pred_contrib`` for a model it cannot compile; ``method="lightgbm"`` asks for ``pred_contrib``.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from models.estimator import PropensityModel
from models.plots import _save, plt  # pyplot on the headless Agg backend

Method = Literal["auto", "fast", "lightgbm"]

# -- contributions --------------------------------------------------------------------------
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # lgb.Booster -> {num_iteration: CompiledTrees}


def contributions(model: PropensityModel, X: pd.DataFrame, method: Method = "auto",
                  n_jobs: int | None = None) -> tuple[pd.DataFrame, float]:
    """Exact TreeSHAP contributions in log-odds, one row per row of ``X``, one column per model
    feature, and the base value (the average raw score over the training rows, by tree cover):
    ``base + row sum == model.decision_function(X)``. ``n_jobs``: threads (default: all cores)."""
    return _contributions(model, model._matrix(X), method, n_jobs)


def _contributions(model: PropensityModel, matrix: pd.DataFrame, method: Method, n_jobs: int | None):
    if method not in ("auto", "fast", "lightgbm"):
        raise ValueError(f"method must be 'auto', 'fast' or 'lightgbm'; got {method!r}")
    if method != "lightgbm":
        trees = _fast_trees(model, strict=method == "fast")
        if trees is not None:
            from models import treeshap

            with _threads(n_jobs):
                values = treeshap.shap_values(trees, _lightgbm_matrix(matrix))
            return pd.DataFrame(values, index=matrix.index, columns=model.features_), trees.expected_value
    # LightGBM refuses no rows; the base value is the same for any row, so ask with a blank one
    rows = matrix if len(matrix) else model._matrix(pd.DataFrame({c: [None] for c in model.features_}))
    out = model.booster_.predict(rows, pred_contrib=True, num_iteration=model.best_iteration_, num_threads=n_jobs or 0)
    return pd.DataFrame(out[:len(matrix), :-1], index=matrix.index, columns=model.features_), float(out[0, -1])


def probability_points(model: PropensityModel, values: pd.DataFrame, base: float) -> pd.DataFrame:
    """Each contribution as a push in probability points (leave one out on the calibrated scale;
    see the module docstring)."""
    v = values.to_numpy()
    raw = base + v.sum(axis=1)
    p = _probability(model, raw)
    without = _probability(model, (raw[:, None] - v).ravel()).reshape(v.shape)
    return pd.DataFrame(100 * (p[:, None] - without), index=values.index, columns=values.columns)


def _probability(model: PropensityModel, raw: np.ndarray) -> np.ndarray:
    """``model.probability_from_raw``, also for no rows (scikit-learn refuses empty input)."""
    return model.probability_from_raw(raw) if len(raw) else np.empty(0)


def _fast_trees(model: PropensityModel, strict: bool):
    """The model's compiled trees (cached per booster), or None when they cannot be compiled."""
    booster = model.booster_.booster_
    per_iteration = _compiled.setdefault(booster, {})
    if model.best_iteration_ not in per_iteration:
        try:
            from models import treeshap

            per_iteration[model.best_iteration_] = treeshap.compile_trees(
                booster.dump_model(num_iteration=model.best_iteration_), model.best_iteration_, len(model.features_))
        except (ImportError, NotImplementedError) as e:
            if strict:
                raise
            warnings.warn(f"fast TreeSHAP unavailable ({e}); using LightGBM's pred_contrib", RuntimeWarning, stacklevel=3)
            per_iteration[model.best_iteration_] = None
    return per_iteration[model.best_iteration_]


def _lightgbm_matrix(matrix: pd.DataFrame) -> np.ndarray:
    """The float matrix LightGBM predicts on: categories as their codes, missing as NaN."""
    out = np.empty(matrix.shape, dtype=np.float64)
    for j, c in enumerate(matrix.columns):
        s = matrix[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            codes = s.cat.codes.to_numpy()
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            out[:, j] = s.to_numpy(dtype=np.float64)
    return out


@contextlib.contextmanager
def _threads(n: int | None):
    """Run numba kernels on ``n`` threads (None: all), then restore the previous count."""
    import numba

    before = numba.get_num_threads()
    if n:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(before)


# -- reason codes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Phrase:
    """How a feature's value reads in a reason. ``text`` holds ``{v}``, the value in its ``unit``:
    ``days`` ("94 days"), ``count`` of ``noun`` ("3 purchases"; write "category|categories" when
    the plural is not noun + s), ``money`` ("1,234"), ``rate`` ("12%"), ``ratio`` ("2.5×"),
    ``number``; a ``flag`` reads ``yes`` or ``no`` instead; a ``trend`` (text: what is counted)
    reads fewer, as many or more in the last 30 days than in the 30 before. ``missing`` and ``zero`` replace the
    whole phrase for a missing value or a zero. ``context`` appends another column's value in days
    (e.g. the usual gap after the recency) when that value is known."""

    text: str = ""
    unit: str = "number"
    noun: str = ""
    missing: str = ""
    zero: str = ""
    yes: str = ""
    no: str = ""
    context: tuple[str, str] | None = None  # (column, text with {c})
    # when the context column is an input but its value is missing: (the zero text, the text with {v})
    context_missing: tuple[str, str] | None = None
    # the zero text when the context column is no input of the model (``zero`` may need it to be true)
    zero_without_context: str = ""


#: The words for every column of ``customer_features`` (features/customer_features.md), in one
#: place. Window columns (``n_<role>_<w>d``, ``spend_<w>d``, ``n_categories_<w>d``) follow the
#: patterns below; any other column (e.g. a profile attribute) reads "<feature> = <value>".
PHRASES: dict[str, Phrase] = {
    "n_events": Phrase("{v} in total", "count", noun="event", zero="no activity at all"),
    # (sends included: "last activity" read as the customer's, on the day the shop sent them an email)
    "days_since_last_event": Phrase("last event of any kind (a send too) {v} ago", "days", missing="no event yet"),
    "days_since_last_action": Phrase("last own activity {v} ago", "days",
                                     missing="no own activity yet (only emails sent to them)"),
    "tenure_days": Phrase("known for {v}", "days", missing="tenure unknown"),
    "recency_days": Phrase("last purchase {v} ago", "days", missing="never purchased",
                           context=("mean_gap_days", " (usual gap {c})")),
    "frequency": Phrase("{v} in total", "count", noun="purchase", zero="no purchase yet"),
    "monetary_total": Phrase("spent {v} in total", "money", zero="never spent anything"),
    "monetary_mean": Phrase("average order {v}", "money", missing="no orders yet"),
    "monetary_max": Phrase("largest order {v}", "money", missing="no orders yet"),
    "days_since_first_purchase": Phrase("first purchase {v} ago", "days", missing="never purchased"),
    "n_categories": Phrase("bought from {v}", "count", noun="category|categories", zero="no purchase yet"),
    "mean_gap_days": Phrase("buys every {v} on average", "days", missing="fewer than two purchases"),
    "std_gap_days": Phrase("gaps between purchases vary by {v}", "days", missing="fewer than three purchases"),
    "recency_over_mean_gap": Phrase("last purchase {v} the usual gap ago", "ratio", missing="no usual purchase gap yet"),
    "purchase_trend_30d": Phrase("purchases", "trend"),
    "n_email_send": Phrase("{v} received", "count", noun="email", zero="never emailed"),
    "n_email_open": Phrase("{v} opened", "count", noun="email", zero="never opened an email"),
    "n_email_click": Phrase("{v} in emails", "count", noun="click", zero="never clicked an email"),
    "open_rate": Phrase("opens {v} of emails", "rate", missing="never emailed"),
    "click_to_open_90d": Phrase("clicks in {v} of opened emails (last 90 days)", "rate",
                                missing="no email opens in the last 90 days"),
    "days_since_last_open": Phrase("last opened an email {v} ago", "days", missing="never opened an email"),
    "days_since_last_click": Phrase("last clicked an email {v} ago", "days", missing="never clicked an email"),
    "open_trend_30d": Phrase("email opens", "trend"),
    # counted from the first send when none was ever opened: "since the last open" would be false then
    "sends_since_last_open": Phrase("{v} unopened in a row", "count", noun="email", zero="opened the latest email",
                                    context=("days_since_last_open", " (last open {c} ago)"),
                                    context_missing=("never emailed", "never opened any of {v}"),
                                    zero_without_context="no unopened emails"),
    "n_refund": Phrase("{v}", "count", noun="refund", zero="no refunds"),
    "refund_amount": Phrase("refunds worth {v}", "money", zero="no refunds"),
    "refund_rate": Phrase("refunds on {v} of purchases", "rate", missing="no purchases yet"),
    "n_support_ticket": Phrase("{v}", "count", noun="support ticket", zero="no support tickets"),
    "n_support_ticket_90d": Phrase("{v} in the last 90 days", "count", noun="support ticket",
                                   zero="no support tickets in the last 90 days"),
    "unsubscribed": Phrase(unit="flag", yes="unsubscribed from emails", no="subscribed to emails"),
    "bounced": Phrase(unit="flag", yes="an email to them bounced", no="no bounced emails"),
    "complained": Phrase(unit="flag", yes="complained about an email", no="no email complaints"),
    "email_consent": Phrase(unit="flag", yes="consented to emails", no="no email consent", missing="email consent unknown"),
    "days_since_signup": Phrase("signed up {v} ago", "days", missing="signup date unknown"),
}
_ROLE_NOUNS = {"email_open": "email open", "email_click": "email click", "email_send": "email sent|emails sent",
               "page_view": "page view", "add_to_cart": "item added to cart|items added to cart",
               "support_ticket": "support ticket"}
_WINDOW = re.compile(r"(?:(?P<spend>spend)|n_(?P<what>[a-z_]+))_(?P<days>\d+)d")
_TARGET_WORDS = {"churn": "churn risk", "purchase": "purchase likelihood"}


#: Short names a marketer reads, for plots, tables and the card (the column name goes beside it)
LABELS: dict[str, str] = {
    "n_events": "events in total", "days_since_last_event": "days since any event (sends too)",
    "days_since_last_action": "days since own activity", "tenure_days": "days known",
    "recency_days": "days since last purchase", "frequency": "purchases in total", "monetary_total": "total spend",
    "monetary_mean": "average order value", "monetary_max": "largest order", "days_since_first_purchase":
    "days since first purchase", "n_categories": "categories bought", "mean_gap_days": "usual days between purchases",
    "std_gap_days": "spread of days between purchases", "recency_over_mean_gap": "overdue (recency / usual gap)",
    "purchase_trend_30d": "purchase trend (30 vs 30 days)", "n_email_send": "emails received",
    "n_email_open": "emails opened", "n_email_click": "email clicks", "open_rate": "open rate",
    "click_to_open_90d": "click-to-open (90 days)", "days_since_last_open": "days since last open",
    "days_since_last_click": "days since last click", "open_trend_30d": "open trend (30 vs 30 days)",
    "sends_since_last_open": "emails unopened in a row", "n_refund": "refunds", "refund_amount": "refunded amount",
    "refund_rate": "refunds per purchase", "n_support_ticket": "support tickets",
    "n_support_ticket_90d": "support tickets (90 days)", "unsubscribed": "unsubscribed", "bounced": "email bounced",
    "complained": "complained", "email_consent": "email consent", "days_since_signup": "days since signup",
}


def feature_label(feature: str) -> str:
    """A feature column in words: ``n_page_view_365d`` -> "page views, last 365 days"."""
    if feature in LABELS:
        return LABELS[feature]
    m = _WINDOW.fullmatch(feature)
    if m:
        if m["spend"]:
            return f"spend, last {m['days']} days"
        noun = "categories bought" if m["what"] == "categories" else _plural(
            _ROLE_NOUNS.get(m["what"], m["what"].replace("_", " ")), 2)
        return f"{noun}, last {m['days']} days"
    return feature.replace("_", " ")


def labelled(feature: str) -> str:
    """The words and the column: "page views, last 365 days (n_page_view_365d)"."""
    known = feature in LABELS or _WINDOW.fullmatch(feature) is not None
    return f"{feature_label(feature)} ({feature})" if known else feature  # an attribute is its own name


def phrase_for(feature: str) -> Phrase:
    """The phrase of a feature column: from :data:`PHRASES`, a window pattern, or the fallback."""
    if feature in PHRASES:
        return PHRASES[feature]
    m = _WINDOW.fullmatch(feature)
    if m:
        days = m["days"]
        if m["spend"]:
            return Phrase(f"spent {{v}} in the last {days} days", "money", zero=f"no spend in the last {days} days")
        noun = "category|categories" if m["what"] == "categories" else _ROLE_NOUNS.get(m["what"], m["what"].replace("_", " "))
        text = f"bought from {{v}} in the last {days} days" if m["what"] == "categories" else f"{{v}} in the last {days} days"
        none = "purchase" if m["what"] == "categories" else _plural(noun, 2)
        return Phrase(text, "count", noun=noun, zero=f"no {none} in the last {days} days")
    name = feature.replace("_", " ")
    return Phrase(f"{name} is {{v}}", missing=f"{name} unknown")  # a profile attribute: "plan is plus"


#: ``context`` of a phrase whose context column is not among the values at hand
NO_CONTEXT = object()


def describe_value(feature: str, value, context=NO_CONTEXT, currency: str = "") -> str:
    """A feature's value in plain words: ``describe_value("recency_days", 94.2, 31)`` ->
    "last purchase 94 days ago (usual gap 31 days)"; ``context`` is the value of the phrase's
    context column (:func:`context_column`), or :data:`NO_CONTEXT` when it is not at hand;
    ``currency`` (``currency:`` in configs/project.yaml) marks amounts: "€" -> "€66", "EUR" -> "66 EUR"."""
    return _describe(phrase_for(feature), feature, value, context, currency)


def context_column(feature: str) -> str | None:
    """The column whose value completes ``feature``'s phrase (e.g. the usual gap after the recency)."""
    ph = phrase_for(feature)
    return ph.context[0] if ph.context else None


def _describe(ph: Phrase, feature: str, value, context=NO_CONTEXT, currency: str = "") -> str:
    if _missing(value):
        return ph.missing or f"{feature.replace('_', ' ')} unknown"
    if ph.unit == "flag":
        return ph.yes if bool(value) else ph.no
    if ph.unit == "trend":
        # (last 30 days + 1) / (the 30 before + 1): 0 against 2 is 0.33, which read as "at 0.3× the
        # 30 days before", and 0 against 0 as "at 1.0×"; the direction is what the value says surely
        x = float(value)
        if abs(x - 1) < 1e-9:  # (n + 1) / (n + 1)
            return f"as many {ph.text} in the last 30 days as in the 30 before"
        return (f"{'fewer' if x < 1 else 'more'} {ph.text} in the last 30 days than in the 30 before "
                f"(trend {x:.2g} = (last + 1) / (before + 1))")
    if ph.context_missing and context is not NO_CONTEXT and _missing(context):
        zero, text = ph.context_missing
        return zero if float(value) == 0 else text.format(v=_format(ph, value, currency))
    if ph.zero and float(value) == 0:
        return ph.zero_without_context if context is NO_CONTEXT and ph.zero_without_context else ph.zero
    text = ph.text.format(v=_format(ph, value, currency))
    if ph.context and context is not NO_CONTEXT and not _missing(context):
        text += ph.context[1].format(c=_days(float(context)))
    return text


def reason_codes(model: PropensityModel, X: pd.DataFrame, target: str, k: int = 3,
                 direction: Literal["any", "up", "down"] = "any", method: Method = "auto",
                 n_jobs: int | None = None, chunk_rows: int = 100_000, currency: str = "") -> pd.DataFrame:
    """The top ``k`` reasons behind each row's score: the features with the largest push in
    probability points, the figure each sentence shows (ties by the push in log-odds;
    ``direction="up"``/``"down"``: only those raising/lowering the score); a feature that does not
    move the score is never a reason.

    Per row and reason ``i`` (1 = the largest): ``reason_i`` ("last purchase 94 days ago (usual
    gap 31 days) raises churn risk by 18 points"), ``reason_i_feature``, ``reason_i_value`` (the value
    as text: a number, "true"/"false", a category; empty when missing), ``reason_i_log_odds``
    (the exact TreeSHAP value) and ``reason_i_points`` (the push in probability points). A row
    with fewer than ``k`` pushing features has empty trailing reasons. ``target`` names the
    outcome in the words: "churn" -> "churn risk", "purchase" -> "purchase likelihood".
    Explain only the customers who need reasons (e.g. those exported): the cost is per row."""
    if k < 1:
        raise ValueError(f"k must be at least 1; got {k}")
    if direction not in ("any", "up", "down"):
        raise ValueError(f"direction must be 'any', 'up' or 'down'; got {direction!r}")
    starts = range(0, len(X), chunk_rows) if len(X) else [0]
    return pd.concat([_reason_chunk(model, X.iloc[i:i + chunk_rows], target, k, direction, method, n_jobs, currency)
                      for i in starts])


def _reason_chunk(model, X, target, k, direction, method, n_jobs, currency="") -> pd.DataFrame:
    matrix = model._matrix(X)
    values, base = _contributions(model, matrix, method, n_jobs)
    v = values.to_numpy()
    n, rows = len(v), np.arange(len(v))
    raw = base + v.sum(axis=1)
    p = _probability(model, raw)
    # Each feature's push in probability points (the score less the score without it), the figure
    # the sentence shows: reasons are ranked by it, so that "by 9 points" never comes before "by
    # 11" (ranked by log-odds, 1 in 10 customers read that). Ties (a calibration's flat step) by log-odds.
    all_points = probability_points(model, values, base).to_numpy() if v.size else v
    pushing = {"any": v != 0, "up": v > 0, "down": v < 0}[direction]
    strength = np.where(pushing, np.round(np.abs(all_points), 9) + 1e-12 * np.abs(v), -np.inf)  # not pushing: never a reason
    order = _largest_first(strength, k)
    features = np.asarray(model.features_, dtype=object)
    words = _TARGET_WORDS.get(target, f"{target} likelihood")
    out: dict[str, object] = {}
    for i in range(k):
        j = order[:, min(i, order.shape[1] - 1)]
        has = np.isfinite(strength[rows, j]) & (i < order.shape[1])
        log_odds = np.where(has, v[rows, j], np.nan)
        points = np.where(has, all_points[rows, j], np.nan)
        feature = np.where(has, features[j], None)
        value = np.full(n, None, dtype=object)
        sentence = np.full(n, None, dtype=object)
        for f in pd.unique(feature[has]):
            at = np.flatnonzero(feature == f)
            ph = phrase_for(f)
            xs = matrix[f].to_numpy()[at]
            has_ctx = bool(ph.context) and ph.context[0] in matrix
            ctx = matrix[ph.context[0]].to_numpy()[at] if has_ctx else np.full(len(at), np.nan)
            lo, pt = log_odds[at], points[at]
            value[at] = _once_per_value(lambda r: _value_text(ph, xs[r]), xs)
            said = _once_per_value(lambda r: _describe(ph, f, xs[r], ctx[r] if has_ctx else NO_CONTEXT, currency),
                                   _canonical(ph, xs), _canonical(_DAYS, ctx))
            ratio = relative_ratio(p[at], pt)
            push = _once_per_value(lambda r: _push(lo[r], pt[r], words, ratio[r]), np.round(np.abs(pt)), lo > 0, ratio)
            sentence[at] = said + " " + push
        out |= {f"reason_{i + 1}": sentence, f"reason_{i + 1}_feature": feature, f"reason_{i + 1}_value": value,
                f"reason_{i + 1}_log_odds": log_odds, f"reason_{i + 1}_points": points}
    return pd.DataFrame(out, index=X.index)


def _largest_first(strength: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values per row, largest first (ties: lower index first)."""
    if k < strength.shape[1]:
        top = np.argpartition(-strength, k - 1, axis=1)[:, :k]
        top.sort(axis=1)  # so that stable sorting breaks ties by column, as a full sort would
    else:
        top = np.tile(np.arange(strength.shape[1]), (len(strength), 1))
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(strength, top, axis=1), axis=1, kind="stable"), axis=1)


def _once_per_value(text, *keys: np.ndarray) -> np.ndarray:
    """``text(r)`` for every row r, computed once per distinct combination of the keys (rows with
    equal keys read the same): many customers share a count, a rounded day or a push."""
    codes = np.zeros(len(keys[0]), np.int64)
    for key in keys:
        c, uniques = pd.factorize(pd.Series(key, dtype=object if key.dtype == object else None), use_na_sentinel=True)
        codes = codes * (len(uniques) + 1) + (c + 1)
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    return np.array([text(r) for r in first], dtype=object)[inverse]


_DAYS = Phrase(unit="days")


def _canonical(ph: Phrase, xs: np.ndarray) -> np.ndarray:
    """Values that read the same in ``ph`` made equal: days round to whole days (0 and under a
    day stay apart, for a phrase with a zero text); other units as they are."""
    if ph.unit != "days":
        return xs
    x = xs.astype(float)
    return np.where(x == 0, 0.0, np.where(x < 1, -1.0, np.round(x)))


def _push(log_odds: float, points: float, words: str, ratio: float = 0.0) -> str:
    """ "raises churn risk by 18 points": the verb follows the sign of the contribution. Under a
    point, ``ratio`` (:func:`relative_ratio`: the score over the score without the feature, 0 for
    none) says how much it moved a small score: "lowers purchase likelihood by less than 1 point
    (to 20 % of what it would be without it)"."""
    verb = "raises" if log_odds > 0 else "lowers"
    size = round(abs(points))
    if size < 1:
        if ratio >= 1.5:
            times = f"{ratio:,.0f}" if ratio >= 10 else f"{ratio:g}"  # never 1e+06
            return f"{verb} {words} by less than 1 point ({times} times what it would be without it)"
        if 0 < ratio <= 2 / 3:
            return f"{verb} {words} by less than 1 point (to {ratio:.0%} of what it would be without it)"
        return f"{verb} {words} by less than 1 point"
    return f"{verb} {words} by {size} point{'s' if size != 1 else ''}"


def relative_ratio(p: np.ndarray, points: np.ndarray) -> np.ndarray:
    """For pushes under a point: the score over the score without the feature, rounded as it is
    read (a whole number from 10 up, one decimal from 1.5, whole percents up to 2/3); 0 otherwise.
    At a score of 0.1 %, "by less than 1 point" said nothing of a feature that cut it to a fifth."""
    p, points = np.asarray(p, float), np.asarray(points, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = p / (p - points / 100)
    small = (np.round(np.abs(points)) < 1) & np.isfinite(r) & (r > 0)
    shown = np.where(r >= 10, np.round(r), np.where(r >= 1.5, np.round(r, 1), np.round(r, 2)))
    return np.where(small & ((shown >= 1.5) | (shown <= 2 / 3)) & (shown > 0), shown, 0.0)


def _format(ph: Phrase, value, currency: str = "") -> str:
    x = float(value) if ph.unit != "number" else value
    if ph.unit == "days":
        return _days(x)
    if ph.unit == "count":
        count = int(round(x))
        return f"{count:,} {_plural(ph.noun, count)}"
    if ph.unit == "money":
        amount = f"{x:,.2f}" if abs(x) < 10 and x != int(x) else f"{x:,.0f}"
        return with_currency(amount, currency)
    if ph.unit == "rate":
        return f"{x:.0%}"
    if ph.unit == "ratio":
        return f"{x:.1f}×"
    return f"{value:,.4g}" if isinstance(value, (int, float, np.number)) else str(value)


def with_currency(amount: str, currency: str) -> str:
    """An amount marked with the project's currency: a code after it ("66 EUR"), a symbol before
    it ("€66", "-€5"); unmarked without one."""
    if not currency:
        return amount
    if currency.isalpha() and currency.isascii():
        return f"{amount} {currency}"
    return f"-{currency}{amount[1:]}" if amount.startswith("-") else f"{currency}{amount}"


def _days(x: float) -> str:
    if x < 1:
        return "less than a day"
    count = int(round(x))
    return f"{count:,} day{'s' if count != 1 else ''}"


def _plural(noun: str, count: int) -> str:
    one, _, many = noun.partition("|")
    return one if count == 1 else (many or one + "s")


def _value_text(ph: Phrase, x) -> str | None:
    if _missing(x):
        return None
    if ph.unit == "flag":
        return "true" if bool(x) else "false"
    return f"{float(x):.6g}" if isinstance(x, (int, float, np.number)) else str(x)


def _missing(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, (float, np.floating)) and math.isnan(x))


# -- global explanations (model review) ------------------------------------------------------
def global_importance(values: pd.DataFrame, points: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean |SHAP| per feature in log-odds and, given the points, in probability points; largest first."""
    out = pd.DataFrame({"feature": values.columns, "mean_abs_shap_log_odds": values.abs().mean().to_numpy()})
    if points is not None:
        out["mean_abs_points"] = points[values.columns].abs().mean().to_numpy()
    return out.sort_values("mean_abs_shap_log_odds", ascending=False, ignore_index=True)


def beeswarm_plot(values: pd.DataFrame, data: pd.DataFrame, path: Path, title: str, top: int = 15) -> Path:
    """One row per feature (largest mean |SHAP| on top), one dot per customer at its SHAP value
    in log-odds, coloured by the customer's value of the feature (its rank; grey when missing)."""
    names = global_importance(values).feature.head(top).tolist()[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(names) + 1.8))
    rng = np.random.default_rng(0)
    for y, f in enumerate(names):
        x = values[f].to_numpy()
        color = _value_rank(data[f])
        offset = _swarm_offsets(x, rng)
        known = ~np.isnan(color)
        ax.scatter(x[~known], y + offset[~known], s=6, color="0.6", alpha=0.7, linewidths=0)
        dots = ax.scatter(x[known], y + offset[known], s=6, c=color[known], cmap="coolwarm", vmin=0, vmax=1,
                          alpha=0.8, linewidths=0)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(names)), [labelled(n) for n in names])
    ax.set(xlabel="SHAP value (log-odds): > 0 raises the score, < 0 lowers it",
           title=f"SHAP values per customer (log-odds)\n{title}")
    bar = fig.colorbar(dots, ax=ax, pad=0.01)
    bar.set_label("feature value (rank: low → high; grey = missing)")
    return _save(fig, path)


def importance_bar_plot(importance: pd.DataFrame, path: Path, title: str, top: int = 15) -> Path:
    """Mean |SHAP| per feature: in log-odds (the model's scale) and in probability points (what
    a marketer sees), side by side."""
    imp = importance.head(top).iloc[::-1]
    panels = [("mean_abs_shap_log_odds", "mean |SHAP value| (log-odds)")]
    if "mean_abs_points" in imp:
        panels.append(("mean_abs_points", "mean |push| (probability points),\nin the log-odds panel's order"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.3 * len(imp) + 1.6), sharey=True,
                             squeeze=False)
    for ax, (column, label) in zip(axes[0], panels):
        ax.barh([labelled(f) for f in imp.feature], imp[column])
        ax.set(xlabel=label)
    fig.suptitle(f"Global feature importance (mean |SHAP|)\n{title}")
    return _save(fig, path)


def dependence_plot(values: pd.DataFrame, points: pd.DataFrame, data: pd.DataFrame, feature: str, path: Path,
                    title: str) -> Path:
    """How a feature's value moves the score: SHAP value in log-odds (top) and the push in
    probability points (bottom) against the value, one dot per customer."""
    x = data[feature]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    if isinstance(x.dtype, pd.CategoricalDtype):
        codes = x.cat.codes.to_numpy().astype(float)
        known = codes >= 0
        xs = codes + np.random.default_rng(0).uniform(-0.25, 0.25, len(codes))
        bottom.set_xticks(range(len(x.cat.categories)), [str(c) for c in x.cat.categories], rotation=30)
    else:
        xs = pd.to_numeric(x, errors="coerce").to_numpy(dtype=float)
        known = ~np.isnan(xs)
        if known.any() and np.nanmin(xs) >= 0 and np.nanmax(xs) > 100 * max(np.nanpercentile(xs, 50), 1):
            bottom.set_xscale("symlog", linthresh=1)  # long tails (days, money, counts)
    for ax, frame, label in ((top, values, "SHAP value (log-odds)"), (bottom, points, "push (probability points)")):
        ax.scatter(xs[known], frame[feature].to_numpy()[known], s=6, alpha=0.5, linewidths=0)
        ax.axhline(0, color="k", lw=0.8)
        ax.set(ylabel=label)
    bottom.set(xlabel=labelled(feature))
    note = ""
    if (~known).any():
        note = (f"\nmissing for {(~known).sum():,} customers: mean {values[feature][~known].mean():+.3f} log-odds, "
                f"{points[feature][~known].mean():+.1f} points")
    top.set_title(f"SHAP dependence of {labelled(feature)}\n{title}{note}", fontsize=10)
    return _save(fig, path)


def global_artifacts(model: PropensityModel, X: pd.DataFrame, folder: Path, title: str, sample: int = 2000,
                     top: int = 5, seed: int = 0) -> dict[str, Path]:
    """SHAP on a sample of ``X`` (e.g. the out-of-time test snapshot) for a training run: run
    artifact path -> file (beeswarm, bar, dependence plots of the ``top`` features, and the table
    of mean |SHAP| per feature in log-odds and probability points)."""
    rows = X.sample(n=min(sample, len(X)), random_state=seed).sort_index() if len(X) > sample else X
    values, base = contributions(model, rows)
    points = probability_points(model, values, base)
    importance = global_importance(values, points)
    data = model._matrix(rows)
    table = folder / "mean_abs_shap.csv"
    importance.to_csv(table, index=False)
    out = {
        "plots/shap_beeswarm.png": beeswarm_plot(values, data, folder / "shap_beeswarm.png", title),
        "plots/shap_bar.png": importance_bar_plot(importance, folder / "shap_bar.png", title),
        "shap/mean_abs_shap.csv": table,
    }
    for f in importance.feature.head(top):
        name = f"shap_dependence_{re.sub(r'[^A-Za-z0-9_.-]', '_', f)}.png"
        out[f"plots/{name}"] = dependence_plot(values, points, data, f, folder / name, title)
    return out


def _value_rank(s: pd.Series) -> np.ndarray:
    """A feature's values as ranks in [0, 1] for colouring (categories by code); NaN when missing."""
    x = s.cat.codes.where(s.notna()) if isinstance(s.dtype, pd.CategoricalDtype) else pd.to_numeric(s, errors="coerce")
    return pd.Series(np.asarray(x, dtype=float)).rank(pct=True).to_numpy()


def _swarm_offsets(x: np.ndarray, rng: np.random.Generator, width: float = 0.38) -> np.ndarray:
    """Vertical offsets that spread dots with nearby x like a beeswarm: wider where dense."""
    if len(x) == 0:
        return np.zeros(0)
    bins = np.digitize(x, np.linspace(x.min(), x.max() + 1e-12, 80))
    counts = np.bincount(bins)
    density = counts[bins] / counts.max()
    return rng.uniform(-1, 1, len(x)) * width * np.sqrt(density)
