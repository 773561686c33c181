"""Monitoring: drift of generated features, holdout lift, realized quality, and the generator's
drifted period and campaign treatment that make drift and lift real."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import Project
from features.asof import parse_as_of
from pipeline.config import load_config
from pipeline.jobs.features import build_features_job
from pipeline.monitoring.drift import DriftThresholds, drift_report
from pipeline.monitoring.lift import newcombe_difference, newcombe_p_value, ratio_interval, segment_lift
from pipeline.monitoring.quality import delong_interval, realized_quality
from pipeline.synthetic import apply_treatment, generate, write

BEFORE, AFTER = "2026-03-31", "2026-05-31"  # drift starts after BEFORE; seasons alike (Jan-Mar vs Mar-May)
KEY = ["monetary_mean", "n_email_open_30d", "acquisition_channel"]
THRESHOLDS = DriftThresholds(max_drift_share=0.1)


# ---------------------------------------------------------------- drift on generated features
@pytest.fixture(scope="module")
def shops(tmp_path_factory):
    """Features as of BEFORE and AFTER, for a shop whose behaviour drifts after BEFORE and one that does not."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for var in ("DYNSEG_WORKSPACE", "DYNSEG_PROFILE", "MLFLOW_TRACKING_URI"):
            mp.delenv(var, raising=False)
        for name, drift in (("steady", 0.0), ("drifted", 1.0)):
            p = Project(tmp_path_factory.mktemp(name) / "proj")
            mp.setenv("DYNSEG_PROJECT", str(p.root))
            shop = generate(3000, seed=5, end=AFTER, years=1.5, drift_from=BEFORE, drift=drift)
            write(shop, p.workspace / "data")
            cfg = load_config(p.root)
            out[name] = {"shop": shop, **{cut: build_features_job(cfg, parse_as_of(cut)).frame for cut in (BEFORE, AFTER)}}
    return out


