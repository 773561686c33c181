"""No leakage: features as of T see only ts < T; labels only [T, T + H). Proven on planted events."""

import re
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from features.customer_features import customer_features, known_customers
from features.engines.duckdb import DuckDBEngine
from features.labels import labels
from pipeline.config import load_config
from pipeline.jobs.data import load_validated
from pipeline.jobs.features import data_profile, feature_spec, label_spec
from pipeline.synthetic import generate, write

T = datetime(2026, 6, 1)
SEC = timedelta(seconds=1)


def _features_and_labels(project, as_of=T, target=None):
    cfg = load_config(project.root)
    data = load_validated(cfg, datetime(2027, 1, 1))
    eng = DuckDBEngine(data.con)
    profile = data_profile(cfg, data)
    feats = eng.execute(customer_features(eng.events(), eng.customers(), as_of, feature_spec(cfg), profile,
                                          consents=eng.consents()))
    feats = feats.sort_values("customer_id", ignore_index=True)
    if target is None:
        return feats
    lab = eng.execute(labels(known_customers(eng.events(), eng.customers(), as_of, profile), eng.events(), as_of,
                             label_spec(cfg, target)))
    return feats, dict(zip(lab.customer_id, lab.label))


def _ev(rows):
    df = pd.DataFrame(rows, columns=["customer_id", "event_type", "ts", "amount"])
    df.insert(0, "event_id", [f"e{i}" for i in range(len(df))])
    return df


PLANTED = _ev([
    # customer a: the same things just before, exactly at, and just after T
    ("a", "order_completed", T - timedelta(days=40), 10.0),
    ("a", "order_completed", T - SEC, 20.0),
    ("a", "order_completed", T, 400.0),
    ("a", "order_completed", T + SEC, 800.0),
    ("a", "email_sent", T - SEC, None), ("a", "email_sent", T, None), ("a", "email_sent", T + SEC, None),
    ("a", "email_opened", T - 2 * SEC, None), ("a", "email_opened", T, None),
    ("a", "email_clicked", T, None),
    ("a", "consent_granted", T - SEC, None), ("a", "consent_withdrawn", T, None),
    ("a", "unsubscribed", T + SEC, None),
    ("a", "order_refunded", T, 20.0),
    # customer b exists only from T on: not in the population at T
    ("b", "order_completed", T, 5.0), ("b", "page_viewed", T + SEC, None),
    # customer c: bought 10 days before T, next purchase exactly at T + 30d (outside [T, T+30d))
    ("c", "order_completed", T - timedelta(days=10), 7.0),
    ("c", "order_completed", T + timedelta(days=30), 9.0),
    # customer d: next purchase one second before the window closes
    ("d", "order_completed", T - timedelta(days=100), 7.0),
    ("d", "order_completed", T + timedelta(days=30) - SEC, 9.0),
])


def test_planted_events_at_the_cutoff(project):
    project.write_events(PLANTED)
    feats, purchase = _features_and_labels(project, target="purchase")
    assert list(feats.customer_id) == ["a", "c", "d"]  # b has nothing before T
    a = feats.set_index("customer_id").loc["a"]
    assert a.frequency == 2 and a.monetary_total == 30.0 and a.monetary_max == 20.0
    assert a.recency_days == pytest.approx(1 / 86400)
    assert a.mean_gap_days == pytest.approx(40 - 1 / 86400)
    assert a.n_purchase_7d == 1 and a.n_purchase_30d == 1 and a.n_purchase_90d == 2
    assert a.n_email_send == 1 and a.n_email_open == 1 and a.n_email_click == 0
    assert a.sends_since_last_open == 1  # the send at T-1s came after the open at T-2s
    assert a.days_since_last_open == pytest.approx(2 / 86400)
    assert pd.isna(a.days_since_last_click)
    assert a.email_consent == True  # noqa: E712 - the withdrawal at exactly T is not yet known
    assert a.unsubscribed == False  # noqa: E712
    assert a.n_refund == 0 and a.n_events == 5
    # labels look at [T, T + 30d): a purchase at exactly T counts, one at T + 30d does not
    assert purchase == {"a": 1, "c": 0, "d": 1}


