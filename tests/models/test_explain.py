"""models/explain.py: exact contributions, reason codes in words, global SHAP artifacts.

One small real model serves the module: PropensityModel (LightGBM + Platt calibration) on a
frame with the names and shapes of real ``customer_features`` columns (missing recency for
customers who never bought, optional consent, a categorical country) and a clear signal.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models import explain
from models.estimator import PropensityModel

REPO = Path(__file__).resolve().parents[2]


def _customers(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    never = rng.random(n) < 0.15
    recency = np.where(never, np.nan, rng.exponential(60, n))
    opens = rng.poisson(3, n)
    X = pd.DataFrame({
        "recency_days": recency,
        "mean_gap_days": np.where(never | (rng.random(n) < 0.1), np.nan, rng.gamma(3, 12, n)),
        "n_email_open_90d": opens,
        "days_since_last_open": np.where(opens == 0, np.nan, rng.exponential(20, n)),
        "spend_365d": np.where(rng.random(n) < 0.3, 0.0, rng.lognormal(4, 1, n)),
        "email_consent": pd.Series(rng.choice([True, False, None], n, p=[0.6, 0.3, 0.1]), dtype=object),
        "unsubscribed": rng.random(n) < 0.1,
        "country": rng.choice(["DE", "FR", "NL", None], n, p=[0.4, 0.3, 0.2, 0.1]),
    })
    logit = (1.5 - 0.03 * np.nan_to_num(recency, nan=200) + 0.3 * opens + 0.004 * X.spend_365d
             - 1.2 * X.unsubscribed + 0.6 * (X.country == "DE"))
    return X, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)


@pytest.fixture(scope="module")
def model() -> PropensityModel:
    rng = np.random.default_rng(5)
    X, y = _customers(rng, 4000)
    Xv, yv = _customers(rng, 2000)
    return PropensityModel(n_estimators=120, num_leaves=15, min_child_samples=20, calibration="platt").fit(X, y, Xv, yv)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    X, _ = _customers(np.random.default_rng(9), 1500)
    return X.set_axis(pd.RangeIndex(100, 1600))  # an index that is not 0..n-1 must be kept


@pytest.fixture(scope="module")
def reasons(model, rows) -> pd.DataFrame:
    return explain.reason_codes(model, rows, "churn", k=3)


@pytest.mark.parametrize("method", ["fast", "lightgbm"])
def test_contributions_add_up_to_the_raw_score(model, rows, method):
    values, base = explain.contributions(model, rows, method=method)
    assert list(values.columns) == model.features_ and values.index.equals(rows.index)
    np.testing.assert_allclose(base + values.to_numpy().sum(axis=1), model.decision_function(rows), rtol=0, atol=1e-9)


def test_fast_treeshap_equals_lightgbm_pred_contrib(model, rows):
    fast, base_fast = explain.contributions(model, rows, method="fast")
    ref, base_ref = explain.contributions(model, rows, method="lightgbm")
    np.testing.assert_allclose(fast.to_numpy(), ref.to_numpy(), rtol=0, atol=1e-9)
    assert base_fast == pytest.approx(base_ref, abs=1e-9)


def test_reason_words_match_the_sign_and_points_share_it(reasons):
    checked = 0
    for i in (1, 2, 3):
        r = reasons[reasons[f"reason_{i}"].notna()]
        up = r[f"reason_{i}_log_odds"] > 0
        assert r.loc[up, f"reason_{i}"].str.contains(" raises churn risk by ").all()
        assert r.loc[~up, f"reason_{i}"].str.contains(" lowers churn risk by ").all()
        assert (np.sign(r[f"reason_{i}_points"]) * np.sign(r[f"reason_{i}_log_odds"]) >= 0).all()
        assert (r[f"reason_{i}_points"] != 0).mean() > 0.99  # Platt is strictly increasing
        checked += len(r)
    assert checked > 3000


def test_points_in_words_are_the_rounded_points(reasons):
    r = reasons.dropna(subset=["reason_1"])
    said = r.reason_1.str.extract(r"by (less than 1|\d+) points?$")[0]
    expected = r.reason_1_points.abs().round().astype(int).astype(str).where(r.reason_1_points.abs().round() >= 1,
                                                                              "less than 1")
    assert (said == expected).all()


def test_reasons_are_the_largest_pushes_in_points_in_order(model, rows, reasons):
    """Ranked by the points each sentence shows: ranked by log-odds, "by 9 points" came before "by
    11 points" for about 1 customer in 10 (the logistic curve is steeper nearer 50 %)."""
    values, base = explain.contributions(model, rows)
    a = explain.probability_points(model, values, base).abs().to_numpy()
    assert (reasons.reason_1_feature.to_numpy() == np.asarray(model.features_)[a.argmax(axis=1)]).all()
    for i in (1, 2, 3):
        picked = values.to_numpy()[np.arange(len(rows)), [model.features_.index(f) for f in reasons[f"reason_{i}_feature"]]]
        np.testing.assert_array_equal(picked, reasons[f"reason_{i}_log_odds"].to_numpy())
    assert (reasons.reason_1_points.abs() >= reasons.reason_2_points.abs()).all()
    assert (reasons.reason_2_points.abs() >= reasons.reason_3_points.abs()).all()
    by_log_odds = (reasons.reason_1_log_odds.abs() < reasons.reason_2_log_odds.abs()).sum()
    assert by_log_odds > 0  # customers whose order the log-odds would have had the other way
    assert (reasons.reason_1_feature != reasons.reason_2_feature).all()
    assert reasons.index.equals(rows.index)