def _columns(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    cols = [c for c in frame.columns if c not in ("customer_id", "as_of")]
    numeric = [c for c in cols if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    return numeric, [c for c in cols if c not in numeric]


def _drift(shop: dict):
    numeric, categorical = _columns(shop[BEFORE])
    return drift_report(shop[BEFORE], shop[AFTER], numeric, categorical, KEY, THRESHOLDS)


def test_drift_is_detected_on_a_shifted_period(shops, tmp_path):
    result = _drift(shops["drifted"])
    assert result.alarm
    assert result.drift_share > THRESHOLDS.max_drift_share
    assert set(KEY) <= set(result.drifted)
    # the most drifted column first (catalog order buried a column 30 times over its threshold)
    rows = result.columns.set_index("column")
    dist = [c for c in result.drifted if rows.at[c, "score_kind"] == "distance"]
    ratios = [rows.at[c, "score"] / rows.at[c, "threshold"] for c in dist]
    assert len(dist) > 2 and ratios == sorted(ratios, reverse=True), list(zip(dist, ratios))
    # the share to a tenth of a percent ("share 0.30 > max_drift_share 0.30" read as a contradiction)
    said = next(r for r in result.reasons if "max_drift_share" in r)
    assert (f"{len(result.drifted)} of {len(result.columns)} columns drifted (share {result.drift_share:.1%}, over "
            f"max_drift_share {THRESHOLDS.max_drift_share:.1%})") in said, said
    assert {r.split("'")[1] for r in result.reasons if r.startswith("key column")} == set(KEY)
    # every declared column was compared, including the pandas nullable ones (email_consent: True/False/None)
    assert len(result.columns) == len(shops["drifted"][BEFORE].columns) - 2
    assert "email_consent" in set(result.columns["column"])

    paths = result.save(tmp_path / "reports")
    summary = json.loads(paths["json"].read_text())
    assert summary["alarm"] and summary["drifted_columns"] == result.drifted
    assert summary["drift_share"] == pytest.approx(result.drift_share)
    by_column = {c["column"]: c for c in summary["columns"]}
    assert by_column["monetary_mean"]["drifted"] and by_column["monetary_mean"]["method"]
    assert "<html" in paths["html"].read_text()[:2000].lower()
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["drift.html", "drift.json"]  # no temp files


def test_no_drift_alarm_between_two_cutoffs_of_a_steady_shop(shops):
    result = _drift(shops["steady"])
    assert not result.alarm, result.reasons
    assert result.drift_share <= THRESHOLDS.max_drift_share
    assert not set(KEY) & set(result.drifted)


def test_drift_declares_types_so_nullable_and_empty_columns_are_judged():
    rng = np.random.default_rng(0)
    n = 2000

    def frame(shift: float, empty: bool) -> pd.DataFrame:
        return pd.DataFrame({
            "visits": pd.array(rng.poisson(2 + 3 * shift, n), dtype="Int64"),  # nullable int
            "flag": pd.array(rng.random(n) < 0.2 + 0.5 * shift, dtype="boolean"),
            "steady": rng.normal(0, 1, n),
            "gone": np.full(n, np.nan) if empty else rng.random(n),
        })

    result = drift_report(frame(0, False), frame(1, True), ["visits", "steady", "gone"], ["flag"], ["steady"],
                          DriftThresholds(max_drift_share=0.9))
    table = result.columns.set_index("column")
    assert table.loc["visits", "drifted"] and table.loc["flag", "drifted"] and not table.loc["steady", "drifted"]
    assert table.loc["gone", "drifted"] and table.loc["gone", "note"] == "no values in current"
    assert result.drift_share == 0.75 and not result.alarm  # 0.75 <= 0.9, and the key column held

    with pytest.raises(ValueError, match=r"current lacks declared columns \['steady'\]"):
        drift_report(frame(0, False), frame(0, False).drop(columns="steady"), ["steady"], [], [], THRESHOLDS)
    with pytest.raises(ValueError, match="key columns"):
        drift_report(frame(0, False), frame(0, False), ["steady"], [], ["score"], THRESHOLDS)


def test_a_value_the_small_reference_never_had_is_no_drift_by_itself():
    """With up to 1,000 reference rows Evidently tests a category, or a count with 3 to 5 values,
    by chi-square, which expects 0 rows of a value the reference never had: 2 current rows of 1,004
    with 4 refunds (the reference's most was 3) gave p = 0, a drifted column and a divide-by-zero
    warning on every monitor run. Such columns take the Jensen-Shannon distance instead, and say
    so; a new value that is really common still drifts."""
    import warnings

    rng = np.random.default_rng(1)

    def frame(n: int, new: int) -> pd.DataFrame:
        f = pd.DataFrame({"n_refund": rng.choice([0, 1, 2, 3], n, p=[0.8, 0.15, 0.04, 0.01]).astype(float),
                          "channel": rng.choice(["email", "paid", "organic"], n)})
        f.loc[: new - 1, ["n_refund", "channel"]] = [4.0, "influencer"]
        return f

    reference = frame(858, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = drift_report(reference, frame(1004, 2), ["n_refund"], ["channel"], [], THRESHOLDS)
    table = result.columns.set_index("column")
    for c, shown in (("n_refund", "(4)"), ("channel", "('influencer')")):
        assert not table.loc[c, "drifted"], table.loc[c].to_dict()
        assert table.loc[c, "method"] == "Jensen-Shannon distance"
        assert f"2 current rows with a value the reference never had {shown}" in table.loc[c, "note"]
    result = drift_report(reference, frame(1004, 300), ["n_refund"], ["channel"], [], THRESHOLDS)
    assert set(result.drifted) == {"n_refund", "channel"}
    # same values on both sides: Evidently's own choice (chi-square) stays
    result = drift_report(reference, frame(1004, 0), ["n_refund"], ["channel"], [], THRESHOLDS)
    assert set(result.columns["method"]) == {"chi-square p_value"} and not result.drifted


# ---------------------------------------------------------------- holdout lift
@pytest.mark.parametrize("method", ["ks", "wasserstein", "chisquare", "z", "psi"])
def test_a_configured_method_tests_the_columns_it_can_and_evidently_picks_for_the_others(method):
    """ks and wasserstein weigh only numbers, chi-square and z only categories: a method given for
    every column failed every monitor run on features holding both kinds ("Stattest ks isn't
    applicable to feature of type cat"). The method, and its threshold, now go to the kind it tests;
    the other kind takes Evidently's choice, including the swap for a value the reference never had."""
    rng = np.random.default_rng(2)

    def frame(n: int, shift: float) -> pd.DataFrame:
        f = pd.DataFrame({"spend": rng.gamma(2 + 2 * shift, 30, n),
                          "steady": rng.normal(0, 1, n),
                          "vip": rng.random(n) < 0.2 + 0.4 * shift,
                          "channel": rng.choice(["email", "paid", "organic"], n,
                                                p=[0.5 - 0.3 * shift, 0.3, 0.2 + 0.3 * shift])})
        return f.astype({"vip": str})

    reference, current = frame(900, 0), frame(1000, 1)
    current.loc[:1, "channel"] = "influencer"  # new to the small reference: Jensen-Shannon if Evidently picks
    thresholds = DriftThresholds(max_drift_share=0.9, method=method, column_threshold=0.01 if method == "ks" else None)
    result = drift_report(reference, current, ["spend", "steady"], ["vip", "channel"], [], thresholds)
    table = result.columns.set_index("column")
    assert set(result.drifted) == {"spend", "vip", "channel"}, table.to_dict()
    methods = table["method"].str.lower()
    numeric_own = method in ("ks", "wasserstein", "psi")
    categorical_own = method in ("chisquare", "z", "psi")
    name = {"ks": "k-s", "wasserstein": "wasserstein", "chisquare": "chi-square", "z": "z-test", "psi": "psi"}[method]
    assert all(name in m for m in methods[["spend", "steady"]]) == numeric_own, methods.to_dict()
    assert all(name in m for m in methods[["vip", "channel"]]) == categorical_own, methods.to_dict()
    p_value = method in ("ks", "chisquare", "z")
    own = [*(["spend", "steady"] if numeric_own else []), *(["vip", "channel"] if categorical_own else [])]
    assert (table.loc[own, "score_kind"] == ("p_value" if p_value else "distance")).all()
    if method == "ks":  # its threshold went with it; the categories kept their own
        assert (table.loc[["spend", "steady"], "threshold"] == 0.01).all()
        assert (table.loc[["vip", "channel"], "threshold"] != 0.01).all()
    assert ("reference never had" in table.loc["channel", "note"]) == (not categorical_own)


def _members(rng, segment: str, n_treated: int, rate_treated: float, n_holdout: int, rate_holdout: float):
    converted = np.r_[rng.random(n_treated) < rate_treated, rng.random(n_holdout) < rate_holdout]
    return pd.DataFrame({
        "segment": segment, "holdout": np.r_[np.zeros(n_treated, bool), np.ones(n_holdout, bool)],
        "converted": converted.astype(int), "revenue": np.where(converted, 60.0, 0.0),
    })


def test_lift_recovers_a_simulated_effect_within_its_interval():
    rng = np.random.default_rng(3)
    row = segment_lift(_members(rng, "likely_buyers", 20_000, 0.13, 5_000, 0.10)).iloc[0]
    assert (row.n_treated, row.n_holdout) == (20_000, 5_000)
    assert row.abs_lift_low < 0.03 < row.abs_lift_high
    assert row.rel_lift_low < 0.3 < row.rel_lift_high
    assert row.p_value < 0.001 and row.conclusive
    assert row.verdict == "treated converted more (significant)"
    assert row.revenue_per_member_treated == pytest.approx(60 * row.conversion_treated)
    assert 0.01 < row.mde < 0.03  # 2.8 * sqrt(0.1 * 0.9 * (1/20000 + 1/5000)) = 0.0133


def test_lift_intervals_cover_the_true_effect_about_95_percent_of_the_time():
    rng = np.random.default_rng(4)
    frame = pd.concat([_members(rng, f"s{k:03d}", 2_000, 0.13, 500, 0.10) for k in range(300)])
    table = segment_lift(frame)
    covered = ((table.abs_lift_low < 0.03) & (0.03 < table.abs_lift_high)).mean()
    assert 0.91 < covered < 0.99, covered


def test_lift_says_inconclusive_on_a_tiny_holdout_and_no_difference_when_there_is_none():
    rng = np.random.default_rng(5)
    frame = pd.concat([_members(rng, "tiny", 3_000, 0.13, 12, 0.10), _members(rng, "same", 5_000, 0.10, 5_000, 0.10),
                       _members(rng, "unheld", 500, 0.1, 0, 0.1)])
    table = segment_lift(frame).set_index("segment")
    tiny = table.loc["tiny"]
    assert not tiny.conclusive
    assert tiny.verdict.startswith("inconclusive: holdout of 12 is too small; the smallest effect this could detect is ")
    assert tiny.verdict.endswith(f"{100 * tiny.mde:.1f} points") and tiny.mde > 0.2
    assert table.loc["same", "verdict"] == "no significant difference" and table.loc["same", "conclusive"]
    assert table.loc["unheld", "verdict"] == "inconclusive: no holdout"
    # a configured max_mde makes a holdout that is large enough by count still too small
    strict = segment_lift(frame, max_mde=0.005).set_index("segment")
    assert strict.loc["same", "verdict"].startswith("inconclusive: holdout of 5000 is too small for effects under "
                                                    "max_mde (0.5 points); the smallest effect")


def test_a_significant_difference_on_a_small_holdout_is_a_conclusion():
    # 25 held out, none converted; 60 % of the treated did: even the exact test is beyond doubt, so
    # the holdout's size (under min_holdout) widens the interval but does not void the result.
    frame = pd.DataFrame({"segment": "s", "holdout": [True] * 25 + [False] * 500,
                          "converted": [0] * 25 + [1] * 300 + [0] * 200, "revenue": 0.0})
    row = segment_lift(frame, min_holdout=30).set_index("segment").loc["s"]
    assert row.p_value < 1e-6 and row.conclusive and row.abs_lift_low > 0.4
    assert row.verdict == "treated converted more (significant); the holdout of 25 is small, so the interval is wide"
    # large enough by count, but with few conversions expected: the exact test decided, and it says so
    # (it said "the holdout of 40 is small" of a holdout above min_holdout)
    frame = pd.DataFrame({"segment": "s", "holdout": [True] * 40 + [False] * 400,
                          "converted": [0] * 40 + [1] * 40 + [0] * 360, "revenue": 0.0})
    row = segment_lift(frame, min_holdout=30).set_index("segment").loc["s"]
    assert row.verdict == ("treated converted more (significant); the holdout expects 3.6 conversions (exact test), "
                           "so the interval is wide"), row.verdict


def test_a_campaign_that_lowered_conversion_is_an_alarm():
    """A significantly negative lift (a win-back mail that drove customers away) was one line among
    the verdicts, exit 0: a scheduler saw nothing. It is an alarm (exit 3) unless alarm_on_harm is off;
    a positive or inconclusive one is not."""
    from pipeline.jobs.monitor import LiftResult

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"segment": np.repeat(["harm", "good", "tiny"], [4000, 4000, 40]),
                          "holdout": np.r_[rng.random(4000) < 0.5, rng.random(4000) < 0.5, rng.random(40) < 0.5]})
    rate = np.where(frame.segment == "harm", np.where(frame.holdout, 0.30, 0.20),
                    np.where(frame.segment == "good", np.where(frame.holdout, 0.20, 0.30), 0.2))
    frame["converted"], frame["revenue"] = (rng.random(len(frame)) < rate).astype(int), 0.0
    lift = segment_lift(frame)
    result = LiftResult("r", parse_as_of("2026-08-31"), lift, {}, {}, None)
    assert result.alarm and len(result.reasons) == 1, result.reasons
    assert result.reasons[0].startswith("harm: the campaign lowered conversion: -") and "against its holdout" in result.reasons[0]
    assert not LiftResult("r", parse_as_of("2026-08-31"), lift, {}, {}, None, alarm_on_harm=False).alarm
    assert not LiftResult("r", parse_as_of("2026-08-31"), lift[lift.segment != "harm"], {}, {}, None).alarm
    # one of many segments tested at p 0.01 is no alarm: the harm must hold across all of them (Holm)
    many = lift.assign(p_value=0.01, p_adjusted=0.07)
    assert not [r for r in LiftResult("r", parse_as_of("2026-08-31"), many, {}, {}, None).reasons if "harm" in r]


def test_a_verdict_the_holm_adjustment_does_not_keep_says_so():
    """Three segments: one clear lift, two at p 0.02-0.03 whose Holm p is about 0.06. The verdict
    column read "treated converted more (significant)" beside adjusted p-values above 0.05."""
    frames = []
    for seg, n, x_t, x_h in (("clear", 3000, 900, 600), ("weak_a", 700, 189, 154), ("weak_b", 700, 189, 154)):
        frames.append(pd.DataFrame({"segment": seg, "holdout": np.repeat([False, True], n), "revenue": 0.0,
                                    "converted": np.r_[np.arange(n) < x_t, np.arange(n) < x_h].astype(int)}))
    lift = segment_lift(pd.concat(frames, ignore_index=True)).set_index("segment")
    kept = lift[lift.p_adjusted < 0.05]
    lost = lift[(lift.p_value < 0.05) & (lift.p_adjusted >= 0.05)]
    assert len(kept) and len(lost), lift[["p_value", "p_adjusted"]]
    assert all(v == "treated converted more (significant)" for v in kept.verdict), kept.verdict
    for seg, r in lost.iterrows():
        assert r.verdict == (f"treated converted more (significant); not significant once adjusted for the 3 "
                             f"segments tested (Holm p {r.p_adjusted:.3f}): read it as a lead to confirm"), r.verdict


def test_holm_adjusts_the_p_values_of_every_segment_tested():
    from pipeline.monitoring.lift import holm

    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm(np.array([0.5, np.nan, 0.2])), [0.5, np.nan, 0.4])  # NaN: not a test
    assert holm(np.array([0.9, 0.8])).max() <= 1.0