def test_churn_population_and_window(project):
    project.write_events(PLANTED)
    _, churn = _features_and_labels(project, target="churn")
    # active = a purchase in the 180 days before T; churn = no purchase in [T, T + 60d)
    assert churn == {"a": 0, "c": 0, "d": 0}
    _, churn_late = _features_and_labels(project, as_of=T + timedelta(days=31), target="churn")
    # as of T+31d: a bought at T+1s (active, nothing after) -> churned; b likewise; c bought at T+30d
    assert churn_late == {"a": 1, "b": 1, "c": 1, "d": 1}


def test_profile_values_are_taken_as_of_the_cutoff(project):
    project.write_events(PLANTED)
    pd.DataFrame({
        "customer_id": ["a", "c", "d", "late"],
        "signup_at": [T - timedelta(days=50), T - timedelta(days=20), T - timedelta(days=200), T + SEC],
        "email_consent": [False, True, False, True],
        "consent_updated_at": [T + timedelta(days=3), T - timedelta(days=20), T - timedelta(days=5), T + SEC],
    }).to_parquet(project.data / "customers.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    feats = _features_and_labels(project).set_index("customer_id")
    assert "late" not in feats.index  # signs up after T
    assert feats.loc["a", "email_consent"] == True  # noqa: E712 - profile's decision is after T; event before T wins
    assert feats.loc["c", "email_consent"] == True  # noqa: E712
    assert feats.loc["d", "email_consent"] == False  # noqa: E712
    assert feats.loc["a", "days_since_signup"] == pytest.approx(50)
    assert feats.loc["a", "tenure_days"] == pytest.approx(50)


def test_events_at_or_after_the_cutoff_never_change_features(project):
    shop = generate(300, seed=21, end="2026-11-27")
    write(shop, project.data)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"},
                    identities={"format": "parquet", "path": "data/identities.parquet"})
    before = shop.events[shop.events.ts < T].reset_index(drop=True)
    before.to_parquet(project.data / "events.parquet")
    baseline = _features_and_labels(project)
    rng = np.random.default_rng(0)
    future = shop.events[shop.events.ts >= T].sample(frac=0.7, random_state=1)
    planted = before.sample(500, random_state=2).assign(
        ts=T + pd.to_timedelta(rng.integers(0, 86400 * 30, 500), unit="s"),
        event_id=[f"x{i}" for i in range(500)],
    )
    at_t = before.sample(50, random_state=3).assign(ts=pd.Timestamp(T), event_id=[f"t{i}" for i in range(50)])
    more = pd.concat([before, future, planted, at_t], ignore_index=True)
    more.to_parquet(project.data / "events.parquet")
    after = _features_and_labels(project)
    pd.testing.assert_frame_equal(baseline, after)
    assert len(more) > len(before) + 500


def test_an_aware_cutoff_is_converted_to_utc(project):
    from datetime import timezone

    project.write_events(PLANTED)
    naive = _features_and_labels(project, as_of=T)
    aware = _features_and_labels(project, as_of=(T + timedelta(hours=2)).replace(tzinfo=timezone(timedelta(hours=2))))
    pd.testing.assert_frame_equal(naive, aware)


def test_a_profile_change_after_the_cutoff_reaches_no_model_input(project):
    """The customers source holds consent as it is now. A change after T makes the profile's
    consent unknown as of T, so ``email_consent`` reads differently, and nothing else does: that
    is why it is not a model input (``exclude_features``), and every model input stays put."""
    from pipeline.jobs.train import model_inputs

    shop = generate(300, seed=21, end="2026-11-27")
    write(shop, project.data)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    baseline = _features_and_labels(project)
    customers = shop.customers.copy()
    known = customers.consent_updated_at < T
    customers.loc[known, "email_consent"] = ~customers.loc[known, "email_consent"].astype(bool)
    customers.loc[known, "consent_updated_at"] = pd.Timestamp(T + timedelta(days=10))
    customers.to_parquet(project.data / "customers.parquet")
    after = _features_and_labels(project)
    changed = baseline.email_consent.astype("string").fillna("null") != after.email_consent.astype("string").fillna("null")
    assert changed.sum() > 30, changed.sum()  # the leak the exclusion is for
    inputs = model_inputs(load_config(project.root), list(baseline.columns))
    assert "email_consent" not in inputs and len(inputs) > 40
    pd.testing.assert_frame_equal(baseline[inputs], after[inputs])