def test_each_sentence_is_the_value_in_words_and_the_push(model, rows, reasons):
    """Sentences are built once per distinct value; each must still read as its own row's."""
    matrix = model._matrix(rows)
    p = pd.Series(model.predict(rows), index=rows.index)
    relative = 0
    for i in (1, 2, 3):
        for idx, r in reasons.head(400).iterrows():
            f = r[f"reason_{i}_feature"]
            if f is None:
                continue
            context = explain.phrase_for(f).context
            words = explain.describe_value(f, matrix.at[idx, f], matrix.at[idx, context[0]] if context else None)
            pts = r[f"reason_{i}_points"]
            size = round(abs(pts))
            verb = "raises" if r[f"reason_{i}_log_odds"] > 0 else "lowers"
            push = f"by {size} point{'s' if size != 1 else ''}" if size >= 1 else "by less than 1 point"
            ratio = p[idx] / (p[idx] - pts / 100)
            if size < 1 and ratio >= 1.5:
                push += f" ({round(ratio, 1) if ratio < 10 else round(ratio):g} times what it would be without it)"
            elif size < 1 and 0 < ratio <= 2 / 3:
                push += f" (to {round(ratio, 2):.0%} of what it would be without it)"
            assert r[f"reason_{i}"] == f"{words} {verb} churn risk {push}"


def test_a_push_under_a_point_on_a_small_score_says_how_much_it_moved_it():
    """42 % of a demo run's reasons read "by less than 1 point", most on scores near 0.1 %, where a
    feature that cut the score to a fifth is the whole story."""
    ratio = explain.relative_ratio(np.array([0.001, 0.001, 0.3, 0.002, 0.0001]), np.array([-0.4, 0.05, -0.3, 0.15, 0.0099]))
    np.testing.assert_allclose(ratio, [0.2, 2.0, 0.0, 4.0, 100.0])  # 0.303 -> 0.3 is no story
    assert explain._push(-1.2, -0.4, "purchase likelihood", 0.2) == \
        "lowers purchase likelihood by less than 1 point (to 20% of what it would be without it)"
    assert explain._push(0.7, 0.05, "purchase likelihood", 2.0) == \
        "raises purchase likelihood by less than 1 point (2 times what it would be without it)"
    assert explain._push(0.7, 0.05, "purchase likelihood", 12.0) == \
        "raises purchase likelihood by less than 1 point (12 times what it would be without it)"
    assert "(1,250,000 times what" in explain._push(0.7, 0.05, "purchase likelihood", 1_250_000.0)
    assert explain._push(-0.1, -0.3, "churn risk", 0.0) == "lowers churn risk by less than 1 point"
    assert explain._push(0.9, 18.2, "churn risk", 0.0) == "raises churn risk by 18 points"


def test_direction_up_gives_only_raising_reasons(model, rows):
    up = explain.reason_codes(model, rows.head(300), "purchase", k=2, direction="up")
    assert (up.reason_1_log_odds.dropna() > 0).all() and up.reason_1.dropna().str.contains("raises purchase likelihood").all()