def test_the_p_value_and_the_interval_never_disagree():
    # p < alpha exactly when the interval at 1 - alpha excludes zero, on small and large groups alike;
    # 53/100 against 2/10 is where a z-test (p 0.046) and Fisher's exact test (p 0.093) part ways
    rng = np.random.default_rng(11)
    cases = [(53, 100, 2, 10), (2, 10, 53, 100), (7, 30, 0, 12), (40, 60, 12, 30)]
    cases += [(int(rng.integers(0, n1 + 1)), n1, int(rng.integers(0, n2 + 1)), n2)
              for n1, n2 in rng.integers(5, 400, size=(400, 2))]
    cases += [(117, 347, 1, 16), (0, 40, 6, 30), (30, 40, 1, 200)]  # a delta-method ratio interval disagreed on the first
    for x1, n1, x2, n2 in cases:
        p = newcombe_p_value(x1, n1, x2, n2)
        for alpha in (0.01, 0.05, 0.1):
            _, low, high = newcombe_difference(x1, n1, x2, n2, alpha)
            assert (p < alpha) == (low > 0 or high < 0), (x1, n1, x2, n2, alpha, p, low, high)
            if x2:  # the relative lift's interval excludes 0 exactly when the absolute one does
                rel, rel_low, rel_high = ratio_interval(x1, n1, x2, n2, alpha)
                assert rel_low <= rel <= rel_high and (rel_low > 0 or rel_high < 0) == (low > 0 or high < 0)
    assert newcombe_p_value(53, 100, 2, 10) == pytest.approx(0.0463, abs=1e-4)
    assert newcombe_p_value(5, 10, 5, 10) == 1.0 and np.isnan(newcombe_p_value(1, 10, 0, 0))