def test_merged_profiles_give_the_latest_consent_decision_before_the_cutoff(project):
    """Two ids of one person each have a profile. As of T, the latest of their consent decisions
    made before T decides; not the latest of all (which the merged profile holds)."""
    ids = ["a", "b", "c", "d", "e", "f"]
    project.write_events(_ev([(c, "page_viewed", datetime(2024, 1, 1), None) for c in ids]))
    pd.DataFrame({
        "customer_id": ids,
        "signup_at": [datetime(2023, 1, 1)] * 6,
        # a+b: a granted in mid-2025, b withdrew in March 2026; c+d: c granted in 2023, d's
        # withdrawal came after T; e+f: a grant and a withdrawal at the same instant
        "email_consent": [True, False, True, False, True, False],
        "consent_updated_at": [datetime(2025, 6, 1), datetime(2026, 3, 17), datetime(2023, 5, 1),
                               datetime(2026, 8, 1), datetime(2025, 1, 1), datetime(2025, 1, 1)],
    }).to_parquet(project.data / "customers.parquet")
    pd.DataFrame({"customer_id": ids, "id_type": "email",
                  "id_value": ["ab@x", "ab@x", "cd@x", "cd@x", "ef@x", "ef@x"]}).to_parquet(project.data / "ids.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"},
                    identities={"format": "parquet", "path": "data/ids.parquet"})

    def consent(as_of):
        feats = _features_and_labels(project, as_of=as_of).set_index("customer_id")
        assert sorted(feats.index) == ["a", "c", "e"]  # one row per person
        return {c: (None if pd.isna(v) else bool(v)) for c, v in feats.email_consent.items()}

    assert consent(T) == {"a": False, "c": True, "e": False}
    assert consent(datetime(2026, 1, 1)) == {"a": True, "c": True, "e": False}
    assert consent(datetime(2025, 3, 1)) == {"a": None, "c": True, "e": False}
    assert consent(datetime(2026, 9, 1)) == {"a": False, "c": False, "e": False}
    assert consent(datetime(2026, 8, 1)) == {"a": False, "c": True, "e": False}  # d's withdrawal exactly at T: not yet


def test_a_link_to_an_account_opened_after_the_cutoff_lends_it_no_attributes(project):
    """z200 signed up long before T; a100 (the smaller id, so the canonical one) opens an account
    after T and the two are linked. As of T the person's attributes are z200's, the only profile
    that existed then; as of a time after a100's signup, a100's own. Before 2026-12-04 the
    canonical id's row gave its attributes to every snapshot, months before that account existed."""
    project.write_events(_ev([("z200", "order_completed", T - timedelta(days=20), 30.0),
                              ("a100", "order_completed", T + timedelta(days=6), 50.0)]))
    pd.DataFrame({"customer_id": ["z200", "a100", "k"],
                  "signup_at": [T - timedelta(days=200), T + timedelta(days=5), None],
                  "country": ["DE", "ZZ", "FR"], "plan": ["free", "late", None]}).to_parquet(project.data / "customers.parquet")
    pd.DataFrame({"customer_id": ["z200", "a100"], "id_type": "email",
                  "id_value": "x@example.com"}).to_parquet(project.data / "ids.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"},
                    identities={"format": "parquet", "path": "data/ids.parquet"})

    def attributes(as_of):
        feats = _features_and_labels(project, as_of=as_of).set_index("customer_id")
        return feats.loc["a100", ["country", "plan"]].tolist()

    assert attributes(T) == ["DE", "free"]
    assert attributes(T - timedelta(days=100)) == ["DE", "free"]
    assert attributes(T + timedelta(days=10)) == ["ZZ", "late"]