def test_a_feature_that_does_not_push_is_never_a_reason(model, rows):
    five = explain.reason_codes(model, rows.head(50), "churn", k=len(model.features_) + 2)
    last = f"reason_{len(model.features_) + 2}"
    assert five[last].isna().all() and five[f"{last}_feature"].isna().all() and five[f"{last}_points"].isna().all()


@pytest.mark.parametrize("method", ["auto", "lightgbm"])
def test_no_rows_give_an_empty_table(model, rows, method):
    empty = explain.reason_codes(model, rows.head(0), "churn", method=method)
    assert len(empty) == 0 and list(empty.columns[:5]) == [
        "reason_1", "reason_1_feature", "reason_1_value", "reason_1_log_odds", "reason_1_points"]
    _, base = explain.contributions(model, rows.head(0), method=method)
    assert base == pytest.approx(explain.contributions(model, rows.head(3), method=method)[1], abs=1e-9)


def test_values_read_in_plain_words():
    d = explain.describe_value
    assert d("recency_days", 94.2, 31.4) == "last purchase 94 days ago (usual gap 31 days)"
    assert d("recency_days", 94.2, np.nan) == "last purchase 94 days ago"
    assert d("recency_days", np.nan) == "never purchased"
    assert d("days_since_last_open", 0.3) == "last opened an email less than a day ago"
    assert d("days_since_last_open", None) == "never opened an email"
    assert d("unsubscribed", 1.0) == "unsubscribed from emails" and d("unsubscribed", False) == "subscribed to emails"
    assert d("email_consent", np.nan) == "email consent unknown"
    assert d("n_email_open_90d", 0) == "no email opens in the last 90 days"
    assert d("n_email_open_90d", 1) == "1 email open in the last 90 days"
    assert d("n_purchase_30d", 3) == "3 purchases in the last 30 days"
    assert d("n_categories_365d", 2) == "bought from 2 categories in the last 365 days"
    assert d("spend_365d", 1234.4) == "spent 1,234 in the last 365 days"
    assert d("open_rate", 0.125) == "opens 12% of emails"
    assert d("country", "DE") == "country is DE" and d("country", None) == "country unknown"
    # sends since the last open count from the first send when nothing was ever opened (the last
    # open's days missing): "54 emails since the last open" was false for 1,216 of 2,890 such reasons
    assert d("sends_since_last_open", 12, 40.2) == "12 emails unopened in a row (last open 40 days ago)"
    assert d("sends_since_last_open", 54, np.nan) == "never opened any of 54 emails"
    assert d("sends_since_last_open", 0, 3.0) == "opened the latest email"
    assert d("sends_since_last_open", 0, None) == "never emailed"
    # without the last open at hand (no input of the model), only what holds either way
    assert d("sends_since_last_open", 54) == "54 emails unopened in a row"
    assert d("sends_since_last_open", 0) == "no unopened emails"
    # a trend is (last 30 days + 1) / (the 30 before + 1): 0 against 2 read "at 0.3× the 30 days before"
    assert d("purchase_trend_30d", 1 / 3) == ("fewer purchases in the last 30 days than in the 30 before "
                                             "(trend 0.33 = (last + 1) / (before + 1))")
    assert d("purchase_trend_30d", 1.0) == "as many purchases in the last 30 days as in the 30 before"
    assert d("open_trend_30d", 4.0).startswith("more email opens in the last 30 days than in the 30 before (trend 4 ")


def test_amounts_carry_the_projects_currency(model, rows):
    """A reason read "spent 66 in total" in every shop; with ``currency:`` set it says in what."""
    d = explain.describe_value
    assert d("spend_365d", 1234.4, currency="€") == "spent €1,234 in the last 365 days"
    assert d("monetary_mean", 7.5, currency="EUR") == "average order 7.50 EUR"
    assert d("refund_amount", 12.0, currency="$") == "refunds worth $12"
    assert d("spend_365d", 0.0, currency="€") == "no spend in the last 365 days"  # no amount, no mark
    assert d("recency_days", 9.0, currency="€") == "last purchase 9 days ago"  # days are not money
    assert explain.with_currency("-5", "£") == "-£5" and explain.with_currency("66", "") == "66"
    plain = explain.reason_codes(model, rows, "churn", k=5)
    marked = explain.reason_codes(model, rows, "churn", k=5, currency="€")
    spent = plain.reason_1_feature.eq("spend_365d") & (rows.spend_365d > 0)
    assert spent.sum() > 10
    assert (marked.reason_1[spent] == plain.reason_1[spent].str.replace("spent ", "spent €", n=1)).all()
    assert (marked.reason_1[~spent] == plain.reason_1[~spent]).all()