def test_without_an_effect_about_5_percent_of_segments_are_called_significant():
    rng = np.random.default_rng(12)
    frame = pd.concat([_members(rng, f"s{k:03d}", 1_500, 0.08, 150, 0.08) for k in range(400)])
    table = segment_lift(frame, min_holdout=0, min_expected_conversions=0)
    rate = (table.p_value < 0.05).mean()
    assert 0.02 < rate < 0.08, rate
    assert ((table.p_value < 0.05) == table.verdict.str.contains("(significant)", regex=False)).all()


def test_lift_refuses_a_frame_that_is_not_one_row_per_member():
    with pytest.raises(ValueError, match=r"lacks columns \['revenue'\]"):
        segment_lift(pd.DataFrame({"segment": ["a"], "holdout": [True], "converted": [1]}))
    with pytest.raises(ValueError, match="'converted' has 1 values that are not 0/1"):
        segment_lift(pd.DataFrame({"segment": ["a", "a"], "holdout": [True, False], "converted": [1, 2],
                                   "revenue": [1.0, 0.0]}))


# ---------------------------------------------------------------- the generator's campaign treatment
START, HORIZON = "2026-04-30", 30


def _window(events: pd.DataFrame) -> pd.DataFrame:
    t0 = pd.Timestamp(parse_as_of(START))
    orders = events[events["event_type"] == "order_completed"]
    return orders[(orders["ts"] >= t0) & (orders["ts"] < t0 + pd.Timedelta(days=HORIZON))]