def test_auto_attributes_count_the_values_of_the_population_at_the_cutoff(project):
    """Sixty profiles without a signup time whose only events come after T are not customers at T:
    their sixty plan values do not push ``plan`` past ``max_categories`` (50) as of T."""
    from pipeline.jobs.features import data_profile

    base = [("a", "order_completed", T - timedelta(days=9), 10.0), ("b", "order_completed", T - timedelta(days=3), 5.0)]
    late = [(f"late{i:03d}", "order_completed", T + timedelta(days=30), 1.0) for i in range(60)]
    project.write_events(_ev(base + late))
    pd.DataFrame({"customer_id": ["a", "b", *(f"late{i:03d}" for i in range(60))],
                  "signup_at": [T - timedelta(days=90), T - timedelta(days=80), *([None] * 60)],
                  "plan": ["free", "pro", *(f"p{i}" for i in range(60))]}).to_parquet(project.data / "customers.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    cfg = load_config(project.root)
    data = load_validated(cfg, datetime(2027, 1, 1))
    assert data_profile(cfg, data, before=T).categorical == ("plan",)
    assert data_profile(cfg, data).categorical == ()  # the whole log: 62 values


def test_features_build_is_the_same_whatever_came_after_the_cutoff(project):
    """``features build`` as of T from a log that ends before T, and from the same log plus events
    at and after T of roles it never had before (refunds, tickets, sends, opens, consent) and
    profiles that sign up or decide after T: the same frame, columns included. The columns come
    from what the data held before T; before 2026-12-02 a role first seen after T added its columns
    (all 0), so the same cutoff's file changed as the log grew."""
    from pipeline.jobs.features import build_features_job

    before = _ev([("a", "order_completed", T - timedelta(days=40), 10.0), ("a", "page_viewed", T - SEC, None),
                  ("b", "order_completed", T - timedelta(days=3), 5.0), ("c", "cart_added", T - timedelta(days=9), None)])
    later = _ev([("a", "order_refunded", T, 10.0), ("a", "support_ticket_opened", T + SEC, None),
                 ("b", "email_sent", T, None), ("b", "email_opened", T + SEC, None), ("c", "unsubscribed", T, None),
                 ("c", "consent_granted", T + timedelta(days=2), None), ("d", "order_completed", T + SEC, 7.0)])
    later["event_id"] = [f"later{i}" for i in range(len(later))]
    profiles = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "signup_at": [T + SEC] * 4,
                             "email_consent": [True, False, True, True], "consent_updated_at": [T, T + SEC, T, T]})
    profiles.to_parquet(project.data / "customers.parquet")

    def build(events):
        return build_run(events).frame

    def build_run(events):
        project.write_events(events)
        project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                        customers={"format": "parquet", "path": "data/customers.parquet"})
        return build_features_job(load_config(project.root), T)

    first_run = build_run(before)
    first = first_run.frame
    assert {"n_refund", "n_support_ticket", "n_email_send", "unsubscribed", "days_since_signup", "email_consent"}.isdisjoint(first.columns)
    assert list(first.customer_id) == ["a", "b", "c"] and first.frequency.tolist() == [1, 1, 0]
    grown = build_run(pd.concat([before, later], ignore_index=True))
    pd.testing.assert_frame_equal(grown.frame, first)
    # the same columns, but said: each later role with the columns a later cutoff's frame will have
    assert not any("columns left out" in w for w in first_run.warnings), first_run.warnings
    [note] = [w for w in grown.warnings if w.startswith("columns left out as of this cutoff")]
    assert "refund (first event 2026-" in note and "n_refund, refund_amount, refund_rate" in note, note
    assert "support_ticket (first event" in note and "email_send (first event" in note, note
    # A customer who signs up after T with a third plan, where `auto` takes attributes of at most two
    # values: the plan column stays in the file as of T (it counted every profile, and went).
    features = project.root / "configs" / "features.yaml"
    text = features.read_text()
    assert re.search(r"(?m)^max_categories: \d+$", text)
    features.write_text(re.sub(r"(?m)^max_categories: \d+$", "max_categories: 2", text))
    known = profiles.assign(signup_at=T - timedelta(days=50), plan=["basic", "plus", "basic", "platinum"])
    known.iloc[:3].to_parquet(project.data / "customers.parquet")
    first = build(before)
    assert first.plan.tolist() == ["basic", "plus", "basic"]
    known.iloc[3:4] = known.iloc[3:4].assign(signup_at=T + SEC)
    known.to_parquet(project.data / "customers.parquet")
    pd.testing.assert_frame_equal(build(pd.concat([before, later], ignore_index=True)), first)


@pytest.mark.parametrize("seed", [5000, 5039, 5059])
def test_random_logs_build_the_same_whatever_came_after_the_cutoff(seed, tmp_path):
    """Random logs (tests/features/physical_forms.py) through ``features build``: from the events
    before T, and with 5-40 random events at and after T added, the same frame. These seeds bring
    roles after T that the log never had before it (5000: refunds and complaints; 5039: the first
    purchases and consent; 5059: purchases and clicks); all three failed before 2026-12-02.
    ``physical_forms.py START N --later`` runs any number."""
    from physical_forms import check_later_events

    problems = check_later_events(seed, tmp_path)
    assert not problems, "\n".join(problems)
