"""Tests for the synthetic shop generator (pipeline.synthetic)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import roc_auc_score

from pipeline.synthetic import EVENT_TYPES, SyntheticShop, generate, write

END = pd.Timestamp("2026-11-28")  # default end="2026-11-27" means the end of that day
START = END - pd.Timedelta(days=365.25 * 2)
EVENT_COLUMNS = ["event_id", "customer_id", "event_type", "ts", "amount", "category", "channel", "campaign_id"]
CUSTOMER_COLUMNS = ["customer_id", "signup_at", "email_consent", "consent_updated_at", "country",
                    "acquisition_channel", "plan"]


@pytest.fixture(scope="module")
def shop() -> SyntheticShop:
    return generate(10_000, seed=11)


def test_same_seed_same_frames_other_seed_differs():
    a, b, c = generate(1_500, seed=3), generate(1_500, seed=3), generate(1_500, seed=4)
    for name in ("events", "customers", "identities"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not a.events.equals(c.events)
    assert not a.identities.equals(c.identities)


def test_progress_is_reported_up_to_total():
    calls = []
    generate(300, seed=0, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 300) and calls[-1] == (300, 300)


def test_event_contract(shop):
    ev = shop.events
    assert list(ev.columns) == EVENT_COLUMNS
    for col in ("event_id", "customer_id", "event_type", "category", "channel", "campaign_id"):
        assert pd.api.types.is_string_dtype(ev[col]), col
    assert pd.api.types.is_datetime64_dtype(ev["ts"]) and ev["ts"].dt.tz is None
    assert ev["amount"].dtype == np.float64
    assert ev["event_id"].is_unique
    assert ev["ts"].is_monotonic_increasing
    assert ev["ts"].min() >= START and ev["ts"].max() < END
    assert set(ev["event_type"]) <= set(EVENT_TYPES)
    assert set(ev["channel"].dropna()) <= {"email", "web", "app", "store"}
    assert set(ev["customer_id"]) <= set(shop.customers["customer_id"])
    per_customer = len(ev) / len(shop.customers)
    assert 30 <= per_customer <= 60


def test_orders_and_refunds(shop):
    ev = shop.events
    orders = ev[ev["event_type"] == "order_completed"]
    assert len(orders) > 0 and (orders["amount"] > 0).all() and orders["category"].notna().all()
    refunds = ev[ev["event_type"] == "order_refunded"]
    assert (refunds["amount"] > 0).all()
    assert 0.03 < len(refunds) / len(orders) < 0.07
    # every refund follows an earlier order of the same customer in the same category
    first_order = orders.groupby(["customer_id", "category"])["ts"].min()
    matched = first_order.reindex(pd.MultiIndex.from_frame(refunds[["customer_id", "category"]]))
    assert (matched.values < refunds["ts"].values).all()


def test_email_rules(shop):
    ev = shop.events
    email_types = ["email_sent", "email_opened", "email_clicked", "email_bounced", "unsubscribed", "spam_complaint"]
    email = ev[ev["event_type"].isin(email_types)]
    assert email["campaign_id"].notna().all() and (email["channel"] == "email").all()
    # no sends after an opt-out or hard bounce
    stoppers = ev[ev["event_type"].isin(["unsubscribed", "spam_complaint", "email_bounced"])]
    stop = stoppers.groupby("customer_id")["ts"].min()
    sends = ev[ev["event_type"] == "email_sent"]
    assert not (sends["ts"].values > stop.reindex(sends["customer_id"]).values).any()
    # opt-outs are reflected in the final consent state
    opted_out = set(ev.loc[ev["event_type"].isin(["unsubscribed", "spam_complaint"]), "customer_id"])
    cu = shop.customers.set_index("customer_id")
    assert not cu.loc[sorted(opted_out), "email_consent"].any()
    assert 0.4 < cu["email_consent"].mean() < 0.9


def test_customers_contract(shop):
    cu = shop.customers
    assert list(cu.columns) == CUSTOMER_COLUMNS
    assert cu["customer_id"].is_unique
    assert cu["email_consent"].dtype == bool
    assert pd.api.types.is_datetime64_dtype(cu["signup_at"])
    assert (cu["consent_updated_at"] >= cu["signup_at"]).all() and (cu["consent_updated_at"] < END).all()
    assert (cu["signup_at"] < START).mean() > 0.1  # existing customers at the window start
    assert set(cu["plan"]) == {"free", "plus"}
    assert cu["country"].nunique() == 6
    signups = shop.events[shop.events["event_type"] == "signed_up"]
    assert len(signups) == (cu["signup_at"] >= START).sum()


def test_identities_link_accounts(shop):
    ids = shop.identities
    assert set(ids["id_type"]) == {"email", "device"}
    emails = ids[ids["id_type"] == "email"]
    assert emails["customer_id"].is_unique and set(emails["customer_id"]) == set(shop.customers["customer_id"])
    # bipartite graph customer -- identifier, connected components = people
    cust_codes, cust_index = pd.factorize(ids["customer_id"])
    key_codes, _ = pd.factorize(ids["id_type"] + ":" + ids["id_value"])
    n_c = len(cust_index)
    n = n_c + key_codes.max() + 1
    graph = coo_matrix((np.ones(len(ids)), (cust_codes, n_c + key_codes)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    ids_per_person = pd.Series(labels[:n_c]).value_counts()
    linked = ids_per_person[ids_per_person >= 2]
    assert 0.005 < len(linked) / len(ids_per_person) < 0.02
    assert (ids_per_person >= 3).any()  # at least one device-then-email chain
    # duplicate ids have their own (smaller) histories
    dup_ids = cust_index[np.isin(labels[:n_c], linked.index)]
    assert shop.events["customer_id"].isin(dup_ids).any()


def _future_purchases(shop, cutoff, days=90):
    ev = shop.events
    orders = ev[ev["event_type"] == "order_completed"]
    future = orders[(orders["ts"] > cutoff) & (orders["ts"] <= cutoff + pd.Timedelta(days=days))]
    return orders[orders["ts"] <= cutoff], future.groupby("customer_id").size()


def test_recency_predicts_next_quarter_but_not_perfectly(shop):
    cutoff = END - pd.Timedelta(days=120)
    past, future = _future_purchases(shop, cutoff)
    population = shop.customers.loc[shop.customers["signup_at"] <= cutoff, "customer_id"]
    last = past.groupby("customer_id")["ts"].max().reindex(population)
    recency_days = ((cutoff - last).dt.total_seconds() / 86_400).fillna(10_000)
    y = population.isin(future.index)
    assert 0.05 < y.mean() < 0.5
    auc = roc_auc_score(y, -recency_days.values)
    assert 0.65 < auc < 0.97, auc


def test_recent_clickers_buy_more(shop):
    cutoff = END - pd.Timedelta(days=120)
    past, future = _future_purchases(shop, cutoff)
    ev = shop.events
    recent = ev[(ev["ts"] <= cutoff) & (ev["ts"] > cutoff - pd.Timedelta(days=30))]
    clickers = set(recent.loc[recent["event_type"] == "email_clicked", "customer_id"])
    buyers = pd.Index(past["customer_id"].unique())
    bought = future.reindex(buyers).fillna(0) > 0
    is_clicker = buyers.isin(list(clickers))
    assert is_clicker.sum() >= 50
    assert bought[is_clicker].mean() > 1.2 * bought[~is_clicker].mean()


def test_write_round_trips_atomically(tmp_path):
    shop = generate(500, seed=5)
    paths = write(shop, tmp_path / "out")
    assert set(paths) == {"events", "customers", "identities"}
    for name, path in paths.items():
        assert path.exists() and path.name == f"{name}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(path), getattr(shop, name))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "customers.parquet", "events.parquet", "identities.parquet"]