def _in(values: pd.Series, others: pd.Series) -> np.ndarray:
    return np.isin(values.to_numpy(str), others.to_numpy(str))


@pytest.fixture(scope="module")
def campaign(shops):
    """A segment of every customer known at START; 20 % held out; the treatment converts 30 % of treated non-buyers."""
    shop = shops["steady"]["shop"]
    known = shop.customers.loc[shop.customers["signup_at"] < pd.Timestamp(parse_as_of(START)), "customer_id"]
    holdout = np.random.default_rng(8).random(len(known)) < 0.2
    treated = known[~holdout].to_numpy()
    after = apply_treatment(shop.events, treated, START, HORIZON, uplift=0.3, seed=2)
    return shop.events, after, known.to_numpy(), holdout, treated


def test_treatment_adds_orders_only_for_treated_customers_within_the_window(campaign):
    before, after, _, _, treated = campaign
    added = after[~_in(after["event_id"], before["event_id"])]
    assert len(added) > 0 and set(added["customer_id"]) <= set(treated)
    t0 = pd.Timestamp(parse_as_of(START))
    assert added["ts"].min() >= t0 and added["ts"].max() < t0 + pd.Timedelta(days=HORIZON)
    assert set(added["event_type"]) <= {"order_completed", "page_viewed", "cart_added"}
    orders = added[added["event_type"] == "order_completed"]
    assert (orders["amount"] > 0).all() and orders["category"].notna().all() and orders["channel"].notna().all()
    assert orders["customer_id"].is_unique  # at most one extra order each ...
    assert not orders["customer_id"].isin(_window(before)["customer_id"]).any()  # ... and only for non-buyers
    non_buyers = len(set(treated) - set(_window(before)["customer_id"]))
    assert 0.25 < len(orders) / non_buyers < 0.35  # uplift 0.3
    # the original events are untouched, the frame keeps its contract
    kept = after[_in(after["event_id"], before["event_id"])].sort_values("event_id", ignore_index=True)
    pd.testing.assert_frame_equal(kept, before.sort_values("event_id", ignore_index=True))
    assert after["ts"].is_monotonic_increasing and after["event_id"].is_unique
    assert after.dtypes.to_dict() == before.dtypes.to_dict()