def test_reason_values_are_text_with_missing_empty(model, rows, reasons):
    for i in (1, 2, 3):
        for f, value in reasons[[f"reason_{i}_feature", f"reason_{i}_value"]].dropna(subset=[f"reason_{i}_feature"]).itertuples(index=False):
            if f in ("unsubscribed", "email_consent") and value is not None:
                assert value in ("true", "false")
    never = reasons[(reasons.reason_1_feature == "recency_days") & rows.recency_days.isna()]
    assert len(never) and never.reason_1_value.isna().all() and never.reason_1.str.startswith("never purchased").all()


def test_every_documented_feature_has_words():
    """Each column in features/customer_features.md reads as words, not "<feature> = <value>"."""
    doc = (REPO / "features" / "customer_features.md").read_text()
    names = []
    for cell, group in re.findall(r"^\| (`[^|]+) \| (\w+) \|", doc, flags=re.M):
        if group in ("key", "profile"):
            continue
        for column in re.findall(r"`([^`]+)`", cell):
            names += [column.replace("<role>", role).replace("<w>", "30") for role in ("purchase", "page_view", "email_open")]
    assert len(set(names)) > 30
    assert explain.describe_value("some_col", 3.0) == "some col is 3"  # the fallback, which no catalog column may get
    generic = [n for n in set(names) if explain.describe_value(n, 3.0) == f"{n.replace('_', ' ')} is 3"]
    assert not generic, generic
    # and a short name for plots, tables and the card, with the column beside it
    unnamed = [n for n in set(names) if explain.labelled(n) == n]
    assert not unnamed, unnamed
    assert explain.labelled("n_page_view_365d") == "page views, last 365 days (n_page_view_365d)"
    assert explain.labelled("spend_30d") == "spend, last 30 days (spend_30d)"
    assert explain.labelled("country") == "country"  # an attribute is its own name


def test_probability_points_are_leave_one_out_on_the_calibrated_scale(model, rows):
    values, base = explain.contributions(model, rows.head(20))
    points = explain.probability_points(model, values, base)
    p = model.predict(rows.head(20))
    j = model.features_.index("recency_days")
    without = model.probability_from_raw(model.decision_function(rows.head(20)) - values.iloc[:, j].to_numpy())
    np.testing.assert_allclose(points.iloc[:, j].to_numpy(), 100 * (p - without), atol=1e-9)


def test_global_artifacts_are_written(model, rows, tmp_path):
    arts = explain.global_artifacts(model, rows, tmp_path, "test model", sample=500, top=2)
    assert {"plots/shap_beeswarm.png", "plots/shap_bar.png", "shap/mean_abs_shap.csv"} <= set(arts)
    dependence = [k for k in arts if k.startswith("plots/shap_dependence_")]
    assert len(dependence) == 2
    for dest, path in arts.items():
        assert path.stat().st_size > 0
        if dest.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(arts["shap/mean_abs_shap.csv"])
    assert list(table.columns) == ["feature", "mean_abs_shap_log_odds", "mean_abs_points"]
    assert table.mean_abs_shap_log_odds.is_monotonic_decreasing and set(table.feature) == set(model.features_)
    assert table.feature.iloc[0] == "recency_days"  # the strongest signal in the data


def test_the_trees_say_whether_early_stopping_chose_them_or_the_ceiling_did():
    rng = np.random.default_rng(3)
    X, y = _customers(rng, 1500)
    Xv, yv = _customers(rng, 800)
    capped = PropensityModel(n_estimators=3, num_leaves=7, calibration="platt").fit(X, y, Xv, yv)
    assert capped.best_iteration_ == 3
    assert capped.trees_text().startswith("3 (the n_estimators ceiling, not early stopping: the validation loss still "
                                          "fell at the last tree")
    stopped = PropensityModel(n_estimators=2000, early_stopping_rounds=10, calibration="platt").fit(X, y, Xv, yv)
    assert stopped.best_iteration_ < 2000
    assert stopped.trees_text() == f"{stopped.best_iteration_} (early stopping on validation, of at most 2000)"