def test_treatment_is_deterministic_and_refuses_to_run_twice_or_past_the_data(campaign):
    before, after, _, _, treated = campaign
    again = apply_treatment(before, treated[::-1], START, HORIZON, uplift=0.3, seed=2)  # order of ids is irrelevant
    pd.testing.assert_frame_equal(again, after)
    other = apply_treatment(before, treated, START, HORIZON, uplift=0.3, seed=3)
    assert not other.equals(after)
    with pytest.raises(ValueError, match="was applied to these events before"):
        apply_treatment(after, treated, START, HORIZON, uplift=0.3, seed=2)
    with pytest.raises(ValueError, match="ends after the newest event"):
        apply_treatment(before, treated, AFTER, HORIZON, uplift=0.3)


def test_lift_recovers_the_generated_campaign_effect(campaign):
    _, after, known, holdout, _ = campaign
    window = _window(after)
    members = pd.DataFrame({"segment": "everyone", "customer_id": known, "holdout": holdout})
    members["converted"] = members["customer_id"].isin(window["customer_id"]).astype(int)
    members["revenue"] = members["customer_id"].map(window.groupby("customer_id")["amount"].sum()).fillna(0.0)
    row = segment_lift(members).iloc[0]
    true_lift = 0.3 * (1 - row.conversion_holdout)  # additive uplift among non-buyers
    assert row.abs_lift_low < true_lift < row.abs_lift_high
    assert row.verdict == "treated converted more (significant)"
    assert row.revenue_per_member_treated > row.revenue_per_member_holdout


# ---------------------------------------------------------------- the generator's drifted period
def test_drifted_period_moves_behaviour_only_after_drift_from(shops):
    steady, drifted = shops["steady"]["shop"], shops["drifted"]["shop"]
    t0 = pd.Timestamp(parse_as_of(BEFORE))

    def rates(shop, after: bool) -> dict:
        ev = shop.events[(shop.events["ts"] >= t0) == after]
        count = ev["event_type"].value_counts()
        orders = ev[ev["event_type"] == "order_completed"]
        return {"open_rate": count["email_opened"] / count["email_sent"], "basket": orders["amount"].median(),
                "orders_per_send": count["order_completed"] / count["email_sent"]}

    pre_s, pre_d, post_s, post_d = rates(steady, False), rates(drifted, False), rates(steady, True), rates(drifted, True)
    for k in pre_s:  # before drift_from: the same process
        assert pre_d[k] == pytest.approx(pre_s[k], rel=0.1), k
    assert post_d["open_rate"] < 0.7 * post_s["open_rate"]
    assert post_d["basket"] > 1.4 * post_s["basket"]
    assert post_d["orders_per_send"] < 0.85 * post_s["orders_per_send"]
    cu = drifted.customers
    influencer = cu["acquisition_channel"] == "influencer"
    assert influencer[cu["signup_at"] >= t0].mean() > 0.4
    # before: only a few linked guest accounts, whose sign-up the generator moves after drawing channels
    assert influencer[cu["signup_at"] < t0].mean() < 0.01
    assert "influencer" not in set(steady.customers["acquisition_channel"])


def test_drift_arguments_are_checked_and_zero_drift_changes_nothing():
    plain = generate(300, seed=1, end=AFTER)
    zero = generate(300, seed=1, end=AFTER, drift_from=BEFORE, drift=0.0)
    pd.testing.assert_frame_equal(plain.events, zero.events)
    with pytest.raises(ValueError, match="needs drift_from"):
        generate(300, seed=1, end=AFTER, drift=0.5)
    with pytest.raises(ValueError, match="between 0"):
        generate(300, seed=1, end=AFTER, drift_from=BEFORE, drift=1.5)
    with pytest.raises(ValueError, match="outside the simulated history"):
        generate(300, seed=1, end=AFTER, drift_from="2027-01-01", drift=0.5)


# ---------------------------------------------------------------- realized quality
def test_realized_quality_on_a_case_computed_by_hand():
    scores = np.array([0.1, 0.4, 0.35, 0.8, np.nan])
    outcomes = np.array([0, 0, 1, 1, 1])
    result = realized_quality(scores, outcomes, bands=np.array(["low", "low", "high", "high", None]),
                              promised={"roc_auc": 0.9, "brier": 0.1}, auc_floor=0.7)
    m = result.metrics
    assert result.n == 4 and result.n_positive == 2 and result.n_unscored == 1  # the unscored row is left out
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs are ordered right
    assert m["brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)
    assert m["mean_predicted"] == pytest.approx(0.4125) and m["realized_rate"] == 0.5
    # DeLong: components (1/2, 1) for the positives, (1, 1/2) for the negatives: var = 0.125/2 + 0.125/2
    assert m["roc_auc_low"] == pytest.approx(0.75 - 1.959964 * np.sqrt(0.125), abs=1e-5) and m["roc_auc_high"] == 1.0
    cmp = result.comparison.set_index("metric")
    assert cmp.loc["roc_auc", "difference"] == pytest.approx(-0.15)
    assert cmp.loc["brier", "realized"] == pytest.approx(m["brier"])
    bands = result.calibration_bands.set_index("band")
    assert list(bands.index) == ["high", "low"]
    assert bands.loc["high", "predicted"] == pytest.approx(0.575) and bands.loc["high", "realized"] == 1.0
    assert not result.alarm  # 0.75 >= 0.7
    assert json.loads(json.dumps(result.summary()))["metrics"]["roc_auc"] == pytest.approx(0.75)


def test_realized_quality_leaves_treated_customers_out_and_shows_them_by_band():
    # the last two customers were treated: their outcomes carry the campaign's effect
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.7])
    outcomes = np.array([0, 0, 1, 1, 1, 1])
    bands = np.array(["low", "low", "high", "high", "low", "high"])
    treated = np.array([False, False, False, False, True, True])
    result = realized_quality(scores, outcomes, bands=bands, treated=treated)
    alone = realized_quality(scores[:4], outcomes[:4], bands=bands[:4])
    assert result.n == 4 and result.n_treated == 2 and result.n_unscored == 0
    assert result.metrics == alone.metrics  # graded exactly as if the treated were not there
    b = result.calibration_bands.set_index("band")
    assert b.loc["high", "customers"] == 2 and b.loc["high", "realized"] == 1.0
    assert b.loc["low", "treated"] == 1 and b.loc["low", "predicted_treated"] == pytest.approx(0.3)
    assert b.loc["low", "realized_treated"] == 1.0
    assert "2 customers a campaign treated are left out" in result.notes[0]
    assert json.loads(json.dumps(result.summary()))["n_treated"] == 2
    with pytest.raises(ValueError, match="all 2 scored customers were treated"):
        realized_quality(scores[4:], outcomes[4:], treated=treated[4:])
    with pytest.raises(ValueError, match="3 treated flags for 6 scores"):
        realized_quality(scores, outcomes, treated=treated[:3])


def test_decay_alarm_when_realized_auc_falls_below_the_floor():
    rng = np.random.default_rng(6)
    y = (rng.random(20_000) < 0.1).astype(int)
    p = np.clip(0.1 + 0.05 * y + rng.normal(0, 0.05, y.size), 0.001, 0.999)
    result = realized_quality(p, y, auc_floor=0.8)
    assert result.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert result.metrics["roc_auc"] < 0.8 and result.alarm
    assert "below the floor 0.800" in result.reasons[0]
    assert len(result.calibration_deciles) == 10
    assert not realized_quality(p, y, auc_floor=0.6).alarm and not realized_quality(p, y).alarm


def test_delong_interval_agrees_with_a_bootstrap():
    rng = np.random.default_rng(7)
    y = (rng.random(4_000) < 0.2).astype(int)
    s = rng.normal(y * 1.0, 1.0)
    low, high = delong_interval(y, s)
    boot = [roc_auc_score(y[i], s[i]) for i in (rng.integers(0, y.size, y.size) for _ in range(200))]
    b_low, b_high = np.percentile(boot, [2.5, 97.5])
    assert abs(low - b_low) < 0.006 and abs(high - b_high) < 0.006


def test_realized_quality_refuses_bad_outcomes_and_notes_a_single_class():
    with pytest.raises(ValueError, match="outcomes must be 0/1"):
        realized_quality(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="promised metrics"):
        realized_quality(np.array([0.1, 0.9]), np.array([0, 1]), promised={"auc": 0.8})
    one = realized_quality(np.array([0.1, 0.2, 0.3]), np.array([1, 1, 1]), auc_floor=0.7)
    assert np.isnan(one.metrics["roc_auc"]) and not one.alarm and "undefined" in one.notes[0]


def test_on_a_tiny_holdout_no_effect_reads_significant_no_more_often_than_alpha():
    """The Newcombe p-value alone, on 42 treated against 2 held out at a 10 % rate with no effect,
    read significant 7.9 % of the time at alpha 0.05 (summed exactly over every outcome), and a
    campaign that helped (9/42 against 2/2) raised the harm alarm. Under min_holdout Fisher's exact
    test must agree: the error rate is at most alpha, and that campaign is inconclusive."""
    from scipy import stats

    def false_positive_rate(n_t: int, n_h: int, rate: float) -> float:
        total = 0.0
        for x_t in range(n_t + 1):
            for x_h in range(n_h + 1):
                frame = pd.DataFrame({"segment": "s", "holdout": [False] * n_t + [True] * n_h,
                                      "converted": [1] * x_t + [0] * (n_t - x_t) + [1] * x_h + [0] * (n_h - x_h),
                                      "revenue": 0.0})
                row = segment_lift(frame).iloc[0]
                if row.conclusive and row.verdict.startswith("treated converted"):
                    total += stats.binom.pmf(x_t, n_t, rate) * stats.binom.pmf(x_h, n_h, rate)
        return total

    assert false_positive_rate(42, 2, 0.1) <= 0.05
    assert false_positive_rate(42, 2, 0.3) <= 0.05
    helped = pd.DataFrame({"segment": "s", "holdout": [False] * 42 + [True] * 2,
                           "converted": [1] * 9 + [0] * 33 + [1, 1], "revenue": 0.0})
    row = segment_lift(helped).iloc[0]
    assert row.abs_lift_high < 0  # the Newcombe interval alone says "lowered conversion"
    assert not row.conclusive and row.p_value == pytest.approx(stats.fisher_exact([[9, 33], [2, 0]]).pvalue)
    # and the verdict says why an interval that excludes zero is not a conclusion here
    assert (f"its interval excludes 0, but Fisher's exact test does not confirm it (p {row.p_value:.3f})"
            in row.verdict), row.verdict
